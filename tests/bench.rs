//! `momctl bench` against the real momd: each load runs to the end, counts exactly what it
//! was asked to, and reports it on its last line with `--json`; bad settings are usage
//! errors. (Figures come from release builds, not from these tests.)

mod common;

use std::time::Duration;

use common::{momctl, Momd};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn bench(m: &Momd, args: &[&str]) -> Value {
    let addr = m.addr();
    let mut all = vec!["-s", &addr, "--json", "bench"];
    all.extend_from_slice(args);
    let out = momctl(&all, None, T);
    assert_eq!(out.code, 0, "{args:?}: {out:?}");
    let text = out.stdout_str();
    let last = text.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last:?}"));
    for key in ["msgs", "seconds", "msgs_per_sec", "mb_per_sec"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    for q in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            v["latency_us"][q].as_u64().is_some_and(|x| x > 0),
            "{q}: {v}"
        );
    }
    v
}

fn stored(m: &Momd, topic: &str) -> u64 {
    let addr = m.addr();
    let out = momctl(&["-s", &addr, "--json", "topic", "info", topic], None, T);
    assert_eq!(out.code, 0, "{out:?}");
    let v: Value = serde_json::from_str(out.stdout_str().trim()).expect("topic info json");
    v["messages"].as_u64().expect("messages")
}

#[test]
fn pub_then_sub_from_the_start_count_exactly() {
    let m = Momd::start();
    let v = bench(
        &m,
        &[
            "pub", "b.x", "--msgs", "300", "--pubs", "3", "--window", "16",
        ],
    );
    assert_eq!(v["msgs"], 300);
    assert_eq!(v["clients"], 3);
    assert_eq!(
        stored(&m, "b.x"),
        300,
        "every acknowledged message is stored"
    );
    let v = bench(
        &m,
        &[
            "pub", "b.x", "--msgs", "50", "--batch", "10", "--size", "64",
        ],
    );
    assert_eq!(v["msgs"], 50);
    assert_eq!(stored(&m, "b.x"), 350);
    let v = bench(
        &m,
        &["sub", "b.x", "--msgs", "350", "--from-start", "--subs", "2"],
    );
    assert_eq!(v["msgs"], 700, "each watcher reads every message");
    // Tasks publishing one message each through the batching producer.
    let v = bench(
        &m,
        &[
            "pub",
            "b.c",
            "--msgs",
            "400",
            "--coalesce",
            "--window",
            "32",
            "--pubs",
            "2",
        ],
    );
    assert_eq!(v["msgs"], 400);
    assert_eq!(stored(&m, "b.c"), 400);
}

#[test]
fn pubsub_queue_and_request_deliver_everything() {
    let m = Momd::start();
    let v = bench(
        &m,
        &[
            "pubsub", "b.ps", "--msgs", "200", "--subs", "3", "--pubs", "2",
        ],
    );
    assert_eq!(v["msgs"], 600, "every watcher gets every message");
    assert_eq!(v["publish"]["msgs"], 200);

    let v = bench(&m, &["queue", "b.q", "--msgs", "300", "--subs", "3"]);
    assert!(v["msgs"].as_u64().is_some_and(|n| n >= 300), "{v}");
    // Competing consumers share the work round robin: one that acks each message before
    // the next arrives does not take them all while the others wait with credit to spare.
    let v = bench(
        &m,
        &[
            "queue", "b.f", "--msgs", "60", "--subs", "3", "--window", "1",
        ],
    );
    let rate = |k: &str| v["per_client_msgs_per_sec"][k].as_f64().unwrap_or(0.0);
    assert!(rate("min") >= rate("max") / 4.0, "unfair: {v}");
    // The queue is removed at the end.
    let addr = m.addr();
    let out = momctl(&["-s", &addr, "--json", "queue", "ls"], None, T);
    assert!(!out.stdout_str().contains("bench-"), "{out:?}");

    let v = bench(
        &m,
        &[
            "request", "svc.b", "--msgs", "100", "--subs", "2", "--window", "4",
        ],
    );
    assert_eq!(v["msgs"], 100);
}

#[test]
fn bad_settings_are_usage_errors() {
    let m = Momd::start();
    let addr = m.addr();
    for args in [
        vec!["pub", "b.x", "--size", "4"],
        vec!["pub", "b.x", "--msgs", "0"],
        vec!["pub", "b.x", "--window", "0"],
        vec!["pub", "b.*", "--msgs", "1"],
        vec!["pub", "b.x", "--from-start"],
        vec!["pub", "b.x", "--coalesce", "--batch", "2"],
        vec!["sub", "b.x", "--coalesce"],
        vec!["sub", "b.x", "--baseline", "127.0.0.1:1"],
        vec!["pub", "b.x", "--baseline", "not a server list"],
    ] {
        let mut all = vec!["-s", &addr, "bench"];
        all.extend_from_slice(&args);
        let out = momctl(&all, None, T);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(
            !out.stderr.trim().is_empty(),
            "{args:?}: a reason on stderr"
        );
    }
    let out = momctl(
        &[
            "-s",
            &addr,
            "bench",
            "request",
            "nobody.home",
            "--msgs",
            "1",
            "--subs",
            "1",
        ],
        None,
        T,
    );
    // A responder is started by the bench itself: one request is answered.
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn a_baseline_runs_the_same_load_on_another_server_first_and_the_two_are_compared() {
    let (base, here) = (Momd::start(), Momd::start());
    let b = base.addr();
    let v = bench(
        &here,
        &[
            "pub",
            "cmp.x",
            "--msgs",
            "500",
            "--window",
            "16",
            "--baseline",
            &b,
        ],
    );
    assert_eq!(v["msgs"], 500, "{v}");
    assert_eq!(v["baseline"]["msgs"], 500, "{v}");
    assert_eq!(v["baseline"]["server"], b.as_str(), "{v}");
    assert_eq!(v["server"], here.addr().as_str(), "{v}");
    let (ours, theirs) = (
        v["msgs_per_sec"].as_f64().unwrap_or(0.0),
        v["baseline"]["msgs_per_sec"].as_f64().unwrap_or(0.0),
    );
    assert!(theirs > 0.0, "{v}");
    let ratio = v["ratio"].as_f64().expect("ratio");
    assert!((ratio - ours / theirs).abs() < 0.02, "{v}");
    assert!(
        v["p50_latency_ratio"].as_f64().is_some_and(|r| r > 0.0),
        "{v}"
    );
    // Each server got the whole load.
    assert_eq!(stored(&base, "cmp.x"), 500);
    assert_eq!(stored(&here, "cmp.x"), 500);

    // For people: both runs, then the comparison.
    let addr = here.addr();
    let out = momctl(
        &[
            "-s",
            &addr,
            "bench",
            "queue",
            "cmp.q",
            "--msgs",
            "200",
            "--baseline",
            &b,
        ],
        None,
        T,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let text = out.stdout_str();
    assert!(text.starts_with(&format!("baseline, {b}:\n")), "{text}");
    assert!(text.contains(&format!("\n{addr}:\n")), "{text}");
    assert!(
        text.trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.contains("× the baseline's msgs/s")),
        "{text}"
    );
}
