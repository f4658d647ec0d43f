//! Queue behaviour added on top of take/ack/nack: peek, detached deliveries, extend,
//! redrive, and what a purge of a topic does to a queue.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::queues::{Queue, QueueDef, QueueRecord, DETACHED};

fn queue(max_deliver: u32, ack_wait_ms: u64) -> Queue {
    Queue::new(QueueDef {
        name: "q".into(),
        owner: "u".into(),
        created: 0,
        bindings: vec![">".into()],
        max_deliver,
        ack_wait_ms,
    })
}

#[test]
fn peek_shows_what_take_delivers_and_changes_nothing() {
    let mut q = queue(5, 100);
    q.bind_topic(1, 1);
    q.bind_topic(2, 1);
    q.bind_topic(3, 1);
    let mut ranges: BTreeMap<u32, (u64, u64)> = [(1, (1, 4)), (2, (1, 3)), (3, (1, 0))].into();
    let got = q.take(&|t| ranges.get(&t).copied(), 3, 9, 0, None);
    assert_eq!(got.len(), 3);
    // One comes back for redelivery, one is nacked with a delay (not due yet), and
    // retention removes the start of topic 2.
    q.nack(got[0].0, 0, 10, "nack");
    q.nack(got[1].0, 1_000, 10, "nack");
    ranges.insert(2, (3, 5));
    let view = |t: u32| ranges.get(&t).copied();
    let before = format!("{q:?}");
    let peeked = q.peek(&view, 4, 20);
    assert_eq!(format!("{q:?}"), before, "peek changed the queue");
    assert_eq!(peeked.first().map(|p| p.1), Some(1), "a redelivery first");
    assert!(peeked.iter().skip(1).all(|(_, d)| *d == 0));
    let taken = q.take(&view, 4, 9, 20, None);
    let expect: Vec<_> = peeked.iter().map(|(m, d)| (*m, d + 1)).collect();
    assert_eq!(taken, expect);
}

#[test]
fn peek_skips_what_its_topic_no_longer_stores_like_take() {
    let mut q = queue(5, 100);
    q.bind_topic(1, 1);
    let view = |_t: u32| Some((1, 2));
    let got = q.take(&view, 2, 9, 0, None);
    for (m, _) in &got {
        q.nack(*m, 0, 0, "nack");
    }
    let gone = |_t: u32| Some((2, 4));
    let peeked = q.peek(&gone, 10, 1);
    assert_eq!(peeked, vec![((1, 2), 1), ((1, 3), 0), ((1, 4), 0)]);
    assert_eq!(
        q.take(&gone, 10, 9, 1, None),
        vec![((1, 2), 2), ((1, 3), 1), ((1, 4), 1)]
    );
    assert_eq!(q.counters().dropped, 1);
}

#[test]
fn a_detached_delivery_nobody_settles_comes_back_uncounted() {
    let mut q = queue(2, 100);
    q.bind_topic(1, 1);
    let view = |_t: u32| Some((1, 1));
    // Looked at many more times than max_deliver: never dead-lettered.
    for round in 0..5u64 {
        let now = round * 1_000;
        assert_eq!(q.take(&view, 1, DETACHED, now, None), vec![((1, 1), 1)]);
        let (consumers, dead) = q.expire(now + 100, None);
        assert!(dead.is_empty() && consumers.is_empty());
        assert_eq!(q.retry.len(), 1);
    }
    assert_eq!((q.counters().delivered, q.counters().redelivered), (0, 0));
    assert_eq!(q.counters().dead_lettered, 0);
    // A nack of a detached delivery counts like any nack.
    assert_eq!(q.take(&view, 1, DETACHED, 10_000, None), vec![((1, 1), 1)]);
    assert!(q.nack((1, 1), 0, 10_000, "nack").is_some());
    assert_eq!(q.take(&view, 1, DETACHED, 10_001, None), vec![((1, 1), 2)]);
    let dead = q.nack((1, 1), 0, 10_001, "nack").and_then(|(_, d)| d);
    assert_eq!(dead.map(|d| d.deliveries), Some(2));
}

#[test]
fn a_detached_delivery_out_at_a_restart_comes_back_uncounted() {
    let mut q = queue(1, 100);
    q.bind_topic(1, 1);
    let view = |_t: u32| Some((1, 2));
    q.take(&view, 1, DETACHED, 0, None);
    q.take(&view, 1, 7, 0, None);
    let r = q.record();
    assert_eq!(r.outstanding, vec![(1, 1, 0), (1, 2, 1)]);
    assert_eq!(r.counters.delivered, 1);
    let mut q = Queue::from_record(r, 10);
    let dead = q.drain_dead();
    assert_eq!(dead.len(), 1, "the counted delivery used up max_deliver 1");
    assert_eq!(dead[0].msg, (1, 2));
    assert_eq!(q.take(&view, 5, 7, 10, None), vec![((1, 1), 1)]);
}

