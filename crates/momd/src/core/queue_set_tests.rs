//! The queue set's indexes answer what a scan of every queue answers: which queues a new
//! topic joins, which are bound to a topic, and the oldest seq of a topic some queue needs.

use std::collections::BTreeMap;

use mom_proto::topic;
use proptest::prelude::*;

use super::queue_set::QueueSet;
use super::queues::{Queue, QueueDef};
use super::trie::tests::{pattern, topic_name};

fn def(name: &str, bindings: &[&str]) -> QueueDef {
    QueueDef {
        name: name.into(),
        owner: "u".into(),
        created: 0,
        bindings: bindings.iter().map(|s| s.to_string()).collect(),
        max_deliver: 5,
        ack_wait_ms: 100,
    }
}

fn names(v: &[std::sync::Arc<str>]) -> Vec<&str> {
    v.iter().map(|n| &**n).collect()
}

#[test]
fn a_new_topic_joins_the_queues_whose_patterns_match() {
    let mut qs = QueueSet::default();
    qs.insert(Queue::new(def("all", &[">"])));
    qs.insert(Queue::new(def("eu", &["orders.eu.*", "orders.eu.*"])));
    qs.insert(Queue::new(def("created", &["orders.*.created", "x"])));
    qs.insert(Queue::new(def("none", &[])));
    assert_eq!(
        qs.bind_new_topic(1, "orders.eu.created"),
        ["all", "created", "eu"]
    );
    assert_eq!(
        qs.bind_new_topic(2, "orders.us.created"),
        ["all", "created"]
    );
    assert_eq!(qs.bind_new_topic(3, "$sys.events"), Vec::<String>::new());
    assert_eq!(names(qs.bound_to(1)), ["all", "created", "eu"]);
    assert_eq!(qs.bound_count(2), 2);
    assert_eq!(qs.bound_count(3), 0);
    // A pattern given up no longer brings new topics; a queue removed leaves every index.
    qs.change_bindings("eu", |b| b.retain(|p| p != "orders.eu.*"));
    assert_eq!(qs.bind_new_topic(4, "orders.eu.paid"), ["all"]);
    assert!(qs.remove("all").is_some());
    assert_eq!(names(qs.bound_to(1)), ["created", "eu"]);
    assert_eq!(qs.bind_new_topic(5, "orders.eu.paid"), Vec::<String>::new());
    qs.change_bindings("eu", |b| b.push(">".into()));
    assert_eq!(qs.bind_new_topic(6, "y"), ["eu"]);
}

#[test]
fn a_redriven_dead_letter_keeps_its_topic_from_retention() {
    let mut qs = QueueSet::default();
    qs.insert(Queue::new(def("q", &["a"])));
    qs.insert(Queue::new(def("r", &["a"])));
    qs.bind_topic("q", 1, 4);
    qs.bind_topic("r", 1, 6);
    assert_eq!(qs.floor(1), Some(4));
    // Topic 9 (a dead letter topic) is bound to no queue, yet q holds one of its messages.
    assert_eq!(qs.floor(9), None);
    assert!(qs.redrive("q", (9, 3), 0));
    assert_eq!(qs.floor(9), Some(3));
    assert_eq!(names(&qs.referring(9)), ["q"]);
    qs.settle_strays();
    assert_eq!(qs.floor(9), Some(3), "still held: still asked");
    // Acked: nothing of topic 9 is held any more, and q is no longer asked about it.
    if let Some(q) = qs.get_mut("q") {
        assert!(q.ack((9, 3)).is_some());
    }
    qs.settle_strays();
    assert_eq!(qs.referring(9), Vec::<std::sync::Arc<str>>::new());
    // A queue loaded at start with such a message is found too.
    let mut q = Queue::new(def("s", &[]));
    assert!(q.redrive((9, 7), 0));
    let loaded = Queue::from_record(q.record(), 0);
    qs.insert(loaded);
    assert_eq!(qs.floor(9), Some(7));
}

/// What the broker does with a queue set, as the property test drives it.
#[derive(Debug, Clone)]
enum Op {
    Create(usize, Vec<String>),
    Bind(usize, Vec<String>),
    Unbind(usize, Vec<String>),
    Delete(usize),
    NewTopic(String),
    RemoveTopic(usize),
    Redrive(usize, usize, u64),
    Take(usize, usize),
    Restart,
}

const QUEUES: [&str; 5] = ["q0", "q1", "q2", "q3", "q4"];

fn op() -> impl Strategy<Value = Op> {
    let q = 0..QUEUES.len();
    let ps = || proptest::collection::vec(pattern(), 0..3);
    prop_oneof![
        (q.clone(), ps()).prop_map(|(q, p)| Op::Create(q, p)),
        (q.clone(), ps()).prop_map(|(q, p)| Op::Bind(q, p)),
        (q.clone(), ps()).prop_map(|(q, p)| Op::Unbind(q, p)),
        q.clone().prop_map(Op::Delete),
        topic_name().prop_map(Op::NewTopic),
        (0usize..8).prop_map(Op::RemoveTopic),
        (q.clone(), 0usize..8, 1u64..5).prop_map(|(q, t, s)| Op::Redrive(q, t, s)),
        (q, 0usize..3).prop_map(|(q, n)| Op::Take(q, n)),
        Just(Op::Restart),
    ]
}

