//! A full disk (issue 10): momd on a small tmpfs. Publishes are refused with a clear error
//! below `--min-free-disk` while reads, admin and new connections go on; publishes are taken
//! again by themselves once space is freed; momd starts on a full disk, read-only, and says
//! so. A cluster node whose disk fills stops with the reason, the others go on, and it
//! rejoins and catches up once started again with room. Mounting a tmpfs needs root on
//! Linux: elsewhere the test says so and skips.

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

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
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

/// A cluster node whose disk fills cannot write its Raft log or store (openraft does not go
/// on after a storage error): it stops with the reason instead of lingering as a member that
/// answers nothing. The other two go on acknowledging. Started again with room (as
/// systemd's `Restart=on-failure` does), it rejoins and catches up.
#[test]
fn a_cluster_node_whose_disk_fills_stops_with_the_reason_and_rejoins_once_freed() {
    use common::cluster::{all_lines, cluster_args, leader, peer_list};
    let Some(fs) = Tmpfs::mount("160m") else {
        return;
    };
    let (list, addrs) = peer_list(3);
    let args = |id: u64| cluster_args(id, &addrs[id as usize - 1], &list);
    let a1 = args(1);
    let a2 = args(2);
    let a3 = args(3);
    let n1 = Momd::start_with(&strs(&a1));
    let n2 = Momd::start_with(&strs(&a2));
    let mut n3 = Momd::start_in(Some(fs.path().join("n3")), &strs(&a3));
    common::wait_for(Duration::from_secs(30), "a leader", || {
        leader(&n1, &[1, 2, 3])
    });
    let first: String = (0..10).map(|i| format!("m{i}\n")).collect();
    n1.ctl_ok(&["publish", "df.t", "-q"], Some(first.as_bytes()));
    common::wait_for(Duration::from_secs(30), "node 3 holding the first", || {
        (all_lines(&n3, "df.t", 10).len() == 10).then_some(())
    });

    fill(&fs.path().join("filler"));
    // 100 KB messages, one publish each, through node 1: the majority acknowledges them.
    let pad = "p".repeat(100_000);
    let mut sent = 10;
    let stopped = loop {
        let line = format!("m{sent}-{pad}\n");
        n1.ctl_ok(&["publish", "df.t", "-q"], Some(line.as_bytes()));
        sent += 1;
        if let Some(st) = n3.exited_within(Duration::from_millis(100)) {
            break st;
        }
        assert!(
            sent < 400,
            "node 3 did not stop on a full disk: {}",
            n3.stderr()
        );
    };
    assert!(!stopped.success(), "{stopped}");
    let log = n3.stderr();
    assert!(log.contains("No space left on device"), "{log}");
    assert!(
        log.contains("cannot go on in the cluster and stops"),
        "{log}"
    );
    for _ in 0..5 {
        let line = format!("m{sent}\n");
        n1.ctl_ok(&["publish", "df.t", "-q"], Some(line.as_bytes()));
        sent += 1;
    }

    std::fs::remove_file(fs.path().join("filler")).expect("freeing the disk");
    n3.restart();
    let got = common::wait_for(Duration::from_secs(60), "node 3 caught up", || {
        let got = all_lines(&n3, "df.t", sent);
        (got.len() == sent).then_some(got)
    });
    for (i, l) in got.iter().enumerate() {
        assert!(
            l == &format!("m{i}") || l.starts_with(&format!("m{i}-")),
            "message {i} on node 3: {}",
            &l[..l.len().min(40)]
        );
    }
    drop(n2);
}
