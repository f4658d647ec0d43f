//! Queues (durable subscriptions, DESIGN.md "Queue"). A queue does not copy messages: for
//! each topic it is bound to it keeps a cursor (the next seq it has never delivered) into
//! the topic's log, plus the messages delivered and not yet acknowledged and those waiting
//! to be delivered again. Fan-out to N queues therefore costs nothing at publish time.
//!
//! Pure state: time comes in as `now`, and what the topics hold comes in as a view
//! ([`TopicView`]), so the same code runs under property tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::shards::{Shard, Shards};

/// A message of a topic: (topic id, seq).
pub type MsgRef = (u32, u64);
pub type ConsumerId = u64;

/// What a queue may deliver from one topic: seqs `first..=upto` (upto = the newest durable
/// seq).
pub trait TopicView {
    fn range(&self, topic: u32) -> Option<(u64, u64)>;
}

impl<F: Fn(u32) -> Option<(u64, u64)>> TopicView for F {
    fn range(&self, topic: u32) -> Option<(u64, u64)> {
        self(topic)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDef {
    pub name: String,
    pub owner: String,
    pub created: u64,
    pub bindings: Vec<String>,
    pub max_deliver: u32,
    pub ack_wait_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounters {
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
}

impl std::ops::AddAssign for QueueCounters {
    fn add_assign(&mut self, o: Self) {
        self.delivered += o.delivered;
        self.acked += o.acked;
        self.redelivered += o.redelivered;
        self.dead_lettered += o.dead_lettered;
        self.dropped += o.dropped;
    }
}

/// A delivery waiting for its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub consumer: ConsumerId,
    pub deadline: u64,
    pub deliveries: u32,
}

/// A message to deliver again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub due: u64,
    pub deliveries: u32,
}

/// A message that used up its deliveries: the broker moves it to `$dlq.<queue>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub msg: MsgRef,
    pub deliveries: u32,
    pub reason: &'static str,
    /// Its number among the queue's dead letters of its shard (the shard's `dead_lettered`
    /// count, kept with the queue's state): a crash that loses the state numbers the same
    /// message the same again, so the dead letter topic's dedupe stores it once.
    pub ordinal: u64,
    /// The shard it comes from (0 on a single node).
    pub shard: Shard,
}

/// What [`Queue::take`] would do, worked out by [`Queue::select`].
#[derive(Debug, Default)]
struct Selection {
    /// Due redeliveries in order, with their deliveries so far; None for a message its
    /// topic no longer stores (dropped when taken).
    retries: Vec<(MsgRef, Option<u32>)>,
    /// New messages, in the order they are handed out.
    fresh: Vec<MsgRef>,
    /// Cursors that moved: (topic, new cursor, messages skipped because retention removed
    /// them).
    cursors: Vec<(u32, u64, u64)>,
    /// Bound topics found with nothing new (or gone): out of the backlog.
    idle: Vec<u32>,
    rr: u32,
}

/// The consumer of deliveries made to a detached fetch: no session owns it, so a closed
/// connection does not give them back; they wait for an ack or nack from anyone until their
/// deadline, and one that passes uncounted (see [`Queue::expire`]).
pub const DETACHED: ConsumerId = u64::MAX;

mod record;
mod shard;
#[cfg(test)]
pub use record::Exact;
pub use record::QueueRecord;

