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
    assert_eq!(p.stored.len(), 2);
    let p = c
        .publish("o", vec![msg("again", Some("y"))], sender(), 1000)
        .unwrap();
    assert_eq!((p.seqs, p.duplicates, p.stored.len()), (vec![2], 1, 0));
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
    let w1 = c.watches.add(vec!["orders.*".into()]);
    let w2 = c.watches.add(vec!["orders.>".into(), "x".into()]);
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
