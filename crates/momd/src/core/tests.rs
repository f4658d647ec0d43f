use std::collections::HashMap;

use bytes::Bytes;
use mom_proto::{PubMsg, Sender};
use proptest::prelude::*;

use super::*;

fn sender() -> Sender {
    Sender {
        user: "anonymous".into(),
        client: 1,
        name: "test".into(),
    }
}

fn msg(p: &str, id: Option<&str>) -> PubMsg {
    PubMsg {
        payload: Bytes::copy_from_slice(p.as_bytes()),
        headers: Default::default(),
        msg_id: id.map(str::to_string),
        key: None,
    }
}

fn core() -> Core {
    Core::new(CoreConfig::default(), Topics::default(), Dedupe::default())
}

#[test]
fn publish_assigns_consecutive_seqs_per_topic() {
    let mut c = core();
    let a = c
        .publish("a", vec![msg("1", None), msg("2", None)], sender(), 10)
        .unwrap();
    assert!(a.created);
    assert_eq!(a.seqs, vec![1, 2]);
    let b = c.publish("b", vec![msg("x", None)], sender(), 11).unwrap();
    assert_eq!(b.seqs, vec![1]);
    let a2 = c.publish("a", vec![msg("3", None)], sender(), 12).unwrap();
    assert!(!a2.created);
    assert_eq!((a2.first_seq, a2.seqs.clone()), (3, vec![3]));
    let t = c.topics.get("a").unwrap();
    assert_eq!((t.msgs, t.bytes, t.last_seq, t.last_time), (3, 3, 3, 12));
}

#[test]
fn refused_batches_change_nothing() {
    let mut c = core();
    c.config.max_payload = 4;
    assert!(matches!(
        c.publish(
            "a",
            vec![msg("ok", None), msg("too long", None)],
            sender(),
            1
        ),
        Err(CoreError::PayloadTooLarge { index: 1, .. })
    ));
    assert!(c.topics.get("a").is_none());
    assert!(matches!(
        c.publish("a b", vec![msg("x", None)], sender(), 1),
        Err(CoreError::BadName(_))
    ));
    assert!(matches!(
        c.publish("$sys.x", vec![msg("x", None)], sender(), 1),
        Err(CoreError::BadName(_))
    ));
    assert!(matches!(
        c.publish("a", vec![], sender(), 1),
        Err(CoreError::EmptyBatch)
    ));
    assert_eq!(c.topics.len(), 0);
}

#[test]
fn dedupe_acks_a_repeat_with_the_original_seq() {
    let mut c = core();
    let p = c
        .publish(
            "o",
            vec![
                msg("a", Some("x")),
                msg("b", Some("x")),
                msg("c", Some("y")),
            ],
            sender(),
            0,
        )
        .unwrap();
    assert_eq!(p.seqs, vec![1, 1, 2]);
    assert_eq!(p.duplicates, 1);
    assert_eq!(p.duplicate_indexes, vec![1]);
    assert_eq!(p.stored.len(), 2);
    let p = c
        .publish("o", vec![msg("again", Some("y"))], sender(), 1000)
        .unwrap();
    assert_eq!((p.seqs, p.duplicates, p.stored.len()), (vec![2], 1, 0));
    assert_eq!(p.duplicate_indexes, vec![0]);
    // Another topic has its own ids.
    let p = c
        .publish("other", vec![msg("z", Some("y"))], sender(), 1000)
        .unwrap();
    assert_eq!(p.seqs, vec![1]);
    // After the window, the id is new again.
    let expired = c.tick(130_000);
    assert_eq!(expired.len(), 3);
    let p = c
        .publish("o", vec![msg("late", Some("x"))], sender(), 130_001)
        .unwrap();
    assert_eq!(p.seqs, vec![3]);
}

