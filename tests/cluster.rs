//! Cluster mode end to end: three real momd processes (peers on 127.0.0.1–3), driven by
//! the real momctl: forming, electing, surviving a kill -9 of the leader, rejoining, and
//! refusing data dirs and nodes that are not who they say.

mod common;

use std::time::Duration;

use common::cluster::{all_lines, cluster_args, leader, peer_list, poll, status};
use common::*;
use serde_json::Value;

/// Three nodes of cluster `t`: node i's peer listener on 127.0.0.i.
struct Trio {
    nodes: Vec<Momd>,
}

impl Trio {
    fn start() -> Trio {
        let (list, addrs) = peer_list(3);
        let nodes = (1..=3u64)
            .map(|id| {
                let args = cluster_args(id, &addrs[id as usize - 1], &list);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Momd::start_with(&args)
            })
            .collect();
        Trio { nodes }
    }

    /// Started, with a leader that every node has heard of.
    fn started() -> Trio {
        let trio = Trio::start();
        poll(Duration::from_secs(20), "a leader", || {
            leader(trio.node(1), &[1, 2, 3])
        });
        trio
    }

    fn node(&self, id: u64) -> &Momd {
        &self.nodes[id as usize - 1]
    }
}

fn role(st: &Value, id: u64) -> String {
    st["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"].as_u64() == Some(id)))
        .and_then(|n| n["role"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn three_nodes_form_a_cluster_elect_again_when_the_leader_dies_and_take_it_back() {
    let mut trio = Trio::start();
    let all = [1, 2, 3];
    let first = poll(Duration::from_secs(20), "a leader", || {
        leader(trio.node(3), &all)
    });
    // Every node sees the same leader, and each node's client address.
    for id in all {
        let l = poll(Duration::from_secs(10), "the same leader", || {
            leader(trio.node(id), &all)
        });
        assert_eq!(l, first);
    }
    let st = status(trio.node(1)).expect("status");
    assert_eq!(st["mode"], "cluster");
    assert_eq!(st["cluster_id"], "t");
    assert_eq!(st["nodes"].as_array().map(Vec::len), Some(3));
    for id in all {
        let addr = st["nodes"][id as usize - 1]["addr"].as_str().unwrap_or("");
        assert_eq!(addr, trio.node(id).addr());
    }
    let human =
        String::from_utf8_lossy(&trio.node(2).ctl_ok(&["cluster", "status"], None)).into_owned();
    assert!(
        human.contains("leader") && human.contains("meta"),
        "{human}"
    );
    // LEADS names the groups each node leads: the metadata group's leader's row says so.
    let row = human
        .lines()
        .find(|l| {
            l.split_whitespace().next().map(|w| w.trim_end_matches('*')) == Some(&first.to_string())
        })
        .unwrap_or("");
    assert!(human.contains("LEADS") && row.contains("meta"), "{human}");

    // kill -9 the leader: the two others elect one of themselves.
    trio.nodes[first as usize - 1].kill9();
    let rest: Vec<u64> = all.into_iter().filter(|i| *i != first).collect();
    let second = poll(Duration::from_secs(30), "a new leader", || {
        leader(trio.node(rest[0]), &rest)
    });
    assert_ne!(second, first);
    let st = poll(
        Duration::from_secs(10),
        "the dead node shown unreachable",
        || status(trio.node(second)).filter(|st| role(st, first) == "unreachable"),
    );
    assert_eq!(st["groups"][0]["leader"].as_u64(), Some(second));

    // The others say once that it does not answer (not at every missed heartbeat).
    let said = |log: &str, what: &str| {
        log.lines()
            .filter(|l| {
                l.contains(what) && l.split_whitespace().any(|w| w == format!("peer={first}"))
            })
            .count()
    };
    poll(
        Duration::from_secs(15),
        "the dead node reported lost",
        || (said(&trio.node(second).stderr(), "peer does not answer") > 0).then_some(()),
    );

    // The old leader comes back on its data dir and follows; its log catches up.
    trio.nodes[first as usize - 1].restart();
    poll(
        Duration::from_secs(30),
        "the old leader back as a follower",
        || {
            let st = status(trio.node(second))?;
            let lag = st["groups"][0]["replicas"]
                .as_array()?
                .iter()
                .find(|r| r["node"].as_u64() == Some(first))?["lag"]
                .as_u64()?;
            (role(&st, first) == "follower" && lag == 0).then_some(())
        },
    );
    let log = poll(Duration::from_secs(15), "the node reported back", || {
        let log = trio.node(second).stderr();
        (said(&log, "peer answers again") >= 1).then_some(log)
    });
    assert_eq!(said(&log, "peer does not answer"), 1, "{log}");
    assert_eq!(said(&log, "peer answers again"), 1, "{log}");
    assert!(!log.contains("RPCError"), "{log}");
    let metrics_note = trio.node(second).stderr();
    assert!(
        metrics_note.contains("leads the meta group"),
        "{metrics_note}"
    );
}

#[test]
fn a_data_dir_is_refused_under_another_identity_or_mode() {
    let (list, addrs) = peer_list(3);
    let args = cluster_args(1, &addrs[0], &list);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut m = Momd::start_with(&argv);
    m.kill9();
    let data = m.data_dir();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(momd_bin())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data")
            .arg(&data)
            .args(extra)
            .output()
            .expect("momd");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let other = cluster_args(2, &addrs[1], &list);
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let (ok, err) = run(&other);
    assert!(!ok);
    assert!(err.contains("belongs to node 1 of cluster \"t\""), "{err}");
    let (ok, err) = run(&[]);
    assert!(!ok);
    assert!(err.contains("start it in cluster mode"), "{err}");

    // A single node's data dir does not become a cluster node.
    let single = Momd::start();
    single.ctl_ok(&["publish", "a", "x"], None);
    let st = single.ctl_ok(&["cluster", "status"], None);
    assert!(String::from_utf8_lossy(&st).contains("not in cluster mode"));
    let out = std::process::Command::new(momd_bin())
        .arg("--data")
        .arg(single.data_dir())
        .args(&argv)
        .output()
        .expect("momd");
    assert!(!out.status.success());
    // It is refused on the data dir's lock (the single node runs) or its contents.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use") || err.contains("single node's data"),
        "{err}"
    );
}

#[test]
fn a_wiped_node_is_refused_under_its_old_id() {
    let mut trio = Trio::start();
    let all = [1, 2, 3];
    poll(Duration::from_secs(20), "a leader", || {
        leader(trio.node(1), &all)
    });
    // Node 3 loses its data dir and comes back empty under the same id.
    let victim = 3;
    trio.nodes[victim - 1].kill9();
    let data = trio.node(3).data_dir();
    std::fs::remove_dir_all(&data).expect("wipe");
    std::fs::create_dir_all(&data).expect("mkdir");
    trio.nodes[victim - 1].restart();
    let why = poll(Duration::from_secs(20), "the wiped node refused", || {
        let log = trio.node(1).stderr() + &trio.node(2).stderr();
        log.contains("came back with another data dir")
            .then_some(log)
    });
    assert!(why.contains("node 3"), "{why}");
    // The two others go on without it: node 3 stays unreachable to them.
    let rest = [1, 2];
    let l = poll(Duration::from_secs(20), "a leader of the two", || {
        leader(trio.node(1), &rest)
    });
    std::thread::sleep(Duration::from_secs(4));
    let st = status(trio.node(l)).expect("status");
    assert_eq!(role(&st, 3), "unreachable", "{st}");
}

#[test]
fn a_fourth_node_joins_by_command_and_a_node_leaves() {
    let (list, addrs) = peer_list(3);
    let mut nodes: Vec<Momd> = (1..=3u64)
        .map(|id| {
            let args = cluster_args(id, &addrs[id as usize - 1], &list);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Momd::start_with(&args)
        })
        .collect();
    let all = [1, 2, 3];
    poll(Duration::from_secs(20), "a leader", || {
        leader(&nodes[0], &all)
    });

    // Node 4 starts with the members' list, which it is not in: it waits to be added. The
    // join is asked before node 4 listens (a user pasting both lines at once): it waits for
    // the node to answer, and its answer shows node 4 with its client address.
    let addr4 = format!("127.0.0.4:{}", free_port());
    let mut join = nodes[1].spawn_ctl(&["cluster", "join", "4", &addr4, "--json"]);
    std::thread::sleep(Duration::from_millis(300));
    let args = cluster_args(4, &addr4, &list);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nodes.push(Momd::start_with(&args));
    poll(Duration::from_secs(60), "the join to answer", || {
        join.try_wait().expect("momctl cluster join").map(|_| ())
    });
    let out = join.wait_with_output().expect("momctl cluster join");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let n4 = answer["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"] == 4))
        .cloned()
        .unwrap_or_default();
    assert_eq!(n4["addr"], nodes[3].addr().to_string(), "{answer}");
    let four = [1, 2, 3, 4];
    let st = poll(Duration::from_secs(20), "node 4 a voting follower", || {
        let st = status(&nodes[3])?;
        let n4 = st["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == 4)?
            .clone();
        (n4["voter"] == true && leader(&nodes[3], &four).is_some()).then_some(st)
    });
    assert_eq!(st["nodes"].as_array().map(Vec::len), Some(4), "{st}");

    // Joining under an id that another node answers for is refused (exit 7: conflict).
    let out = nodes[0].ctl_timeout(
        &["cluster", "join", "5", &addrs[1]],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stderr.contains("did not answer as node 5"), "{out:?}");
    // A node that does not answer: exit 1 (unavailable), and it is not added.
    let dead = format!("127.0.0.1:{}", free_port());
    let out = nodes[0].ctl_timeout(
        &["cluster", "join", "6", &dead],
        None,
        Duration::from_secs(60),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("does not answer"), "{out:?}");

    // Node 3 leaves; the others go on as three.
    let out = nodes[0].ctl_timeout(&["cluster", "leave", "3"], None, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out:?}");
    let rest = [1, 2, 4];
    let st = poll(Duration::from_secs(20), "three members", || {
        let st = status(&nodes[0])?;
        (st["nodes"].as_array()?.len() == 3 && leader(&nodes[0], &rest).is_some()).then_some(st)
    });
    assert!(
        st["nodes"]
            .as_array()
            .is_some_and(|a| a.iter().all(|n| n["id"] != 3)),
        "{st}"
    );
    let out = nodes[0].ctl(&["cluster", "leave", "9"], None);
    assert_eq!(out.code, 6, "{out:?}");
}

