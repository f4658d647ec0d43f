//! A queue over several shards: what one shard's entries do to it depends on that shard's
//! entries alone, whatever the other shards' entries were applied in between — which is
//! what lets each shard's group be applied on every node in its own order.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::queues::{MsgRef, Queue, QueueDef, Scope};
use super::shards::{Shard, Shards, ID_BITS};

#[derive(Debug, Clone)]
enum Op {
    Publish(u8, u8),
    Take(u8, u8),
    Ack(u8),
    Nack(u8, u8),
    Expire,
    Gone(u8),
    Release(u8),
    Purge,
}

fn op() -> impl Strategy<Value = (Op, u16)> {
    let op = prop_oneof![
        4 => (0u8..2, 1u8..5).prop_map(|(t, n)| Op::Publish(t, n)),
        4 => (0u8..3, 1u8..6).prop_map(|(c, n)| Op::Take(c, n)),
        3 => any::<u8>().prop_map(Op::Ack),
        2 => (any::<u8>(), 0u8..3).prop_map(|(i, d)| Op::Nack(i, d)),
        2 => Just(Op::Expire),
        1 => (0u8..3).prop_map(Op::Gone),
        1 => (0u8..3).prop_map(Op::Release),
        1 => Just(Op::Purge),
    ];
    // Each entry carries its time, as a Raft entry does.
    (op, 0u16..2000)
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

fn topic(shard: Shard, t: u8) -> u32 {
    (u32::from(shard) << ID_BITS) | u32::from(t)
}

/// What a shard's entries gave back, in order: deliveries and dead letters.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    out: Vec<(MsgRef, u32)>,
    dead: Vec<(MsgRef, u64, Shard)>,
    purged: Vec<u64>,
}

struct Run {
    q: Queue,
    upto: BTreeMap<u32, u64>,
    delivered: BTreeMap<Shard, Vec<MsgRef>>,
    seen: BTreeMap<Shard, Seen>,
}

impl Run {
    fn new(shards: Shards) -> Run {
        let mut q = Queue::new(def());
        q.set_shards(shards);
        for s in shards.all() {
            for t in 0..2 {
                q.bind_topic(topic(s, t), 1);
            }
        }
        Run {
            q,
            upto: BTreeMap::new(),
            delivered: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
    }

    fn apply(&mut self, shard: Shard, op: &Op, now: u64) {
        let scope: Scope = Some(shard);
        let upto = &self.upto;
        let view = |t: u32| upto.get(&t).map(|u| (1, *u));
        let seen = self.seen.entry(shard).or_default();
        let delivered = self.delivered.entry(shard).or_default();
        let pick = |i: u8| (!delivered.is_empty()).then(|| delivered[i as usize % delivered.len()]);
        match *op {
            Op::Publish(t, n) => {
                let t = topic(shard, t);
                *self.upto.entry(t).or_insert(0) += u64::from(n);
                self.q.note_append(t);
            }
            Op::Take(c, n) => {
                let got = self.q.take(&view, n as usize, u64::from(c), now, scope);
                delivered.extend(got.iter().map(|(m, _)| *m));
                seen.out.extend(got);
            }
            Op::Ack(i) => {
                if let Some(m) = pick(i) {
                    self.q.ack(m);
                }
            }
            Op::Nack(i, d) => {
                if let Some(m) = pick(i) {
                    if let Some((_, Some(dl))) = self.q.nack(m, u64::from(d) * 10, now, "nack") {
                        seen.dead.push((dl.msg, dl.ordinal, dl.shard));
                    }
                }
            }
            Op::Expire => {
                for dl in self.q.expire(now, scope).1 {
                    seen.dead.push((dl.msg, dl.ordinal, dl.shard));
                }
            }
            Op::Gone(c) => {
                for dl in self.q.consumer_gone(u64::from(c), now, scope) {
                    seen.dead.push((dl.msg, dl.ordinal, dl.shard));
                }
            }
            Op::Release(c) => {
                self.q.release_consumer(u64::from(c), now, scope);
            }
            Op::Purge => seen.purged.push(self.q.purge(&view, scope)),
        }
    }
}

proptest! {
    /// Two shards' entries applied one shard after the other, or interleaved any way: each
    /// shard's part of the queue (its stored record) and what its entries gave back are the
    /// same. And a queue rebuilt from its shards' records is the same queue.
    #[test]
    fn a_shard_s_part_depends_on_its_own_entries_alone(
        a in proptest::collection::vec(op(), 1..60),
        b in proptest::collection::vec(op(), 1..60),
        mix in proptest::collection::vec(any::<bool>(), 120),
    ) {
        let shards = Shards::new(2).unwrap();
        let mut apart = Run::new(shards);
        for (o, t) in &a {
            apart.apply(0, o, u64::from(*t));
        }
        for (o, t) in &b {
            apart.apply(1, o, u64::from(*t));
        }
        let mut mixed = Run::new(shards);
        let (mut ia, mut ib) = (a.iter(), b.iter().peekable());
        let mut m = mix.iter();
        loop {
            let first = *m.next().unwrap_or(&true);
            let next = if first { ia.next().map(|x| (0, x)) } else { None };
            let next = next.or_else(|| ib.next().map(|x| (1, x))).or_else(|| ia.next().map(|x| (0, x)));
            let Some((s, (o, t))) = next else { break };
            mixed.apply(s, o, u64::from(*t));
        }
        for s in shards.all() {
            prop_assert_eq!(apart.q.exact_record(s), mixed.q.exact_record(s));
            prop_assert_eq!(apart.seen.get(&s), mixed.seen.get(&s));
        }
        let mut rebuilt = Queue::new(def());
        rebuilt.set_shards(shards);
        for s in shards.all() {
            rebuilt.add_shard_record(s, mixed.q.exact_record(s));
        }
        for s in shards.all() {
            prop_assert_eq!(rebuilt.exact_record(s), mixed.q.exact_record(s));
        }
        prop_assert_eq!(rebuilt.counters(), mixed.q.counters());
    }
}

#[test]
fn one_shard_counts_everything_as_before() {
    let mut q = Queue::new(def());
    q.bind_topic(3, 1);
    q.bind_topic(u32::MAX - 1, 1);
    let view = |t: u32| (t == 3 || t == u32::MAX - 1).then_some((1, 2));
    q.note_append(3);
    q.note_append(u32::MAX - 1);
    let got = q.take(&view, 10, 1, 0, Some(0));
    assert_eq!(got.len(), 4);
    assert_eq!(q.counters().delivered, 4);
    assert_eq!(q.exact_record(0).counters.delivered, 4);
    assert_eq!(q.exact_record(0).cursors.len(), 2);
}
