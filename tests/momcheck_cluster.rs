//! The short run of `momcheck --cluster` (issue 16): three real momd nodes, every peer link
//! through a fault proxy, publishers failing over between them, and a few cycles of each
//! cluster fault (the data group's leader killed and paused, a node killed, a node cut off,
//! one direction of a link cut, a fourth node joining and leaving), judged by momcheck's
//! verdict over every node's copy. The long run is described in the README (## Testing).

mod common;

use std::time::Duration;

fn count(words: &[&str], word: &str) -> Option<u64> {
    common::verdict_count(words, word)
}

/// Runs momcheck with `args` and checks its verdict passes (seed 16, nothing lost,
/// duplicated, reordered or diverged, no crash, stall or error).
fn assert_passes(args: &[&str]) -> (String, String, String) {
    common::momcheck_passes(
        args,
        Duration::from_secs(300),
        "momcheck cluster nodes 3 seed 16 ",
        &[
            "lost",
            "duplicated",
            "reordered",
            "diverged",
            "seq-reuse",
            "corrupted-served",
            "phantom",
            "crashes",
            "stalls",
            "errors",
        ],
    )
}

#[test]
fn cluster_faults_lose_duplicate_reorder_and_diverge_nothing() {
    let faults = [
        "leader-kill9",
        "kill9",
        "leader-pause",
        "isolate",
        "one-way",
        "join-leave",
    ];
    let args = [
        "--cluster",
        "--cycles",
        "12",
        "--faults",
        &faults.join(","),
        "--rate",
        "400",
        "--publishers",
        "3",
        // Consumers of the queue on any node, acking and nacking.
        "--consumers",
        "2",
        // Watchers that resume (`after`) on other nodes, some of them behind (seed 16 once
        // showed one sent again, live, what it already had as its node caught up).
        "--watchers",
        "2",
        "--seed",
        "16",
    ];
    let (verdict, stderr, why) = assert_passes(&args);
    let words: Vec<&str> = verdict.split_whitespace().collect();
    // Each fault ran twice, and did what it says.
    for f in faults {
        let n = common::fault_runs(&words, f);
        assert_eq!(n, 2, "{f} ran {n} times, not 2; {why}");
    }
    assert_eq!(count(&words, "joins-checked"), Some(2), "{why}");
    // The leader's kill -9 made another node lead (the failover was measured).
    let failover: Vec<&str> = words
        .iter()
        .skip_while(|w| **w != "worst-failover")
        .take_while(|w| **w != "worst-publish")
        .copied()
        .collect();
    assert!(
        failover.iter().any(|w| w.starts_with("leader-kill9=")),
        "no failover measured after the leader's kill -9; {why}"
    );
    let killed = stderr
        .lines()
        .filter(|l| l.starts_with("momcheck: leader-kill9: node ") && l.ends_with(" killed"))
        .count();
    assert_eq!(killed, 2, "{why}");
    assert_eq!(
        stderr.matches("cut off for").count(),
        2,
        "isolate cut a node off twice; {why}"
    );
}

/// Hostile clients against one node at a time (each case once, scaled down): the node
/// answers them, and the cluster goes on losing nothing, each node within 256 MiB.
#[test]
fn hostile_clients_against_a_node_leave_the_cluster_serving_and_losing_nothing() {
    let cases = [
        "malformed-pre-hello",
        "malformed-post-hello",
        "stalled-frames",
        "nested-msgpack",
        "huge-headers",
        "watch-patterns",
        "many-topics-queues",
        "idle-connections",
        "unread-watcher",
        "unread-replies",
        "fast-publisher",
    ];
    let cases = cases.join(",");
    let args = [
        "--cluster",
        "--cycles",
        "11",
        "--faults",
        "hostile",
        "--max-rss",
        "256MiB",
        "--hostile-cases",
        &cases,
        "--hostile-time",
        "1s",
        "--small",
        "--rate",
        "400",
        "--publishers",
        "3",
        "--seed",
        "16",
    ];
    let (verdict, stderr, why) = assert_passes(&args);
    let words: Vec<&str> = verdict.split_whitespace().collect();
    assert_eq!(
        words.iter().find_map(|w| w.strip_prefix("hostile=")),
        Some("11"),
        "{why}"
    );
    for case in cases.split(',') {
        assert!(
            stderr.contains(&format!("momcheck: hostile {case} against node ")),
            "{case} did not run; {why}"
        );
    }
}

