//! Queues and topic changes in cluster mode, end to end over three real momd processes: a
//! topic's limits, purge and removal made on one node hold on every node; a queue made on
//! one node is served on every node, its consumers compete across nodes, acks and dead letters
//! agree everywhere, and a worker stream rides over a kill -9 of the data group's leader
//! with every message handled and nothing left behind. A restarted node gives back what its
//! consumers held. A node that was stopped while a message was published, delivered and
//! dead-lettered applies all three at once and dead-letters it as the others did. Hard
//! retention limits cut the same messages on every node, and queues count them dropped
//! alike.

mod common;

use std::time::Duration;

use common::cluster::{poll, ProxiedTrio, TRIO};
use common::*;

const WAIT: Duration = Duration::from_secs(60);

/// Formed, every node announced, and the data group led: its leader.
fn formed(trio: &ProxiedTrio) -> u64 {
    poll(WAIT, "a formed cluster with a data leader", || {
        let st = trio.status(1)?;
        if !st.announced(&TRIO) || st.leader.is_none() {
            return None;
        }
        st.groups.get(1)?.leader
    })
}

/// `queue info --json` of `name` on node `id`, if it answered.
fn info(trio: &ProxiedTrio, id: u64, name: &str) -> Option<serde_json::Value> {
    let out = trio.node(id).ctl_timeout(
        &["queue", "info", name, "--json"],
        None,
        Duration::from_secs(10),
    );
    (out.code == 0).then(|| serde_json::from_slice(&out.stdout).ok())?
}

/// The queue's counters, as node `id` has them.
fn counters(trio: &ProxiedTrio, id: u64, name: &str) -> Option<[u64; 5]> {
    let q = info(trio, id, name)?;
    let n = |k: &str| q[k].as_u64();
    Some([
        n("ready")?,
        n("unacked")?,
        n("delivered")?,
        n("acked")?,
        n("dead_lettered")?,
    ])
}

/// The one dead letter of `queue`, the same on every node (seq, time, headers, payload).
fn same_dead_letter(trio: &ProxiedTrio, queue: &str) -> serde_json::Value {
    let dlq = format!("$dlq.{queue}");
    let letters: Vec<serde_json::Value> = TRIO
        .iter()
        .map(|id| {
            let out = trio.node(*id).ctl_ok(
                &[
                    "subscribe", &dlq, "--from", "all", "-n", "1", "--json", "--timeout", "10s",
                ],
                None,
            );
            let v = json_lines(&out);
            assert_eq!(v.len(), 1, "node {id}");
            let m = &v[0];
            serde_json::json!({
                "seq": m["seq"], "time": m["time"], "headers": m["headers"], "payload": m["payload"],
            })
        })
        .collect();
    assert!(letters.windows(2).all(|w| w[0] == w[1]), "{letters:?}");
    letters[0].clone()
}

/// Waits for every node of `ids` to have the same counters for the queue, and returns them.
fn agreed(trio: &ProxiedTrio, ids: &[u64], name: &str) -> [u64; 5] {
    poll(WAIT, "the nodes agreeing on the queue", || {
        let all: Vec<[u64; 5]> = ids
            .iter()
            .map(|id| counters(trio, *id, name))
            .collect::<Option<_>>()?;
        all.windows(2).all(|w| w[0] == w[1]).then(|| all[0])
    })
}

