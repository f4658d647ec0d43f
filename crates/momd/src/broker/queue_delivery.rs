//! Handing queue messages out: to waiting fetches and to consumers as their credit allows,
//! reading them from the store; ack deadlines; dead letters; and what a closed connection
//! gives back.

use std::collections::HashMap;

use mom_proto::{FetchOk, Message, PubMsg, QueueDeliver, ServerFrame};

use super::queue_ops::{FetchWaiter, MAX_BATCH};
use super::{json_str, now_ms, Broker, Pending};
use crate::core::queues::{ConsumerId, DeadLetter, MsgRef, DETACHED};

impl Broker {
    /// A consumer ended (cancelled, or its connection closed): what it held comes back.
    pub(super) fn consumer_gone(&mut self, consumer: ConsumerId, now: u64) {
        let Some(c) = self.consumers.remove(&consumer) else {
            return;
        };
        let dead = match self.queues.get_mut(&c.queue) {
            Some(q) => q.consumer_gone(consumer, now, None),
            None => return,
        };
        self.dead_letter(&c.queue, dead, now);
        self.dirty_queues.insert(c.queue.clone());
        self.pump(&c.queue, now);
    }

    /// Ack deadlines: late deliveries come back (or go to the dead letter topic).
    pub(super) fn expire_queues(&mut self, now: u64) {
        if self.store.is_replica() {
            return self.cluster_queue_tick(now);
        }
        let names: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| q.next_due(None).is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Some(q) = self.queues.get_mut(&name) else {
                continue;
            };
            let (consumers, dead) = q.expire(now, None);
            // Only a real change is written: a redelivery that merely waits for a reader
            // must not cost an fsync every tick.
            if !consumers.is_empty() || !dead.is_empty() {
                self.dirty_queues.insert(name.clone());
            }
            self.free_credit(&consumers);
            self.dead_letter(&name, dead, now);
        }
        self.serve_waiting(now);
    }

    /// Serve what waits: due redeliveries, consumers whose connection has room again,
    /// fetches whose messages could not be read a moment ago; answer the fetches whose time
    /// is up.
    pub(super) fn serve_waiting(&mut self, now: u64) {
        let mut waiting: Vec<String> = self
            .consumers
            .values()
            .filter(|c| c.in_flight < c.credit)
            .map(|c| c.queue.clone())
            .chain(self.fetches.iter().map(|f| f.queue.clone()))
            .collect();
        waiting.sort_unstable();
        waiting.dedup();
        for name in waiting {
            self.pump(&name, now);
        }
        self.expire_fetches(now);
    }

    /// Answer fetches whose time is up with what they have: nothing.
    pub(super) fn expire_fetches(&mut self, now: u64) {
        let (late, keep): (Vec<FetchWaiter>, Vec<FetchWaiter>) = std::mem::take(&mut self.fetches)
            .into_iter()
            .partition(|f| f.deadline <= now);
        self.fetches = keep;
        for f in late {
            self.reply(
                f.session,
                ServerFrame::FetchOk(FetchOk {
                    id: f.id,
                    queue: f.queue,
                    msgs: Vec::new(),
                }),
            );
        }
    }

    /// Queues with new messages in `topic` may now serve their fetchers and consumers.
    pub(super) fn pump_topic(&mut self, topic: u32, count: u64, now: u64) {
        // The queues bound to the topic, from the index: not a scan of every queue.
        let names: Vec<std::sync::Arc<str>> = self.queues.bound_to(topic).to_vec();
        for name in &names {
            if let Some(q) = self.queues.get_mut(name) {
                q.note_append(topic);
            }
            match self.queue_rates.get_mut(&**name) {
                Some(r) => r.add_in(count),
                None => {
                    let r = self.queue_rates.entry(name.to_string()).or_default();
                    r.add_in(count);
                }
            }
        }
        if self.fetches.is_empty() && self.consumers.is_empty() {
            return;
        }
        for n in names {
            self.pump(&n, now);
        }
    }

    /// Hand what queue `name` has ready to its waiting fetches first, then to its consumers
    /// as their credit allows.
    pub(super) fn pump(&mut self, name: &str, now: u64) {
        if self.store.is_replica() {
            return self.cluster_pump(name, now);
        }
        // Fetches, oldest first.
        let mut i = 0;
        while i < self.fetches.len() {
            if self.fetches[i].queue != name {
                i += 1;
                continue;
            }
            let f = &self.fetches[i];
            let consumer = if f.detached {
                DETACHED
            } else {
                self.fetch_consumer(f.session)
            };
            let msgs = self.take_messages(name, f.max, consumer, now);
            if msgs.is_empty() {
                return;
            }
            let f = self.fetches.remove(i);
            if let Some(s) = self.sessions.get(&f.session) {
                s.outbox
                    .counters
                    .msgs_out
                    .fetch_add(msgs.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            // Sent once the delivery counts it carries are durable (see `Pending::Push`).
            self.staged_pending.push(Pending::Reply {
                session: f.session,
                frame: ServerFrame::FetchOk(FetchOk {
                    id: f.id,
                    queue: f.queue,
                    msgs,
                }),
            });
        }
        // Consumers, each up to its credit, round robin: from the one after the consumer
        // served first last time, so one that acks fast does not take everything.
        let mut ids: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.queue == name && c.in_flight < c.credit)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        if let Some(last) = self.consumer_rr.get(name) {
            let k = ids.partition_point(|id| id <= last);
            ids.rotate_left(k);
        }
        let mut first_served = None;
        for cid in ids {
            let Some(c) = self.consumers.get(&cid) else {
                continue;
            };
            // A connection that does not read what it is sent gets no more for now; the
            // queue tick tries again.
            if !self
                .sessions
                .get(&c.session)
                .is_some_and(|s| s.outbox.has_room())
            {
                continue;
            }
            let room = (c.credit - c.in_flight) as usize;
            let session = c.session;
            let msgs = self.take_messages(name, room.min(MAX_BATCH), cid, now);
            if msgs.is_empty() {
                break;
            }
            first_served.get_or_insert(cid);
            if let Some(c) = self.consumers.get_mut(&cid) {
                c.in_flight += msgs.len() as u32;
            }
            if let Some(s) = self.sessions.get(&session) {
                s.outbox
                    .counters
                    .msgs_out
                    .fetch_add(msgs.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            self.staged_pending.push(Pending::Push {
                session,
                frame: ServerFrame::QueueDeliver(QueueDeliver {
                    consumer: cid,
                    queue: name.to_string(),
                    msgs,
                }),
            });
        }
        if let Some(cid) = first_served {
            match self.consumer_rr.get_mut(name) {
                Some(last) => *last = cid,
                None => {
                    self.consumer_rr.insert(name.to_string(), cid);
                }
            }
        }
    }

    /// Lease up to `max` messages of queue `name` to `consumer` and read them from the store.
    fn take_messages(
        &mut self,
        name: &str,
        max: usize,
        consumer: ConsumerId,
        now: u64,
    ) -> Vec<Message> {
        let refs = {
            let Some(q) = self.queues.get_mut(name) else {
                return Vec::new();
            };
            // The topics themselves, not a copy of every bound topic's range per take.
            q.take(
                &super::queue_ops::topic_view(&self.core.topics, false),
                max,
                consumer,
                now,
                None,
            )
        };
        if refs.is_empty() {
            return Vec::new();
        }
        self.dirty_queues.insert(name.to_string());
        let (mut out, missing) = self.read_messages(refs);
        // Keep the frame under the limit: what does not fit goes back, not counted.
        let fit = self.fit_frame(&out);
        if fit < out.len() {
            let back: Vec<MsgRef> = out[fit..]
                .iter()
                .filter_map(|m| self.core.topics.get(&m.topic).map(|t| (t.id, m.seq)))
                .collect();
            out.truncate(fit);
            if let Some(q) = self.queues.get_mut(name) {
                for m in back {
                    q.unlease(m, now);
                }
            }
        }
        let n = out.len() as u64;
        for m in &out {
            if let Some(t) = self.core.topics.get(&m.topic) {
                let id = t.id;
                self.metrics.count_out(id, 1, m.payload.len() as u64);
            }
        }
        self.delivered_total += n;
        self.total_rate.add_out(n);
        self.queue_rates
            .entry(name.to_string())
            .or_default()
            .add_out(n);
        if !missing.is_empty() {
            let firsts: HashMap<u32, u64> = missing
                .iter()
                .filter_map(|((t, _), _)| self.core.topics.by_id(*t).map(|ts| (*t, ts.first_seq)))
                .collect();
            // These never counted against the consumer's credit (only what is sent does).
            if let Some(q) = self.queues.get_mut(name) {
                for (m, for_good) in missing {
                    if for_good {
                        // Damaged on disk, or cut at recovery: it will never read back.
                        // Waiting for it would stall the queue; it is counted as dropped.
                        tracing::error!(
                            queue = name,
                            topic = m.0,
                            seq = m.1,
                            "message cannot be read (damaged on disk, or cut at recovery); \
                             counted as dropped"
                        );
                        q.lost(m);
                    } else if firsts.get(&m.0).is_some_and(|first| m.1 >= *first) {
                        // Still in its topic: the read failed; deliver it again later.
                        tracing::warn!(
                            queue = name,
                            topic = m.0,
                            seq = m.1,
                            "cannot read a message; it will be retried"
                        );
                        q.unlease(m, now);
                    } else {
                        // Gone from its topic (retention or removal): nothing to deliver.
                        q.lost(m);
                    }
                }
            }
        }
        out
    }

    /// Read the messages `refs` name, each with its `delivery` field set to the count given
    /// with it; returns them in (topic, seq) order, and the refs that could not be read,
    /// each with whether that is for good (the store answered, without it: a damaged
    /// record, or one cut at recovery) rather than a read that failed and may work later.
    pub(super) fn read_messages(
        &self,
        mut refs: Vec<(MsgRef, u32)>,
    ) -> (Vec<Message>, Vec<(MsgRef, bool)>) {
        refs.sort_unstable_by_key(|(m, _)| *m);
        let mut out = Vec::with_capacity(refs.len());
        let mut missing = Vec::new();
        // A run of consecutive seqs of one topic is one read.
        for run in refs.chunk_by(|a, b| a.0 .0 == b.0 .0 && b.0 .1 == a.0 .1 + 1) {
            let (Some(((t, from), _)), Some(((_, to), _))) = (run.first(), run.last()) else {
                continue;
            };
            let tname = self
                .core
                .topics
                .by_id(*t)
                .map(|x| x.name.to_string())
                .unwrap_or_default();
            let mut got: HashMap<u64, Message> = HashMap::new();
            let read = self.store.read(*t, &tname, *from, *to, usize::MAX);
            let for_good = read.is_ok();
            if let Ok(r) = read {
                for b in r.batches {
                    for (k, m) in b.msgs.into_iter().enumerate() {
                        let seq = b.first_seq + k as u64;
                        got.insert(
                            seq,
                            Message {
                                topic: tname.clone(),
                                seq,
                                time: b.time,
                                headers: m.headers,
                                sender: b.sender.clone(),
                                msg_id: m.msg_id,
                                key: m.key,
                                payload: m.payload,
                                delivery: None,
                            },
                        );
                    }
                }
            }
            for ((tt, seq), d) in run {
                match got.remove(seq) {
                    Some(mut m) => {
                        m.delivery = Some(*d);
                        out.push(m);
                    }
                    None => missing.push(((*tt, *seq), for_good)),
                }
            }
        }
        (out, missing)
    }

    /// How many of `msgs` (at least one) fit in one frame with room to spare.
    pub(super) fn fit_frame(&self, msgs: &[Message]) -> usize {
        let budget = self.cfg.max_frame / 2;
        let mut size = 0;
        for (k, m) in msgs.iter().enumerate() {
            size += m.payload.len()
                + m.topic.len()
                + 128
                + m.headers
                    .iter()
                    .map(|(a, b)| a.len() + b.len() + 8)
                    .sum::<usize>()
                + m.msg_id.as_ref().map_or(0, String::len);
            if k > 0 && size > budget {
                return k;
            }
        }
        msgs.len()
    }

    /// Message `seq` of topic `t` as stored: its topic's name, its sender, the message.
    fn read_one(
        &self,
        t: u32,
        seq: u64,
    ) -> Option<(String, mom_proto::Sender, crate::core::NewMsg)> {
        let tname = self.core.topics.by_id(t)?.name.to_string();
        let r = self.store.read(t, &tname, seq, seq, usize::MAX).ok()?;
        let b = r.batches.into_iter().next()?;
        let sender = b.sender;
        let m = b.msgs.into_iter().next()?;
        Some((tname, sender, m))
    }

    /// Move messages that used up their deliveries to `$dlq.<queue>`, with headers saying
    /// why and from where.
    pub(super) fn dead_letter(&mut self, queue: &str, dead: Vec<DeadLetter>, now: u64) {
        for d in dead {
            let (t, seq) = d.msg;
            let mut found = self.read_one(t, seq);
            if found.is_none() && self.applying_replicated && self.staged.count > 0 {
                // Published in the entries being applied, and not yet written: every node
                // must find it, however it grouped its writes.
                self.commit();
                found = self.read_one(t, seq);
            }
            let Some((tname, sender, m)) = found else {
                // Gone from its topic (a hard limit, or removed): nothing to move; the queue
                // lost it.
                if let Some(q) = self.queues.get_mut(queue) {
                    q.dead_letter_gone(&d);
                }
                continue;
            };
            let mut headers = m.headers;
            headers.insert("dlq-queue".into(), queue.to_string());
            headers.insert("dlq-reason".into(), d.reason.to_string());
            // A redriven dead letter that fails again keeps naming where it first came
            // from.
            let again = tname.starts_with("$dlq.")
                && headers.contains_key("dlq-topic")
                && headers.contains_key("dlq-seq");
            if !again {
                headers.insert("dlq-topic".into(), tname.clone());
                headers.insert("dlq-seq".into(), seq.to_string());
            }
            headers.insert("dlq-deliveries".into(), d.deliveries.to_string());
            let dlq = format!("$dlq.{queue}");
            // Published again after a crash that lost the queue's state (the message still
            // held, to be dead-lettered once more) it is the same dead letter: its id makes
            // the dedupe of the dead letter topic store it once.
            let created = self.queues.get(queue).map_or(0, |q| q.def.created);
            let msg = PubMsg {
                payload: m.payload,
                headers,
                msg_id: Some(format!("$dlq:{queue}:{created}:{}", d.ordinal)),
                key: m.key,
            };
            if let Err((_, e)) = self.publish((0, 0, true), &dlq, vec![msg], sender, now, true) {
                tracing::error!(queue, "cannot dead-letter {tname}#{seq}: {e}");
                continue;
            }
            self.sys_event(format!(
                r#"{{"event":"dead_lettered","queue":{},"topic":{},"seq":{seq},"deliveries":{}}}"#,
                json_str(queue),
                json_str(&tname),
                d.deliveries
            ));
        }
    }

    /// Write the state of queues that changed (called by `commit`).
    pub(super) fn stage_queues(&mut self) {
        for name in std::mem::take(&mut self.dirty_queues) {
            if let Some(q) = self.queues.get(&name) {
                let record = if self.store.is_replica() {
                    q.exact_record(0)
                } else {
                    q.record()
                };
                self.store.stage_queue(&mut self.staged, &record);
                // Deliveries and acks reach the disk with the next group commit, without
                // waiting for a publish to start one.
                self.queue_flush_wanted = true;
            }
        }
    }

    /// A session ended: its consumers go, its fetches are forgotten.
    pub(super) fn session_gone_for_queues(&mut self, session: u64) {
        if self.store.is_replica() {
            return self.cluster_session_gone(session);
        }
        let now = now_ms();
        let gone: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.session == session)
            .map(|(id, _)| *id)
            .collect();
        for c in gone {
            self.consumer_gone(c, now);
        }
        // Deliveries made to a fetch of this session come back too.
        let cid = self.fetch_consumer(session);
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for n in names {
            let dead = match self.queues.get_mut(&n) {
                Some(q) if q.unacked.values().any(|l| l.consumer == cid) => {
                    q.consumer_gone(cid, now, None)
                }
                _ => continue,
            };
            self.dead_letter(&n, dead, now);
            self.dirty_queues.insert(n.clone());
            self.pump(&n, now);
        }
        self.fetches.retain(|f| f.session != session);
    }
}
