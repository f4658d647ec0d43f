//! Snapshots of the data group end to end: three real momd processes whose data group takes
//! a snapshot every few entries (`MOMD_DATA_SNAPSHOT_EVERY`, `MOMD_DATA_LOG_KEEP`: small
//! here so that the Raft log is purged within a test). A follower killed before the purge,
//! and a wiped node that joins under a new id, catch up from a snapshot and then hold every
//! message as the others do; the Raft log stays bounded.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{peer_list, poll, status};
use common::*;
use serde_json::Value;

/// Entries between snapshots, and entries kept behind one, in these tests.
const EVERY: &str = "20";
const KEEP: &str = "40";
const TOPIC: &str = "snap.t";

fn envs() -> [(&'static str, &'static str); 2] {
    [
        ("MOMD_DATA_SNAPSHOT_EVERY", EVERY),
        ("MOMD_DATA_LOG_KEEP", KEEP),
    ]
}

fn start_node(id: u64, peer: &str, list: &str) -> Momd {
    let id = id.to_string();
    let args = [
        "--cluster-id",
        "t",
        "--node-id",
        &id,
        "--peer-listen",
        peer,
        "--peers",
        list,
    ];
    Momd::start_env(&args, &envs())
}

/// The data group's leader as `m` sees it, once both groups have one among `among`.
fn data_leader(m: &Momd, among: &[u64]) -> Option<u64> {
    let st = status(m)?;
    let meta = st["groups"][0]["leader"].as_u64()?;
    let data = st["groups"][1]["leader"].as_u64()?;
    (among.contains(&meta) && among.contains(&data)).then_some(data)
}

/// Three nodes of cluster `t` started, once the data group has a leader: the peer list
/// (for a node added later), the nodes, and the data group's leader.
fn three_nodes() -> (String, Vec<Momd>, u64) {
    let (list, addrs) = peer_list(3);
    let nodes: Vec<Momd> = (1..=3u64)
        .map(|id| start_node(id, &addrs[id as usize - 1], &list))
        .collect();
    let leader = poll(Duration::from_secs(30), "a data leader", || {
        data_leader(&nodes[0], &[1, 2, 3])
    });
    (list, nodes, leader)
}

/// Publishes `rounds` separate requests of `per` messages of about 200 bytes each (each
/// request at least one entry of the data group) to `m`; message names start at `from`.
fn publish_rounds(m: &Momd, from: u64, rounds: u64, per: u64) -> u64 {
    publish_sized(m, from, rounds, per, 200)
}

fn publish_sized(m: &Momd, from: u64, rounds: u64, per: u64, size: usize) -> u64 {
    let pad = "x".repeat(size);
    let mut next = from;
    for _ in 0..rounds {
        let mut input = Vec::new();
        for i in next..next + per {
            input.extend_from_slice(format!("m{i}-{pad}\n").as_bytes());
        }
        m.ctl_ok(&["publish", TOPIC, "-q"], Some(&input));
        next += per;
    }
    next
}