/// A flood of 1 MB publishes (4 clients with 64 in flight each) waits in the clients'
/// sockets, not in the node's memory: what waits for the cluster counts against the
/// node's admission budget until it is answered. When it did not, the node passed 200 MiB
/// here (and 1 GiB at full scale); held to the budget it stays near 100.
#[test]
fn a_flood_of_large_publishes_waits_in_the_clients_sockets_not_in_a_nodes_memory() {
    let args = [
        "--cluster",
        "--cycles",
        "1",
        "--faults",
        "hostile",
        "--hostile-cases",
        "fast-publisher",
        "--hostile-time",
        "3s",
        "--small",
        "--max-rss",
        "160MiB",
        "--rate",
        "400",
        "--publishers",
        "3",
        "--seed",
        "16",
    ];
    let (verdict, stderr, why) = assert_passes(&args);
    assert!(verdict.contains(" rss-over 0 "), "{why}");
    assert!(
        stderr.contains("momcheck: hostile fast-publisher against node "),
        "{why}"
    );
}

/// Topics spread over three data groups (`--data-groups 3`: publishers, watchers, and the
/// partitioned topic's partitions over the groups; no queue yet), each with its own
/// leader: the leader of the first group
/// killed and paused, a node killed and cut off, a node joining and leaving. Nothing lost,
/// duplicated, reordered or diverged.
#[test]
fn cluster_faults_with_three_data_groups_lose_duplicate_reorder_and_diverge_nothing() {
    let faults = [
        "leader-kill9",
        "kill9",
        "leader-pause",
        "isolate",
        "join-leave",
    ];
    let args = [
        "--cluster",
        "--data-groups",
        "3",
        "--cycles",
        "5",
        "--faults",
        &faults.join(","),
        "--rate",
        "400",
        "--publishers",
        "3",
        "--watchers",
        "2",
        "--seed",
        "16",
    ];
    let (verdict, _, why) = assert_passes(&args);
    let words: Vec<&str> = verdict.split_whitespace().collect();
    for f in faults {
        let n = common::fault_runs(&words, f);
        assert_eq!(n, 1, "{f} ran {n} times, not 1; {why}");
    }
    assert_eq!(count(&words, "joins-checked"), Some(1), "{why}");
    assert!(count(&words, "acked").unwrap_or(0) > 0, "{why}");
}

/// One node's data dir filled up (each node's is a tmpfs of its own: root only, as the
/// single node's test): the node stops with the reason (exit 1, not a crash), the other two
/// go on taking publishes, and started again with room it catches up. Nothing lost,
/// duplicated, reordered or diverged.
#[test]
fn a_nodes_full_disk_stops_it_with_the_reason_and_the_others_go_on() {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| o.stdout);
    if uid.as_deref().map(|u| u.trim_ascii()) != Some(b"0".as_slice()) {
        eprintln!("skipped: the diskfull fault mounts a tmpfs, which needs root");
        return;
    }
    let args = [
        "--cluster",
        "--cycles",
        "3",
        "--faults",
        "diskfull",
        "--disk-size",
        "256MiB",
        "--rate",
        "400",
        "--publishers",
        "3",
        "--seed",
        "16",
    ];
    let (verdict, stderr, why) = assert_passes(&args);
    let words: Vec<&str> = verdict.split_whitespace().collect();
    assert_eq!(common::fault_runs(&words, "diskfull"), 3, "{why}");
    assert_eq!(count(&words, "diskfull-failures"), Some(0), "{why}");
    assert!(!verdict.contains("skipped"), "{why}");
    assert!(
        stderr.contains("it stopped (exit 1)"),
        "a full disk stops its node: {why}"
    );
}
