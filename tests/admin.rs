//! Managing the broker with momctl: topic rm/purge and the queues that still hold their
//! messages, idempotent queue create, queue set, peek, purge counts, topic ls filters,
//! the server address and refused credentials, and client names in stats.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    json_lines, lines, momctl, momctl_bin, numbered_lines, wait_for, wait_timeout, Collector, Momd,
};

fn topic_names(out: &[u8]) -> HashSet<String> {
    json_lines(out)
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------

#[test]
fn topic_rm_and_purge_are_refused_while_a_queue_holds_messages_unless_forced() {
    let m = Momd::start();
    m.ctl_ok(&["queue", "create", "held", "--bind", "t.held"], None);
    m.ctl_ok(
        &["publish", "t.held", "-q"],
        Some(&numbered_lines("m", 1, 3)),
    );

    let out = m.ctl(&["topic", "rm", "t.held"], None);
    assert_eq!(out.code, 7, "topic rm while queue `held` holds 3: {out:?}");
    let out = m.ctl(&["topic", "purge", "t.held"], None);
    assert_eq!(
        out.code, 7,
        "topic purge while queue `held` holds 3: {out:?}"
    );
    assert_eq!(
        m.topic_info("t.held")["messages"],
        3,
        "a refused purge removed something"
    );

    // Forced purge: the messages go, the topic stays, seqs go on (never reused).
    let out = m.ctl(&["topic", "purge", "t.held", "--force"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("purged 3"),
        "purge says how many: {out:?}"
    );
    let info = m.topic_info("t.held");
    assert_eq!(info["messages"], 0, "{info}");
    let acks = json_lines(&m.ctl_ok(&["publish", "t.held", "m4", "--json", "-q"], None));
    assert_eq!(acks[0]["seq"], 4, "seq after purge: {acks:?}");

    // Once the queue has taken (and acked) everything, a plain rm is fine.
    let got = m.ctl(&["recv", "held", "-n", "1", "--timeout", "10s"], None);
    assert_eq!(got.code, 0, "{got:?}");
    assert_eq!(
        lines(&got.stdout),
        vec!["m4"],
        "the queue after the forced purge: {got:?}"
    );
    assert_eq!(m.queue_info("held")["ready"], 0);
    let out = m.ctl(&["topic", "rm", "t.held"], None);
    assert_eq!(out.code, 0, "topic rm with nothing held: {out:?}");
    assert_eq!(m.ctl(&["topic", "info", "t.held"], None).code, 6);

    // Forced rm while held.
    m.ctl_ok(&["publish", "t.held", "again", "-q"], None);
    assert_eq!(m.ctl(&["topic", "rm", "t.held"], None).code, 7);
    let out = m.ctl(&["topic", "rm", "t.held", "--force"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(m.ctl(&["topic", "info", "t.held"], None).code, 6);

    // No queue: plain purge and rm.
    m.ctl_ok(&["publish", "t.free", "a", "b", "-q"], None);
    let out = m.ctl(&["topic", "purge", "t.free"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("purged 2"), "{out:?}");
    assert_eq!(m.ctl(&["topic", "rm", "t.free"], None).code, 0);
    assert_eq!(
        m.ctl(&["topic", "rm", "t.free"], None).code,
        6,
        "rm of a missing topic"
    );
}

#[test]
fn queue_create_is_idempotent_and_set_changes_its_settings() {
    let m = Momd::start();
    let create = |md: &str| {
        m.ctl(
            &[
                "queue",
                "create",
                "jobs",
                "--bind",
                "jobs.*",
                "--max-deliver",
                md,
                "--ack-wait",
                "30s",
            ],
            None,
        )
    };
    assert_eq!(create("5").code, 0);
    let again = create("5");
    assert_eq!(again.code, 0, "the same settings again: {again:?}");
    let other = create("6");
    assert_eq!(other.code, 7, "other settings: {other:?}");
    let info = m.queue_info("jobs");
    assert_eq!(info["max_deliver"], 5, "{info}");
    assert_eq!(info["ack_wait_ms"], 30_000, "{info}");

    m.ctl_ok(
        &[
            "queue",
            "set",
            "jobs",
            "--max-deliver",
            "10",
            "--ack-wait",
            "5m",
        ],
        None,
    );
    let info = m.queue_info("jobs");
    assert_eq!(info["max_deliver"], 10, "{info}");
    assert_eq!(info["ack_wait_ms"], 300_000, "{info}");
    assert_eq!(info["bindings"], serde_json::json!(["jobs.*"]), "{info}");
    // Now the create with the new settings is the idempotent one.
    let out = m.ctl(
        &[
            "queue",
            "create",
            "jobs",
            "--bind",
            "jobs.*",
            "--max-deliver",
            "10",
            "--ack-wait",
            "5m",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        m.ctl(&["queue", "set", "nosuch", "--max-deliver", "1"], None)
            .code,
        6
    );
    assert_eq!(
        m.ctl(&["queue", "set", "jobs"], None).code,
        2,
        "nothing to set"
    );
}

#[test]
fn queue_peek_changes_nothing_and_purge_says_how_many() {
    let m = Momd::start();
    m.ctl_ok(&["queue", "create", "pk", "--bind", "pk.*"], None);
    m.ctl_ok(
        &["publish", "pk.a", "-q"],
        Some(&numbered_lines("job-", 1, 5)),
    );

    let out = m.ctl_ok(&["queue", "peek", "pk", "-n", "3"], None);
    assert_eq!(lines(&out), vec!["job-1", "job-2", "job-3"]);
    let out = m.ctl_ok(&["queue", "peek", "pk", "-n", "2", "--json"], None);
    let v = json_lines(&out);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0]["payload"], "job-1");
    assert_eq!(v[0]["delivery"], 0, "never delivered: {v:?}");
    let info = m.queue_info("pk");
    assert_eq!(info["delivered"], 0, "peek delivered: {info}");
    assert_eq!(info["ready"], 5, "{info}");
    assert_eq!(info["unacked"], 0, "{info}");

    // recv gets exactly what peek showed.
    let got = m.ctl_ok(
        &["recv", "pk", "-n", "3", "--timeout", "10s", "--json"],
        None,
    );
    let got = json_lines(&got);
    let p: Vec<&str> = got
        .iter()
        .map(|v| v["payload"].as_str().expect("payload"))
        .collect();
    assert_eq!(p, vec!["job-1", "job-2", "job-3"]);
    assert_eq!(got[0]["delivery"], 1, "{got:?}");
    let out = m.ctl_ok(&["queue", "peek", "pk"], None);
    assert_eq!(lines(&out), vec!["job-4", "job-5"]);

    let out = m.ctl(&["queue", "purge", "pk"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("purged 2 messages"), "{out:?}");
    let info = m.queue_info("pk");
    assert_eq!(info["ready"], 0, "{info}");
    assert!(m.ctl_ok(&["queue", "peek", "pk"], None).is_empty());
    assert_eq!(m.ctl(&["queue", "peek", "nosuch"], None).code, 6);
}

#[test]
fn topic_ls_filters_by_pattern_and_hides_reply_inboxes_unless_all() {
    let m = Momd::start();
    for t in ["orders.eu", "orders.us", "orders.eu.refunds", "logs.app"] {
        m.ctl_ok(&["publish", t, "x", "-q"], None);
    }
    let names = topic_names(&m.ctl_ok(&["topic", "ls", "orders.*", "--json"], None));
    assert_eq!(
        names,
        HashSet::from(["orders.eu", "orders.us"].map(String::from))
    );
    let names = topic_names(&m.ctl_ok(&["topic", "ls", "orders.>", "--json"], None));
    assert_eq!(
        names,
        HashSet::from(["orders.eu", "orders.us", "orders.eu.refunds"].map(String::from))
    );
    let text = m.ctl_ok(&["topic", "ls", "logs.*"], None);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("logs.app") && !text.contains("orders."),
        "{text}"
    );

    // A request and its reply leave a reply inbox behind.
    let replier = Collector::new(m.spawn_ctl(&["reply", "svc.t", "--", "cat"]));
    wait_for(Duration::from_secs(15), "the replier watching", || {
        let s = m.stats();
        s["clients"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["name"] == "momctl reply svc.t" && c["watches"].as_u64() >= Some(1))
            })
            .then_some(())
    });
    let out = m.ctl(&["request", "svc.t", "hi", "--timeout", "10s"], None);
    assert_eq!(out.code, 0, "{out:?}");
    drop(replier);
    let all = topic_names(&m.ctl_ok(&["topic", "ls", "--all", "--json"], None));
    assert!(
        all.iter().any(|t| t.starts_with("$inbox.")),
        "no inbox with --all: {all:?}"
    );
    let shown = topic_names(&m.ctl_ok(&["topic", "ls", "--json"], None));
    assert!(
        !shown.iter().any(|t| t.starts_with("$inbox.")),
        "inbox shown without --all: {shown:?}"
    );
    assert!(
        shown.contains("orders.eu") && shown.contains("svc.t"),
        "{shown:?}"
    );
}

#[test]
fn server_address_errors_and_refused_credentials_have_their_exit_codes() {
    let t = Duration::from_secs(20);
    // Nothing listens on port 1: cannot connect.
    let out = momctl(&["-s", "127.0.0.1:1", "ping"], None, t);
    assert_eq!(out.code, 4, "{out:?}");
    // Not a port: usage.
    let out = momctl(&["-s", "127.0.0.1:x", "ping"], None, t);
    assert_eq!(out.code, 2, "{out:?}");
    let out = momctl(&["-s", "127.0.0.1:notaport", "ping"], None, t);
    assert_eq!(out.code, 2, "{out:?}");

    // A server without users: asking to be someone is refused, not ignored.
    let m = Momd::start();
    let out = m.ctl(&["--user", "alice", "ping"], None);
    assert_eq!(out.code, 5, "--user: {out:?}");
    assert!(out.stderr.contains("no users"), "{out:?}");
    // A password without a user: usage, and never echoed.
    let out = m.ctl(&["--password", "secret", "ping"], None);
    assert_eq!(out.code, 2, "--password: {out:?}");
    assert!(
        !out.stderr.contains("secret"),
        "the password is echoed: {out:?}"
    );
    // The same from the environment.
    for (k, v, code) in [("MOM_USER", "alice", 5), ("MOM_PASSWORD", "secret", 2)] {
        let mut child = Command::new(momctl_bin())
            .args(["-s", &m.addr(), "ping"])
            .env(k, v)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn momctl");
        let st = wait_timeout(&mut child, t).expect("momctl exits");
        assert_eq!(st.code(), Some(code), "{k} set: {st}");
    }
    // And the broker is fine: a plain ping works.
    m.assert_serves();
}

#[test]
fn each_connection_is_named_after_its_command_in_stats() {
    let m = Momd::start();
    m.ctl_ok(&["queue", "create", "jobs", "--bind", "jobs.*"], None);
    let sub = Collector::new(m.spawn_ctl(&["subscribe", "orders.>"]));
    let recv = Collector::new(m.spawn_ctl(&["recv", "jobs", "--follow"]));
    let mut publisher = m.spawn_ctl(&["publish", "metrics.cpu"]); // stdin open: stays connected
    let names = wait_for(Duration::from_secs(15), "the three clients", || {
        let s = m.stats();
        let names: HashSet<String> = s["clients"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        (names.contains("momctl subscribe orders.>")
            && names.contains("momctl recv jobs")
            && names.contains("momctl publish metrics.cpu"))
        .then_some(names)
    });
    assert!(
        names.contains("momctl stats"),
        "stats names itself too: {names:?}"
    );
    // And says which queue a client consumes.
    let s = m.stats();
    let worker = s["clients"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "momctl recv jobs"))
        .cloned()
        .expect("the worker");
    assert_eq!(worker["consumers"], serde_json::json!(["jobs"]), "{worker}");
    let _ = publisher.kill();
    let _ = publisher.wait();
    drop(sub);
    drop(recv);
}

#[test]
fn durable_subscribe_from_all_delivers_what_was_published_before() {
    let m = Momd::start();
    m.ctl_ok(
        &["publish", "early.t", "-q"],
        Some(&numbered_lines("e", 1, 3)),
    );
    let out = m.ctl(
        &[
            "subscribe",
            "--durable",
            "late",
            "early.t",
            "--from",
            "all",
            "-n",
            "3",
            "--timeout",
            "10s",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(lines(&out.stdout), vec!["e1", "e2", "e3"]);
    let info = m.queue_info("late");
    assert_eq!(info["acked"], 3, "{info}");
    assert_eq!(info["bindings"], serde_json::json!(["early.t"]), "{info}");
    // Without --from all a new binding starts with what comes next.
    let out = m.ctl(
        &[
            "subscribe",
            "--durable",
            "later",
            "early.t",
            "-n",
            "1",
            "--timeout",
            "500ms",
        ],
        None,
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn shell_completion_offers_topic_and_queue_names_from_the_broker() {
    let m = Momd::start();
    m.ctl_ok(&["publish", "orders.eu", "x", "-q"], None);
    m.ctl_ok(&["publish", "orders.us", "x", "-q"], None);
    m.ctl_ok(&["publish", "other", "x", "-q"], None);
    m.ctl_ok(&["queue", "create", "jobs", "--bind", "j.>"], None);
    // What bash's completion function asks: complete word INDEX of the words after `--`.
    let complete = |index: &str, words: &[&str]| {
        let out = Command::new(momctl_bin())
            .arg("--")
            .args(words)
            .env("COMPLETE", "bash")
            .env("MOM_SERVER", m.addr())
            .env("_CLAP_COMPLETE_INDEX", index)
            .env("_CLAP_COMPLETE_COMP_TYPE", "9")
            .env("_CLAP_COMPLETE_SPACE", "true")
            .env("_CLAP_IFS", "\n")
            .stdin(Stdio::null())
            .output()
            .expect("run momctl");
        assert!(out.status.success(), "{out:?}");
        let mut names: Vec<String> = lines(&out.stdout)
            .into_iter()
            .filter(|l| !l.is_empty())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        complete("3", &["momctl", "topic", "info", "ord"]),
        vec!["orders.eu", "orders.us"]
    );
    assert_eq!(complete("2", &["momctl", "recv", "j"]), vec!["jobs"]);
    // An empty word: flags and the queues, not the topics.
    let any: Vec<String> = complete("3", &["momctl", "queue", "rm", ""])
        .into_iter()
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert_eq!(any, vec!["jobs"]);
    // The registration script itself comes without a broker.
    let script = Command::new(momctl_bin())
        .env("COMPLETE", "bash")
        .output()
        .expect("run momctl");
    assert!(String::from_utf8_lossy(&script.stdout).contains("complete "));
}