fn data_leader(m: &Momd, among: &[u64]) -> Option<u64> {
    let st = status(m)?;
    let l = st["groups"][1]["leader"].as_u64()?;
    among.contains(&l).then_some(l)
}

#[test]
fn publishes_to_one_node_are_read_on_every_node_and_survive_the_leaders_death() {
    let mut trio = Trio::started();
    let all = [1u64, 2, 3];
    // Publish to node 1, read from node 3.
    trio.node(1).ctl_ok(
        &["publish", "orders.eu", "-q"],
        Some(&numbered_lines("a", 1, 500)),
    );
    let want: Vec<String> = (1..=500).map(|i| format!("a{i}")).collect();
    assert_eq!(all_lines(trio.node(3), "orders.eu", 500), want);

    // kill -9 the data group's leader; publish on through a survivor.
    let dead = poll(Duration::from_secs(20), "a data leader", || {
        data_leader(trio.node(2), &all)
    });
    let dead_addr = trio.node(dead).addr();
    trio.nodes[dead as usize - 1].kill9();
    let alive: Vec<u64> = all.into_iter().filter(|i| *i != dead).collect();
    let via = trio.node(alive[0]);
    // A client given every node, the dead one first, goes on to the others; the node it
    // reaches waits for the survivors to elect a leader. No retry by hand.
    let list = format!(
        "{dead_addr},{},{}",
        trio.node(alive[0]).addr(),
        trio.node(alive[1]).addr()
    );
    let out = momctl(
        &["-s", &list, "publish", "orders.eu", "-q", "b0"],
        None,
        Duration::from_secs(30),
    );
    assert_eq!(out.code, 0, "{out:?}");
    via.ctl_ok(
        &["publish", "orders.eu", "-q"],
        Some(&numbered_lines("b", 1, 500)),
    );
    let mut want2 = want.clone();
    want2.push("b0".into());
    want2.extend((1..=500).map(|i| format!("b{i}")));
    let a = all_lines(trio.node(alive[0]), "orders.eu", want2.len());
    let b = all_lines(trio.node(alive[1]), "orders.eu", want2.len());
    assert_eq!(a, want2, "every acknowledged message, once, in order");
    assert_eq!(b, a, "the two survivors hold the same messages");

    // The dead node comes back and catches up, with nothing twice.
    trio.nodes[dead as usize - 1].restart();
    let n = a.len();
    let back = poll(Duration::from_secs(30), "the old leader caught up", || {
        let got = all_lines(trio.node(dead), "orders.eu", n);
        (got.len() == n).then_some(got)
    });
    assert_eq!(back, a);
}

