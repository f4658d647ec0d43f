//! Topics spread over several data groups (`--data-groups`, work in progress: publishes,
//! watches and partitioned topics; not queues), end to end: three real momd processes whose topics go to three data
//! groups by name, each group with its own leader, log and snapshots. Every node serves
//! every topic; a group leader's death costs latency, not messages; a node killed while
//! the groups' logs were purged past it catches up from each group's snapshot of its own
//! topics.

mod common;

use std::time::Duration;

use std::collections::{BTreeMap, BTreeSet};

use common::cluster::{json_messages, peer_list, poll, status};
use common::*;
use serde_json::Value;

const GROUPS: u64 = 3;

/// Node `id` of cluster `g` (three data groups), with `more` in its environment besides the
/// snapshot and log settings.
fn start_node(id: u64, peer: &str, list: &str, more: &[(&str, &str)]) -> Momd {
    let id = id.to_string();
    let args = [
        "--cluster-id",
        "g",
        "--node-id",
        &id,
        "--peer-listen",
        peer,
        "--peers",
        list,
        "--data-groups",
        "3",
    ];
    let mut envs = vec![
        ("MOMD_DATA_SNAPSHOT_EVERY", "20"),
        ("MOMD_DATA_LOG_KEEP", "40"),
    ];
    envs.extend_from_slice(more);
    Momd::start_env(&args, &envs)
}

/// The shard (data group) momd places a topic in: FNV-1a of its name, modulo the groups
/// (names that do not end in a number). Worked out here on its own: a node routes a publish
/// by it before the topic exists anywhere, so it must never change.
fn group_of(name: &str) -> u64 {
    group_of_partition(name, 0)
}

/// A topic name placed in each group.
fn topics() -> Vec<String> {
    (0..GROUPS)
        .map(|g| {
            (0..100)
                .map(|i| format!("grp.t{i}"))
                .find(|n| group_of(n) == g)
                .expect("a name for every group")
        })
        .collect()
}

/// Each group's leader as `m` sees it, once every group has one among `among`.
fn leaders(m: &Momd, among: &[u64]) -> Option<Vec<u64>> {
    let st = status(m)?;
    let groups = st["groups"].as_array()?;
    if groups.len() != 1 + GROUPS as usize {
        return None;
    }
    let ls: Vec<u64> = groups.iter().filter_map(|g| g["leader"].as_u64()).collect();
    (ls.len() == groups.len() && ls.iter().all(|l| among.contains(l))).then_some(ls)
}

/// Three nodes of cluster `g`, once every group has a leader among them: the nodes, and
/// each group's leader (meta, then the data groups).
fn three_nodes() -> (Vec<Momd>, Vec<u64>) {
    three_nodes_with(None)
}

/// [`three_nodes`], one of them (id, variable, value) with more in its environment.
fn three_nodes_with(more: Option<(u64, &str, &str)>) -> (Vec<Momd>, Vec<u64>) {
    let (list, addrs) = peer_list(3);
    let nodes: Vec<Momd> = (1..=3u64)
        .map(|id| {
            let env: Vec<(&str, &str)> = more
                .iter()
                .filter(|(node, _, _)| *node == id)
                .map(|(_, k, v)| (*k, *v))
                .collect();
            start_node(id, &addrs[id as usize - 1], &list, &env)
        })
        .collect();
    let ls = poll(Duration::from_secs(30), "a leader in every group", || {
        leaders(&nodes[0], &[1, 2, 3])
    });
    (nodes, ls)
}

fn publish(m: &Momd, topic: &str, from: u64, n: u64) {
    let input: Vec<u8> = (from..from + n)
        .flat_map(|i| format!("{topic}-{i}\n").into_bytes())
        .collect();
    m.ctl_ok(&["publish", topic, "-q"], Some(&input));
}