#[test]
fn extend_pushes_the_deadline_of_what_is_out() {
    let mut q = queue(5, 100);
    q.bind_topic(1, 1);
    let view = |_t: u32| Some((1, 1));
    q.take(&view, 1, 7, 0, None);
    assert!(q.extend((1, 1), 90));
    assert!(
        q.expire(150, None).0.is_empty(),
        "the deadline moved to 190"
    );
    assert_eq!(q.expire(190, None).0, vec![7]);
    assert!(
        !q.extend((1, 1), 200),
        "back for redelivery: not out any more"
    );
    assert!(!q.extend((1, 9), 200));
}

#[test]
fn redrive_requeues_with_a_fresh_count_once() {
    let mut q = queue(2, 100);
    q.bind_topic(1, 1);
    let view = |t: u32| match t {
        1 => Some((1, 1)),
        // The dead letter topic: the queue is not bound to it.
        9 => Some((1, 3)),
        _ => None,
    };
    q.take(&view, 1, 7, 0, None);
    q.nack((1, 1), 0, 0, "nack");
    q.take(&view, 1, 7, 0, None);
    let dl = q.nack((1, 1), 0, 0, "nack").and_then(|(_, d)| d);
    assert!(dl.is_some(), "dead-lettered after 2 deliveries");
    assert!(!q.holds((1, 1)));
    assert!(q.redrive((1, 1), 5));
    assert!(!q.redrive((1, 1), 5), "held already");
    assert!(q.redrive((9, 3), 5), "a dead letter requeued as itself");
    assert_eq!(q.topics().into_iter().collect::<Vec<_>>(), vec![1, 9]);
    assert_eq!(q.take(&view, 5, 7, 5, None), vec![((1, 1), 1), ((9, 3), 1)]);
    assert!(
        q.floor(9) == Some(3),
        "retention keeps the requeued dead letter"
    );
}

#[test]
fn a_purged_topic_counts_what_the_queue_held_as_dropped() {
    let mut q = queue(5, 100);
    q.bind_topic(1, 1);
    let view = |_t: u32| Some((1, 6));
    q.take(&view, 2, 7, 0, None);
    q.nack((1, 1), 0, 0, "nack");
    // Held: 4 never delivered, 1 out, 1 waiting for redelivery.
    assert_eq!(q.held_in(1, &view), 6);
    assert_eq!(q.held_in(2, &view), 0);
    assert_eq!(q.skip_to(1, 7), 5);
    assert_eq!(q.counters().dropped, 5);
    let after = |_t: u32| Some((7, 6));
    assert_eq!(q.held_in(1, &after), 1, "the delivery still out");
    assert_eq!(q.ready(&after), 0);
}

#[test]
fn queue_records_written_before_dlq_redriven_still_load() {
    #[derive(serde::Serialize)]
    struct Old {
        def: QueueDef,
        cursors: BTreeMap<u32, u64>,
        outstanding: Vec<(u32, u64, u32)>,
        counters: super::queues::QueueCounters,
    }
    let q = queue(5, 100);
    let old = Old {
        def: q.def.clone(),
        cursors: [(1, 4)].into(),
        outstanding: vec![(1, 2, 1)],
        counters: Default::default(),
    };
    let bytes = rmp_serde::to_vec(&old).unwrap();
    let r: QueueRecord = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(r.dlq_redriven, 0);
    assert_eq!(r.outstanding, vec![(1, 2, 1)]);
}

/// Cursors and outstanding deliveries are stored as fixed-width binary (`record_codec.rs`):
/// they come back as they were, and a blob of the wrong width is refused, not misread.
#[test]
fn queue_records_keep_cursors_and_deliveries_in_binary() {
    let mut q = queue(5, 100);
    q.bind_topic(1, 1);
    q.bind_topic(u32::MAX, u64::MAX - 1);
    let view = |_t: u32| Some((1, 6));
    q.take(&view, 2, 7, 0, None);
    let r = q.record();
    let bytes = rmp_serde::to_vec(&r).unwrap();
    let back: QueueRecord = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.outstanding.len(), 2);
    // 2 cursors (12 bytes each) and 2 deliveries (16 each), as two binary values.
    assert!(bytes.windows(2).any(|w| w == [0xc4, 24]));
    assert!(bytes.windows(2).any(|w| w == [0xc4, 32]));
    let mut bad = bytes.clone();
    let at = bad.windows(2).position(|w| w == [0xc4, 32]).unwrap();
    bad[at + 1] = 31;
    bad.remove(at + 2);
    assert!(rmp_serde::from_slice::<QueueRecord>(&bad).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    Publish(u8, u8),
    Take(u8),
    Nack(u8, u8),
    Ack(u8),
    Tick(u8),
    Trim(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 1u8..4).prop_map(|(t, n)| Op::Publish(t, n)),
        3 => (1u8..5).prop_map(Op::Take),
        2 => (any::<u8>(), 0u8..3).prop_map(|(i, d)| Op::Nack(i, d)),
        2 => any::<u8>().prop_map(Op::Ack),
        2 => any::<u8>().prop_map(Op::Tick),
        1 => (0u8..3, 1u8..3).prop_map(|(t, n)| Op::Trim(t, n)),
    ]
}