#[test]
fn a_publish_stream_rides_over_the_leaders_kill_with_nothing_lost_or_twice() {
    let mut trio = Trio::started();
    let all = [1u64, 2, 3];
    let dead = poll(Duration::from_secs(20), "a data leader", || {
        data_leader(trio.node(1), &all)
    });
    let alive: Vec<u64> = all.into_iter().filter(|i| *i != dead).collect();
    // A stream of 20,000 lines through a node that does not lead, paced by a pipe.
    let n = 20_000u64;
    let via = trio.node(alive[0]).addr();
    let mut child = std::process::Command::new(momctl_bin())
        .args(["-s", &via, "publish", "stream", "-q"])
        .env("MOM_CONFIG_DIR", std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("momctl");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = numbered_lines("m", 1, n);
    let (first, rest) = input.split_at(input.len() / 2);
    {
        use std::io::Write;
        stdin.write_all(first).expect("write");
        stdin.flush().expect("flush");
    }
    // Once some of it is in, kill -9 the leader, then send the rest.
    poll(Duration::from_secs(30), "some of the stream stored", || {
        let st = status(trio.node(alive[1]))?;
        (st["groups"][1]["applied_index"].as_u64()? > 3).then_some(())
    });
    trio.nodes[dead as usize - 1].kill9();
    {
        use std::io::Write;
        stdin.write_all(rest).expect("write");
    }
    drop(stdin);
    let st = wait_timeout(&mut child, Duration::from_secs(120)).expect("momctl ends");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        st.success(),
        "every message acknowledged despite the kill: {err}"
    );
    let want: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
    for id in &alive {
        let got = all_lines(trio.node(*id), "stream", n as usize);
        assert_eq!(got.len(), want.len(), "node {id}");
        if got != want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            panic!(
                "node {id}: first difference at {at}: {:?} against {:?}; {} distinct of {}",
                &got[at.saturating_sub(2)..(at + 3).min(got.len())],
                &want[at.saturating_sub(2)..(at + 3).min(want.len())],
                sorted.len(),
                got.len()
            );
        }
    }
}