/// The payloads of `topic` on `m`, in seq order, once it holds `want` (seqs 1..=want).
fn payloads(m: &Momd, topic: &str, want: u64) -> Option<Vec<String>> {
    let got = json_messages(m, topic, want as usize)?;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g["seq"].as_u64(), Some(i as u64 + 1), "{topic}: {g}");
    }
    Some(
        got.iter()
            .map(|g| g["payload"].as_str().unwrap_or_default().to_string())
            .collect(),
    )
}

/// `n` messages of `keys` in turn, as `publish --json-input` reads them: payload `KEY I`,
/// key `KEY`.
fn keyed_input(keys: &[&str], n: usize) -> String {
    (0..n)
        .map(|i| {
            let k = keys[i % keys.len()];
            format!("{{\"payload\":\"{k} {i}\",\"key\":\"{k}\"}}\n")
        })
        .collect()
}

/// The `n` messages of partitioned `topic` on `m` (from [`keyed_input`]), once it has them
/// all: each key's in one partition, in the order published, each once. Returns each
/// key's partition.
fn keyed_partitions(m: &Momd, topic: &str, keys: &[&str], n: usize) -> BTreeMap<String, String> {
    let got = poll(Duration::from_secs(30), "every message", || {
        json_messages(m, topic, n)
    });
    let mut by_key: BTreeMap<String, (String, Vec<u64>)> = BTreeMap::new();
    for g in &got {
        let (k, i) = g["payload"].as_str().unwrap().split_once(' ').unwrap();
        let t = g["topic"].as_str().unwrap().to_string();
        let e = by_key
            .entry(k.to_string())
            .or_insert_with(|| (t.clone(), Vec::new()));
        assert_eq!(e.0, t, "{k}: one partition for one key");
        e.1.push(i.parse().unwrap());
    }
    assert_eq!(by_key.len(), keys.len());
    for (k, (_, seen)) in &by_key {
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(seen, &sorted, "{k}: in the order published");
        assert_eq!(seen.len(), n / keys.len(), "{k}: each message once");
    }
    by_key.into_iter().map(|(k, (t, _))| (k, t)).collect()
}

fn expected(topic: &str, n: u64) -> Vec<String> {
    (1..=n).map(|i| format!("{topic}-{i}")).collect()
}