#[derive(Debug, Clone)]
pub struct Queue {
    /// The definition (shard 0's: each shard applies changes to it in its own log).
    pub def: QueueDef,
    /// The definitions of the other shards, as their own logs changed them; none on a
    /// single node.
    shard_defs: BTreeMap<Shard, QueueDef>,
    /// Per bound topic: the next seq never delivered. Which topics it holds changes only
    /// through [`super::QueueSet`], which indexes them.
    pub cursors: BTreeMap<u32, u64>,
    pub unacked: BTreeMap<MsgRef, Lease>,
    pub retry: BTreeMap<MsgRef, Retry>,
    /// Per shard (the shard of the topic each counted message is of): each shard's part
    /// of the queue is decided in its own group's log, and stored in its own store.
    counters: BTreeMap<Shard, QueueCounters>,
    /// Per shard (that of `$dlq.<queue>`), the newest seq of `$dlq.<queue>` already taken
    /// back by a redrive. The dead letter topic is an append-only log whose oldest messages
    /// alone can be removed, so dead letters a redrive moved may stay in it (behind one
    /// requeued as itself); this keeps a second redrive from taking them back twice.
    dlq_redriven: BTreeMap<Shard, u64>,
    /// How the node's topics are spread over shards (one on a single node).
    shards: Shards,
    /// The bound topics that may have messages past their cursor. A topic outside it has
    /// none: a topic gets new messages only through [`Queue::note_append`], so `take` and
    /// `ready` cost the topics with something waiting, not every bound topic (a queue on
    /// `devices.>` with a million of them). Not stored: a start puts every bound topic in.
    backlog: std::collections::BTreeSet<u32>,
    /// Where the next take of each shard starts in the backlog (the topic id after the
    /// last one served): round robin, so one busy topic does not starve the others.
    rr: BTreeMap<Shard, u32>,
    /// Dead letters found outside a call that could return them (at restart).
    dead: Vec<DeadLetter>,
}

/// Which shards an operation concerns: every one (a single node, a listing), or one (an
/// entry of that shard's group, which must change nothing of the others).
pub type Scope = Option<Shard>;

impl Queue {
    pub fn new(def: QueueDef) -> Self {
        Queue {
            def,
            shard_defs: BTreeMap::new(),
            cursors: BTreeMap::new(),
            unacked: BTreeMap::new(),
            retry: BTreeMap::new(),
            counters: BTreeMap::new(),
            dlq_redriven: BTreeMap::new(),
            shards: Shards::ONE,
            backlog: Default::default(),
            rr: BTreeMap::new(),
            dead: Vec::new(),
        }
    }

    /// Bind a topic, starting at `start` (ignored if already bound). Through
    /// [`super::QueueSet::bind_topic`], which indexes it.
    pub(super) fn bind_topic(&mut self, topic: u32, start: u64) {
        self.cursors.entry(topic).or_insert(start);
        self.backlog.insert(topic);
    }

    /// A bound topic has new messages to deliver (its newest deliverable seq moved on).
    pub fn note_append(&mut self, topic: u32) {
        if self.cursors.contains_key(&topic) {
            self.backlog.insert(topic);
        }
    }

    /// Forget a topic (unbound or removed): what it still had waiting is counted dropped.
    /// Returns the consumers whose deliveries of it ended (their credit comes back).
    pub(super) fn unbind_topic(&mut self, topic: u32, view: &impl TopicView) -> Vec<ConsumerId> {
        self.backlog.remove(&topic);
        if let Some(c) = self.cursors.remove(&topic) {
            if let Some((first, upto)) = view.range(topic) {
                self.ctr(topic).dropped += (upto + 1).saturating_sub(c.max(first));
            }
        }
        let mut consumers = Vec::new();
        let before = self.unacked.len() + self.retry.len();
        self.unacked.retain(|r, l| {
            if r.0 == topic {
                consumers.push(l.consumer);
            }
            r.0 != topic
        });
        self.retry.retain(|r, _| r.0 != topic);
        self.ctr(topic).dropped += (before - self.unacked.len() - self.retry.len()) as u64;
        consumers
    }

    /// Messages waiting to be delivered (not counting those delivered and unacked).
    pub fn ready(&self, view: &impl TopicView) -> u64 {
        self.ready_in(view, None)
    }

    /// Messages of the shards of `scope` waiting to be delivered.
    pub fn ready_in(&self, view: &impl TopicView, scope: Scope) -> u64 {
        let fresh: u64 = self
            .backlog
            .iter()
            .filter(|t| self.in_scope(**t, scope))
            .filter_map(|t| Some((*t, *self.cursors.get(t)?)))
            .map(|(t, c)| match view.range(t) {
                Some((first, upto)) => (upto + 1).saturating_sub(c.max(first)),
                None => 0,
            })
            .sum();
        let retry = self.retry.keys().filter(|m| self.in_scope(m.0, scope));
        fresh + retry.count() as u64
    }

