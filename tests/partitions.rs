//! Partitioned topics on one node, through the real momctl: `topic create --partitions`,
//! keys choosing partitions (and stored with the messages, across a kill -9), per-partition
//! seqs and order, subscribing and queueing the whole topic or one partition, and what is
//! refused.

mod common;

use std::time::Duration;

use common::partitions::{check_partitioned, keyed_input, partition_of, read_json};
use common::*;
use serde_json::Value;

#[test]
fn a_partitioned_topic_keeps_each_keys_messages_in_order_in_its_partition_across_a_kill() {
    let mut m = Momd::start();
    let info: Value = serde_json::from_slice(&m.ctl_ok(
        &["topic", "create", "clicks", "--partitions", "4", "--json"],
        None,
    ))
    .expect("json");
    assert_eq!(info["partitions"], 4, "{info}");
    // Created again as it is: answered the same; otherwise refused.
    m.ctl_ok(&["topic", "create", "clicks", "--partitions", "4"], None);
    let again = m.ctl(&["topic", "create", "clicks", "--partitions", "3"], None);
    assert_eq!(again.code, 7, "{again:?}");
    assert!(again.stderr.contains("4 partition"), "{again:?}");
    // `topic ls` lists the partitions as topics; `topic info` shows the topic, then them.
    let ls = String::from_utf8_lossy(&m.ctl_ok(&["topic", "ls", "clicks.*"], None)).into_owned();
    let info = String::from_utf8_lossy(&m.ctl_ok(&["topic", "info", "clicks"], None)).into_owned();
    assert!(info.contains("partitions: 4"), "{info}");
    for p in 0..4 {
        assert!(ls.contains(&format!("clicks.{p} ")), "{ls}");
        assert!(info.contains(&format!("\nclicks.{p} ")), "{info}");
    }

    // 300 messages of 12 keys from stdin, in batches mixing keys; each ack names its
    // message's partition.
    let keys: Vec<String> = (0..12).map(|k| format!("user-{k}")).collect();
    let input = keyed_input(&keys, 0, 300);
    let acks = json_lines(&m.ctl_ok(
        &[
            "publish",
            "clicks",
            "--json-input",
            "--json",
            "--batch",
            "50",
        ],
        Some(input.as_bytes()),
    ));
    assert_eq!(acks.len(), 300);
    for (i, a) in acks.iter().enumerate() {
        let key = &keys[i % keys.len()];
        assert_eq!(a["partition"], partition_of(key, 4), "{a}");
        assert_eq!(a["topic"], "clicks");
    }
    // Sent again (a publisher's retry), mixed with new ones: the repeats are duplicates,
    // each answered with the partition and seq it got the first time.
    let again = keyed_input(&keys, 290, 310);
    let out = m.ctl(
        &[
            "publish",
            "clicks",
            "--json-input",
            "--json",
            "--batch",
            "8",
        ],
        Some(again.as_bytes()),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("is a duplicate"), "{out:?}");
    let redone = json_lines(&out.stdout);
    assert_eq!(redone.len(), 20);
    for (j, a) in redone.iter().enumerate() {
        let i = 290 + j;
        if i < 300 {
            assert_eq!(a["duplicate"], true, "{a}");
            assert_eq!(
                (&a["partition"], &a["seq"]),
                (&acks[i]["partition"], &acks[i]["seq"])
            );
        } else {
            assert_eq!(a["duplicate"], false, "{a}");
            assert_eq!(
                a["partition"],
                partition_of(&keys[i % keys.len()], 4),
                "{a}"
            );
        }
    }
    // --key on the command line; a publish without a key goes to some partition whole.
    m.ctl_ok(
        &["publish", "clicks", "--key", "user-3", "user-3:1000", "-q"],
        None,
    );
    let unkeyed = json_lines(&m.ctl_ok(&["publish", "clicks", "a", "b", "c", "--json"], None));
    let parts: Vec<&Value> = unkeyed.iter().map(|a| &a["partition"]).collect();
    assert!(parts.iter().all(|p| *p == parts[0]), "{unkeyed:?}");

    let keyed = read_json(&m, "clicks.*", 314)
        .into_iter()
        .filter(|v| v["key"].is_string())
        .collect::<Vec<_>>();
    assert_eq!(keyed.len(), 311);
    let before = check_partitioned(&keyed, 4);
    assert_eq!(before["user-3"].last(), Some(&1000));
    let info = m.topic_info("clicks");
    assert_eq!(
        (info["messages"].as_u64(), info["partitions"].as_u64()),
        (Some(314), Some(4))
    );

    // Keys are stored: after a kill -9 everything reads back the same.
    m.kill9();
    m.restart();
    let keyed_after: Vec<Value> = read_json(&m, "clicks", 314)
        .into_iter()
        .filter(|v| v["key"].is_string())
        .collect();
    assert_eq!(check_partitioned(&keyed_after, 4), before);
    // `%k` prints the key.
    let one = m.ctl_ok(
        &[
            "subscribe",
            "clicks.0",
            "--from",
            "all",
            "-n",
            "1",
            "--format",
            "%t %k\n",
        ],
        None,
    );
    let line = String::from_utf8_lossy(&one).into_owned();
    assert!(line.starts_with("clicks.0 user-"), "{line}");
}

