//! momctl's exit codes (DESIGN.md: 0 ok, 1 error, 2 usage, 3 timed out before enough
//! messages, 4 cannot connect, 5 unauthorized/forbidden, 6 not found, 7 conflict), each from
//! a real situation.
//!
//! 7 (conflict) has no situation yet: momctl has no command that can meet a conflict in
//! this version (queues, whose `rm` of a non-empty queue is the conflict, come later).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::{free_port, momctl, numbered_lines, wait_for, wait_timeout, Momd};

#[test]
fn exit_0_when_every_message_is_acknowledged() {
    let m = Momd::start();
    let out = m.ctl(&["publish", "ok", "a", "b", "c", "-q"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(m.read_all_lines("ok"), vec!["a", "b", "c"]);
    let out = m.ctl(&["ping"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout_str().contains("pong"), "{out:?}");
}

#[test]
fn exit_1_on_a_line_over_the_payload_limit_keeps_the_lines_before() {
    let m = Momd::start_with(&["--max-payload", "100"]);
    let long = "x".repeat(200);
    let input = format!("one\ntwo\nthree\n{long}\nfive\nsix\n");
    let out = m.ctl(&["publish", "limited", "-q"], Some(input.as_bytes()));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("line 4"),
        "stderr does not name line 4: {out:?}"
    );
    assert_eq!(
        out.stderr.trim_end().lines().count(),
        1,
        "stderr is not one line: {out:?}"
    );
    // Exactly the 3 lines before are stored, whole; nothing of line 4 or after.
    let info = m.topic_info("limited");
    assert_eq!(info["messages"], 3, "{info}");
    assert_eq!(m.read_all_lines("limited"), vec!["one", "two", "three"]);

    // An argument over the limit: exit 1, nothing stored.
    let out = m.ctl(&["publish", "limited2", &long], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(m.ctl(&["topic", "info", "limited2"], None).code, 6);
}

#[test]
fn exit_2_on_usage_errors_without_connecting() {
    // No broker at this address: had momctl tried to connect, it would exit 4.
    let nobody = format!("127.0.0.1:{}", free_port());
    let t = Duration::from_secs(20);
    let cases: &[&[&str]] = &[
        &["publish"],                              // missing topic
        &["publish", "t", "--bogus"],              // unknown flag
        &["frobnicate"],                           // unknown subcommand
        &["subscribe", "t", "-n", "many"],         // not a number
        &["subscribe", "t", "--timeout", "soon"],  // not a duration
        &["publish", "bad topic", "x"],            // whitespace in a topic
        &["publish", "a..b", "x"],                 // empty token
        &["publish", "a.*", "x"],                  // wildcard in a topic
        &["subscribe", "a.>.b"],                   // '>' not last
        &["subscribe", "orders.a*"],               // wildcard not a whole token
        &["subscribe", "t", "--from", "whenever"], // unknown --from
        &["topic", "info", "bad topic"],           // invalid name in an admin command
        &["publish", "t", "x", "-H", "novalue"],   // header without '='
    ];
    for args in cases {
        let mut full = vec!["-s", nobody.as_str()];
        full.extend_from_slice(args);
        let out = momctl(&full, None, t);
        assert_eq!(out.code, 2, "momctl {args:?}: {out:?}");
        assert!(
            !out.stderr.is_empty(),
            "momctl {args:?} exited 2 without a word"
        );
        assert!(
            out.stdout.is_empty(),
            "momctl {args:?} wrote to stdout: {out:?}"
        );
    }
}

#[test]
fn exit_3_when_the_timeout_comes_before_enough_messages() {
    let m = Momd::start();
    m.ctl_ok(&["publish", "few", "1", "2", "-q"], None);
    let t0 = Instant::now();
    let out = m.ctl(
        &[
            "subscribe",
            "few",
            "--from",
            "all",
            "-n",
            "5",
            "--timeout",
            "1s",
        ],
        None,
    );
    let took = t0.elapsed();
    assert_eq!(out.code, 3, "{out:?}");
    // The two that came are written out before giving up.
    assert_eq!(out.stdout, b"1\n2\n");
    assert!(out.stderr.contains("2 of 5"), "{out:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(15),
        "took {took:?}"
    );
}

#[test]
fn exit_4_when_no_broker_listens() {
    let addr = format!("127.0.0.1:{}", free_port());
    for args in [
        &["ping"][..],
        &["publish", "t", "x"],
        &["subscribe", "t"],
        &["topic", "ls"],
        &["stats"],
    ] {
        let mut full = vec!["-s", addr.as_str()];
        full.extend_from_slice(args);
        let out = momctl(&full, None, Duration::from_secs(20));
        assert_eq!(out.code, 4, "momctl {args:?}: {out:?}");
        assert_eq!(
            out.stderr.trim_end().lines().count(),
            1,
            "stderr is not one line: {out:?}"
        );
        assert!(
            out.stderr.contains(&addr),
            "stderr does not name the address: {out:?}"
        );
    }
}

#[test]
fn exit_5_when_forbidden() {
    let m = Momd::start();
    // Reserved topics may be read but not changed.
    let out = m.ctl(&["topic", "rm", "$sys.events"], None);
    assert_eq!(out.code, 5, "topic rm $sys.events: {out:?}");
    let out = m.ctl(&["topic", "set", "$sys.events", "--max-msgs", "1"], None);
    assert_eq!(out.code, 5, "topic set $sys.events: {out:?}");
    let out = m.ctl(&["topic", "info", "$sys.events"], None);
    assert_eq!(out.code, 0, "topic info $sys.events: {out:?}");
    // Publishing to one is forbidden (DESIGN.md: 5 unauthorized/forbidden).
    let out = m.ctl(&["publish", "$sys.x", "hi"], None);
    assert_eq!(out.code, 5, "publish to $sys.x: {out:?}");
    assert!(out.stderr.contains("$sys.x"), "{out:?}");
    assert_eq!(
        m.ctl(&["topic", "info", "$sys.x"], None).code,
        6,
        "$sys.x was created"
    );
}

#[test]
fn exit_6_when_not_found() {
    let m = Momd::start();
    let out = m.ctl(&["topic", "info", "missing"], None);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("missing"), "{out:?}");
    let out = m.ctl(&["topic", "rm", "missing"], None);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("missing"), "{out:?}");
}

#[test]
fn closed_stdout_ends_subscribe_quietly_with_0() {
    let m = Momd::start();
    // More than a pipe buffer and momctl's own buffer, so momctl must meet the closed pipe.
    let payload = "y".repeat(200);
    let mut input = Vec::new();
    for i in 0..10_000 {
        writeln!(input, "{i:05}{payload}").unwrap();
    }
    m.ctl_ok(&["publish", "flood", "-q"], Some(&input));

    let mut sub = m.spawn_ctl(&["subscribe", "flood", "--from", "all"]);
    drop(sub.stdin.take());
    let mut rd = BufReader::new(sub.stdout.take().unwrap());
    let mut line = String::new();
    rd.read_line(&mut line).unwrap();
    assert_eq!(line, format!("00000{payload}\n"));
    drop(rd); // `| head -1`
    let mut err = sub.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        if let Some(st) = wait_timeout(&mut sub, Duration::from_millis(500)) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "subscribe did not end after its stdout was closed"
        );
        // In case everything fit in the buffers: live messages make it write again.
        let _ = m.ctl(&["publish", "flood", "more", "-q"], None);
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut err, &mut stderr).unwrap();
    assert_eq!(st.code(), Some(0), "exit status {st}; stderr: {stderr}");
    assert!(
        stderr.is_empty(),
        "stderr noise on a closed stdout: {stderr}"
    );
}

