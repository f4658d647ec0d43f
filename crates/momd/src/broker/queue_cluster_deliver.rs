//! Handing out queue messages in cluster mode (`queue_cluster.rs`): a node proposes a
//! `Take` for its consumers and fetches that wait; once the entry is applied and stored, it
//! reads what the take leased and sends it, gives back with an `Unlease` what it could not
//! send, and reports with `Lost` what the store no longer has.

use std::collections::HashMap;

use mom_proto::{FetchOk, QueueDeliver, ServerFrame};

use super::queue_cluster::TakeKey;
use super::{now_ms, Broker};
use crate::cluster::data::QueueOp;
use crate::core::queues::{ConsumerId, MsgRef, DETACHED};

impl Broker {
    /// `pump` in cluster mode: propose takes for this node's fetches and consumers of queue
    /// `name` that wait, as long as the queue has messages to hand out.
    pub(super) fn cluster_pump(&mut self, name: &str, now: u64) {
        // Most nodes have nobody waiting on most queues: then there is nothing to look at.
        let waits = self.fetches.iter().any(|f| f.queue == name)
            || self
                .consumers
                .values()
                .any(|c| c.queue == name && c.in_flight < c.credit);
        if !waits {
            return;
        }
        let ready = match self.queues.get(name) {
            Some(q) => q
                .peek(
                    &super::queue_ops::topic_view(&self.core.topics, true),
                    super::queue_ops::MAX_BATCH,
                    now,
                )
                .len(),
            None => return,
        };
        if ready == 0 {
            return;
        }
        // Takes proposed now may lease up to this many; beyond, they would get nothing.
        let mut budget = ready;
        let fetches: Vec<(u64, u64, usize, bool)> = self
            .fetches
            .iter()
            .filter(|f| f.queue == name && !self.taking.contains(&TakeKey::Fetch(f.session, f.id)))
            .map(|f| (f.session, f.id, f.max, f.detached))
            .collect();
        for (session, id, max, detached) in fetches {
            if budget == 0 {
                return;
            }
            budget = budget.saturating_sub(max);
            let consumer = if detached {
                DETACHED
            } else {
                self.fetch_consumer(session)
            };
            self.propose_queue(
                QueueOp::Take {
                    queue: name.to_string(),
                    consumer,
                    max: max as u32,
                    fetch: Some((session, id)),
                },
                None,
            );
        }
        let mut ids: Vec<(ConsumerId, u32)> = self
            .consumers
            .iter()
            .filter(|(id, c)| {
                c.queue == name
                    && c.in_flight < c.credit
                    && !self.taking.contains(&TakeKey::Consumer(**id))
                    && self
                        .sessions
                        .get(&c.session)
                        .is_some_and(|s| s.outbox.has_room())
            })
            .map(|(id, c)| (*id, c.credit - c.in_flight))
            .collect();
        ids.sort_unstable();
        // Round robin: from the one after the consumer served first last time.
        if let Some(last) = self.consumer_rr.get(name) {
            let k = ids.partition_point(|(id, _)| id <= last);
            ids.rotate_left(k);
        }
        if let Some((first, _)) = ids.first() {
            self.consumer_rr.insert(name.to_string(), *first);
        }
        for (cid, room) in ids {
            if budget == 0 {
                return;
            }
            let max = (room as usize).min(super::queue_ops::MAX_BATCH);
            budget = budget.saturating_sub(max);
            self.propose_queue(
                QueueOp::Take {
                    queue: name.to_string(),
                    consumer: cid,
                    max: max as u32,
                    fetch: None,
                },
                None,
            );
        }
    }