#[test]
fn watchers_on_any_node_count_and_a_request_reaches_a_replier_on_another_node() {
    let trio = Trio::started();
    // Nobody replies anywhere: "no responders" (6) at once, not the timeout (3).
    let ask = |m: &Momd| {
        m.ctl_timeout(
            &["request", "svc.echo", "hi", "--timeout", "20s"],
            None,
            Duration::from_secs(60),
        )
    };
    let out = ask(trio.node(1));
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("no responders"), "{out:?}");

    // A replier on node 3 answers a request sent through node 1: asked at once, not from
    // what node 3 told node 1 before.
    let _replier = Collector::new(trio.node(3).spawn_ctl(&["reply", "svc.echo", "--", "cat"]));
    poll(
        Duration::from_secs(15),
        "the replier watching on node 3",
        || {
            let s = trio.node(3).stats();
            let watching = s["clients"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["name"] == "momctl reply svc.echo" && c["watches"].as_u64() >= Some(1)
                })
            });
            watching.then_some(())
        },
    );
    let out = ask(trio.node(1));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout_str(), "hi\n");

    // A publish through node 1 counts a watcher on node 2 once node 1 has heard of it, and
    // warns of nothing; before the watch, it warned.
    let out = trio.node(1).ctl(&["publish", "news", "first"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("reached no watcher"), "{out:?}");
    let _watcher = Collector::new(trio.node(2).spawn_ctl(&["subscribe", "news"]));
    let ack = poll(Duration::from_secs(15), "node 2's watcher counted", || {
        let out = trio
            .node(1)
            .ctl(&["publish", "news", "again", "--json"], None);
        assert_eq!(out.code, 0, "{out:?}");
        let v: Value = serde_json::from_str(out.stdout_str().trim()).ok()?;
        (v["watchers"] == 1).then_some((v, out))
    });
    assert_eq!(ack.0["queues"], 0, "{:?}", ack.0);
    assert!(!ack.1.stderr.contains("reached no"), "{:?}", ack.1);

    // A group (the repliers of `momctl reply`) with members on nodes 2 and 3 counts once,
    // as on one node.
    let _members: Vec<Collector> = [2u64, 3]
        .iter()
        .map(|n| Collector::new(trio.node(*n).spawn_ctl(&["reply", "svc.grp", "--", "cat"])))
        .collect();
    for n in [2u64, 3] {
        poll(Duration::from_secs(15), "the replier watching", || {
            let s = trio.node(n).stats();
            let watching = s["clients"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["name"] == "momctl reply svc.grp" && c["watches"].as_u64() >= Some(1)
                })
            });
            watching.then_some(())
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = trio.node(1).ctl(&["request", "svc.grp", "once"], None);
    assert_eq!(out.code, 0, "{out:?}");
    let out = trio
        .node(1)
        .ctl(&["publish", "svc.grp", "plain", "--json"], None);
    let v: Value = serde_json::from_str(out.stdout_str().trim()).expect("publish_ok json");
    assert_eq!(v["watchers"], 1, "{v}");

    // A queue bound to the topic counts on every node: it is replicated state.
    trio.node(2)
        .ctl_ok(&["queue", "create", "jobs", "--bind", "news"], None);
    let ack = poll(Duration::from_secs(15), "the queue counted", || {
        let out = trio
            .node(3)
            .ctl(&["publish", "news", "third", "--json"], None);
        let v: Value = serde_json::from_str(out.stdout_str().trim()).ok()?;
        (v["queues"] == 1).then_some(v)
    });
    assert_eq!(ack["watchers"], 1, "{ack}");
}

