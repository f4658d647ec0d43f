//! Hostile clients and the broker's memory (issue 10; docs/protocol.md 2.1, 2.3, 2.4, 8):
//! stalled max-size frames, malformed floods before and after `hello`, and a client that
//! pipelines requests with big replies and never reads them. Each must cost momd a bounded
//! amount of memory while another client keeps being served.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{Momd, Raw, Read1};
use mom_proto::{ClientFrame, ErrorCode, Req, ServerFrame};

const MIB: u64 = 1024 * 1024;
const T: Duration = Duration::from_secs(10);

fn frames(fs: &[ClientFrame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for f in fs {
        mom_proto::encode_frame(f, &mut buf, usize::MAX).expect("encode");
    }
    buf.to_vec()
}

fn expect_error(f: ServerFrame) -> mom_proto::ErrorFrame {
    match f {
        ServerFrame::Error(e) => e,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// A ping on a fresh connection answers, and how long it took.
fn ping_latency(m: &Momd) -> Duration {
    let mut raw = Raw::connect(m);
    raw.hello();
    let start = Instant::now();
    raw.send(&ClientFrame::Ping(Req { id: 2 }));
    match raw.expect_frame(T) {
        ServerFrame::Pong(p) => assert_eq!(p.id, 2),
        other => panic!("expected pong, got {other:?}"),
    }
    start.elapsed()
}

#[test]
fn stalled_max_size_frames_hold_little_memory_and_are_closed() {
    let m = Momd::start_with(&["--frame-timeout", "2s"]);
    m.assert_serves();
    let before = m.rss_bytes();
    let mut stalled = Vec::new();
    for _ in 0..64 {
        let mut raw = Raw::connect(&m);
        raw.hello();
        // Announce a body of max_frame (8 MiB) and send 4 KiB of it.
        let mut bytes = (mom_proto::DEFAULT_MAX_FRAME as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0x81; 4096]);
        raw.send_bytes(&bytes);
        stalled.push(raw);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = m.rss_bytes();
    let latency = ping_latency(&m);
    eprintln!(
        "64 stalled 8 MiB frames: RSS {} -> {} KiB (+{} KiB), another client's ping {latency:?}",
        before / 1024,
        during / 1024,
        during.saturating_sub(before) / 1024
    );
    // Before: each buffer was reserved to the announced 8 MiB (+512 MiB for 64).
    assert!(
        during < before + 32 * MIB,
        "64 stalled frames grew momd from {} to {} MiB",
        before / MIB,
        during / MIB
    );
    // After the frame timeout each is told why and closed.
    for raw in &mut stalled {
        let e = expect_error(raw.expect_frame(T));
        assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
        assert_eq!(e.id, None, "{e:?}");
        assert!(e.message.contains("incomplete"), "{e:?}");
        raw.expect_closed(T);
    }
    m.assert_serves();
}

#[test]
fn nearly_whole_max_size_frames_that_stall_are_bounded_by_the_frame_budget() {
    // 32 connections each send all but one byte of an 8 MiB frame (256 MiB in all) and
    // stop. Only --frame-budget of them is read at once; the rest wait unread (TCP holds
    // their bytes in the kernel, not in momd).
    let m = Momd::start_with(&["--frame-timeout", "2s", "--frame-budget", "32MiB"]);
    m.assert_serves();
    let before = m.rss_bytes();
    let body = std::sync::Arc::new({
        let mut b = (mom_proto::DEFAULT_MAX_FRAME as u32).to_be_bytes().to_vec();
        b.resize(4 + mom_proto::DEFAULT_MAX_FRAME - 1, 0x81);
        b
    });
    let mut conns = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..32 {
        let mut raw = Raw::connect(&m);
        raw.hello();
        let mut stream = raw.stream.try_clone().expect("clone stream");
        let body = body.clone();
        writers.push(std::thread::spawn(move || {
            let _ = stream.write_all(&body);
        }));
        conns.push(raw);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let during = m.rss_bytes();
    let latency = ping_latency(&m);
    eprintln!(
        "32 stalled 8 MiB frames, all but one byte sent, --frame-budget 32MiB: RSS {} -> {} KiB \
         (+{} KiB), another client's ping {latency:?}",
        before / 1024,
        during / 1024,
        during.saturating_sub(before) / 1024
    );
    assert!(
        during < before + 64 * MIB,
        "stalled frames grew momd from {} to {} MiB",
        before / MIB,
        during / MIB
    );
    // Those that were read are closed after the frame timeout, which frees the budget for
    // the next ones.
    let mut closed = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.len() < 8 && Instant::now() < deadline {
        for (i, raw) in conns.iter_mut().enumerate() {
            if closed.contains(&i) {
                continue;
            }
            if let Read1::Frame(f) = raw.read_frame(Duration::from_millis(20)) {
                let e = expect_error(f);
                assert!(e.message.contains("incomplete"), "{e:?}");
                closed.insert(i);
            }
        }
    }
    let closed = closed.len();
    assert!(closed >= 8, "only {closed} stalled connections were closed");
    for raw in &conns {
        let _ = raw.stream.shutdown(std::net::Shutdown::Both);
    }
    for w in writers {
        w.join().expect("writer");
    }
    m.assert_serves();
}

#[test]
fn malformed_flood_before_hello_is_closed_and_does_not_grow_the_broker() {
    let m = Momd::start();
    m.assert_serves();
    let before = m.rss_bytes();
    // 5-byte frames whose body (0xc1) is never valid MessagePack; 2 MiB of them per
    // connection, 32 connections: 13 million frames' worth of the measured flood's kind.
    let flood = flood_copy();
    let started = Instant::now();
    for _ in 0..32 {
        let mut raw = Raw::connect(&m);
        let mut stream = raw.stream.try_clone().expect("clone stream");
        let writer = std::thread::spawn(move || {
            // The server closes after the first frame: writes then fail, which is fine.
            let _ = stream.write_all(&flood_copy());
        });
        // One error at most (it may be lost to the reset of a close with unread bytes),
        // then the connection is closed.
        match raw.read_frame(T) {
            Read1::Frame(f) => {
                let e = expect_error(f);
                assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
                raw.expect_closed(T);
            }
            Read1::Closed => {}
            Read1::Timeout => panic!("a malformed flood before hello was not closed"),
        }
        writer.join().expect("writer");
    }
    let after = m.rss_bytes();
    eprintln!(
        "32 × {} KiB malformed flood before hello in {:?}: RSS {} -> {} KiB",
        flood.len() / 1024,
        started.elapsed(),
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 16 * MIB,
        "a malformed flood grew momd from {} to {} MiB",
        before / MIB,
        after / MIB
    );
    m.assert_serves();
}

fn flood_copy() -> Vec<u8> {
    [0u8, 0, 0, 1, 0xc1].repeat(400_000)
}

#[test]
fn malformed_frames_after_hello_are_answered_until_too_many_in_a_row() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    let bad = [0u8, 0, 0, 1, 0xc1];
    // A good frame resets the count: 100 bad, a ping, 100 bad, a ping.
    for round in 0..2u64 {
        raw.send_bytes(&bad.repeat(100));
        raw.send(&ClientFrame::Ping(Req { id: 10 + round }));
        for _ in 0..100 {
            let e = expect_error(raw.expect_frame(T));
            assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
        }
        match raw.expect_frame(T) {
            ServerFrame::Pong(p) => assert_eq!(p.id, 10 + round),
            other => panic!("expected pong, got {other:?}"),
        }
    }
    // 101 in a row: 100 answers, then one error that says why, then close.
    raw.send_bytes(&bad.repeat(101));
    for _ in 0..100 {
        let e = expect_error(raw.expect_frame(T));
        assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
        assert!(!e.message.contains("closing"), "{e:?}");
    }
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
    assert!(e.message.contains("in a row"), "{e:?}");
    raw.expect_closed(T);
    m.assert_serves();
}

#[test]
fn unread_stats_and_list_replies_stop_reading_the_client_not_grow_the_broker() {
    let m = Momd::start_with(&["--fsync", "never"]);
    // 1000 queues with 4 bindings each make each stats or queue_list reply about 250 KB
    // (before, queues were not counted in what an unread stats reply costs).
    let mut setup = Raw::connect(&m);
    setup.hello();
    let topics = 20u64;
    let queues = 1000u64;
    let mut setup_frames: Vec<ClientFrame> = (0..topics)
        .map(|i| {
            ClientFrame::Publish(mom_proto::Publish {
                id: 100 + i,
                topic: format!("hostile.t{i:04}"),
                msgs: vec![momctl::client::message(&b"x"[..], Default::default(), None)],
                no_ack: false,
            })
        })
        .collect();
    setup_frames.extend((0..queues).map(|i| {
        ClientFrame::QueueCreate(mom_proto::QueueCreate {
            id: 10_000 + i,
            queue: format!("hostile-queue-{i:05}"),
            bindings: (0..4)
                .map(|b| format!("hostile.binding.pattern.{b}.{i:05}.>"))
                .collect(),
            ..Default::default()
        })
    }));
    setup.send_bytes(&frames(&setup_frames));
    for _ in 0..topics + queues {
        match setup.expect_frame(T) {
            ServerFrame::PublishOk(_) | ServerFrame::QueueInfo(_) => {}
            other => panic!("expected publish_ok or queue_info, got {other:?}"),
        }
    }
    drop(setup);
    m.assert_serves();
    let before = m.rss_bytes();

    // Pipeline 900 requests with big replies and read nothing.
    let n = 900u64;
    let requests: Vec<ClientFrame> = (1..=n)
        .map(|i| {
            // First pages, as a client written before paging asks: 1000 queues fit one.
            let r = mom_proto::ListReq {
                id: 1000 + i,
                ..Default::default()
            };
            match i % 6 {
                0 => ClientFrame::TopicList(r),
                1 => ClientFrame::QueueList(r),
                _ => ClientFrame::Stats(mom_proto::StatsReq {
                    id: r.id,
                    ..Default::default()
                }),
            }
        })
        .collect();
    let mut hostile = Raw::connect(&m);
    hostile.hello();
    hostile.send_bytes(&frames(&requests));
    let mut peak = before;
    let mut worst = Duration::ZERO;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(m.rss_bytes());
        worst = worst.max(ping_latency(&m));
    }
    eprintln!(
        "{n} unread stats/list requests ({topics} topics, {queues} queues): RSS {} -> peak {} \
         KiB, another client's worst ping {worst:?}",
        before / 1024,
        peak / 1024
    );
    // Before: up to max_inflight (1024) stats replies were built, and each was charged for
    // its topics and clients only.
    assert!(
        peak < before + 40 * MIB,
        "unread replies grew momd from {} to {} MiB",
        before / MIB,
        peak / MIB
    );
    m.assert_serves();

    // Now it reads: every request gets its reply, each a well-formed frame (Raw panics on
    // anything else); none was dropped.
    let mut ids = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (ids.len() as u64) < n {
        assert!(Instant::now() < deadline, "only {} replies came", ids.len());
        let f = hostile.expect_frame(T);
        let id = match &f {
            ServerFrame::Stats(s) => {
                assert!(s.topics.len() as u64 >= topics);
                s.id
            }
            ServerFrame::TopicList(l) => {
                assert!(l.topics.len() as u64 >= topics);
                l.id
            }
            ServerFrame::QueueList(l) => {
                assert_eq!(l.queues.len() as u64, queues);
                l.id
            }
            other => panic!("expected a stats or list reply, got {other:?}"),
        };
        assert!(ids.insert(id), "reply {id} came twice");
    }
    assert_eq!(ids, (1001..=1000 + n).collect::<HashSet<_>>());
    hostile.send(&ClientFrame::Ping(Req { id: 7 }));
    match hostile.expect_frame(T) {
        ServerFrame::Pong(p) => assert_eq!(p.id, 7),
        other => panic!("expected pong, got {other:?}"),
    }
}

/// Issue 10: two connections asking for 524,288 watch patterns grew momd until the OOM
/// killer ended it, and every publish scanned every pattern. Patterns are now counted per
/// connection and in all, refused with `rate_limited` past the limit, and matched through
/// an index, so another client's publish stays fast while the patterns are held.
#[test]
fn watch_patterns_are_limited_and_matching_stays_fast() {
    let m = Momd::start();
    m.assert_serves();
    let before = m.rss_bytes();
    let mut raw = Raw::connect(&m);
    raw.hello();
    let mut refused = None;
    let mut first = None;
    for i in 0..50u64 {
        let patterns = (0..256)
            .map(|k| format!("dev.d{i}x{k}.*.telemetry"))
            .collect();
        raw.send(&ClientFrame::Watch(mom_proto::Watch {
            id: 10 + i,
            patterns,
            ..Default::default()
        }));
        match raw.expect_frame(T) {
            ServerFrame::WatchOk(ok) => {
                first.get_or_insert(ok.watch);
            }
            ServerFrame::Error(e) => {
                assert_eq!(e.code, ErrorCode::RateLimited, "{e:?}");
                assert!(e.message.contains("10000"), "{e:?}");
                refused = Some(i);
                break;
            }
            other => panic!("expected watch_ok or an error, got {other:?}"),
        }
    }
    // 39 watches of 256 patterns fit in 10,000; the 40th does not.
    assert_eq!(refused, Some(39), "the per-connection pattern limit");
    let held = m.rss_bytes();
    eprintln!(
        "9984 patterns held: RSS {} -> {} KiB",
        before / 1024,
        held / 1024
    );
    assert!(held.saturating_sub(before) < 64 * MIB, "{before} -> {held}");
    // The connection is still served, and another client's publishes are quick.
    raw.send(&ClientFrame::Ping(Req { id: 99 }));
    assert!(matches!(raw.expect_frame(T), ServerFrame::Pong(_)));
    let start = Instant::now();
    let lines = common::numbered_lines("", 1, 200);
    m.ctl_ok(
        &["publish", "dev.d1x1.a.telemetry", "--batch", "1", "-q"],
        Some(&lines),
    );
    let took = start.elapsed();
    eprintln!("200 single-message publishes while the patterns are held: {took:?}");
    // An unwatch gives its share back: a new watch fits again.
    let watch = first.expect("a first watch");
    raw.send(&ClientFrame::Unwatch(mom_proto::Unwatch { id: 200, watch }));
    // The 200 messages published above come first: this connection watches their topic.
    let mut delivered = 0;
    loop {
        match raw.expect_frame(T) {
            ServerFrame::Deliver(_) => delivered += 1,
            ServerFrame::Ok(ok) => {
                assert_eq!(ok.id, 200);
                break;
            }
            other => panic!("expected deliveries then ok, got {other:?}"),
        }
    }
    assert_eq!(
        delivered, 200,
        "each message once, through the pattern index"
    );
    raw.send(&ClientFrame::Watch(mom_proto::Watch {
        id: 201,
        patterns: (0..200).map(|k| format!("again.{k}")).collect(),
        ..Default::default()
    }));
    assert!(matches!(raw.expect_frame(T), ServerFrame::WatchOk(_)));
}

/// Issue 10: 64 connections publishing 1 MiB messages faster than the disk grew momd to
/// 2.5 GB, and another client's small publish waited 40 s for its ack. Requests read and not
/// yet durable are now bounded in all (`--inflight-budget`), and small requests have a lane
/// of their own: every big publish is still acknowledged, momd's memory stays near its
/// budget, and a small publish goes through while the big ones wait.
#[test]
fn publishers_faster_than_the_disk_are_bounded_and_a_small_one_is_not_starved() {
    let m = Momd::start_with(&["--inflight-budget", "4MiB"]);
    m.assert_serves();
    let before = m.rss_bytes();
    let line = {
        let mut l = vec![b'x'; 1024 * 1024 - 1];
        l.push(b'\n');
        l
    };
    const PUBS: usize = 8;
    const EACH: usize = 24;
    let mut pubs = Vec::new();
    for i in 0..PUBS {
        let topic = format!("flood.{i}");
        let mut child = m.spawn_ctl(&["publish", &topic, "--window", "16", "-q"]);
        let mut stdin = child.stdin.take().expect("stdin");
        let line = line.clone();
        let feeder = std::thread::spawn(move || {
            for _ in 0..EACH {
                if stdin.write_all(&line).is_err() {
                    break;
                }
            }
        });
        pubs.push((child, feeder));
    }
    // While they push, a small publisher's messages are acknowledged.
    let start = Instant::now();
    let small = common::numbered_lines("s", 1, 20);
    m.ctl_ok(&["publish", "small", "--batch", "1", "-q"], Some(&small));
    eprintln!(
        "20 single small publishes while {PUBS} connections flood 1 MiB messages: {:?}",
        start.elapsed()
    );
    let mut peak = 0;
    for (mut child, feeder) in pubs {
        while common::wait_timeout(&mut child, Duration::from_millis(20)).is_none() {
            peak = peak.max(m.rss_bytes());
        }
        feeder.join().expect("feeder");
        let out = child.wait_with_output().expect("momctl output");
        assert!(out.status.success(), "{out:?}");
    }
    for i in 0..PUBS {
        let info = m.topic_info(&format!("flood.{i}"));
        assert_eq!(info["messages"], EACH as u64, "{info}");
    }
    assert_eq!(m.topic_info("small")["messages"], 20);
    eprintln!(
        "{PUBS} x {EACH} x 1 MiB publishes with --inflight-budget 4MiB: RSS {} -> peak {} KiB",
        before / 1024,
        peak / 1024
    );
    // Budget + one frame per waiting connection's read grant; far under the 8 x 16 MiB the
    // publishers have in flight.
    assert!(peak.saturating_sub(before) < 96 * MIB, "{before} -> {peak}");
}

/// Issue 10: a frame nesting a million arrays overflowed the stack of the task decoding it,
/// and a stack overflow aborts the whole broker. It is now malformed: `bad_request`, and the
/// connection and the broker go on.
#[test]
fn deeply_nested_messagepack_is_refused_and_the_broker_lives() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    let mut body = vec![0x83, 0xa4];
    body.extend_from_slice(b"type");
    body.push(0xa7);
    body.extend_from_slice(b"publish");
    body.extend_from_slice(&[0xa2, b'i', b'd', 0x07, 0xa4, b'm', b's', b'g', b's']);
    body.extend(std::iter::repeat_n(0x91u8, 1_000_000));
    body.push(0xc0);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    raw.send_bytes(&frame);
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
    assert!(e.message.contains("nested"), "{e:?}");
    raw.send(&ClientFrame::Ping(Req { id: 8 }));
    assert!(matches!(raw.expect_frame(T), ServerFrame::Pong(_)));
    m.assert_serves();
}