#[test]
fn a_queue_bound_to_a_partitioned_topic_gets_every_partition_and_names_are_guarded() {
    let m = Momd::start();
    m.ctl_ok(&["topic", "create", "jobs", "--partitions", "3"], None);
    m.ctl_ok(&["queue", "create", "work", "--bind", "jobs"], None);
    let mut input = String::new();
    for i in 0..30 {
        input.push_str(&format!(
            "{{\"payload\":\"k{}:{i}\",\"key\":\"k{}\"}}\n",
            i % 5,
            i % 5
        ));
    }
    m.ctl_ok(
        &["publish", "jobs", "--json-input", "-q"],
        Some(input.as_bytes()),
    );
    let got = m.ctl_ok(
        &[
            "recv",
            "work",
            "-n",
            "30",
            "--timeout",
            "20s",
            "--format",
            "%t %p\n",
        ],
        None,
    );
    let got = lines(&got);
    assert_eq!(got.len(), 30, "{got:?}");
    let topics: std::collections::BTreeSet<&str> =
        got.iter().filter_map(|l| l.split(' ').next()).collect();
    assert!(topics.iter().all(|t| t.starts_with("jobs.")), "{topics:?}");
    assert!(topics.len() > 1, "one partition only: {topics:?}");

    // Names under a partitioned topic are its partitions only; a partition is removed
    // with its topic, not alone.
    for bad in ["jobs.3", "jobs.x", "jobs.0.a"] {
        let out = m.ctl(&["publish", bad, "x"], None);
        assert_eq!(out.code, 1, "{bad}: {out:?}");
        assert!(out.stderr.contains("partitioned topic \"jobs\""), "{out:?}");
    }
    let out = m.ctl(&["topic", "rm", "jobs.1"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("partition of"), "{out:?}");
    let out = m.ctl(
        &[
            "topic",
            "create",
            "logs",
            "--partitions",
            "2",
            "--replicas",
            "3",
        ],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("cluster mode"), "{out:?}");
    let out = m.ctl(&["topic", "create", "jobs.1", "--partitions", "2"], None);
    assert_eq!(out.code, 1, "{out:?}");

    // Purged and removed as one.
    let out = m.ctl_ok(&["topic", "purge", "jobs", "--force", "--json"], None);
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["purged"], 30, "{v}");
    m.ctl_ok(&["topic", "rm", "jobs", "--force"], None);
    let ls = m.ctl_ok(&["topic", "ls", "jobs.>", "--json"], None);
    assert!(
        json_lines(&ls).is_empty(),
        "{}",
        String::from_utf8_lossy(&ls)
    );
    wait_for(Duration::from_secs(5), "jobs gone", || {
        (m.ctl(&["topic", "info", "jobs"], None).code == 6).then_some(())
    });
}