#[test]
fn undo_restores_the_topic_and_forgets_ids() {
    let mut c = core();
    c.publish("t", vec![msg("a", None)], sender(), 0).unwrap();
    let before = c.topics.get("t").cloned();
    let p = c
        .publish("t", vec![msg("b", Some("i"))], sender(), 1)
        .unwrap();
    c.undo(Core::undo_of(&p, before.clone()));
    assert_eq!(c.topics.get("t").cloned(), before);
    assert_eq!(c.dedupe.check(p.topic_id, "i"), None);
    let p = c.publish("new", vec![msg("b", None)], sender(), 1).unwrap();
    c.undo(Core::undo_of(&p, None));
    assert!(c.topics.get("new").is_none());
}

#[test]
fn watches_match_patterns() {
    let mut c = core();
    let w1 = c.watches.add(vec!["orders.*".into()], false, None);
    let w2 = c
        .watches
        .add(vec!["orders.>".into(), "x".into()], false, None);
    assert_eq!(c.watches.matching("orders.eu"), vec![w1, w2]);
    assert_eq!(c.watches.matching("orders.eu.x"), vec![w2]);
    assert_eq!(c.watches.matching("x"), vec![w2]);
    assert!(c.watches.remove(w2));
    assert_eq!(c.watches.count_matching("x"), 0);
}

#[derive(Debug, Clone)]
enum Op {
    Publish { topic: u8, ids: Vec<Option<u8>> },
    Tick(u64),
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, proptest::collection::vec(proptest::option::of(0u8..6), 1..6))
            .prop_map(|(topic, ids)| Op::Publish { topic, ids }),
        2 => (0u64..90_000).prop_map(Op::Tick),
        1 => (0u8..3).prop_map(Op::Remove),
    ]
}

proptest! {
    /// Per topic, stored messages get consecutive seqs with no gap; a msg id repeated within
    /// the window gets its original seq and is not stored; counters match what was stored.
    #[test]
    fn core_keeps_order_and_dedupes(ops in proptest::collection::vec(op(), 1..60)) {
        let mut c = core();
        let mut now = 0u64;
        // Model: per topic name, next seq, and id -> (seq, time first seen).
        let mut next: HashMap<String, u64> = HashMap::new();
        let mut ids: HashMap<(String, u8), (u64, u64)> = HashMap::new();
        let mut stored: HashMap<String, u64> = HashMap::new();
        for op in ops {
            match op {
                Op::Publish { topic, ids: mids } => {
                    let name = format!("t{topic}");
                    let msgs = mids.iter().map(|i| msg("p", i.map(|i| format!("id{i}")).as_deref())).collect();
                    let plan = c.publish(&name, msgs, sender(), now).unwrap();
                    let n = next.entry(name.clone()).or_insert(1);
                    let mut expect_stored = 0;
                    for (i, mid) in mids.iter().enumerate() {
                        let want = match mid {
                            Some(id) => match ids.get(&(name.clone(), *id)) {
                                Some((seq, at)) if now - at < 120_000 => *seq,
                                _ => {
                                    ids.insert((name.clone(), *id), (*n, now));
                                    *n += 1;
                                    expect_stored += 1;
                                    *n - 1
                                }
                            },
                            None => {
                                *n += 1;
                                expect_stored += 1;
                                *n - 1
                            }
                        };
                        prop_assert_eq!(plan.seqs[i], want);
                    }
                    prop_assert_eq!(plan.stored.len() as u64, expect_stored);
                    *stored.entry(name.clone()).or_default() += expect_stored;
                    let t = c.topics.get(&name).unwrap();
                    prop_assert_eq!(t.msgs, stored[&name]);
                    prop_assert_eq!(t.last_seq + 1, next[&name]);
                }
                Op::Tick(dt) => {
                    now += dt;
                    c.tick(now);
                }
                Op::Remove(topic) => {
                    let name = format!("t{topic}");
                    let removed = c.remove_topic(&name).is_ok();
                    prop_assert_eq!(removed, next.remove(&name).is_some());
                    ids.retain(|(t, _), _| *t != name);
                    stored.remove(&name);
                }
            }
        }
    }
}

mod queue_props {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use crate::core::queues::{MsgRef, Queue, QueueDef};