/// Every message of the topic on `m`, as `subscribe --json` prints them (seq, time, sender,
/// payload …), once it holds `want`.
fn messages(m: &Momd, want: usize) -> Option<Vec<Value>> {
    common::cluster::json_messages(m, TOPIC, want)
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The seqs of `got` are 1..=n, and `got` is `want` message for message.
fn same_messages(node: u64, got: &[Value], want: &[Value]) {
    assert_eq!(got.len(), want.len(), "node {node}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g["seq"].as_u64(), Some(i as u64 + 1), "node {node}: {g}");
        assert_eq!(g, w, "node {node}: message {} differs", i + 1);
    }
}

#[test]
fn a_follower_killed_before_the_purge_catches_up_from_a_snapshot() {
    let all = [1u64, 2, 3];
    let (_, mut nodes, leader) = three_nodes();
    let victim = all.into_iter().find(|i| *i != leader).unwrap_or(3);
    let other = all
        .into_iter()
        .find(|i| *i != leader && *i != victim)
        .unwrap_or(1);

    // Some messages everyone has, then the follower dies.
    let next = publish_rounds(&nodes[leader as usize - 1], 1, 5, 50);
    nodes[victim as usize - 1].kill9();
    // Enough entries meanwhile that the leader's log is purged far past where it stopped.
    let via = &nodes[other as usize - 1];
    let next = publish_rounds(via, next, 120, 50);
    let total = (next - 1) as usize;
    let leader_log = nodes[leader as usize - 1].stderr();
    assert!(
        leader_log.contains("data group snapshot built"),
        "the leader took snapshots: {leader_log}"
    );
    let want = poll(
        Duration::from_secs(30),
        "every message on the leader",
        || messages(&nodes[leader as usize - 1], total),
    );

    // Back on its data dir: too far behind for the log, it installs a snapshot.
    nodes[victim as usize - 1].restart();
    let got = poll(Duration::from_secs(60), "the follower caught up", || {
        messages(&nodes[victim as usize - 1], total)
    });
    let log = nodes[victim as usize - 1].stderr();
    assert!(
        log.contains("data group snapshot installed"),
        "the follower caught up from a snapshot: {log}"
    );
    same_messages(victim, &got, &want);
    let third = poll(
        Duration::from_secs(30),
        "every message on the third",
        || messages(&nodes[other as usize - 1], total),
    );
    same_messages(other, &third, &want);

    // It goes on applying after the snapshot, like the others.
    let next2 = publish_rounds(&nodes[victim as usize - 1], next, 3, 10);
    let total2 = (next2 - 1) as usize;
    let want2 = poll(
        Duration::from_secs(30),
        "the new ones on the leader",
        || messages(&nodes[leader as usize - 1], total2),
    );
    for id in [victim, other] {
        let got = poll(Duration::from_secs(30), "the new ones everywhere", || {
            messages(&nodes[id as usize - 1], total2)
        });
        same_messages(id, &got, &want2);
    }

    // The Raft logs stay bounded: each node purges its log behind its snapshots, keeping
    // about EVERY + KEEP entries (and what replication has in flight, up to 32), however
    // much more is published. (What sled's files take on disk is printed: sled reuses the
    // space of purged entries lazily.)
    let sizes = |nodes: &Vec<Momd>| -> Vec<u64> {
        all.iter()
            .map(|id| dir_size(&nodes[*id as usize - 1].data_dir().join("raft")))
            .collect()
    };
    let mut next = next2;
    for phase in 0..2 {
        let before = sizes(&nodes);
        next = publish_sized(&nodes[leader as usize - 1], next, 100, 50, 1000);
        eprintln!(
            "phase {phase}: Raft log dirs {before:?} -> {:?} bytes",
            sizes(&nodes)
        );
    }
    let bound = EVERY.parse::<u64>().unwrap_or(0) + KEEP.parse::<u64>().unwrap_or(0) + 32;
    for id in all {
        let m = &nodes[id as usize - 1];
        let last = poll(
            Duration::from_secs(10),
            "the data group's last index",
            || status(m)?["groups"][1]["last_index"].as_u64(),
        );
        let purged = last_purge(&m.stderr());
        eprintln!("node {id}: data log last index {last}, purged up to {purged}");
        assert!(
            last - purged <= bound,
            "node {id}: its log holds {} entries (last {last}, purged up to {purged})",
            last - purged
        );
    }
}

/// How far the node last purged the data group's log (its `raft log purged` line).
fn last_purge(log: &str) -> u64 {
    log.lines()
        .rev()
        .filter(|l| l.contains("raft log purged"))
        .filter(|l| l.split_whitespace().any(|w| w == "group=1"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("upto=")))
        .filter_map(|n| n.parse().ok())
        .next()
        .unwrap_or(0)
}

/// Behind its snapshot the log keeps `MOMD_DATA_LOG_KEEP` entries, or fewer if they take
/// more than `MOMD_DATA_LOG_KEEP_BYTES`: 200 KB messages, 1 MB kept, so about five entries
/// behind the snapshot, not the 1000 the entry count allows.
#[test]
fn the_log_behind_a_snapshot_is_bounded_in_bytes_as_well_as_entries() {
    let (list, addrs) = peer_list(3);
    let envs = [
        ("MOMD_DATA_SNAPSHOT_EVERY", "20"),
        ("MOMD_DATA_LOG_KEEP", "1000"),
        ("MOMD_DATA_LOG_KEEP_BYTES", "1000000"),
    ];
    let nodes: Vec<Momd> = (1..=3u64)
        .map(|id| {
            let id_s = id.to_string();
            let args = [
                "--cluster-id",
                "t",
                "--node-id",
                &id_s,
                "--peer-listen",
                &addrs[id as usize - 1],
                "--peers",
                &list,
            ];
            Momd::start_env(&args, &envs)
        })
        .collect();
    let all = [1u64, 2, 3];
    let leader = poll(Duration::from_secs(30), "a data leader", || {
        data_leader(&nodes[0], &all)
    });
    // One entry per publish: 60 entries of about 200 KB.
    let next = publish_sized(&nodes[leader as usize - 1], 1, 60, 1, 200_000);
    assert_eq!(next, 61);
    let node = &nodes[leader as usize - 1];
    let purged = poll(Duration::from_secs(30), "a purge past entry 30", || {
        let p = last_purge(&node.stderr());
        (p > 30).then_some(p)
    });
    let st = status(node).expect("status");
    let last = st["groups"][1]["last_index"].as_u64().expect("last index");
    // The snapshot is within 20 entries of the end; behind it, at most five of 200 KB.
    assert!(
        last - purged <= 20 + 6,
        "purged up to {purged} of {last}: more than about 1 MB kept behind the snapshot"
    );
}

#[test]
fn a_wiped_node_joins_under_a_new_id_and_catches_up_from_a_snapshot() {
    let (list, mut nodes, _) = three_nodes();
    let next = publish_rounds(&nodes[0], 1, 60, 20);
    let total = (next - 1) as usize;
    let want = poll(Duration::from_secs(30), "every message on node 1", || {
        messages(&nodes[0], total)
    });

    // Node 3 loses its disk: it leaves, and comes back empty as node 4.
    nodes[2].kill9();
    let out = nodes[0].ctl_timeout(&["cluster", "leave", "3"], None, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out:?}");
    let addr4 = format!("127.0.0.4:{}", free_port());
    let four = start_node(4, &addr4, &list);
    let out = nodes[1].ctl_timeout(
        &["cluster", "join", "4", &addr4],
        None,
        Duration::from_secs(90),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let got = poll(Duration::from_secs(60), "node 4 caught up", || {
        messages(&four, total)
    });
    same_messages(4, &got, &want);
    let installs = |m: &Momd| {
        m.stderr()
            .matches("data group snapshot installed: ")
            .count()
    };
    assert!(
        installs(&four) >= 1,
        "node 4 caught up from a snapshot: {}",
        four.stderr()
    );

    // A watcher on node 4 when it installs a snapshot again (stopped while the others
    // purged past it): the install ends its watch with a notice saying why.
    let watch_dir = tempfile::tempdir().expect("tempdir");
    let watch_err = watch_dir.path().join("stderr");
    let mut watcher = std::process::Command::new(momctl_bin())
        .args(["-s", &four.addr(), "subscribe", TOPIC])
        .env("MOM_CONFIG_DIR", std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&watch_err).expect("stderr file"))
        .spawn()
        .expect("momctl");
    poll(
        Duration::from_secs(30),
        "the watcher watching on node 4",
        || {
            let clients = four.stats()["clients"].as_array().cloned()?;
            clients
                .iter()
                .any(|c| c["watches"].as_u64().is_some_and(|w| w >= 1))
                .then_some(())
        },
    );
    let before = installs(&four);
    four.pause();
    let next = publish_rounds(&nodes[0], next, 120, 10);
    let total = (next - 1) as usize;
    let want = poll(Duration::from_secs(30), "every message on node 1", || {
        messages(&nodes[0], total)
    });
    four.resume();
    let got = poll(Duration::from_secs(60), "node 4 caught up again", || {
        messages(&four, total)
    });
    same_messages(4, &got, &want);
    // At least one more install (two, when the leader purged past what the first one
    // brought before the node had caught up from the log behind it).
    assert!(
        installs(&four) > before,
        "node 4 caught up from a snapshot: {}",
        four.stderr()
    );
    // Told why on its stderr, it subscribes again by itself.
    let told = poll(Duration::from_secs(30), "the watcher told", || {
        let err = std::fs::read_to_string(&watch_err).unwrap_or_default();
        err.contains("installed a snapshot").then_some(err)
    });
    assert!(told.contains("reconnect"), "{told}");
    let _ = watcher.kill();
    let _ = watcher.wait();

    // The three go on, node 4 applying after its snapshot.
    let next2 = publish_rounds(&four, next, 2, 10);
    let total2 = (next2 - 1) as usize;
    let want2 = poll(Duration::from_secs(30), "the new ones on node 1", || {
        messages(&nodes[0], total2)
    });
    for (id, m) in [(2u64, &nodes[1]), (4, &four)] {
        let got = poll(Duration::from_secs(30), "the new ones everywhere", || {
            messages(m, total2)
        });
        same_messages(id, &got, &want2);
    }
}

#[test]
fn a_node_installing_a_snapshot_answers_pings_and_takes_publishes_meanwhile() {
    let (list, nodes, _) = three_nodes();
    let next = publish_rounds(&nodes[0], 1, 60, 5);
    // Node 4 joins; its install of the snapshot is made to last 6 s.
    let addr4 = format!("127.0.0.4:{}", free_port());
    let args = [
        "--cluster-id",
        "t",
        "--node-id",
        "4",
        "--peer-listen",
        &addr4,
        "--peers",
        &list,
    ];
    let mut env = envs().to_vec();
    env.push(("MOMD_INSTALL_PAUSE_MS", "6000"));
    let four = Momd::start_env(&args, &env);
    let joiner = std::thread::scope(|s| {
        let join = s.spawn(|| {
            nodes[1].ctl_timeout(
                &["cluster", "join", "4", &addr4],
                None,
                Duration::from_secs(90),
            )
        });
        poll(Duration::from_secs(30), "node 4 installing", || {
            four.stderr()
                .contains("installing a snapshot of the data group")
                .then_some(())
        });
        // Meanwhile: a ping is answered at once, a publish through node 4 is acknowledged.
        let t0 = std::time::Instant::now();
        let ping = four.ctl_timeout(&["ping"], None, Duration::from_secs(5));
        assert_eq!(ping.code, 0, "{ping:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        let out = four.ctl(&["publish", TOPIC, "during-the-install", "-q"], None);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            !four.stderr().contains("installed in the store"),
            "the install was over already: {}",
            four.stderr()
        );
        join.join().expect("the join thread")
    });
    assert_eq!(joiner.code, 0, "{joiner:?}");
    let total = next as usize; // messages 1..next, and the one published during the install
    let want = poll(Duration::from_secs(30), "every message on node 1", || {
        messages(&nodes[0], total)
    });
    assert_eq!(want[total - 1]["payload"], "during-the-install");
    let got = poll(Duration::from_secs(60), "node 4 holds them", || {
        messages(&four, total)
    });
    same_messages(4, &got, &want);
}

/// A queue's counters on `m`: ready, unacked, delivered, acked.
fn queue_counts(m: &Momd, name: &str) -> Option<[u64; 4]> {
    let out = m.ctl_timeout(
        &["queue", "info", name, "--json"],
        None,
        Duration::from_secs(10),
    );
    let q: Value = serde_json::from_slice(&out.stdout).ok()?;
    let n = |k: &str| q[k].as_u64();
    Some([n("ready")?, n("unacked")?, n("delivered")?, n("acked")?])
}

#[test]
fn a_queue_comes_whole_with_a_snapshot_and_is_served_after_it() {
    let all = [1u64, 2, 3];
    let (_, mut nodes, leader) = three_nodes();
    let victim = all.into_iter().find(|i| *i != leader).unwrap_or(3);
    let other = all
        .into_iter()
        .find(|i| *i != leader && *i != victim)
        .unwrap_or(1);
    let node = |nodes: &Vec<Momd>, id: u64| nodes[id as usize - 1].addr();
    nodes[other as usize - 1].ctl_ok(
        &["queue", "create", "q", "--bind", "snap.>", "--from", "all"],
        None,
    );
    let next = publish_rounds(&nodes[leader as usize - 1], 1, 5, 50);
    nodes[other as usize - 1].ctl_ok(&["recv", "q", "-n", "30"], None);
    // A worker on the leader holds one delivery through what follows.
    let mut worker = std::process::Command::new(momctl_bin())
        .args([
            "-s",
            &node(&nodes, leader),
            "recv",
            "q",
            "--follow",
            "--exec",
            "--",
            "sleep",
            "120",
        ])
        .env("MOM_CONFIG_DIR", std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("momctl");
    poll(Duration::from_secs(30), "the worker holding one", || {
        let c = queue_counts(&nodes[other as usize - 1], "q")?;
        (c[1] == 1).then_some(())
    });
    nodes[victim as usize - 1].kill9();
    // Enough entries that the log is purged past where the victim stopped.
    publish_rounds(&nodes[other as usize - 1], next, 120, 50);
    nodes[leader as usize - 1].ctl_ok(&["recv", "q", "-n", "20"], None);
    let before = queue_counts(&nodes[leader as usize - 1], "q").expect("queue info");
    assert_eq!(before[1..], [1, 51, 50], "{before:?}");

    nodes[victim as usize - 1].restart();
    poll(
        Duration::from_secs(60),
        "the victim's snapshot installed",
        || {
            nodes[victim as usize - 1]
                .stderr()
                .contains("data group snapshot installed")
                .then_some(())
        },
    );
    // The same queue on every node: what was delivered, acked and still out.
    let agreed = poll(Duration::from_secs(60), "the nodes agreeing", || {
        let c: Vec<[u64; 4]> = all
            .iter()
            .map(|id| queue_counts(&nodes[*id as usize - 1], "q"))
            .collect::<Option<_>>()?;
        c.windows(2).all(|w| w[0] == w[1]).then(|| c[0])
    });
    assert_eq!(agreed, before);
    // Served from the node that installed it, and settled everywhere.
    let out = nodes[victim as usize - 1].ctl_ok(&["recv", "q", "-n", "10", "--json"], None);
    assert_eq!(json_lines(&out).len(), 10);
    let after = poll(Duration::from_secs(60), "the ten acked everywhere", || {
        let c: Vec<[u64; 4]> = all
            .iter()
            .map(|id| queue_counts(&nodes[*id as usize - 1], "q"))
            .collect::<Option<_>>()?;
        (c.windows(2).all(|w| w[0] == w[1]) && c[0][3] == 60).then(|| c[0])
    });
    assert_eq!(after[1..], [1, 61, 60], "{after:?}");
    let _ = worker.kill();
    let _ = worker.wait();
}
