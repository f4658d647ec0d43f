//! The short run of momcheck, the fault-injection checker (issue 10): a few cycles of each
//! fault against the real momd, judged by momcheck's own verdict. The long run is
//! described in the README (## Testing).
//!
//! `diskfull` mounts a tmpfs, which needs root: as another user its test says so and passes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

/// The verdict passes: exit 0, every violation counted 0, each fault run `at_least` times.
fn assert_passes(args: &[&str], faults: &[&str], at_least: u32) {
    let t0 = Instant::now();
    let (code, verdict, stderr) = common::momcheck(args, Duration::from_secs(240));
    eprintln!("{verdict}(in {:.0?})", t0.elapsed());
    let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
    let tail: String = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    let why = format!("momcheck {args:?}\nverdict: {verdict}\nstderr (end):\n{tail}");
    assert_eq!(code, 0, "{why}");
    assert!(verdict.starts_with("momcheck seed "), "{why}");
    assert!(verdict.trim_end().ends_with(" PASS"), "{why}");
    let words: Vec<&str> = verdict.split_whitespace().collect();
    for kind in [
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
    ] {
        let i = words
            .iter()
            .position(|w| *w == kind)
            .unwrap_or_else(|| panic!("no {kind} in the verdict; {why}"));
        assert_eq!(words.get(i + 1), Some(&"0"), "{kind}; {why}");
    }
    let acked: u64 = words
        .iter()
        .position(|w| *w == "acked")
        .and_then(|i| words.get(i + 1)?.parse().ok())
        .unwrap_or(0);
    assert!(acked > 1000, "only {acked} messages acknowledged; {why}");
    for f in faults {
        let n: u32 = words
            .iter()
            .find_map(|w| w.strip_prefix(&format!("{f}="))?.parse().ok())
            .unwrap_or(0);
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