proptest! {
    /// Over random queue changes, topic creations and removals, redrives and restarts, the
    /// indexes answer exactly what scanning every queue answers.
    #[test]
    fn the_indexes_agree_with_a_scan_of_every_queue(ops in proptest::collection::vec(op(), 1..60)) {
        let mut qs = QueueSet::default();
        // Topics that exist: id → name (ids are never reused, as in the topic table).
        let mut topics: BTreeMap<u32, String> = BTreeMap::new();
        let mut next_topic = 0u32;
        let view = |_t: u32| Some((1u64, 10u64));
        for op in ops {
            match op {
                Op::Create(q, ps) => {
                    let name = QUEUES[q];
                    if !qs.contains_key(name) {
                        let refs: Vec<&str> = ps.iter().map(String::as_str).collect();
                        qs.insert(Queue::new(def(name, &refs)));
                        for (id, t) in &topics {
                            if ps.iter().any(|p| topic::matches(p, t)) {
                                qs.bind_topic(name, *id, 1);
                            }
                        }
                    }
                }
                Op::Bind(q, ps) => {
                    let name = QUEUES[q];
                    qs.change_bindings(name, |b| {
                        for p in &ps {
                            if !b.contains(p) {
                                b.push(p.clone());
                            }
                        }
                    });
                    if qs.contains_key(name) {
                        for (id, t) in &topics {
                            if ps.iter().any(|p| topic::matches(p, t)) {
                                qs.bind_topic(name, *id, 3);
                            }
                        }
                    }
                }
                Op::Unbind(q, ps) => {
                    let name = QUEUES[q];
                    qs.change_bindings(name, |b| {
                        if ps.is_empty() {
                            b.clear();
                        } else {
                            b.retain(|p| !ps.contains(p));
                        }
                    });
                    let leaving: Vec<u32> = match qs.get(name) {
                        Some(q) => q
                            .bound_topics()
                            .filter(|id| {
                                topics.get(id).is_some_and(|t| {
                                    !q.def.bindings.iter().any(|p| topic::matches(p, t))
                                })
                            })
                            .collect(),
                        None => Vec::new(),
                    };
                    for id in leaving {
                        qs.unbind_topic(name, id, &view);
                    }
                }
                Op::Delete(q) => {
                    qs.remove(QUEUES[q]);
                }
                Op::NewTopic(t) => {
                    next_topic += 1;
                    let want: Vec<String> = qs.matching_by_scan(&t);
                    let got = qs.bind_new_topic(next_topic, &t);
                    prop_assert_eq!(got, want, "new topic {}", t);
                    topics.insert(next_topic, t);
                }
                Op::RemoveTopic(i) => {
                    let Some(id) = topics.keys().nth(i).copied() else { continue };
                    topics.remove(&id);
                    for name in qs.referring(id) {
                        qs.unbind_topic(&name, id, &view);
                    }
                }
                Op::Redrive(q, t, seq) => {
                    // A message of any topic id, bound or not (a dead letter's topic).
                    qs.redrive(QUEUES[q], (t as u32, seq), 0);
                }
                Op::Take(q, n) => {
                    if let Some(q) = qs.get_mut(QUEUES[q]) {
                        q.take(&view, n, 1, 0, None);
                    }
                }
                Op::Restart => {
                    let records: Vec<_> = qs.values().map(Queue::record).collect();
                    qs = QueueSet::default();
                    for r in records {
                        qs.insert(Queue::from_record(r, 0));
                    }
                    qs.settle_strays();
                }
            }
            for t in 0..=next_topic.max(8) {
                let scan_bound: Vec<&str> = qs
                    .values()
                    .filter(|q| q.bound_topics().any(|x| x == t))
                    .map(|q| q.def.name.as_str())
                    .collect();
                prop_assert_eq!(names(qs.bound_to(t)), scan_bound, "bound to topic {}", t);
                let scan_floor = qs.values().filter_map(|q| q.floor(t)).min();
                prop_assert_eq!(qs.floor(t), scan_floor, "floor of topic {}", t);
                let referring = qs.referring(t);
                for q in qs.values().filter(|q| q.floor(t).is_some()) {
                    prop_assert!(
                        referring.iter().any(|n| **n == *q.def.name),
                        "{} holds topic {} but is not asked", q.def.name, t
                    );
                }
            }
            for name in topics.values() {
                let got: Vec<String> = qs.matching(name).iter().map(|n| n.to_string()).collect();
                prop_assert_eq!(got, qs.matching_by_scan(name), "topic {}", name);
            }
        }
    }
}