    /// After the entries of an apply are stored: read what this node's takes leased and
    /// send it. What cannot be sent goes back (`Unlease`), what will never read back is
    /// counted lost.
    pub(super) fn deliver_taken(&mut self) {
        for t in std::mem::take(&mut self.replica_taken) {
            let key = match t.fetch {
                Some((s, id)) => TakeKey::Fetch(s, id),
                None => TakeKey::Consumer(t.consumer),
            };
            self.taking.remove(&key);
            if t.refs.is_empty() {
                continue;
            }
            let now = now_ms();
            let (mut msgs, missing) = self.read_messages(t.refs);
            if !missing.is_empty() {
                let firsts: HashMap<u32, u64> = missing
                    .iter()
                    .filter_map(|((t, _), _)| {
                        self.core.topics.by_id(*t).map(|ts| (*t, ts.first_seq))
                    })
                    .collect();
                let (retry, lost): (Vec<_>, Vec<_>) =
                    missing.into_iter().partition(|(m, for_good)| {
                        !for_good && firsts.get(&m.0).is_some_and(|first| m.1 >= *first)
                    });
                let lost: Vec<MsgRef> = lost.into_iter().map(|(m, _)| m).collect();
                let retry: Vec<MsgRef> = retry.into_iter().map(|(m, _)| m).collect();
                if !lost.is_empty() {
                    tracing::error!(
                        queue = t.queue,
                        count = lost.len(),
                        "leased messages cannot be read (damaged, or gone from their topic); \
                         counted as dropped"
                    );
                    let msgs = self.named(&lost);
                    self.propose_queue(
                        QueueOp::Lost {
                            queue: t.queue.clone(),
                            consumer: t.consumer,
                            msgs,
                        },
                        None,
                    );
                }
                if !retry.is_empty() {
                    self.unlease_later(&t.queue, t.consumer, &retry);
                }
            }
            match t.fetch {
                Some((session, id)) => {
                    let at = self
                        .fetches
                        .iter()
                        .position(|f| f.session == session && f.id == id);
                    let Some(at) = at else {
                        // The fetch's time was up, or its connection closed.
                        self.unlease_msgs(&t.queue, t.consumer, &msgs);
                        continue;
                    };
                    let fit = self.fit_frame(&msgs);
                    let rest = msgs.split_off(fit.min(msgs.len()));
                    self.unlease_msgs(&t.queue, t.consumer, &rest);
                    if msgs.is_empty() {
                        continue;
                    }
                    let f = self.fetches.remove(at);
                    self.count_delivered(&t.queue, session, &msgs);
                    self.reply(
                        session,
                        ServerFrame::FetchOk(FetchOk {
                            id: f.id,
                            queue: f.queue,
                            msgs,
                        }),
                    );
                }
                None => {
                    let Some(session) = self.consumers.get(&t.consumer).map(|c| c.session) else {
                        // Cancelled meanwhile: its `ConsumerGone` gives back what it held.
                        self.unlease_msgs(&t.queue, t.consumer, &msgs);
                        continue;
                    };
                    if let Some(c) = self.consumers.get_mut(&t.consumer) {
                        c.in_flight += msgs.len() as u32;
                    }
                    self.count_delivered(&t.queue, session, &msgs);
                    // As many frames as it takes to stay under the frame limit.
                    while !msgs.is_empty() {
                        let fit = self.fit_frame(&msgs).clamp(1, msgs.len());
                        let rest = msgs.split_off(fit);
                        if let Some(s) = self.sessions.get(&session) {
                            s.outbox.reply(
                                ServerFrame::QueueDeliver(QueueDeliver {
                                    consumer: t.consumer,
                                    queue: t.queue.clone(),
                                    msgs,
                                }),
                                false,
                            );
                        }
                        msgs = rest;
                    }
                }
            }
            // More may wait for this consumer or fetch.
            self.pump(&t.queue, now);
        }
    }

    fn unlease_msgs(&mut self, queue: &str, consumer: ConsumerId, msgs: &[mom_proto::Message]) {
        if msgs.is_empty() {
            return;
        }
        let named = msgs.iter().map(|m| (m.topic.clone(), m.seq)).collect();
        self.propose_queue(
            QueueOp::Unlease {
                queue: queue.to_string(),
                consumer,
                msgs: named,
            },
            None,
        );
    }

    fn unlease_later(&mut self, queue: &str, consumer: ConsumerId, refs: &[MsgRef]) {
        let msgs = self.named(refs);
        self.propose_queue(
            QueueOp::Unlease {
                queue: queue.to_string(),
                consumer,
                msgs,
            },
            None,
        );
    }

    fn count_delivered(&mut self, queue: &str, session: u64, msgs: &[mom_proto::Message]) {
        let n = msgs.len() as u64;
        for m in msgs {
            if let Some(t) = self.core.topics.get(&m.topic) {
                let id = t.id;
                self.metrics.count_out(id, 1, m.payload.len() as u64);
            }
        }
        if let Some(s) = self.sessions.get(&session) {
            s.outbox
                .counters
                .msgs_out
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        self.delivered_total += n;
        self.total_rate.add_out(n);
        self.queue_rates
            .entry(queue.to_string())
            .or_default()
            .add_out(n);
    }
}
