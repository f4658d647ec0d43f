//! A watcher that never reads must not make the broker buffer without bound, nor slow the
//! others down (DESIGN.md, Watch; docs/protocol.md 4.3, slow consumers).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Momd, Raw, Read1};
use mom_proto::{ClientFrame, NoticeKind, ServerFrame, StartAt};
use momctl::client::WatchEvent;

const MIB: u64 = 1024 * 1024;

/// What one run of the workload saw.
struct Run {
    max_rss: u64,
    /// The stuck watcher's raw connection and its watch id, when there was one.
    stuck: Option<(Raw, u64)>,
}

const PAYLOAD: usize = 64 * 1024;
const PER_BATCH: u64 = 16; // 1 MiB per publish
const BATCHES: u64 = 200; // 200 MiB in all
const TOTAL: u64 = PER_BATCH * BATCHES;

fn payload(seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Publish 200 MiB to topic `big` while a normal subscriber keeps up (if `subscriber`) and
/// a watcher that never reads sits on the same topic (if `stuck`); sample momd's RSS.
async fn workload(m: &Momd, subscriber: bool, stuck: bool) -> Run {
    let stuck = stuck.then(|| {
        let mut raw = Raw::connect(m);
        raw.hello();
        raw.send(&ClientFrame::Watch(mom_proto::Watch {
            id: 2,
            patterns: vec!["big".into()],
            from: StartAt::New,
            at: 0,
            ..mom_proto::Watch::default()
        }));
        match raw.expect_frame(Duration::from_secs(10)) {
            ServerFrame::WatchOk(ok) => (raw, ok.watch),
            other => panic!("expected watch_ok, got {other:?}"),
        }
    });

    // The normal subscriber: reads everything, in order, and counts what it got.
    let received = Arc::new(AtomicU64::new(0));
    let reader = if subscriber {
        let sub = m.client("keeps-up").await;
        let mut w = sub
            .watch(vec!["big".into()], StartAt::New, 0)
            .await
            .expect("watch");
        let rcv = received.clone();
        Some(tokio::spawn(async move {
            let mut next_seq = 1u64;
            let mut skipped = 0;
            while next_seq <= TOTAL {
                match tokio::time::timeout(Duration::from_secs(30), w.next()).await {
                    Err(_) => panic!("the normal subscriber stalled at seq {next_seq}"),
                    Ok(Err(e)) => panic!("the normal subscriber's watch ended: {e}"),
                    Ok(Ok(WatchEvent::Messages(msgs))) => {
                        for msg in msgs {
                            assert_eq!(msg.seq, next_seq, "the normal subscriber missed messages");
                            assert_eq!(msg.payload.len(), PAYLOAD);
                            assert_eq!(&msg.payload[..8], &msg.seq.to_be_bytes());
                            next_seq += 1;
                            rcv.fetch_add(1, Ordering::Release);
                        }
                    }
                    Ok(Ok(WatchEvent::Notice(n))) => {
                        if n.kind == NoticeKind::SlowConsumer {
                            skipped += n.skipped;
                        }
                    }
                }
            }
            skipped
        }))
    } else {
        None
    };

    let publisher = m.client("big-publisher").await;
    let mut max_rss = m.rss_bytes();
    let t0 = Instant::now();
    for b in 0..BATCHES {
        if subscriber {
            // Keep the normal subscriber within two batches (2 MiB, well inside its 8 MiB
            // buffer): it is not the slow consumer under test.
            let deadline = Instant::now() + Duration::from_secs(30);
            while received.load(Ordering::Acquire) + 2 * PER_BATCH < b * PER_BATCH {
                assert!(
                    Instant::now() < deadline,
                    "the normal subscriber fell behind: {} of {} messages",
                    received.load(Ordering::Acquire),
                    b * PER_BATCH
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let msgs = (0..PER_BATCH)
            .map(|i| {
                momctl::client::message(payload(b * PER_BATCH + i + 1), Default::default(), None)
            })
            .collect();
        let ok = publisher.publish("big", msgs).await.expect("publish");
        assert_eq!(
            ok.watchers,
            u64::from(subscriber) + u64::from(stuck.is_some())
        );
        if b % 10 == 0 {
            max_rss = max_rss.max(m.rss_bytes());
        }
    }
    if let Some(reader) = reader {
        let skipped = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("the normal subscriber did not get everything")
            .expect("reader task");
        assert_eq!(skipped, 0, "the normal subscriber was treated as slow");
    }
    max_rss = max_rss.max(m.rss_bytes());
    eprintln!(
        "published {} MiB in {:.1?} (subscriber: {subscriber}, stuck watcher: {}); momd RSS at most {} MiB",
        TOTAL * PAYLOAD as u64 / MIB,
        t0.elapsed(),
        stuck.is_some(),
        max_rss / MIB
    );
    Run { max_rss, stuck }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_watcher_does_not_grow_broker_memory() {
    // momd's memory grows with the data it stores, watchers or not (see
    // `broker_memory_stays_bounded_while_publishing`), so the stuck watcher's share is
    // measured against a control run of the same workload without it.
    let control = {
        let m = Momd::start_with(&["--fsync", "never"]);
        workload(&m, true, false).await.max_rss
    };
    let m = Momd::start_with(&["--fsync", "never"]);
    let run = workload(&m, true, true).await;
    let (mut stuck, stuck_watch) = run.stuck.expect("stuck watcher");
    eprintln!(
        "control {} MiB, with a stuck watcher {} MiB",
        control / MIB,
        run.max_rss / MIB
    );
    // Unbounded buffering for the stuck watcher would add about 200 MiB.
    assert!(
        run.max_rss < control + 64 * MIB,
        "a stuck watcher grew momd's RSS to {} MiB (control run without it: {} MiB)",
        run.max_rss / MIB,
        control / MIB
    );

    // Others still work, and the broker counted what it skipped.
    m.assert_serves();
    let stats = tokio::task::block_in_place(|| m.stats());
    let skipped_total = stats["totals"]["slow_consumer_skipped"]
        .as_u64()
        .expect("slow_consumer_skipped");
    assert!(
        skipped_total > 0,
        "no skipped messages counted: {}",
        stats["totals"]
    );
    assert!(skipped_total < TOTAL, "{}", stats["totals"]);

    // The stuck watcher now reads: what it gets is in seq order, and then a slow_consumer
    // notice says how much it missed.
    let publisher = m.client("nudge").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0u64;
    let mut nudges = 0u64;
    let mut last_seq = 0;
    let noticed = loop {
        assert!(
            Instant::now() < deadline,
            "no slow_consumer notice after the watcher caught up"
        );
        match stuck.read_frame(Duration::from_secs(3)) {
            Read1::Frame(ServerFrame::Deliver(d)) => {
                assert_eq!(d.watch, stuck_watch);
                for msg in d.msgs {
                    assert!(msg.seq > last_seq, "out of order");
                    last_seq = msg.seq;
                    got += 1;
                }
            }
            Read1::Frame(ServerFrame::Notice(n)) => {
                assert_eq!(n.watch, stuck_watch);
                assert_eq!(n.kind, NoticeKind::SlowConsumer, "{n:?}");
                break n.skipped;
            }
            Read1::Frame(other) => panic!("unexpected frame {other:?}"),
            Read1::Timeout => {
                // The notice comes once the broker sees the watcher caught up; a new message
                // gives it a reason to look.
                publisher
                    .publish(
                        "big",
                        vec![momctl::client::message(
                            payload(0),
                            Default::default(),
                            None,
                        )],
                    )
                    .await
                    .expect("publish");
                nudges += 1;
            }
            Read1::Closed => panic!("the broker closed the stuck watcher's connection"),
        }
    };
    eprintln!(
        "stuck watcher: {got} delivered, notice says {noticed} skipped, stats say {skipped_total}"
    );
    assert!(noticed > 0);
    assert!(
        got < TOTAL,
        "the stuck watcher got everything: nothing was skipped"
    );
    // Every message published while it was stuck was either delivered or counted as skipped.
    assert!(
        got + noticed >= TOTAL && got + noticed <= TOTAL + nudges,
        "{got} delivered + {noticed} skipped does not add up to the {TOTAL} published (+{nudges})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_memory_stays_bounded_while_publishing() {
    // No watcher at all: messages are published, stored, and kept for no one. Once the
    // store's cache (64 MiB by default) is warm, momd's memory should stop growing with the
    // size of the log: measure it after 100 MiB and again after 300 MiB.
    let m = Momd::start_with(&["--fsync", "never"]);
    let publisher = m.client("big-publisher").await;
    let mut rss_at_100 = 0;
    let mut max_rss = 0;
    for b in 0..300u64 {
        let msgs = (0..PER_BATCH)
            .map(|i| {
                momctl::client::message(payload(b * PER_BATCH + i + 1), Default::default(), None)
            })
            .collect();
        publisher.publish("log", msgs).await.expect("publish");
        if b == 99 {
            rss_at_100 = m.rss_bytes();
        }
        if b % 10 == 0 {
            max_rss = max_rss.max(m.rss_bytes());
        }
    }
    let rss_at_300 = m.rss_bytes();
    max_rss = max_rss.max(rss_at_300);
    eprintln!(
        "momd RSS: {} MiB after 100 MiB published, {} MiB after 300 MiB, at most {} MiB",
        rss_at_100 / MIB,
        rss_at_300 / MIB,
        max_rss / MIB
    );
    assert_eq!(
        tokio::task::block_in_place(|| m.topic_info("log"))["messages"],
        300 * PER_BATCH
    );
    assert!(
        rss_at_300 < rss_at_100 + 64 * MIB,
        "momd's memory grows with the log: RSS {} MiB after 100 MiB published, {} MiB after 300 MiB \
         (no watchers; store cache 64 MiB)",
        rss_at_100 / MIB,
        rss_at_300 / MIB
    );
    assert!(
        max_rss < 250 * MIB,
        "momd's RSS reached {} MiB with no watcher",
        max_rss / MIB
    );
}

/// A client that stops reading while messages wait for it is closed once it has taken no
/// byte for `--write-timeout`, so what is queued for it is not held for ever; a client that
/// keeps reading is not.
#[test]
fn a_client_that_reads_nothing_is_closed_at_the_write_timeout() {
    let m = Momd::start_with(&["--write-timeout", "1s"]);
    let mut stuck = Raw::connect(&m);
    stuck.hello();
    stuck.send(&ClientFrame::Watch(mom_proto::Watch {
        id: 2,
        patterns: vec!["w".into()],
        ..mom_proto::Watch::default()
    }));
    assert!(matches!(
        stuck.expect_frame(Duration::from_secs(10)),
        ServerFrame::WatchOk(_)
    ));
    // Far more than the socket buffers hold.
    let line = format!("{}\n", "w".repeat(64 * 1024));
    m.ctl_ok(&["publish", "w", "-q"], Some(line.repeat(400).as_bytes()));
    std::thread::sleep(Duration::from_secs(3));
    // It reads now: what was written before the close (the last frame may be cut), then
    // the end of the connection.
    use std::io::Read;
    stuck
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        assert!(Instant::now() < deadline, "still open after {got} bytes");
        match stuck.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("neither closed nor sending after {got} bytes: {e}"),
        }
    }
    assert!(
        got < 400 * 64 * 1024,
        "closed before all 400 messages were sent: {got} bytes"
    );
    assert!(
        m.stderr().contains("slow consumer"),
        "momd says why: {}",
        m.stderr()
    );
    // Everyone else is served.
    m.assert_serves();
}
