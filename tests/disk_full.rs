//! A full disk (issue 10): momd on a small tmpfs. Publishes are refused with a clear error
//! below `--min-free-disk` while reads, admin and new connections go on; publishes are taken
//! again by themselves once space is freed; momd starts on a full disk, read-only, and says
//! so. Mounting a tmpfs needs root on Linux: elsewhere the test says so and skips.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{lines, Momd};

/// A tmpfs mounted on a temp dir for the life of the value.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("mom-tmpfs-")
            .tempdir()
            .expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "skipping: cannot mount a tmpfs ({}); this test needs root on Linux",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount ({e}); this test needs root on Linux");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Write a file until the filesystem is full.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![7u8; 256 * 1024];
    let mut n = 0;
    while f.write_all(&chunk).is_ok() {
        n += chunk.len() as u64;
    }
    // A full disk can take part of the last chunk; what it took stays.
    let _ = f.sync_all();
    n
}

fn retry_publish_until_taken(m: &Momd, topic: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let out = m.ctl(&["publish", topic, "back", "-q"], None);
        if out.code == 0 {
            return start.elapsed();
        }
        assert!(
            out.stderr.contains("disk full"),
            "refused for another reason: {out:?}"
        );
        assert!(
            start.elapsed() < within,
            "publishes still refused {within:?} after space was freed: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_disk_refuses_publishes_keeps_reads_and_recovers_by_itself() {
    let Some(fs) = Tmpfs::mount("40m") else {
        return;
    };
    let data: PathBuf = fs.path().join("d");
    let mut m = Momd::start_in(Some(data.clone()), &["--min-free-disk", "16MiB"]);
    m.assert_serves();

    // Fill: 200 KB messages, one per publish, more than the disk holds.
    let line = format!("{}\n", "f".repeat(200_000));
    let input = line.repeat(300);
    let out = m.ctl(
        &["publish", "fill", "--batch", "1", "-q"],
        Some(input.as_bytes()),
    );
    assert_ne!(out.code, 0, "a full disk must refuse: {out:?}");
    assert!(out.stderr.contains("disk full"), "{out:?}");
    let stored = m.topic_info("fill")["messages"].as_u64().expect("messages");
    assert!(stored > 10 && stored < 300, "stored {stored}");

    // Everything acknowledged reads back, from a new connection, while the disk is full.
    let got = m.read_all_lines("fill");
    assert_eq!(got.len() as u64, stored);
    assert!(got.iter().all(|l| l.len() == 200_000));
    let stats = m.stats();
    assert_eq!(stats["disk_full"], true, "{stats}");
    let human = String::from_utf8_lossy(&m.ctl_ok(&["stats"], None)).into_owned();
    assert!(human.contains("disk full:"), "{human}");
    let events = m.read_all_lines("$sys.events");
    assert!(
        events.iter().any(|e| e.contains("\"disk_full\"")),
        "{events:?}"
    );
    // Still refused: nothing was freed.
    let again = m.ctl(&["publish", "other", "x", "-q"], None);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("disk full"), "{again:?}");

    // Free space (admin works on a full disk), and publishes come back with no restart.
    m.ctl_ok(&["topic", "rm", "fill"], None);
    let took = retry_publish_until_taken(&m, "after", Duration::from_secs(10));
    eprintln!("publishes taken again {took:?} after the topic was removed");
    let events = m.read_all_lines("$sys.events");
    assert!(
        events.iter().any(|e| e.contains("\"disk_ok\"")),
        "{events:?}"
    );

    // Start on a full disk: read-only, and it says so.
    m.sigterm(Duration::from_secs(15));
    let filler = fs.path().join("filler");
    let filled = fill(&filler);
    eprintln!("filler took {} KiB", filled / 1024);
    m.restart();
    assert!(m.stderr().contains("read-only"), "{}", m.stderr());
    let refused = m.ctl(&["publish", "after", "x", "-q"], None);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("disk full"), "{refused:?}");
    assert_eq!(
        lines(&m.ctl_ok(
            &[
                "subscribe",
                "after",
                "--from",
                "all",
                "-n",
                "1",
                "--timeout",
                "10s"
            ],
            None
        )),
        vec!["back"]
    );
    std::fs::remove_file(&filler).expect("remove filler");
    let took = retry_publish_until_taken(&m, "after", Duration::from_secs(10));
    eprintln!("after a start on a full disk, publishes taken {took:?} after space was freed");
    assert_eq!(m.topic_info("after")["messages"], 2);
    m.sigterm(Duration::from_secs(15));
}