    /// Hand up to `max` messages of the shards of `scope` to `consumer`: in each shard,
    /// due redeliveries first, then new messages, round robin over the bound topics (order
    /// is publish order within one topic).
    pub fn take(
        &mut self,
        view: &impl TopicView,
        max: usize,
        consumer: ConsumerId,
        now: u64,
        scope: Scope,
    ) -> Vec<(MsgRef, u32)> {
        let mut out = Vec::new();
        for s in self.scoped(scope) {
            if out.len() >= max {
                break;
            }
            out.extend(self.take_in(view, max - out.len(), consumer, now, s));
        }
        out
    }

    fn take_in(
        &mut self,
        view: &impl TopicView,
        max: usize,
        consumer: ConsumerId,
        now: u64,
        shard: Shard,
    ) -> Vec<(MsgRef, u32)> {
        let sel = self.select(view, max, now, shard);
        let mut out = Vec::with_capacity(sel.retries.len() + sel.fresh.len());
        for (m, before) in sel.retries {
            if self.retry.remove(&m).is_none() {
                continue;
            }
            let Some(before) = before else {
                // A message retention removed meanwhile cannot be delivered again.
                self.ctr(m.0).dropped += 1;
                continue;
            };
            if before > 0 {
                self.ctr(m.0).redelivered += 1;
            }
            self.lease(m, consumer, before + 1, now);
            out.push((m, before + 1));
        }
        for (t, c, skipped) in sel.cursors {
            // Retention removed messages this queue had not delivered yet.
            self.ctr(t).dropped += skipped;
            self.cursors.insert(t, c);
        }
        for t in sel.idle {
            self.backlog.remove(&t);
        }
        self.rr.insert(shard, sel.rr);
        for m in sel.fresh {
            self.lease(m, consumer, 1, now);
            out.push((m, 1));
        }
        out
    }

    /// The messages [`Queue::take`] would hand out now, each with how many times it was
    /// delivered before (0 for a message never delivered), changing nothing.
    pub fn peek(&self, view: &impl TopicView, max: usize, now: u64) -> Vec<(MsgRef, u32)> {
        let mut out = Vec::new();
        for s in self.shards.all() {
            if out.len() >= max {
                break;
            }
            let sel = self.select(view, max - out.len(), now, s);
            out.extend(
                sel.retries
                    .into_iter()
                    .filter_map(|(m, before)| Some((m, before?)))
                    .chain(sel.fresh.into_iter().map(|m| (m, 0))),
            );
        }
        out.truncate(max);
        out
    }