proptest! {
    /// Whatever state a queue is in, `peek` changes nothing and the next `take` hands out
    /// exactly what it showed.
    #[test]
    fn peek_then_take_agree(ops in proptest::collection::vec(op(), 1..60), max in 1usize..8) {
        let mut q = queue(3, 50);
        for t in 0..3u32 {
            q.bind_topic(t, 1);
        }
        let mut ranges: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut out = Vec::new();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Publish(t, n) => {
                    let r = ranges.entry(t as u32).or_insert((1, 0));
                    r.1 += n as u64;
                }
                Op::Take(n) => {
                    let view = |t: u32| ranges.get(&t).copied();
                    out.extend(q.take(&view, n as usize, 1, now, None).into_iter().map(|x| x.0));
                }
                Op::Nack(i, d) => {
                    if !out.is_empty() {
                        let m = out[i as usize % out.len()];
                        q.nack(m, d as u64 * 20, now, "nack");
                    }
                }
                Op::Ack(i) => {
                    if !out.is_empty() {
                        let m = out[i as usize % out.len()];
                        q.ack(m);
                    }
                }
                Op::Tick(dt) => {
                    now += dt as u64;
                    q.expire(now, None);
                }
                Op::Trim(t, n) => {
                    if let Some(r) = ranges.get_mut(&(t as u32)) {
                        r.0 = (r.0 + n as u64).min(r.1 + 1);
                    }
                }
            }
            let view = |t: u32| ranges.get(&t).copied();
            let before = format!("{q:?}");
            let peeked = q.peek(&view, max, now);
            prop_assert_eq!(format!("{q:?}"), before);
            let mut copy = q.clone();
            let taken = copy.take(&view, max, 1, now, None);
            let expect: Vec<_> = peeked.iter().map(|(m, d)| (*m, d + 1)).collect();
            prop_assert_eq!(taken, expect);
        }
    }
}

#[test]
fn a_released_delivery_comes_back_without_using_an_attempt() {
    // max_deliver 1: a counted failure would dead-letter it at once.
    let mut q = queue(1, 100);
    q.bind_topic(1, 1);
    let view = |_t: u32| Some((1, 1));
    for round in 0..3 {
        let got = q.take(&view, 1, 9, round, None);
        assert_eq!(got, vec![((1, 1), 1)], "round {round}");
        assert_eq!(q.release((1, 1), round), Some(9));
        assert!(q.drain_dead().is_empty());
    }
    assert_eq!(q.counters().delivered, 0);
    assert_eq!(q.counters().dead_lettered, 0);
    // Releasing what is not out on a delivery changes nothing.
    assert_eq!(q.release((1, 1), 5), None);
    // A real nack counts.
    let got = q.take(&view, 1, 9, 5, None);
    assert_eq!(got, vec![((1, 1), 1)]);
    let (_, dead) = q.nack((1, 1), 0, 5, "nack").expect("it was out");
    assert!(dead.is_some(), "the one counted failure used max_deliver 1");
}

#[test]
fn a_consumer_that_releases_what_it_holds_uses_no_attempts() {
    let mut q = queue(1, 100);
    q.bind_topic(1, 1);
    let view = |_t: u32| Some((1, 3));
    let got = q.take(&view, 3, 7, 0, None);
    assert_eq!(got.len(), 3);
    q.ack((1, 1));
    assert_eq!(q.release_consumer(7, 1, None), 2);
    assert!(
        q.consumer_gone(7, 1, None).is_empty(),
        "nothing left to dead-letter"
    );
    assert_eq!(q.counters().dead_lettered, 0);
    // They come back as first deliveries.
    assert_eq!(q.take(&view, 3, 8, 2, None), vec![((1, 2), 1), ((1, 3), 1)]);
}