#[test]
fn topics_spread_over_data_groups_are_served_everywhere_and_survive_a_group_leaders_death() {
    let (mut nodes, ls) = three_nodes();
    let st = status(&nodes[0]).expect("status");
    let names: Vec<&str> = st["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["meta", "data.0", "data.1", "data.2"]);
    // Each node leads one data group: each formed the group it is the preferred leader of.
    let data_leaders: BTreeSet<u64> = ls[1..].iter().copied().collect();
    assert_eq!(
        data_leaders.len(),
        3,
        "the data groups' leaders spread: {ls:?}"
    );

    // Publishes through node 1 to a topic of each group; read on node 3.
    let ts = topics();
    for t in &ts {
        publish(&nodes[0], t, 1, 30);
    }
    for t in &ts {
        let got = poll(Duration::from_secs(30), "every message on node 3", || {
            payloads(&nodes[2], t, 30)
        });
        assert_eq!(got, expected(t, 30), "{t} on node 3");
    }

    // The leader of group data.1 dies; the others go on through the other nodes.
    let victim = ls[2];
    nodes[victim as usize - 1].kill9();
    let alive: Vec<u64> = (1..=3).filter(|i| *i != victim).collect();
    let via = alive[0] as usize - 1;
    // Many entries in every group meanwhile: each group's log is purged past the dead node.
    let mut n = 30;
    for _ in 0..70 {
        for t in &ts {
            publish(&nodes[via], t, n + 1, 2);
        }
        n += 2;
    }
    for id in &alive {
        for t in &ts {
            let got = poll(
                Duration::from_secs(30),
                "every message on the survivors",
                || payloads(&nodes[*id as usize - 1], t, n),
            );
            assert_eq!(got, expected(t, n), "{t} on node {id}");
        }
    }
    let logs: String = alive
        .iter()
        .map(|id| nodes[*id as usize - 1].stderr())
        .collect();
    assert!(
        logs.contains("data group snapshot built"),
        "the groups took snapshots"
    );

    // Back on its data dir, it catches up every group (from their snapshots) and serves all.
    nodes[victim as usize - 1].restart();
    for t in &ts {
        let got = poll(Duration::from_secs(60), "the dead node caught up", || {
            payloads(&nodes[victim as usize - 1], t, n)
        });
        assert_eq!(got, expected(t, n), "{t} on node {victim}");
    }
    let log = nodes[victim as usize - 1].stderr();
    assert!(
        log.contains("data group snapshot installed"),
        "node {victim} caught up from snapshots: {log}"
    );
    // And it goes on: a publish through it reaches the others.
    publish(&nodes[victim as usize - 1], &ts[0], n + 1, 1);
    for id in 1..=3u64 {
        let got = poll(Duration::from_secs(30), "the last one everywhere", || {
            payloads(&nodes[id as usize - 1], &ts[0], n + 1)
        });
        assert_eq!(got, expected(&ts[0], n + 1), "node {id}");
    }

    // Every node killed at once and started again: each group goes on from what its
    // node's store says it applied, and every topic reads back whole, then takes more.
    for m in nodes.iter_mut() {
        m.kill9();
    }
    for m in nodes.iter_mut() {
        m.restart();
    }
    poll(
        Duration::from_secs(30),
        "a leader in every group again",
        || leaders(&nodes[0], &[1, 2, 3]),
    );
    for t in &ts {
        publish(&nodes[1], t, if *t == ts[0] { n + 2 } else { n + 1 }, 1);
    }
    for id in 1..=3u64 {
        for t in &ts {
            let want = if *t == ts[0] { n + 2 } else { n + 1 };
            let got = poll(
                Duration::from_secs(30),
                "everything after the restart",
                || payloads(&nodes[id as usize - 1], t, want),
            );
            assert_eq!(got, expected(t, want), "{t} on node {id} after the restart");
        }
    }
}

#[test]
fn a_topic_change_goes_to_its_group_and_a_queue_is_refused_with_a_reason() {
    let (nodes, _) = three_nodes();
    // A limit set through node 2 on each group's topic trims every node's copy alike.
    for t in topics() {
        publish(&nodes[0], &t, 1, 20);
        nodes[1].ctl_ok(&["topic", "set", &t, "--max-msgs", "5"], None);
        for m in &nodes {
            let info = poll(Duration::from_secs(30), "the limit everywhere", || {
                let out = m.ctl(&["topic", "info", &t, "--json"], None);
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                (v["messages"].as_u64()? == 5).then_some(v)
            });
            assert_eq!(info["first_seq"].as_u64(), Some(16), "{t}: {info}");
        }
    }
    // Not yet across groups: queues. Refused with a reason, and nothing is half done.
    let out = nodes[0].ctl(&["queue", "create", "jobs", "--bind", "grp.>"], None);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("several data groups"), "{out:?}");
    let out = nodes[2].ctl(&["queue", "info", "jobs"], None);
    assert_ne!(out.code, 0, "no queue was made: {out:?}");
}

/// `topic info NAME --json` on `m`, if it has the topic.
fn info(m: &Momd, topic: &str) -> Option<Value> {
    let out = m.ctl(&["topic", "info", topic, "--json"], None);
    (out.code == 0).then(|| serde_json::from_slice(&out.stdout).ok())?
}

