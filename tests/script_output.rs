//! What scripts read from and feed to momctl: `subscribe` output (`--format`, `--json`,
//! `-v`, `--raw`, `--headers-only`, `--last`, `--until-end`), publish's per-message `--json`
//! acks over a live pipe, duplicates, content ids, `--json-input` copies, and passive
//! watchers that count for nothing.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{json_lines, lines, numbered_lines, wait_for, Collector, Momd};

/// Watches on `name` clients (`momctl stats --json` → clients[]).
fn watches_of(m: &Momd, name: &str) -> u64 {
    m.stats()["clients"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["name"] == name)
                .map(|c| c["watches"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Publish one message with headers and an id; the JSON payload keeps its key order.
fn publish_sample(m: &Momd) {
    m.ctl_ok(
        &[
            "publish",
            "fmt.orders",
            r#"{"zeta":1,"alpha":[2,3]}"#,
            "-H",
            "trace=abc",
            "-H",
            "region=eu",
            "--id",
            "order-9",
            "-q",
        ],
        None,
    );
}

fn sub_all(m: &Momd, topic: &str, n: &str, extra: &[&str]) -> Vec<u8> {
    let mut a = vec![
        "subscribe",
        topic,
        "--from",
        "all",
        "-n",
        n,
        "--timeout",
        "10s",
    ];
    a.extend_from_slice(extra);
    m.ctl_ok(&a, None)
}

// ---------------------------------------------------------------------------------------
// 8

#[test]
fn format_fields_show_topic_seq_times_headers_id_sender_payload_and_size() {
    let m = Momd::start();
    m.ctl_ok(&["publish", "fmt.orders", "first", "-q"], None);
    publish_sample(&m);
    let json_out = sub_all(&m, "fmt.orders", "2", &["--json"]);
    let json = json_lines(&json_out);
    let j = &json[1];

    let out = sub_all(
        &m,
        "fmt.orders",
        "2",
        &["--format", "%t|%s|%T|%e|%h{trace}|%h|%i|%u|%p|%S|%%\\n"],
    );
    let l = lines(&out);
    assert_eq!(l.len(), 2, "{l:?}");
    let f: Vec<&str> = l[1].split('|').collect();
    assert_eq!(f.len(), 11, "{:?}", l[1]);
    assert_eq!(f[0], "fmt.orders");
    assert_eq!(f[1], "2");
    // %T: RFC 3339 in UTC with milliseconds, the same instant as %e and the JSON fields.
    assert_eq!(
        f[2],
        j["time_iso"].as_str().expect("time_iso"),
        "{:?}",
        l[1]
    );
    assert!(
        f[2].len() == 24 && f[2].ends_with('Z') && &f[2][10..11] == "T" && &f[2][19..20] == ".",
        "%T is not RFC 3339 with ms: {}",
        f[2]
    );
    assert_eq!(f[3], j["time"].to_string(), "%e is the message time in ms");
    let ms: u64 = f[3].parse().expect("%e is a number");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(
        ms <= now && now - ms < 120_000,
        "%e {ms} is not recent (now {now})"
    );
    assert_eq!(f[4], "abc", "%h{{trace}}");
    let hs: HashSet<&str> = f[5].split(',').collect();
    assert_eq!(
        hs,
        HashSet::from(["trace=abc", "region=eu"]),
        "%h: {}",
        f[5]
    );
    assert_eq!(f[6], "order-9", "%i");
    assert!(
        f[7].contains("momctl publish fmt.orders") && f[7].contains('/'),
        "%u names the sender: {}",
        f[7]
    );
    assert_eq!(f[8], r#"{"zeta":1,"alpha":[2,3]}"#, "%p");
    assert_eq!(f[9], r#"{"zeta":1,"alpha":[2,3]}"#.len().to_string(), "%S");
    assert_eq!(f[10], "%", "%%");
    // A message without the header: %h{trace} is empty, %i empty.
    let f0: Vec<&str> = l[0].split('|').collect();
    assert_eq!((f0[1], f0[4], f0[8]), ("1", "", "first"), "{:?}", l[0]);

    // Delivery fields of a queue message.
    m.ctl_ok(
        &["queue", "create", "fq", "--bind", "fmt.*", "--from", "all"],
        None,
    );
    let out = m.ctl_ok(
        &[
            "recv",
            "fq",
            "-n",
            "1",
            "--timeout",
            "10s",
            "--format",
            "%d %D %p\\n",
        ],
        None,
    );
    assert_eq!(lines(&out), vec!["1 fmt.orders:1 first"]);
}

#[test]
fn json_output_has_time_iso_and_payload_json_in_key_order() {
    let m = Momd::start();
    publish_sample(&m);
    m.ctl_ok(&["publish", "fmt.orders", "plain text", "-q"], None);
    let out = sub_all(&m, "fmt.orders", "2", &["--json"]);
    let text = String::from_utf8(out.clone()).expect("utf-8");
    let raw_lines: Vec<&str> = text.lines().collect();
    assert_eq!(raw_lines.len(), 2, "{text}");
    // Key order of the payload is kept in payload_json (checked on the text: a parser may
    // reorder keys).
    assert!(
        raw_lines[0].contains(r#""payload_json":{"zeta":1,"alpha":[2,3]}"#),
        "{}",
        raw_lines[0]
    );
    let v = json_lines(&out);
    assert_eq!(v[0]["topic"], "fmt.orders");
    assert_eq!(v[0]["seq"], 1);
    assert_eq!(
        v[0]["payload"], r#"{"zeta":1,"alpha":[2,3]}"#,
        "payload stays the text"
    );
    assert_eq!(v[0]["payload_json"]["alpha"], serde_json::json!([2, 3]));
    assert_eq!(v[0]["headers"]["trace"], "abc");
    assert_eq!(v[0]["msg_id"], "order-9");
    assert!(v[0]["time"].as_u64().is_some(), "{}", v[0]);
    assert!(
        v[0]["time_iso"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
        "{}",
        v[0]
    );
    assert_eq!(v[1]["payload"], "plain text");
    assert!(
        v[1].get("payload_json").is_none(),
        "not JSON, no payload_json: {}",
        v[1]
    );
}

#[test]
fn verbose_raw_and_headers_only_outputs() {
    let m = Momd::start();
    publish_sample(&m);
    let out = sub_all(&m, "fmt.orders", "1", &["-v"]);
    assert_eq!(lines(&out), vec![r#"fmt.orders {"zeta":1,"alpha":[2,3]}"#]);

    let out = sub_all(&m, "fmt.orders", "1", &["--headers-only"]);
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:?}");
    let hs: HashSet<&str> = l[0].split(' ').collect();
    assert_eq!(hs, HashSet::from(["trace=abc", "region=eu"]), "{l:?}");

    // A binary file published whole comes back byte for byte with --raw.
    let mut blob: Vec<u8> = (0..=255u8).collect();
    blob.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    blob.extend_from_slice(b"\n\0\r\n");
    m.ctl_ok(&["publish", "bin.blob", "--whole", "-q"], Some(&blob));
    let out = sub_all(&m, "bin.blob", "1", &["--raw"]);
    assert!(
        out == blob,
        "--raw gave {} bytes, not the {} published",
        out.len(),
        blob.len()
    );
}

#[test]
fn last_and_until_end_replay_the_tail_then_stop_or_go_live() {
    let m = Momd::start();
    m.ctl_ok(&["publish", "l.a", "-q"], Some(&numbered_lines("a", 1, 5)));
    m.ctl_ok(&["publish", "l.b", "-q"], Some(&numbered_lines("b", 1, 3)));

    // The last 2 of each matching topic, then exit once caught up.
    let out = m.ctl(
        &[
            "subscribe",
            "l.*",
            "--last",
            "2",
            "--until-end",
            "--timeout",
            "20s",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let got: HashSet<String> = lines(&out.stdout).into_iter().collect();
    assert_eq!(
        got,
        HashSet::from(["a4", "a5", "b2", "b3"].map(String::from)),
        "{out:?}"
    );
    assert_eq!(lines(&out.stdout).len(), 4, "{out:?}");

    // --from last: the last one of each.
    let out = m.ctl(
        &[
            "subscribe",
            "l.*",
            "--from",
            "last",
            "--until-end",
            "--timeout",
            "20s",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let got: HashSet<String> = lines(&out.stdout).into_iter().collect();
    assert_eq!(
        got,
        HashSet::from(["a5", "b3"].map(String::from)),
        "{out:?}"
    );

    // --from all --until-end: everything stored, then exit 0 (no -n needed).
    let out = m.ctl(
        &[
            "subscribe",
            "l.a",
            "--from",
            "all",
            "--until-end",
            "--timeout",
            "20s",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, numbered_lines("a", 1, 5), "{out:?}");

    // Without --until-end, --last goes on live after the tail.
    let live = Collector::new(m.spawn_ctl(&["subscribe", "l.a", "--last", "1"]));
    wait_for(Duration::from_secs(15), "the tail", || {
        (live.count() >= 1).then_some(())
    });
    m.ctl_ok(&["publish", "l.a", "a6", "-q"], None);
    wait_for(Duration::from_secs(15), "the live message", || {
        (live.count() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let (l, _) = live.kill();
    assert_eq!(l, vec!["a5", "a6"]);
}

// ---------------------------------------------------------------------------------------
// 10

#[test]
fn duplicate_is_reported_and_marked_in_json_and_exit_stays_0() {
    let m = Momd::start();
    let first = m.ctl(
        &["publish", "d.t", "hello", "--id", "x-1", "--json", "-q"],
        None,
    );
    assert_eq!(first.code, 0, "{first:?}");
    let again = m.ctl(
        &["publish", "d.t", "hello", "--id", "x-1", "--json", "-q"],
        None,
    );
    assert_eq!(again.code, 0, "a duplicate is not a failure: {again:?}");
    let a = json_lines(&first.stdout);
    let b = json_lines(&again.stdout);
    assert_eq!(a[0]["duplicate"], false, "{a:?}");
    assert_eq!(b[0]["duplicate"], true, "{b:?}");
    assert_eq!(
        b[0]["seq"], a[0]["seq"],
        "the duplicate names the stored seq: {b:?}"
    );
    assert!(
        again.stderr.contains("duplicate") && again.stderr.contains("not stored again"),
        "{again:?}"
    );
    assert!(first.stderr.is_empty(), "{first:?}");
    assert_eq!(m.topic_info("d.t")["messages"], 1);
    assert_eq!(
        m.read_all_json("d.t")[0]["msg_id"],
        "x-1",
        "one argument: --id as given"
    );

    // --id on stdin: ID-1, ID-2; a single stdin line gets ID-1.
    m.ctl_ok(
        &["publish", "d.s", "--id", "batch", "-q"],
        Some(b"one\ntwo\n"),
    );
    let out = m.ctl(
        &["publish", "d.s", "--id", "batch", "--json", "-q"],
        Some(b"one\n"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json_lines(&out.stdout)[0]["duplicate"], true, "{out:?}");
    let ids: Vec<serde_json::Value> = m
        .read_all_json("d.s")
        .iter()
        .map(|v| v["msg_id"].clone())
        .collect();
    assert_eq!(ids, vec!["batch-1", "batch-2"]);
}

#[test]
fn id_from_sha256_stores_identical_lines_once() {
    let m = Momd::start();
    let out = m.ctl(
        &["publish", "h.t", "--id-from", "sha256", "--json", "-q"],
        Some(b"alpha\nbeta\nalpha\ngamma\nbeta\n"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let acks = json_lines(&out.stdout);
    let dup: Vec<bool> = acks.iter().map(|a| a["duplicate"] == true).collect();
    assert_eq!(dup, vec![false, false, true, false, true], "{acks:?}");
    let line_nos: Vec<u64> = acks
        .iter()
        .map(|a| a["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(line_nos, vec![1, 2, 3, 4, 5]);
    assert!(
        out.stderr.contains("line 3"),
        "names the duplicate line: {out:?}"
    );
    assert_eq!(m.read_all_lines("h.t"), vec!["alpha", "beta", "gamma"]);
    // Published again later by another run: still nothing new.
    m.ctl_ok(
        &["publish", "h.t", "--id-from", "sha256", "-q"],
        Some(b"gamma\n"),
    );
    assert_eq!(m.topic_info("h.t")["messages"], 3);

    // header:NAME needs a header per message: several plain lines are a usage error.
    let out = m.ctl(
        &["publish", "h.u", "--id-from", "header:k", "-H", "k=v"],
        Some(b"a\nb\n"),
    );
    assert_eq!(out.code, 2, "{out:?}");
    // One message: the header's value is its id.
    m.ctl_ok(
        &[
            "publish",
            "h.u",
            "one",
            "--id-from",
            "header:k",
            "-H",
            "k=v1",
            "-q",
        ],
        None,
    );
    assert_eq!(m.read_all_json("h.u")[0]["msg_id"], "v1");
}

#[test]
fn json_input_copies_messages_with_headers_ids_and_binary_payloads() {
    let m = Momd::start();
    m.ctl_ok(
        &[
            "publish", "src", "plain", "-H", "trace=t1", "--id", "m-1", "-q",
        ],
        None,
    );
    m.ctl_ok(
        &["publish", "src", r#"{"k":[1,2]}"#, "-H", "a=b", "-q"],
        None,
    );
    let bin: Vec<u8> = vec![0xff, 0x00, 0xfe, b'\n', 0x80];
    m.ctl_ok(&["publish", "src", "--whole", "-q"], Some(&bin));

    // subscribe --json | publish --json-input
    let copied = m.ctl_ok(
        &[
            "subscribe",
            "src",
            "--from",
            "all",
            "-n",
            "3",
            "--timeout",
            "10s",
            "--json",
        ],
        None,
    );
    let out = m.ctl(
        &["publish", "dst", "--json-input", "--json", "-q"],
        Some(&copied),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json_lines(&out.stdout).len(), 3, "{out:?}");

    let src = m.read_all_json("src");
    let dst = m.read_all_json("dst");
    assert_eq!(dst.len(), 3);
    for (s, d) in src.iter().zip(&dst) {
        for f in ["payload", "encoding", "headers", "msg_id"] {
            assert_eq!(s[f], d[f], "{f} differs: {s} / {d}");
        }
        assert_eq!(d["topic"], "dst");
    }
    let raw = m.ctl_ok(
        &[
            "subscribe",
            "dst",
            "--from",
            "3",
            "-n",
            "1",
            "--raw",
            "--timeout",
            "10s",
        ],
        None,
    );
    assert_eq!(raw, bin, "the binary payload round-trips through JSON");
}

#[test]
fn publish_json_acks_arrive_while_stdin_is_still_open() {
    let m = Momd::start();
    let mut child = m.spawn_ctl(&["publish", "live.t", "--json", "-q"]);
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    for i in 1..=3u64 {
        writeln!(stdin, "msg {i}").expect("write");
        stdin.flush().expect("flush");
        let l = rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("no ack for line {i} while stdin is open"));
        let v: serde_json::Value = serde_json::from_str(&l).expect("JSON ack");
        assert_eq!(v["topic"], "live.t", "{v}");
        assert_eq!(v["seq"], i, "{v}");
        assert_eq!(v["line"], i, "{v}");
        assert_eq!(v["duplicate"], false, "{v}");
        assert_eq!(v["watchers"], 0, "{v}");
        assert_eq!(v["queues"], 0, "{v}");
    }
    drop(stdin);
    let st =
        common::wait_timeout(&mut child, Duration::from_secs(15)).expect("publish exits at EOF");
    assert!(st.success(), "{st}");
    reader.join().expect("reader");
    assert!(rx.try_recv().is_err(), "an extra ack line");
    assert_eq!(m.read_all_lines("live.t"), vec!["msg 1", "msg 2", "msg 3"]);
}

// ---------------------------------------------------------------------------------------
// 11

#[test]
fn passive_subscriber_sees_messages_but_counts_as_no_watcher_or_responder() {
    let m = Momd::start();
    let passive = Collector::new(m.spawn_ctl(&["subscribe", "p.t", "--passive"]));
    wait_for(Duration::from_secs(15), "the passive watch", || {
        (watches_of(&m, "momctl subscribe p.t") >= 1).then_some(())
    });
    let out = m.ctl(&["publish", "p.t", "hello", "--json"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("reached no watcher"),
        "a passive watch silenced the warning: {out:?}"
    );
    assert_eq!(json_lines(&out.stdout)[0]["watchers"], 0, "{out:?}");
    wait_for(
        Duration::from_secs(15),
        "the passive watcher got it",
        || (passive.count() >= 1).then_some(()),
    );

    // No responders: exit 6 at once, not after the timeout.
    let t0 = Instant::now();
    let out = m.ctl(&["request", "p.t", "anyone?", "--timeout", "20s"], None);
    assert_eq!(
        out.code, 6,
        "a passive watch counted as a responder: {out:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "exit 6 took {:?}",
        t0.elapsed()
    );

    // A normal subscriber counts: no warning, and a request waits for its (never coming)
    // reply until the timeout.
    let normal = Collector::new(m.spawn_ctl(&["subscribe", "p.t"]));
    wait_for(Duration::from_secs(15), "the normal watch", || {
        (watches_of(&m, "momctl subscribe p.t") >= 2).then_some(())
    });
    let out = m.ctl(&["publish", "p.t", "again"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("reached no watcher"), "{out:?}");
    let out = m.ctl(&["request", "p.t", "anyone?", "--timeout", "1s"], None);
    assert_eq!(out.code, 3, "{out:?}");
    wait_for(
        Duration::from_secs(15),
        "both messages at the normal watcher",
        || (normal.count() >= 2).then_some(()),
    );
    let (pl, _) = passive.kill();
    let (nl, _) = normal.kill();
    assert!(
        pl.starts_with(&["hello".to_string()]) && pl.contains(&"again".to_string()),
        "passive saw {pl:?}"
    );
    assert_eq!(
        nl.first().map(String::as_str),
        Some("again"),
        "normal saw {nl:?}"
    );
}

#[test]
fn subscribe_into_head_ends_when_head_goes_even_if_nothing_more_comes() {
    let m = Momd::start();
    m.ctl_ok(&["publish", "hd.a", "1", "2", "3", "-q"], None);
    let started = Instant::now();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 20 {} -s {} subscribe 'hd.*' --from all | head -1",
            common::momctl_bin().display(),
            m.addr()
        ))
        .output()
        .expect("run the pipeline");
    assert_eq!(lines(&out.stdout), vec!["1"]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "subscribe kept running after head exited"
    );
}
