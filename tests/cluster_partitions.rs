//! Partitioned topics in a cluster: created through one node, served by every node, each
//! key's messages in order in its partition through a kill -9 of the data group's leader.

mod common;

use std::time::Duration;

use common::cluster::{leader, poll, ProxiedTrio, TRIO};
use common::partitions::{check_partitioned, keyed_input, partition_of, read_json};
use serde_json::Value;

#[test]
fn a_partitioned_topic_made_through_one_node_is_served_by_all_through_a_leader_kill() {
    let mut trio = ProxiedTrio::start();
    poll(Duration::from_secs(20), "a leader", || {
        leader(trio.node(1), &TRIO)
    });
    // Each of the three voters keeps a copy of every message: four cannot be had.
    let out = trio.node(1).ctl(
        &[
            "topic",
            "create",
            "clicks",
            "--partitions",
            "3",
            "--replicas",
            "4",
        ],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("3 voting members"), "{out:?}");
    let made: Value = serde_json::from_slice(&trio.node(1).ctl_ok(
        &[
            "topic",
            "create",
            "clicks",
            "--partitions",
            "3",
            "--replicas",
            "3",
            "--json",
        ],
        None,
    ))
    .expect("json");
    assert_eq!(
        (made["partitions"].as_u64(), made["replicas"].as_u64()),
        (Some(3), Some(3))
    );
    // Node 3 knows it as partitioned once it applied the create.
    poll(Duration::from_secs(10), "clicks on node 3", || {
        let out = trio
            .node(3)
            .ctl(&["topic", "info", "clicks", "--json"], None);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["partitions"] == 3).then_some(())
    });

    let keys: Vec<String> = (0..9).map(|k| format!("k{k}")).collect();
    let acks = common::json_lines(&trio.node(2).ctl_ok(
        &[
            "publish",
            "clicks",
            "--json-input",
            "--json",
            "--batch",
            "20",
        ],
        Some(keyed_input(&keys, 0, 90).as_bytes()),
    ));
    assert_eq!(acks.len(), 90);
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(
            a["partition"],
            partition_of(&keys[i % keys.len()], 3),
            "{a}"
        );
    }

    // The data group's leader dies; the publishes go on through the others.
    let st = common::cluster::status(trio.node(1)).expect("status");
    let data_leader = st["groups"][1]["leader"].as_u64().expect("a data leader");
    trio.node_mut(data_leader).kill9();
    let alive: Vec<u64> = TRIO.into_iter().filter(|i| *i != data_leader).collect();
    let servers = alive
        .iter()
        .map(|i| trio.node(*i).addr())
        .collect::<Vec<_>>()
        .join(",");
    let out = common::momctl(
        &["-s", &servers, "publish", "clicks", "--json-input", "-q"],
        Some(keyed_input(&keys, 90, 150).as_bytes()),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 0, "{out:?}");

    // Every survivor holds all 150, each key in order in its partition, seqs 1, 2, …
    let mut seen = Vec::new();
    for id in &alive {
        let msgs = poll(Duration::from_secs(20), "150 messages", || {
            let v = read_json(trio.node(*id), "clicks", 150);
            (v.len() == 150).then_some(v)
        });
        let per_key = check_partitioned(&msgs, 3);
        let n: usize = per_key.values().map(Vec::len).sum();
        assert_eq!(n, 150);
        seen.push(per_key);
    }
    assert_eq!(seen[0], seen[1], "the survivors differ");
    // The killed node comes back with the same.
    trio.node_mut(data_leader).restart();
    let back = poll(
        Duration::from_secs(30),
        "150 messages on the restarted node",
        || {
            let out = trio.node(data_leader).ctl(
                &[
                    "subscribe",
                    "clicks",
                    "--from",
                    "all",
                    "-n",
                    "150",
                    "--timeout",
                    "5s",
                    "--json",
                ],
                None,
            );
            let v = common::json_lines(&out.stdout);
            (v.len() == 150).then_some(v)
        },
    );
    assert_eq!(check_partitioned(&back, 3), seen[0]);
}