#[test]
fn a_partitioned_topics_partitions_spread_over_the_groups_and_requests_on_it_reach_them_all() {
    let (nodes, _) = three_nodes();
    // Made through node 1: six partitions, in all three groups.
    let out = nodes[0].ctl_ok(
        &[
            "topic",
            "create",
            "clicks",
            "--partitions",
            "6",
            "--replicas",
            "3",
            "--json",
        ],
        None,
    );
    let made: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(made["partitions"].as_u64(), Some(6), "{made}");
    let placed: BTreeSet<u64> = (0..6).map(|p| group_of_partition("clicks", p)).collect();
    assert_eq!(placed.len(), 3, "the partitions spread over every group");
    // Sent again, answered as the first; partitioned otherwise, refused.
    nodes[1].ctl_ok(&["topic", "create", "clicks", "--partitions", "6"], None);
    let out = nodes[1].ctl(&["topic", "create", "clicks", "--partitions", "4"], None);
    assert_ne!(out.code, 0, "{out:?}");
    for m in &nodes {
        for p in 0..6 {
            let t = format!("clicks.{p}");
            let i = poll(
                Duration::from_secs(30),
                "every partition on every node",
                || info(m, &t),
            );
            assert_eq!(i["replicas"].as_u64(), Some(3), "{t}: {i}");
        }
    }
    // Keyed messages published through node 2: each key's go to one partition, in order.
    let keys = ["ana", "bo", "cy", "dee", "ed", "flo", "gus", "hal"];
    let input = keyed_input(&keys, 240);
    nodes[1].ctl_ok(
        &["publish", "clicks", "--json-input", "-q"],
        Some(input.as_bytes()),
    );
    // Read whole from node 3.
    let parts = keyed_partitions(&nodes[2], "clicks", &keys, 240);
    let groups: BTreeSet<u64> = parts
        .values()
        .map(|t| {
            let p: u32 = t.rsplit_once('.').unwrap().1.parse().unwrap();
            group_of_partition("clicks", p)
        })
        .collect();
    assert!(
        groups.len() >= 2,
        "the keys' partitions are in several groups: {groups:?}"
    );
    let i = info(&nodes[2], "clicks").unwrap();
    assert_eq!(i["messages"].as_u64(), Some(240), "{i}");
    // Names under it that are not its partitions are refused, on any node.
    for (args, what) in [
        (
            &["publish", "clicks.6", "x"][..],
            "a name past its partitions",
        ),
        (&["topic", "create", "clicks.x"][..], "a name under it"),
        (
            &["topic", "create", "clicks.1", "--partitions", "2"][..],
            "a partition partitioned",
        ),
        (
            &["topic", "rm", "clicks.2"][..],
            "a partition removed alone",
        ),
    ] {
        let out = nodes[2].ctl(args, None);
        assert_eq!(out.code, 1, "{what}: {out:?}");
    }
    assert!(info(&nodes[0], "clicks.6").is_none());
    // A limit set through node 3 reaches every partition, in every group, on every node.
    nodes[2].ctl_ok(&["topic", "set", "clicks", "--max-msgs", "10"], None);
    let mut kept = 0;
    for p in 0..6 {
        let t = format!("clicks.{p}");
        for m in &nodes {
            let i = poll(
                Duration::from_secs(30),
                "the limit on every partition",
                || info(m, &t).filter(|i| i["limits"]["max_msgs"].as_u64() == Some(10)),
            );
            assert!(i["messages"].as_u64().unwrap() <= 10, "{t}: {i}");
        }
        kept += info(&nodes[0], &t).unwrap()["messages"].as_u64().unwrap();
    }
    assert!(kept > 0);
    // A purge through node 1 counts every partition's messages.
    let out = nodes[0].ctl_ok(&["topic", "purge", "clicks", "--json"], None);
    let purged: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(purged["purged"].as_u64(), Some(kept), "{purged}");
    // Removed through node 2: the partitions go with it, everywhere.
    nodes[1].ctl_ok(&["topic", "rm", "clicks"], None);
    for m in &nodes {
        poll(Duration::from_secs(30), "every partition gone", || {
            let gone = (0..6).all(|p| info(m, &format!("clicks.{p}")).is_none());
            (gone && info(m, "clicks").is_none()).then_some(())
        });
    }
}

/// The group of partition `p` of `base`: the one after partition `p - 1`'s (partition 0's
/// is the parent's).
fn group_of_partition(base: &str, p: u32) -> u64 {
    let h = base.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h.wrapping_add(u64::from(p)) % GROUPS
}