    /// What `take` picks, worked out without changing anything, so `peek` shows exactly
    /// what the next `take` delivers.
    fn select(&self, view: &impl TopicView, max: usize, now: u64, shard: Shard) -> Selection {
        let ids = self.shards.ids(shard);
        let start = self
            .rr
            .get(&shard)
            .copied()
            .filter(|r| ids.contains(r))
            .unwrap_or(*ids.start());
        let mut sel = Selection {
            rr: start,
            ..Selection::default()
        };
        let due = self
            .retry
            .iter()
            .filter(|(m, r)| r.due <= now && self.shards.of(m.0) == shard);
        for (m, r) in due.take(max) {
            let stored = matches!(view.range(m.0), Some((first, _)) if m.1 >= first);
            sel.retries.push((*m, stored.then_some(r.deliveries)));
        }
        let mut taken = sel.retries.iter().filter(|(_, d)| d.is_some()).count();
        // Round robin from the topic after the last one served: a first pass over the
        // backlog takes one message from each topic with any (and notes the idle ones, which
        // leave the backlog), the next passes go over those that had one. A take costs the
        // messages it hands out and the idle topics it finds once, not the whole backlog.
        let mut moved: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut live: Vec<(u32, u64)> = Vec::new();
        let order = self
            .backlog
            .range(start..=*ids.end())
            .chain(self.backlog.range(*ids.start()..start));
        for &t in order {
            if taken >= max {
                break;
            }
            let Some((first, upto)) = view.range(t) else {
                sel.idle.push(t);
                continue;
            };
            let c = moved
                .entry(t)
                .or_insert_with(|| (self.cursors.get(&t).copied().unwrap_or(first), 0));
            if c.0 < first {
                c.1 += first - c.0;
                c.0 = first;
            }
            if c.0 > upto {
                sel.idle.push(t);
                continue;
            }
            sel.fresh.push((t, c.0));
            c.0 += 1;
            taken += 1;
            sel.rr = t.wrapping_add(1);
            if c.0 <= upto {
                live.push((t, upto));
            }
        }
        while taken < max && !live.is_empty() {
            live.retain(|&(t, upto)| {
                if taken >= max {
                    return true;
                }
                let Some(c) = moved.get_mut(&t) else {
                    return false;
                };
                sel.fresh.push((t, c.0));
                c.0 += 1;
                taken += 1;
                sel.rr = t.wrapping_add(1);
                c.0 <= upto
            });
        }
        sel.cursors = moved.into_iter().map(|(t, (c, s))| (t, c, s)).collect();
        sel
    }

    fn lease(&mut self, m: MsgRef, consumer: ConsumerId, deliveries: u32, now: u64) {
        self.ctr(m.0).delivered += 1;
        self.unacked.insert(
            m,
            Lease {
                consumer,
                deadline: now.saturating_add(self.def_in(self.shards.of(m.0)).ack_wait_ms),
                deliveries,
            },
        );
    }

