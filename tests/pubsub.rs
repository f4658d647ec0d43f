//! Publish and subscribe through the real momctl and the client library: bulk order,
//! dedupe, the replay→live seam, input and output formats, retention, topic removal and
//! the "no watcher" warning.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{json_lines, lines, numbered_lines, wait_for, Momd};

#[test]
fn hundred_thousand_piped_lines_come_back_in_order() {
    let m = Momd::start();
    let n = 100_000u64;
    let input = numbered_lines("", 1, n);
    let out = m.ctl(&["publish", "bulk", "-q"], Some(&input));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "publish -q wrote to stderr: {}",
        out.stderr
    );

    let info = m.topic_info("bulk");
    assert_eq!(info["messages"], n);
    assert_eq!(info["first_seq"], 1);
    assert_eq!(info["last_seq"], n);

    let out = m.ctl(
        &[
            "subscribe",
            "bulk",
            "--from",
            "all",
            "-n",
            &n.to_string(),
            "--timeout",
            "60s",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    // Byte for byte what went in: every line, in order, nothing more.
    assert!(
        out.stdout == input,
        "subscribe output differs from the published lines"
    );
}

#[test]
fn same_id_published_twice_is_stored_once() {
    let m = Momd::start();
    for _ in 0..2 {
        let out = m.ctl(
            &[
                "publish",
                "orders.eu",
                r#"{"id": 42}"#,
                "--id",
                "order-42",
                "-q",
            ],
            None,
        );
        assert_eq!(out.code, 0, "{out:?}");
    }
    let info = m.topic_info("orders.eu");
    assert_eq!(info["messages"], 1, "{info}");
    assert_eq!(info["last_seq"], 1, "a duplicate took a seq: {info}");
    let msgs = m.read_all_json("orders.eu");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["payload"], r#"{"id": 42}"#);
    assert_eq!(msgs[0]["msg_id"], "order-42");
    assert_eq!(m.stats()["totals"]["duplicates"], 1);

    // Piped lines with --id: the n-th line gets batch7-n, so re-running the pipeline stores
    // nothing new — and a longer re-run stores only the new lines.
    let input = numbered_lines("line ", 1, 500);
    m.ctl_ok(
        &["publish", "batches", "--id", "batch7", "-q"],
        Some(&input),
    );
    m.ctl_ok(
        &["publish", "batches", "--id", "batch7", "-q"],
        Some(&input),
    );
    let info = m.topic_info("batches");
    assert_eq!(info["messages"], 500, "{info}");
    assert_eq!(info["last_seq"], 500, "{info}");
    let more = numbered_lines("line ", 1, 600);
    m.ctl_ok(&["publish", "batches", "--id", "batch7", "-q"], Some(&more));
    let msgs = m.read_all_json("batches");
    assert_eq!(msgs.len(), 600);
    for (i, msg) in msgs.iter().enumerate() {
        let n = i + 1;
        assert_eq!(msg["seq"], n as u64);
        assert_eq!(msg["payload"], format!("line {n}"));
        assert_eq!(msg["msg_id"], format!("batch7-{n}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_to_live_seam_has_no_gap_and_no_duplicate() {
    let m = Momd::start_with(&["--fsync", "never"]);
    let client = m.client("seam-publisher").await;
    let total: u64 = 30_000;
    let batch: u64 = 50;

    // A publisher that runs the whole time, numbered 1..=total, one pipelined stream.
    let pub_client = client.clone();
    let publisher = tokio::spawn(async move {
        let mut p = pub_client.publisher("seam", 4);
        let mut next = 1u64;
        while next <= total {
            let msgs = (next..(next + batch).min(total + 1))
                .map(|i| {
                    momctl::client::message(i.to_string().into_bytes(), Default::default(), None)
                })
                .collect();
            next += batch;
            p.send(msgs).await.expect("publish");
            // Spread the stream over time so the subscribers start mid-stream.
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        while p.next_ack().await.expect("ack").is_some() {}
    });

    // Wait until a good part is stored, then start subscribers from the beginning.
    let probe = m.client("probe").await;
    loop {
        let stored = probe
            .topic_info("seam")
            .await
            .map(|t| t.last_seq)
            .unwrap_or(0);
        if stored >= total / 4 {
            assert!(
                stored < total,
                "the publisher finished before the subscribers started; make it slower"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let addr = m.addr();
    let n = total.to_string();
    let ctl = tokio::task::spawn_blocking(move || {
        common::momctl(
            &[
                "-s",
                &addr,
                "subscribe",
                "seam",
                "--from",
                "all",
                "-n",
                &n,
                "--timeout",
                "60s",
            ],
            None,
            Duration::from_secs(90),
        )
    });
    // And one through the library, which also sees the `live` notice at the seam.
    let lib = m.client("seam-watcher").await;
    let mut w = lib
        .watch(vec!["seam".into()], mom_proto::StartAt::All, 0)
        .await
        .expect("watch");
    let mut got = Vec::with_capacity(total as usize);
    let mut live_at = None;
    let mut slow = 0;
    while (got.len() as u64) < total {
        let ev = tokio::time::timeout(Duration::from_secs(30), w.next())
            .await
            .expect("watch stalled")
            .expect("watch ended");
        match ev {
            momctl::client::WatchEvent::Messages(msgs) => {
                for msg in msgs {
                    assert_eq!(msg.topic, "seam");
                    let v: u64 = std::str::from_utf8(&msg.payload).unwrap().parse().unwrap();
                    assert_eq!(v, msg.seq, "payload and seq disagree");
                    got.push(v);
                }
            }
            momctl::client::WatchEvent::Notice(n) => match n.kind {
                mom_proto::NoticeKind::Live => {
                    assert!(live_at.is_none(), "two live notices");
                    live_at = Some(got.len());
                }
                mom_proto::NoticeKind::SlowConsumer => slow += n.skipped,
                _ => {}
            },
        }
    }
    publisher.await.expect("publisher task");
    assert_eq!(
        slow, 0,
        "the library watcher was treated as a slow consumer"
    );
    let live_at = live_at.expect("no live notice");
    assert!(
        live_at > 0 && live_at < total as usize,
        "the seam was not mid-stream (at {live_at})"
    );
    let want: Vec<u64> = (1..=total).collect();
    if got != want {
        let first_bad = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "library watch: gap or duplicate at index {first_bad} (seam at {live_at}): got {:?}",
            &got[first_bad.saturating_sub(3)..(first_bad + 3).min(got.len())]
        );
    }

    let out = ctl.await.expect("momctl task");
    assert_eq!(out.code, 0, "{out:?}");
    let got: Vec<u64> = lines(&out.stdout)
        .iter()
        .map(|l| l.parse().expect("number"))
        .collect();
    if got != want {
        let first_bad = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "momctl subscribe: gap or duplicate at index {first_bad}; {} lines",
            got.len()
        );
    }
}

/// `publish -`: each line names its topic; thousands of topics from one pipe, each with
/// its own messages in order, and a bad line stops the run with an exact count.
#[test]
fn a_topic_per_line_from_a_pipe() {
    let m = Momd::start();
    let mut input = String::new();
    for i in 1..=3000 {
        input.push_str(&format!("devices.d{}.telemetry reading-{i}\n", i % 1000));
    }
    let out = m.ctl(&["publish", "-", "--json"], Some(input.as_bytes()));
    assert_eq!(out.code, 0, "{out:?}");
    let acks = common::lines(&out.stdout);
    assert_eq!(acks.len(), 3000);
    assert!(
        acks[0].contains("\"topic\":\"devices.d1.telemetry\""),
        "{}",
        acks[0]
    );
    assert!(acks[0].contains("\"line\":1"), "{}", acks[0]);
    let d7 = m.read_all_lines("devices.d7.telemetry");
    assert_eq!(d7, vec!["reading-7", "reading-1007", "reading-2007"]);
    assert_eq!(m.topic_info("devices.d0.telemetry")["messages"], 3);
    // Each new topic is announced once on `$sys.events` (the events of one flush go in
    // one write), in the order the topics were made.
    let created: Vec<String> = m
        .read_all_lines("$sys.events")
        .into_iter()
        .filter(|e| e.contains("\"topic_created\""))
        .collect();
    let want: Vec<String> = (1..=1000)
        .map(|i| {
            format!(
                r#"{{"event":"topic_created","topic":"devices.d{}.telemetry"}}"#,
                i % 1000
            )
        })
        .collect();
    assert_eq!(created, want);

    // A line with no topic stops there: what came before is acknowledged, and said so.
    let out = m.ctl(
        &["publish", "-"],
        Some(b"t.a one\nt.a two\nno-space-here\nt.a four\n"),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("line 3 has no space"), "{}", out.stderr);
    assert!(
        out.stderr.contains("(2 messages acknowledged)"),
        "{}",
        out.stderr
    );
    assert_eq!(m.read_all_lines("t.a"), vec!["one", "two"]);
    // Messages as arguments make no sense with `-`.
    let out = m.ctl(&["publish", "-", "x"], None);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn null_separated_and_whole_stdin_publish() {
    let m = Momd::start();
    // -0: NUL-separated; the last record needs no terminator; newlines are payload.
    m.ctl_ok(&["publish", "nul", "-0", "-q"], Some(b"a\0two\nlines\0c"));
    let info = m.topic_info("nul");
    assert_eq!(info["messages"], 3, "{info}");
    let out = m.ctl_ok(
        &["subscribe", "nul", "--from", "all", "-n", "3", "-0"],
        None,
    );
    assert_eq!(out, b"a\0two\nlines\0c\0");

    // --whole: all of stdin is one message, bytes kept as they are (binary too).
    let blob: Vec<u8> = (0..=255u8).chain(b"\nmore\n".iter().copied()).collect();
    m.ctl_ok(&["publish", "blob", "--whole", "-q"], Some(&blob));
    let info = m.topic_info("blob");
    assert_eq!(info["messages"], 1, "{info}");
    assert_eq!(info["bytes"], blob.len() as u64, "{info}");
    let out = m.ctl_ok(
        &["subscribe", "blob", "--from", "all", "-n", "1", "-0"],
        None,
    );
    let mut want = blob.clone();
    want.push(0);
    assert_eq!(out, want);
}

#[test]
fn subscribe_json_has_every_field_and_base64_for_binary() {
    let m = Momd::start();
    m.ctl_ok(
        &[
            "publish",
            "j.text",
            "hello wörld",
            "-H",
            "trace=abc",
            "-H",
            "k=v=w",
            "--id",
            "m-1",
            "-q",
        ],
        None,
    );
    let binary = [0xffu8, 0xfe, 0x00, 0x01, b'x'];
    m.ctl_ok(&["publish", "j.bin", "--whole", "-q"], Some(&binary));

    let out = m.ctl_ok(
        &["subscribe", "j.*", "--from", "all", "-n", "2", "--json"],
        None,
    );
    let msgs = json_lines(&out);
    assert_eq!(msgs.len(), 2);
    let text = msgs
        .iter()
        .find(|v| v["topic"] == "j.text")
        .expect("j.text message");
    let bin = msgs
        .iter()
        .find(|v| v["topic"] == "j.bin")
        .expect("j.bin message");

    assert_eq!(text["seq"], 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let t = text["time"].as_u64().expect("time is a number");
    assert!(
        t <= now + 5_000 && t + 120_000 > now,
        "time {t} is not about now ({now})"
    );
    assert_eq!(
        text["headers"],
        serde_json::json!({"trace": "abc", "k": "v=w"})
    );
    assert_eq!(text["sender"]["user"], "anonymous");
    assert!(text["sender"]["client"].as_u64().is_some(), "{text}");
    assert_eq!(text["sender"]["name"], "momctl publish j.text");
    assert_eq!(text["msg_id"], "m-1");
    assert_eq!(text["payload"], "hello wörld");
    assert_eq!(text["encoding"], "utf8");

    assert_eq!(bin["seq"], 1);
    assert_eq!(bin["headers"], serde_json::json!({}));
    assert_eq!(bin["encoding"], "base64");
    // base64 of ff fe 00 01 78
    assert_eq!(bin["payload"], "//4AAXg=");
}

#[test]
fn retention_keeps_the_newest_max_msgs() {
    let m = Momd::start();
    m.ctl_ok(&["topic", "set", "ret", "--max-msgs", "10"], None);
    m.ctl_ok(&["publish", "ret", "-q"], Some(&numbered_lines("", 1, 25)));
    let info = m.topic_info("ret");
    assert_eq!(info["messages"], 10, "{info}");
    assert_eq!(info["first_seq"], 16, "{info}");
    assert_eq!(info["last_seq"], 25, "{info}");
    assert_eq!(info["limits"]["max_msgs"], 10, "{info}");

    let msgs = m.read_all_json("ret");
    let seqs: Vec<u64> = msgs.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (16..=25).collect::<Vec<_>>());
    let payloads: Vec<String> = msgs
        .iter()
        .map(|v| v["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        payloads,
        (16..=25).map(|i| i.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn topic_rm_removes_the_topic() {
    let m = Momd::start();
    m.ctl_ok(&["publish", "doomed", "a", "b", "-q"], None);
    m.ctl_ok(&["publish", "kept", "k", "-q"], None);
    let names = |m: &Momd| -> Vec<String> {
        json_lines(&m.ctl_ok(&["topic", "ls", "--json"], None))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names(&m).contains(&"doomed".to_string()));

    let out = m.ctl(&["topic", "rm", "doomed"], None);
    assert_eq!(out.code, 0, "{out:?}");
    let after = names(&m);
    assert!(!after.contains(&"doomed".to_string()), "{after:?}");
    assert!(after.contains(&"kept".to_string()), "{after:?}");
    assert_eq!(m.ctl(&["topic", "info", "doomed"], None).code, 6);

    // Published again, it is a new topic: seqs start at 1, the old messages are gone.
    m.ctl_ok(&["publish", "doomed", "new", "-q"], None);
    let info = m.topic_info("doomed");
    assert_eq!(info["messages"], 1, "{info}");
    assert_eq!(info["first_seq"], 1, "{info}");
    assert_eq!(m.read_all_lines("doomed"), vec!["new"]);
}

#[test]
fn publish_warns_when_no_one_is_watching() {
    let m = Momd::start();
    let out = m.ctl(&["publish", "lonely", "x"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("no watcher"), "no warning: {out:?}");

    let out = m.ctl(&["publish", "lonely", "x", "-q"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "-q still warned: {out:?}");

    // With a live subscriber, no warning; and the subscriber gets the message.
    let mut sub = m.spawn_ctl(&["subscribe", "lonely", "-n", "1", "--timeout", "30s"]);
    wait_for(Duration::from_secs(10), "the subscriber's watch", || {
        (m.topic_info("lonely")["watchers"].as_u64() >= Some(1)).then_some(())
    });
    let out = m.ctl(&["publish", "lonely", "seen"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "warned although a subscriber was watching: {out:?}"
    );
    let mut line = String::new();
    BufReader::new(sub.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "seen\n");
    let st =
        common::wait_timeout(&mut sub, Duration::from_secs(10)).expect("subscriber did not exit");
    assert!(st.success(), "{st}");
}

#[test]
fn a_replay_across_topics_comes_in_publish_order() {
    let m = Momd::start();
    // Alternate between two topics, one message per publish, a little apart in time.
    for i in 1..=6 {
        let topic = if i % 2 == 1 { "mix.a" } else { "mix.b" };
        m.ctl_ok(&["publish", topic, &format!("m{i}"), "-q"], None);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = m.ctl_ok(&["subscribe", "mix.>", "--from", "all", "-n", "6"], None);
    assert_eq!(
        common::lines(&out),
        vec!["m1", "m2", "m3", "m4", "m5", "m6"],
        "merged by time, not topic by topic"
    );
}

/// Requests and replies are delivered before their flush (README, "Request and reply"),
/// but never ahead of an earlier ordinary message of their topic: a watch receives every
/// topic's messages in seq order, requests mixed with ordinary publishes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_delivered_early_keep_seq_order_with_ordinary_messages() {
    use momctl::client::{message, WatchEvent};
    let m = Momd::start();
    let watcher = m.client("order-watcher").await;
    let mut w = watcher
        .watch(vec!["svc.mixed".into()], mom_proto::StartAt::New, 0)
        .await
        .expect("watch");
    let publisher = m.client("order-publisher").await;
    let n = 400u64;
    // Pipelined, one publish per message, every third one a request.
    let mut sends = Vec::new();
    for i in 1..=n {
        let mut headers = mom_proto::Headers::new();
        if i % 3 == 0 {
            headers.insert("reply-to".into(), "$inbox.0.test".into());
        }
        let p = publisher.clone();
        sends.push(tokio::spawn(async move {
            p.publish(
                "svc.mixed",
                vec![message(i.to_string().into_bytes(), headers, None)],
            )
            .await
        }));
    }
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < n {
        let ev = tokio::time::timeout(Duration::from_secs(20), w.next())
            .await
            .expect("deliveries within 20 s")
            .expect("watch");
        if let WatchEvent::Messages(msgs) = ev {
            seqs.extend(msgs.iter().map(|m| m.seq));
        }
    }
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "delivered out of seq order"
    );
    for s in sends {
        s.await.expect("task").expect("publish acknowledged");
    }
}

/// A client that stops reading a watch and unwatches it while deliveries are still coming
/// gets its unwatch answered: the deliveries that found the watch's buffer full are
/// dropped, not left holding the connection's reader (which then never read the answer:
/// a `momcheck --cluster` run hung so, in its read-back of a topic published to live).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatching_a_watch_nobody_reads_any_more_is_answered() {
    let m = Momd::start_with(&["--fsync", "never"]);
    let watcher = m.client("watcher").await;
    let publisher = m.client("publisher").await;
    let w = watcher
        .watch(vec!["busy".into()], mom_proto::StartAt::New, 0)
        .await
        .expect("watch");
    // More deliveries than the watch's buffer holds, none of them read.
    for i in 0..200u32 {
        let msg = momctl::client::message(i.to_string().into_bytes(), Default::default(), None);
        publisher.publish("busy", vec![msg]).await.expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = tokio::time::timeout(Duration::from_secs(10), w.unwatch()).await;
    assert!(
        matches!(done, Ok(Ok(()))),
        "the unwatch was not answered: {done:?}"
    );
    // The connection goes on serving.
    let t = tokio::time::timeout(Duration::from_secs(10), watcher.topic_info("busy"))
        .await
        .expect("answered")
        .expect("topic info");
    assert_eq!(t.last_seq, 200);
}