#[test]
fn a_queue_made_on_one_node_is_served_and_settled_on_every_node() {
    let trio = ProxiedTrio::start();
    formed(&trio);
    trio.node(1).ctl_ok(
        &[
            "queue", "create", "jobs", "--bind", "jobs.>", "--from", "all",
        ],
        None,
    );
    trio.node(2).ctl_ok(
        &["publish", "jobs.a", "-q"],
        Some(&numbered_lines("j", 1, 300)),
    );
    // Taken and acked through node 3, then node 1: in order, each once.
    let a = trio.node(3).ctl_ok(&["recv", "jobs", "-n", "100"], None);
    let b = trio.node(1).ctl_ok(&["recv", "jobs", "-n", "100"], None);
    let mut got = lines(&a);
    got.extend(lines(&b));
    let want: Vec<String> = (1..=200).map(|i| format!("j{i}")).collect();
    assert_eq!(got, want);
    assert_eq!(agreed(&trio, &TRIO, "jobs"), [100, 0, 200, 200, 0]);

    // A change made on one node holds on every node: purge on node 2.
    let out = trio.node(2).ctl(&["queue", "purge", "jobs"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("purged 100 "), "{out:?}");
    assert_eq!(agreed(&trio, &TRIO, "jobs"), [0, 0, 200, 200, 0]);

    // Consumers belong to their nodes; `queue info` and `queue ls` on any node count them all.
    let mut waiting: Vec<_> = [1, 2]
        .iter()
        .map(|id| trio.node(*id).spawn_ctl(&["recv", "jobs", "--follow"]))
        .collect();
    for id in TRIO {
        poll(WAIT, "both consumers counted", || {
            let q = info(&trio, id, "jobs")?;
            (q["consumers"].as_u64() == Some(2)).then_some(())
        });
        let out = trio.node(id).ctl_ok(&["queue", "ls", "--json"], None);
        let listed: serde_json::Value =
            serde_json::from_slice(&out).expect("queue ls --json is one object");
        assert_eq!(listed["name"], "jobs", "{listed}");
        assert_eq!(listed["consumers"], 2, "node {id}: {listed}");
    }
    for w in &mut waiting {
        let _ = w.kill();
        let _ = w.wait();
    }

    // A refusal comes back to the client that asked, from the node it asked.
    let out = trio.node(3).ctl(&["queue", "rm", "nosuch"], None);
    assert_eq!(out.code, 6, "{out:?}");

    // Deleted on node 3: gone everywhere.
    trio.node(3)
        .ctl_ok(&["queue", "rm", "jobs", "--force"], None);
    for id in TRIO {
        poll(WAIT, "the queue gone", || {
            let out = trio.node(id).ctl(&["queue", "info", "jobs"], None);
            (out.code == 6).then_some(())
        });
    }
}

#[test]
fn an_ack_deadline_passed_on_one_node_dead_letters_the_same_message_everywhere() {
    let trio = ProxiedTrio::start();
    formed(&trio);
    trio.node(1).ctl_ok(
        &[
            "queue",
            "create",
            "slow",
            "--bind",
            "slow.>",
            "--ack-wait",
            "1s",
            "--max-deliver",
            "1",
        ],
        None,
    );
    trio.node(1)
        .ctl_ok(&["publish", "slow.x", "-q"], Some(b"only\n"));
    // A worker on node 2 takes it and stops (SIGSTOP): it neither acks nor extends.
    let mut worker = trio
        .node(2)
        .spawn_ctl(&["recv", "slow", "--follow", "--exec", "--", "sleep", "60"]);
    poll(WAIT, "the message out with the worker", || {
        let c = counters(&trio, 1, "slow")?;
        (c[1] == 1).then_some(())
    });
    let pid = worker.id().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill");
    assert!(stopped.success());
    // The leader sees the deadline pass; every node dead-letters it, the same way.
    let c = poll(WAIT, "the message dead-lettered", || {
        let c = counters(&trio, 3, "slow")?;
        (c[4] == 1).then_some(c)
    });
    assert_eq!(c, [0, 0, 1, 0, 1]);
    assert_eq!(agreed(&trio, &TRIO, "slow"), c);
    let letter = same_dead_letter(&trio, "slow");
    assert_eq!(letter["headers"]["dlq-reason"], "ack_timeout");
    let _ = worker.kill();
    let _ = worker.wait();
}

#[test]
fn workers_on_every_node_ride_over_the_data_leaders_kill9_and_a_restart_gives_back_what_it_held() {
    let mut trio = ProxiedTrio::start();
    let dead = formed(&trio);
    let alive: Vec<u64> = TRIO.into_iter().filter(|i| *i != dead).collect();
    trio.node(alive[0])
        .ctl_ok(&["queue", "create", "work", "--bind", "work.>"], None);
    // One worker per node, competing for the queue.
    let workers: Vec<Collector> = TRIO
        .iter()
        .map(|id| {
            Collector::new(trio.node(*id).spawn_ctl(&[
                "recv",
                "work",
                "--follow",
                "--prefetch",
                "8",
            ]))
        })
        .collect();
    let n = 3000u64;
    trio.node(alive[1]).ctl_ok(
        &["publish", "work.a", "-q"],
        Some(&numbered_lines("w", 1, n / 2)),
    );
    poll(WAIT, "some of it handled", || {
        let done: usize = workers.iter().map(Collector::count).sum();
        (done > 200).then_some(())
    });
    trio.node_mut(dead).kill9();
    // Published on through a survivor, while the survivors elect a new leader.
    trio.node(alive[1]).ctl_ok(
        &["publish", "work.a", "-q"],
        Some(&numbered_lines("w", n / 2 + 1, n)),
    );
    let want: std::collections::BTreeSet<String> = (1..=n).map(|i| format!("w{i}")).collect();
    poll(Duration::from_secs(120), "every message handled", || {
        let seen: std::collections::BTreeSet<String> =
            workers.iter().flat_map(Collector::lines).collect();
        want.is_subset(&seen).then_some(())
    });
    // The old leader comes back; what its worker held (it died with the node) comes
    // back at its restart, and the survivors' workers finish the queue.
    trio.node_mut(dead).restart();
    let c = poll(Duration::from_secs(120), "the queue settled", || {
        let c = counters(&trio, alive[0], "work")?;
        (c[0] == 0 && c[1] == 0).then_some(c)
    });
    assert!(c[3] >= n, "every message acked: {c:?}");
    assert_eq!(agreed(&trio, &TRIO, "work"), c);
    let mut seen = Vec::new();
    let mut per = Vec::new();
    for w in workers {
        let (l, _) = w.kill();
        per.push(l.len());
        seen.extend(l);
    }
    let distinct: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(distinct, want, "nothing lost, nothing unknown");
    // At least once: a message is seen again only if the kill caught it before its ack.
    let again = seen.len() - distinct.len();
    assert!(again <= 200, "{again} seen twice (per worker {per:?})");
    assert!(
        per.iter().filter(|n| **n > 0).count() >= 2,
        "the workers shared the queue: {per:?}"
    );
}

#[test]
fn a_topic_changed_on_one_node_is_changed_on_every_node() {
    let trio = ProxiedTrio::start();
    formed(&trio);
    trio.node(1).ctl_ok(
        &["publish", "logs.a", "-q"],
        Some(&numbered_lines("l", 1, 50)),
    );
    // Limits set on node 2 trim every node's copy the same way.
    trio.node(2)
        .ctl_ok(&["topic", "set", "logs.a", "--max-msgs", "10"], None);
    let topic = |id: u64| -> Option<(u64, u64, u64, u64)> {
        let out = trio
            .node(id)
            .ctl(&["topic", "info", "logs.a", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some((
            v["first_seq"].as_u64()?,
            v["last_seq"].as_u64()?,
            v["messages"].as_u64()?,
            v["limits"]["max_msgs"].as_u64()?,
        ))
    };
    for id in TRIO {
        let t = poll(WAIT, "the limit applied", || {
            topic(id).filter(|t| t.2 == 10)
        });
        assert_eq!(t, (41, 50, 10, 10), "node {id}");
    }
    // Purged on node 3: empty everywhere, and the seqs go on.
    let out = trio.node(3).ctl(&["topic", "purge", "logs.a"], None);
    assert_eq!(out.code, 0, "{out:?}");
    trio.node(1)
        .ctl_ok(&["publish", "logs.a", "-q"], Some(b"after\n"));
    for id in TRIO {
        let t = poll(WAIT, "the purge applied", || {
            topic(id).filter(|t| t.1 == 51)
        });
        assert_eq!(t, (51, 51, 1, 10), "node {id}");
    }
    // Removed on node 1: gone everywhere; a refusal goes to the client that asked.
    trio.node(1).ctl_ok(&["topic", "rm", "logs.a"], None);
    for id in TRIO {
        poll(WAIT, "the topic gone", || {
            let out = trio.node(id).ctl(&["topic", "info", "logs.a"], None);
            (out.code == 6).then_some(())
        });
    }
    let out = trio.node(2).ctl(&["topic", "rm", "logs.a"], None);
    assert_eq!(out.code, 6, "{out:?}");
}

#[test]
fn a_node_that_applies_a_publish_its_delivery_and_its_dead_letter_at_once_dead_letters_it_too() {
    let trio = ProxiedTrio::start();
    let leader = formed(&trio);
    let away = TRIO.into_iter().find(|i| *i != leader).expect("a follower");
    let live = TRIO
        .into_iter()
        .find(|i| *i != leader && *i != away)
        .expect("the other follower");
    trio.node(leader).ctl_ok(
        &[
            "queue",
            "create",
            "once",
            "--bind",
            "once.>",
            "--ack-wait",
            "1s",
            "--max-deliver",
            "1",
        ],
        None,
    );
    agreed(&trio, &TRIO, "once");
    // While one follower is stopped, a message is published, delivered, and dead-lettered
    // at its ack deadline: that follower then applies all three entries together.
    trio.node(away).pause();
    trio.node(live)
        .ctl_ok(&["publish", "once.x", "-q"], Some(b"late\n"));
    let mut worker = trio
        .node(live)
        .spawn_ctl(&["recv", "once", "--follow", "--exec", "--", "sleep", "60"]);
    poll(WAIT, "the message out with the worker", || {
        let c = counters(&trio, leader, "once")?;
        (c[1] == 1).then_some(())
    });
    // The worker stops (SIGSTOP): it no longer extends, and the deadline passes.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &worker.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let c = poll(WAIT, "the message dead-lettered", || {
        let c = counters(&trio, leader, "once")?;
        (c[4] == 1).then_some(c)
    });
    let _ = worker.kill();
    let _ = worker.wait();
    trio.node(away).resume();
    assert_eq!(agreed(&trio, &TRIO, "once"), c);
    let dropped = |id: u64| info(&trio, id, "once").and_then(|q| q["dropped"].as_u64());
    for id in TRIO {
        assert_eq!(dropped(id), Some(0), "node {id} lost the message instead");
    }
    same_dead_letter(&trio, "once");
}

#[test]
fn hard_limits_cut_the_same_messages_on_every_node_and_queues_count_them_dropped_alike() {
    let trio = ProxiedTrio::start();
    formed(&trio);
    trio.node(1)
        .ctl_ok(&["queue", "create", "hq", "--bind", "hard.>"], None);
    let payloads: String = (1..=60).map(|i| format!("payload-{i:03}\n")).collect();
    trio.node(1)
        .ctl_ok(&["publish", "hard.b", "-q"], Some(payloads.as_bytes()));
    let topic = |id: u64, name: &str| -> Option<(u64, u64, u64)> {
        let out = trio.node(id).ctl(&["topic", "info", name, "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some((
            v["first_seq"].as_u64()?,
            v["messages"].as_u64()?,
            v["bytes"].as_u64()?,
        ))
    };
    // A hard size limit set on node 2 cuts into what the queue has not delivered yet, the
    // same messages on every node.
    trio.node(2)
        .ctl_ok(&["topic", "set", "hard.b", "--hard-max-bytes", "110"], None);
    let b = poll(WAIT, "the hard size limit applied everywhere", || {
        let all: Vec<(u64, u64, u64)> = TRIO
            .iter()
            .map(|id| topic(*id, "hard.b"))
            .collect::<Option<_>>()?;
        (all.iter().all(|t| t.1 < 60) && all.windows(2).all(|w| w[0] == w[1])).then(|| all[0])
    });
    assert!(b.1 > 0 && b.2 <= 110, "{b:?}");
    assert_eq!(b.0, 61 - b.1, "{b:?}");
    // Publishes past the limit are cut at once, at the same point.
    trio.node(3)
        .ctl_ok(&["publish", "hard.b", "-q"], Some(payloads.as_bytes()));
    let b2 = poll(WAIT, "the new messages cut everywhere", || {
        let all: Vec<(u64, u64, u64)> = TRIO
            .iter()
            .map(|id| topic(*id, "hard.b"))
            .collect::<Option<_>>()?;
        (all[0].0 > b.0 && all.windows(2).all(|w| w[0] == w[1])).then(|| all[0])
    });
    assert_eq!(b2.0, 121 - b2.1, "{b2:?}");
    // A hard age limit: the leader proposes the cut; every node empties the topic.
    trio.node(3)
        .ctl_ok(&["topic", "set", "hard.c", "--hard-max-age", "2s"], None);
    trio.node(1)
        .ctl_ok(&["publish", "hard.c", "-q"], Some(b"a\nb\nc\nd\ne\n"));
    for id in TRIO {
        let c = poll(WAIT, "the hard age limit applied", || {
            topic(id, "hard.c").filter(|t| t.1 == 0)
        });
        assert_eq!(c, (6, 0, 0), "node {id}");
    }
    // The queue, drained from node 3, counts what it lost as dropped, alike everywhere.
    let left = b2.1.to_string();
    let out = trio.node(3).ctl_ok(&["recv", "hq", "-n", &left], None);
    assert_eq!(lines(&out).len() as u64, b2.1);
    let c = agreed(&trio, &TRIO, "hq");
    assert_eq!(c, [0, 0, b2.1, b2.1, 0]);
    let dropped = |id: u64| info(&trio, id, "hq").and_then(|q| q["dropped"].as_u64());
    let all: Vec<Option<u64>> = TRIO.iter().map(|id| dropped(*id)).collect();
    let want = (b2.0 - 1) + 5;
    assert_eq!(all, vec![Some(want); 3]);
}