#[test]
fn broker_killed_mid_stream_fails_publish_and_reports_acked_count() {
    let mut m = Momd::start();
    let mut publish = m.spawn_ctl(&["publish", "doomed.stream", "-q", "--batch", "100"]);
    let mut stdin = publish.stdin.take().unwrap();
    let stdout = common_drain(publish.stdout.take().unwrap());
    let stderr = common_drain(publish.stderr.take().unwrap());
    // An endless stdin, written in small slices so momctl publishes as it reads.
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        loop {
            let chunk = numbered_lines("", i * 100 + 1, i * 100 + 100);
            if stdin.write_all(&chunk).is_err() {
                return;
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    wait_for(
        Duration::from_secs(30),
        "some acknowledged messages",
        || {
            let out = m.ctl(&["topic", "info", "doomed.stream", "--json"], None);
            (out.code == 0).then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(200));
    m.kill9();
    let st = wait_timeout(&mut publish, Duration::from_secs(20));
    let Some(st) = st else {
        let _ = publish.kill();
        panic!("publish kept running after the broker died");
    };
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    let _ = stdout.join();
    eprintln!("publish after kill -9: {st}: {err}");
    assert_eq!(
        st.code(),
        Some(8),
        "publish must exit 8 (connection lost) when the broker dies: {err}"
    );
    assert!(
        err.contains("without an answer") || err.contains("nothing is waiting"),
        "stderr does not say what is unknown: {err}"
    );
    assert!(
        err.contains("acknowledged"),
        "stderr does not say how many were acknowledged: {err}"
    );
    // The count it reports is a real number, and no more than what is stored after restart.
    // "…; 18900 of 20600 lines acknowledged; …": the first number of the clause that says
    // "acknowledged".
    let end = err.find("acknowledged").unwrap();
    let clause = &err[err[..end].rfind([';', '(']).map_or(0, |i| i + 1)..end];
    let acked: u64 = clause
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .next()
        .unwrap_or_else(|| panic!("no count in: {err}"));
    m.restart();
    let stored = m.topic_info("doomed.stream")["messages"].as_u64().unwrap();
    assert!(acked > 0, "{err}");
    assert!(
        stored >= acked,
        "momctl reported {acked} acknowledged, but only {stored} are stored"
    );
}

fn common_drain<R: std::io::Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}
