//! Retention and the files it frees (issue 10): a segment file goes only once the index
//! without its records is durable, so a crash right after retention never leaves the index
//! naming records whose file is gone; and the freed files do go.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{wait_for, Momd};

/// The segment files of the log.
fn segments_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("log"))
        .expect("log dir")
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn retention_frees_old_segment_files_and_a_crash_after_it_loses_nothing_kept() {
    let mut m = Momd::start();
    m.ctl_ok(&["topic", "set", "big", "--max-msgs", "10"], None);
    // 1 MiB messages: more than one 64 MiB segment.
    let line = format!("{}\n", "b".repeat(1024 * 1024 - 1));
    for round in 0..3 {
        let input = line.repeat(30);
        m.ctl_ok(&["publish", "big", "-q"], Some(input.as_bytes()));
        let info = m.topic_info("big");
        assert_eq!(info["messages"], 10, "round {round}: {info}");
    }
    let data = m.data_dir();
    // The first segment (seqs 1..) holds only trimmed records (and a few of `$sys.events`,
    // copied forward by compaction): it goes after the flush.
    // (Within seconds; the bound leaves room for a machine busy with other work.)
    wait_for(
        Duration::from_secs(30),
        "the old segment file to go",
        || {
            let segs = segments_of(&data);
            (!segs.is_empty() && !segs.iter().any(|s| s == "00000000000000000001.seg"))
                .then_some(())
        },
    );
    // A crash now, and then: every kept message reads back and verify finds no damage.
    m.kill9();
    let out = Command::new(common::momd_bin())
        .args(["verify", "--data"])
        .arg(&data)
        .output()
        .expect("momd verify");
    assert!(out.status.success(), "{out:?}");
    m.restart();
    let info = m.topic_info("big");
    assert_eq!(info["messages"], 10, "{info}");
    assert_eq!(info["first_seq"], 81, "{info}");
    let got = m.read_all_lines("big");
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|l| l.len() == 1024 * 1024 - 1));
}