    #[derive(Debug, Clone)]
    enum QOp {
        Publish(u8, u8),
        Take(u8, u8),
        Ack(u8),
        Nack(u8, u8),
        Tick(u16),
        Gone(u8),
        Restart,
    }

    fn qop() -> impl Strategy<Value = QOp> {
        prop_oneof![
            4 => (0u8..3, 1u8..5).prop_map(|(t, n)| QOp::Publish(t, n)),
            4 => (0u8..3, 1u8..6).prop_map(|(c, n)| QOp::Take(c, n)),
            4 => any::<u8>().prop_map(QOp::Ack),
            2 => (any::<u8>(), 0u8..3).prop_map(|(i, d)| QOp::Nack(i, d)),
            2 => (0u16..200).prop_map(QOp::Tick),
            1 => (0u8..3).prop_map(QOp::Gone),
            1 => Just(QOp::Restart),
        ]
    }

    fn def() -> QueueDef {
        QueueDef {
            name: "q".into(),
            owner: "u".into(),
            created: 0,
            bindings: vec![">".into()],
            max_deliver: 3,
            ack_wait_ms: 100,
        }
    }

    proptest! {
        /// Every message published to a bound topic is, in the end, acked exactly once or
        /// dead-lettered (never both), and nothing is delivered after its ack — across
        /// acks, nacks, ack timeouts, consumers going away and restarts.
        #[test]
        fn every_message_acked_once_or_dead_lettered(ops in proptest::collection::vec(qop(), 1..120)) {
            let mut q = Queue::new(def());
            for t in 0..3u32 {
                q.bind_topic(t, 1);
            }
            let mut upto: BTreeMap<u32, u64> = BTreeMap::new();
            let mut now = 0u64;
            let mut acked: BTreeSet<MsgRef> = BTreeSet::new();
            let mut dead: BTreeSet<MsgRef> = BTreeSet::new();
            let mut delivered: Vec<MsgRef> = Vec::new();
            for op in ops {
                let view = |t: u32| upto.get(&t).map(|u| (1, *u));
                match op {
                    QOp::Publish(t, n) => {
                        *upto.entry(t as u32).or_insert(0) += n as u64;
                        // As the broker does when it releases a bound topic's messages.
                        q.note_append(t as u32);
                    }
                    QOp::Take(c, n) => {
                        for (m, d) in q.take(&view, n as usize, c as u64, now, None) {
                            prop_assert!(!acked.contains(&m), "{m:?} delivered after its ack");
                            prop_assert!(!dead.contains(&m), "{m:?} delivered after dead-lettering");
                            prop_assert!((1..=3).contains(&d));
                            delivered.push(m);
                        }
                    }
                    QOp::Ack(i) => {
                        if !delivered.is_empty() {
                            let m = delivered[i as usize % delivered.len()];
                            if q.ack(m).is_some() {
                                prop_assert!(acked.insert(m), "{m:?} acked twice");
                            }
                        }
                    }
                    QOp::Nack(i, d) => {
                        if !delivered.is_empty() {
                            let m = delivered[i as usize % delivered.len()];
                            if let Some((_, Some(dl))) = q.nack(m, d as u64 * 10, now, "nack") {
                                prop_assert!(dead.insert(dl.msg));
                            }
                        }
                    }
                    QOp::Tick(dt) => {
                        now += dt as u64;
                        for dl in q.expire(now, None).1 {
                            prop_assert!(dead.insert(dl.msg));
                        }
                    }
                    QOp::Gone(c) => {
                        for dl in q.consumer_gone(c as u64, now, None) {
                            prop_assert!(dead.insert(dl.msg));
                        }
                    }
                    QOp::Restart => {
                        q = Queue::from_record(q.record(), now);
                        for dl in q.drain_dead() {
                            prop_assert!(dead.insert(dl.msg));
                        }
                    }
                }
            }
            // Drain: a well-behaved consumer takes and acks everything left.
            let view = |t: u32| upto.get(&t).map(|u| (1, *u));
            for _ in 0..1000 {
                now += 1000;
                for dl in q.expire(now, None).1 {
                    prop_assert!(dead.insert(dl.msg));
                }
                let got = q.take(&view, 64, 99, now, None);
                if got.is_empty() && q.unacked.is_empty() && q.retry.is_empty() {
                    break;
                }
                for (m, _) in got {
                    prop_assert!(!acked.contains(&m) && !dead.contains(&m));
                    prop_assert!(q.ack(m).is_some());
                    acked.insert(m);
                }
            }
            prop_assert_eq!(q.ready(&view), 0);
            let all: BTreeSet<MsgRef> = upto.iter().flat_map(|(t, u)| (1..=*u).map(move |s| (*t, s))).collect();
            prop_assert!(acked.is_disjoint(&dead));
            let done: BTreeSet<MsgRef> = acked.union(&dead).copied().collect();
            prop_assert_eq!(done, all);
        }
    }