    /// Dead letters found at restart (a message out of deliveries when momd stopped).
    pub fn drain_dead(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead)
    }

    /// Take back a delivery that could not be sent (it would not fit the frame): it is
    /// delivered again at once, and this attempt does not count.
    pub fn unlease(&mut self, m: MsgRef, now: u64) {
        if let Some(l) = self.unacked.remove(&m) {
            let c = self.ctr(m.0);
            c.delivered = c.delivered.saturating_sub(1);
            if l.deliveries > 1 {
                c.redelivered = c.redelivered.saturating_sub(1);
            }
            self.retry.insert(
                m,
                Retry {
                    due: now,
                    deliveries: l.deliveries - 1,
                },
            );
        }
    }

    /// Take back a delivery its consumer never worked on (a `nack` with `release`): it
    /// waits to be delivered again at once, and the attempt does not count. Returns the
    /// consumer whose credit it frees; None if the message was not out on a delivery.
    pub fn release(&mut self, m: MsgRef, now: u64) -> Option<ConsumerId> {
        let consumer = self.unacked.get(&m)?.consumer;
        self.unlease(m, now);
        Some(consumer)
    }

    /// Acknowledge a message: it is settled and never delivered again. An ack that comes
    /// after the deadline still settles the message if it is waiting to be delivered again
    /// (the consumer did the work). Returns None when the queue does not hold the message;
    /// otherwise the consumer whose credit it frees, if it was out on a delivery.
    pub fn ack(&mut self, m: MsgRef) -> Option<Option<ConsumerId>> {
        if let Some(lease) = self.unacked.remove(&m) {
            self.ctr(m.0).acked += 1;
            return Some(Some(lease.consumer));
        }
        self.retry.remove(&m)?;
        self.ctr(m.0).acked += 1;
        Some(None)
    }

    /// Forget a delivery whose message is gone from its topic (retention, removal): the
    /// queue counts it as dropped. Returns the consumer it was out with.
    pub fn lost(&mut self, m: MsgRef) -> Option<ConsumerId> {
        let lease = self.unacked.remove(&m)?;
        self.ctr(m.0).dropped += 1;
        Some(lease.consumer)
    }

    /// Give a delivered message back, to be delivered again after `delay_ms` — or dead
    /// letter it if it used up its deliveries.
    pub fn nack(
        &mut self,
        m: MsgRef,
        delay_ms: u64,
        now: u64,
        reason: &'static str,
    ) -> Option<(ConsumerId, Option<DeadLetter>)> {
        let lease = self.unacked.remove(&m)?;
        Some((
            lease.consumer,
            self.requeue(m, lease.deliveries, now.saturating_add(delay_ms), reason),
        ))
    }

    fn requeue(
        &mut self,
        m: MsgRef,
        deliveries: u32,
        due: u64,
        reason: &'static str,
    ) -> Option<DeadLetter> {
        let max_deliver = self.def_in(self.shards.of(m.0)).max_deliver;
        if max_deliver > 0 && deliveries >= max_deliver {
            let shard = self.shards.of(m.0);
            let c = self.ctr(m.0);
            c.dead_lettered += 1;
            let ordinal = c.dead_lettered;
            return Some(DeadLetter {
                msg: m,
                deliveries,
                reason,
                ordinal,
                shard,
            });
        }
        self.retry.insert(m, Retry { due, deliveries });
        None
    }

    /// Deliveries whose ack deadline passed come back. Returns the consumers whose leases
    /// ended and the messages to dead letter. A detached delivery (a peek with `momctl recv
    /// --no-ack`) that nobody settled comes back as if it had not been made: its attempt is
    /// not counted, so looking never dead-letters a message.
    pub fn expire(&mut self, now: u64, scope: Scope) -> (Vec<ConsumerId>, Vec<DeadLetter>) {
        let late: Vec<(MsgRef, Lease)> = self
            .unacked
            .iter()
            .filter(|(m, l)| l.deadline <= now && self.in_scope(m.0, scope))
            .map(|(m, l)| (*m, *l))
            .collect();
        let mut consumers = Vec::new();
        let mut dead = Vec::new();
        for (m, l) in late {
            if l.consumer == DETACHED {
                self.unlease(m, now);
                continue;
            }
            self.unacked.remove(&m);
            consumers.push(l.consumer);
            dead.extend(self.requeue(m, l.deliveries, now, "ack_timeout"));
        }
        (consumers, dead)
    }

    /// A consumer still working on a delivery pushes its deadline to `now` + the queue's
    /// ack wait. False if the message is not delivered and unacked (it may have been
    /// redelivered to someone else).
    pub fn extend(&mut self, m: MsgRef, now: u64) -> bool {
        let wait = self.def_in(self.shards.of(m.0)).ack_wait_ms;
        match self.unacked.get_mut(&m) {
            Some(l) => {
                l.deadline = now.saturating_add(wait);
                true
            }
            None => false,
        }
    }

    /// Does the queue hold `m` as delivered or waiting for redelivery, or will its cursor
    /// still deliver it?
    pub fn holds(&self, m: MsgRef) -> bool {
        self.unacked.contains_key(&m)
            || self.retry.contains_key(&m)
            || self.cursors.get(&m.0).is_some_and(|c| *c <= m.1)
    }

    /// Take a dead letter back (a redrive): `m` is delivered again as soon as possible,
    /// with a fresh count (its next delivery is number 1). False if the queue holds it
    /// already.
    pub(super) fn redrive(&mut self, m: MsgRef, now: u64) -> bool {
        if self.holds(m) {
            return false;
        }
        self.retry.insert(
            m,
            Retry {
                due: now,
                deliveries: 0,
            },
        );
        true
    }

    /// How many messages of `topic` the queue still holds: not delivered yet (from its
    /// cursor), delivered and unacked, or waiting for redelivery.
    pub fn held_in(&self, topic: u32, view: &impl TopicView) -> u64 {
        let fresh = match (self.cursors.get(&topic), view.range(topic)) {
            (Some(c), Some((first, upto))) => (upto + 1).saturating_sub((*c).max(first)),
            _ => 0,
        };
        let out = self
            .unacked
            .keys()
            .chain(self.retry.keys())
            .filter(|m| m.0 == topic)
            .count() as u64;
        fresh + out
    }

    /// `topic` lost every message below `first` (a purge, a hard limit): what the queue had
    /// not delivered or was to deliver again of them is counted as dropped now. Returns how
    /// many. Deliveries out with consumers stay until they are acked or come back.
    pub fn skip_to(&mut self, topic: u32, first: u64) -> u64 {
        let mut n = 0;
        if let Some(c) = self.cursors.get_mut(&topic) {
            if *c < first {
                n += first - *c;
                *c = first;
            }
        }
        let before = self.retry.len();
        self.retry.retain(|m, _| m.0 != topic || m.1 >= first);
        n += (before - self.retry.len()) as u64;
        self.ctr(topic).dropped += n;
        n
    }

    /// The topics the queue is bound to (holds a cursor on).
    pub fn bound_topics(&self) -> impl Iterator<Item = u32> + '_ {
        self.cursors.keys().copied()
    }

    /// Every topic the queue refers to: bound ones and those of its outstanding messages
    /// (a redriven dead letter may come from a topic the queue is not bound to).
    pub fn topics(&self) -> std::collections::BTreeSet<u32> {
        self.cursors
            .keys()
            .copied()
            .chain(self.unacked.keys().chain(self.retry.keys()).map(|m| m.0))
            .collect()
    }

    /// A consumer went away: its deliveries come back at once.
    pub fn consumer_gone(
        &mut self,
        consumer: ConsumerId,
        now: u64,
        scope: Scope,
    ) -> Vec<DeadLetter> {
        let gone: Vec<(MsgRef, Lease)> = self
            .unacked
            .iter()
            .filter(|(m, l)| l.consumer == consumer && self.in_scope(m.0, scope))
            .map(|(m, l)| (*m, *l))
            .collect();
        let mut dead = Vec::new();
        for (m, l) in gone {
            self.unacked.remove(&m);
            dead.extend(self.requeue(m, l.deliveries, now, "consumer_gone"));
        }
        dead
    }

    /// A consumer went away saying it never worked on what it held: all of it comes back
    /// at once, the attempts not counted. Returns how many.
    pub fn release_consumer(&mut self, consumer: ConsumerId, now: u64, scope: Scope) -> usize {
        let held: Vec<MsgRef> = self
            .unacked
            .iter()
            .filter(|(m, l)| l.consumer == consumer && self.in_scope(m.0, scope))
            .map(|(m, _)| *m)
            .collect();
        for m in &held {
            self.unlease(*m, now);
        }
        held.len()
    }

    /// Drop every message waiting (not those delivered and unacked). Returns how many.
    pub fn purge(&mut self, view: &impl TopicView, scope: Scope) -> u64 {
        let n = self.ready_in(view, scope);
        let shards = self.shards;
        for (t, c) in self.cursors.iter_mut() {
            if scope.is_some_and(|s| shards.of(*t) != s) {
                continue;
            }
            if let Some((_, upto)) = view.range(*t) {
                *c = (*c).max(upto + 1);
            }
        }
        self.retry
            .retain(|m, _| scope.is_some_and(|s| shards.of(m.0) != s));
        n
    }

    /// The oldest seq of `topic` this queue still needs (retention keeps it).
    pub fn floor(&self, topic: u32) -> Option<u64> {
        let out = self
            .unacked
            .keys()
            .chain(self.retry.keys())
            .filter(|m| m.0 == topic)
            .map(|m| m.1)
            .min();
        match (self.cursors.get(&topic), out) {
            (Some(c), Some(o)) => Some((*c).min(o)),
            (Some(c), None) => Some(*c),
            (None, o) => o,
        }
    }

    /// The next time something is due in `scope` (an ack deadline or a delayed
    /// redelivery).
    pub fn next_due(&self, scope: Scope) -> Option<u64> {
        let a = self
            .unacked
            .iter()
            .filter(|(m, _)| self.in_scope(m.0, scope))
            .map(|(_, l)| l.deadline)
            .min();
        let b = self
            .retry
            .iter()
            .filter(|(m, _)| self.in_scope(m.0, scope))
            .map(|(_, r)| r.due)
            .min();
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
