//! The short run of momcheck, the fault-injection checker (issue 10): a few cycles of each
//! fault against the real momd, judged by momcheck's own verdict. The long run is
//! described in the README (## Testing).
//!
//! `diskfull` mounts a tmpfs, which needs root: as another user its test says so and passes.

mod common;

use std::process::Command;
use std::time::Duration;

/// The verdict passes: exit 0, every violation counted 0, each fault run `at_least` times.
fn assert_passes(args: &[&str], faults: &[&str], at_least: u32) {
    let (verdict, _, why) = common::momcheck_passes(
        args,
        Duration::from_secs(240),
        "momcheck seed ",
        &[
            "lost",
            "duplicated",
            "reordered",
            "seq-reuse",
            "queue-never-delivered",
            "delivery-count-regressions",
            "corrupted-served",
            "phantom",
            "crashes",
            "stalls",
            "errors",
            "admin-lost",
            "store-failures",
            "rss-over",
        ],
    );
    let words: Vec<&str> = verdict.split_whitespace().collect();
    for f in faults {
        let n = common::fault_runs(&words, f);
        assert!(n >= at_least, "{f} ran {n} times, not {at_least}; {why}");
    }
}

#[test]
fn kill_9_and_pauses_lose_duplicate_and_reorder_nothing() {
    assert_passes(
        &[
            "--cycles",
            "8",
            "--faults",
            "kill9,pause",
            "--checkpoint-every",
            "4",
            "--small",
            "--seed",
            "1",
        ],
        &["kill9", "pause"],
        4,
    );
}

#[test]
fn damaged_files_and_clock_jumps_lose_duplicate_and_reorder_nothing() {
    assert_passes(
        &[
            "--cycles",
            "12",
            "--faults",
            "kill9,pause,corrupt,clock",
            "--checkpoint-every",
            "6",
            "--small",
        ],
        &["kill9", "pause", "corrupt", "clock"],
        3,
    );
}

#[test]
fn every_hostile_client_leaves_momd_serving_within_its_memory_bound() {
    assert_passes(
        &[
            "--cycles",
            "11",
            "--faults",
            "hostile",
            "--hostile-time",
            "1s",
            "--small",
        ],
        &["hostile"],
        11,
    );
}

#[test]
fn a_full_disk_refuses_publishes_then_they_resume_on_their_own() {
    let uid = Command::new("id").arg("-u").output().ok().map(|o| o.stdout);
    if uid.as_deref().map(|u| u.trim_ascii()) != Some(b"0".as_slice()) {
        eprintln!("skipped: the diskfull fault mounts a tmpfs, which needs root");
        return;
    }
    assert_passes(
        &[
            "--cycles",
            "4",
            "--faults",
            "diskfull",
            "--small",
            "--disk-size",
            "256MiB",
        ],
        &["diskfull"],
        4,
    );
}