    #[test]
    fn per_topic_order_and_dead_letter_after_max_deliver() {
        let mut q = Queue::new(def());
        q.bind_topic(7, 1);
        let view = |t: u32| (t == 7).then_some((1, 5));
        let got: Vec<u64> = q
            .take(&view, 10, 1, 0, None)
            .iter()
            .map(|(m, _)| m.1)
            .collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        for round in 1..=3u32 {
            let (consumers, dead) = q.expire(100 * round as u64 + 1000, None);
            assert_eq!(consumers.len(), if round == 1 { 5 } else { 1 });
            if round < 3 {
                assert!(dead.is_empty());
                // Ack all but seq 3; it comes back with a growing delivery count.
                for (m, d) in q.take(&view, 10, 1, 100 * round as u64 + 1000, None) {
                    assert_eq!(d, round + 1);
                    if m.1 != 3 {
                        q.ack(m).expect("it was just delivered");
                    }
                }
            } else {
                assert_eq!(dead.len(), 1);
                assert_eq!(dead[0].msg, (7, 3));
                assert_eq!(dead[0].deliveries, 3);
            }
        }
        assert_eq!(q.counters().dead_lettered, 1);
        assert_eq!(q.ready(&view), 0);
    }
}

mod queue_edges {
    use crate::core::queues::{Queue, QueueDef};

    fn q(ack_wait_ms: u64) -> Queue {
        let mut q = Queue::new(QueueDef {
            name: "q".into(),
            owner: "u".into(),
            created: 0,
            bindings: vec!["t".into()],
            max_deliver: 3,
            ack_wait_ms,
        });
        q.bind_topic(1, 1);
        q
    }

    #[test]
    fn a_late_ack_settles_a_message_waiting_for_redelivery() {
        let mut q = q(100);
        let view = |_t: u32| Some((1, 1));
        let got = q.take(&view, 1, 7, 0, None);
        assert_eq!(got.len(), 1);
        q.expire(1_000, None);
        assert_eq!(q.retry.len(), 1);
        assert_eq!(
            q.ack((1, 1)),
            Some(None),
            "settled, no consumer credit to free"
        );
        assert!(
            q.take(&view, 1, 7, 2_000, None).is_empty(),
            "never delivered again"
        );
        assert_eq!(q.counters().acked, 1);
        assert_eq!(q.ack((1, 1)), None, "a second ack finds nothing");
    }

    #[test]
    fn huge_durations_saturate_instead_of_wrapping() {
        let mut q = q(u64::MAX);
        let view = |_t: u32| Some((1, 2));
        q.take(&view, 1, 7, 1_000, None);
        let (late, dead) = q.expire(u64::MAX - 1, None);
        assert!(
            late.is_empty() && dead.is_empty(),
            "the deadline is at the end of time"
        );
        q.nack((1, 1), u64::MAX, 1_000, "nack");
        assert!(q
            .take(&view, 2, 7, 5_000, None)
            .iter()
            .all(|(m, _)| m.1 != 1));
    }
}