#[test]
fn repliers_on_two_nodes_share_the_requests_each_answered_once_and_a_dead_ones_share_moves() {
    let mut trio = Trio::started();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut repliers = Vec::new();
    for node in [1u64, 2] {
        let log = dir.path().join(format!("r{node}"));
        let script = format!(
            "p=$(cat); echo \"$p\" >> '{}'; printf 'r{node}'",
            log.display()
        );
        let r = Collector::new(
            trio.node(node)
                .spawn_ctl(&["reply", "svc.echo", "--", "sh", "-c", &script]),
        );
        repliers.push((r, log));
    }
    let handled = |log: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    // Both repliers are in the group on every node once each has told its count; until
    // then a node hands its own members what it has (a request may be answered twice).
    // Requests go through node 3, which has no replier.
    let ask = |i: usize| {
        trio.node(3).ctl_timeout(
            &["request", "svc.echo", &format!("q{i}"), "--timeout", "10s"],
            None,
            Duration::from_secs(30),
        )
    };
    poll(
        Duration::from_secs(20),
        "both repliers in the group",
        || {
            let st = status(trio.node(3))?;
            st["groups"][1]["leader"].as_u64()?;
            let before: usize = repliers.iter().map(|(_, l)| handled(l).len()).sum();
            let out = ask(0);
            assert_eq!(out.code, 0, "{out:?}");
            std::thread::sleep(Duration::from_millis(300));
            let after: usize = repliers.iter().map(|(_, l)| handled(l).len()).sum();
            (after == before + 1).then_some(())
        },
    );
    for (_, log) in &repliers {
        std::fs::write(log, "").expect("clearing the log");
    }
    let mut answered_by = [0usize; 2];
    for i in 1..=60 {
        let out = ask(i);
        assert_eq!(out.code, 0, "request {i}: {out:?}");
        match out.stdout_str().trim_end() {
            "r1" => answered_by[0] += 1,
            "r2" => answered_by[1] += 1,
            other => panic!("request {i}: reply {other:?}"),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (h1, h2) = (handled(&repliers[0].1), handled(&repliers[1].1));
    let mut all_handled: Vec<String> = h1.iter().chain(&h2).cloned().collect();
    all_handled.sort();
    let mut want: Vec<String> = (1..=60).map(|i| format!("q{i}")).collect();
    want.sort();
    assert_eq!(all_handled, want, "every request handled once, on one node");
    assert!(
        answered_by.iter().all(|n| *n >= 10),
        "both nodes' repliers take a share: {answered_by:?}"
    );

    // Node 2 dies with its replier: once the data group's leader has not heard from it for
    // a few seconds, its share goes to node 1's replier.
    trio.nodes[1].kill9();
    poll(
        Duration::from_secs(60),
        "node 1's replier takes every request",
        || {
            let ok = (0..8).all(|i| {
                trio.node(3)
                    .ctl_timeout(
                        &["request", "svc.echo", &format!("z{i}"), "--timeout", "2s"],
                        None,
                        Duration::from_secs(20),
                    )
                    .code
                    == 0
            });
            ok.then_some(())
        },
    );
}