#[test]
fn repliers_on_two_nodes_share_the_requests_of_every_group_each_answered_once() {
    let (nodes, _) = three_nodes();
    // A request topic in each group.
    let svcs: Vec<String> = (0..GROUPS)
        .map(|g| {
            (0..100)
                .map(|i| format!("svc.s{i}"))
                .find(|n| group_of(n) == g)
                .expect("a name for every group")
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut repliers = Vec::new();
    for node in [1u64, 2] {
        let log = dir.path().join(format!("r{node}"));
        let script = format!(
            "p=$(cat); echo \"$p\" >> '{}'; printf 'r{node}'",
            log.display()
        );
        let r = Collector::new(
            nodes[node as usize - 1].spawn_ctl(&["reply", "svc.*", "--", "sh", "-c", &script]),
        );
        repliers.push((r, log));
    }
    let handled = |log: &std::path::Path| -> usize {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let ask = |svc: &str, i: usize| {
        nodes[2].ctl_timeout(
            &["request", svc, &format!("q{i}"), "--timeout", "10s"],
            None,
            Duration::from_secs(30),
        )
    };
    // Until both repliers' counts are in every group's table, a node hands its own
    // members what it has (a request may be answered twice): wait for one answer each.
    for svc in &svcs {
        poll(
            Duration::from_secs(20),
            "both repliers in the group",
            || {
                let before: usize = repliers.iter().map(|(_, l)| handled(l)).sum();
                let out = ask(svc, 0);
                assert_eq!(out.code, 0, "{out:?}");
                std::thread::sleep(Duration::from_millis(300));
                let after: usize = repliers.iter().map(|(_, l)| handled(l)).sum();
                (after == before + 1).then_some(())
            },
        );
    }
    for (_, log) in &repliers {
        std::fs::write(log, "").expect("clearing the log");
    }
    let mut answered_by = [0usize; 2];
    let mut asked = 0;
    for i in 1..=20 {
        for svc in &svcs {
            let out = ask(svc, i);
            assert_eq!(out.code, 0, "request {i} to {svc}: {out:?}");
            asked += 1;
            match out.stdout_str().trim_end() {
                "r1" => answered_by[0] += 1,
                "r2" => answered_by[1] += 1,
                other => panic!("request {i} to {svc}: reply {other:?}"),
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let done: usize = repliers.iter().map(|(_, l)| handled(l)).sum();
    assert_eq!(done, asked, "each request handled once: {answered_by:?}");
    assert!(
        answered_by.iter().all(|n| *n > 0),
        "both repliers had a share: {answered_by:?}"
    );
}

/// A node behind in the group of a topic made partitioned through another node does not
/// know it is partitioned: a publish to it through that node goes whole to the topic's
/// group, is refused there, and is cut up once the node knows; the connection's later
/// publishes to it wait behind, so each key's messages keep their order.
#[test]
fn a_publish_through_a_node_that_does_not_yet_know_the_topic_is_partitioned_is_cut_up_in_order() {
    let topic = "views";
    let pause = format!("{}:700", group_of(topic));
    let (nodes, _) = three_nodes_with(Some((2, "MOMD_APPLY_PAUSE", &pause)));
    nodes[0].ctl_ok(&["topic", "create", topic, "--partitions", "6"], None);
    assert!(
        info(&nodes[1], topic).is_none(),
        "node 2 applies the topic's group late"
    );
    let keys = ["ana", "bo", "cy", "dee", "ed", "flo"];
    let input = keyed_input(&keys, 120);
    // One message a request, many in flight: later ones wait behind the first.
    let out = nodes[1].ctl_ok(
        &["publish", topic, "--json-input", "--json", "--batch", "1"],
        Some(input.as_bytes()),
    );
    let acks: Vec<Value> = lines(&out)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(acks.len(), 120, "every message acknowledged");
    assert!(
        acks.iter().all(|a| a["partition"].is_u64()),
        "{:?}",
        acks[0]
    );
    keyed_partitions(&nodes[2], topic, &keys, 120);
    assert!(info(&nodes[0], &format!("{topic}.0")).is_some());
    assert!(info(&nodes[0], topic).unwrap()["partitions"].as_u64() == Some(6));
}
