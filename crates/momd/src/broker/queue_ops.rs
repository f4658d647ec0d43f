//! The broker's side of queues: requests (create, bind, consume, ack, fetch …), handing
//! messages to consumers and fetchers as credit allows, ack deadlines, and dead letters.
//! The queue state itself is `core::queues`; this file reads the messages from the store and
//! talks to sessions.

use std::collections::HashMap;

use mom_proto::{
    topic, ClientFrame, ConsumeOk, ErrorCode, FetchOk, Message, MsgKey, PubMsg, QueueCreate,
    QueueDeliver, QueueInfo, QueueInfoReply, QueueList, Req, ServerFrame, StartAt,
};

use super::{json_str, now_ms, Broker, Pending};
use crate::core::queues::{ConsumerId, DeadLetter, MsgRef, Queue, QueueDef};

/// Default deliveries before a message is dead-lettered.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// Default time to ack a delivery.
pub const DEFAULT_ACK_WAIT_MS: u64 = 30_000;
/// Most unacked messages one consumer may hold, and consumers one connection may hold.
const MAX_CREDIT: u32 = 4096;
const MAX_CONSUMERS: usize = 256;
/// Most messages in one fetch or one push frame.
const MAX_BATCH: usize = 256;

pub struct Consumer {
    pub session: u64,
    pub queue: String,
    pub credit: u32,
    pub in_flight: u32,
}

pub struct FetchWaiter {
    pub session: u64,
    pub id: u64,
    pub queue: String,
    pub max: usize,
    pub deadline: u64,
}

/// Longest queue name: `$dlq.<name>` must still be a topic name.
pub const MAX_QUEUE_NAME: usize = 200;

/// Queue names follow topic names, without wildcards and not reserved.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_QUEUE_NAME {
        return Err(format!(
            "queue name is {} bytes long; the limit is {MAX_QUEUE_NAME}",
            name.len()
        ));
    }
    topic::validate_publish_topic(name)
        .map_err(|e| e.to_string().replace("topic name", "queue name"))
}

impl Broker {
    /// (first seq, newest durable seq) of a topic: what queues may deliver.
    fn view(&self) -> impl Fn(u32) -> Option<(u64, u64)> + '_ {
        move |t| {
            let ts = self.core.topics.by_id(t)?;
            let upto = self.delivered_upto.get(&t).copied().unwrap_or(0);
            Some((ts.first_seq, upto))
        }
    }

    pub(super) fn queue_info(&self, q: &Queue) -> QueueInfo {
        let view = self.view();
        let consumers = self
            .consumers
            .values()
            .filter(|c| c.queue == q.def.name)
            .count() as u64;
        let rate = self
            .queue_rates
            .get(&q.def.name)
            .copied()
            .unwrap_or_default();
        let ready = q.ready(&view);
        QueueInfo {
            name: q.def.name.clone(),
            owner: q.def.owner.clone(),
            created: q.def.created,
            bindings: q.def.bindings.clone(),
            max_deliver: q.def.max_deliver,
            ack_wait_ms: q.def.ack_wait_ms,
            consumers,
            ready,
            unacked: q.unacked.len() as u64,
            lag: ready + q.unacked.len() as u64,
            delivered: q.counters.delivered,
            acked: q.counters.acked,
            redelivered: q.counters.redelivered,
            dead_lettered: q.counters.dead_lettered,
            dropped: q.counters.dropped,
            in_rate: rate.in_rate,
            out_rate: rate.out_rate,
        }
    }

    /// How many queues hold cursors on a topic.
    pub(super) fn queues_bound(&self, topic: u32) -> u64 {
        self.queues
            .values()
            .filter(|q| q.cursors.contains_key(&topic))
            .count() as u64
    }

    /// The oldest seq of a topic some queue still needs.
    pub(super) fn queue_floor(&self, topic: u32) -> u64 {
        self.queues
            .values()
            .filter_map(|q| q.floor(topic))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A topic was created: bind it to every queue whose patterns match, from seq 1.
    pub(super) fn topic_created_for_queues(&mut self, topic: u32, name: &str) {
        for q in self.queues.values_mut() {
            if q.def.bindings.iter().any(|p| topic::matches(p, name)) {
                q.bind_topic(topic, 1);
                self.dirty_queues.insert(q.def.name.clone());
            }
        }
    }

    /// A topic is being removed (`range`: its first seq and newest durable seq): queues
    /// forget it and count what they had not delivered as dropped.
    pub(super) fn topic_removed_for_queues(&mut self, topic: u32, range: Option<(u64, u64)>) {
        let view = |_t: u32| range;
        let mut freed = Vec::new();
        for q in self.queues.values_mut() {
            if q.cursors.contains_key(&topic) || q.floor(topic).is_some() {
                freed.extend(q.unbind_topic(topic, &view));
                self.dirty_queues.insert(q.def.name.clone());
            }
        }
        self.free_credit(&freed);
    }

    /// An ack or nack changed the queue: confirm it once the new state is on disk, and hand
    /// out what the freed credit allows.
    fn settled(&mut self, session: u64, id: u64, queue: &str, now: u64) {
        self.dirty_queues.insert(queue.to_string());
        self.staged_pending.push(Pending::Reply {
            session,
            frame: ServerFrame::Ok(Req { id }),
        });
        self.pump(queue, now);
    }

    /// Consumers whose deliveries ended get their credit back.
    fn free_credit(&mut self, consumers: &[ConsumerId]) {
        for c in consumers {
            if let Some(cs) = self.consumers.get_mut(c) {
                cs.in_flight = cs.in_flight.saturating_sub(1);
            }
        }
    }

    fn reply_queue_info(&mut self, session: u64, id: u64, name: &str, wait_flush: bool) {
        let Some(q) = self.queues.get(name) else {
            return self.error(
                session,
                id,
                ErrorCode::NotFound,
                format!("queue {name:?} not found"),
            );
        };
        let frame = ServerFrame::QueueInfo(QueueInfoReply {
            id,
            queue: self.queue_info(q),
        });
        if wait_flush {
            self.staged_pending.push(Pending::Reply { session, frame });
        } else {
            self.reply(session, frame);
        }
    }

    /// Bind `patterns` to queue `name` for the topics that exist now, starting at `from`.
    fn bind_existing(&mut self, name: &str, patterns: &[String], from: StartAt, at: u64) {
        let mut starts = Vec::new();
        for (t, upto) in self.matching_topics(patterns) {
            let start = match from {
                StartAt::New => upto + 1,
                StartAt::All => t.first_seq,
                StartAt::Seq => at.max(t.first_seq),
                StartAt::Time => self.store.seq_at_time(&t, at).unwrap_or(upto + 1),
            };
            starts.push((t.id, start));
        }
        if let Some(q) = self.queues.get_mut(name) {
            for (t, s) in starts {
                q.bind_topic(t, s);
            }
        }
    }

    pub(super) fn queue_request(&mut self, session: u64, frame: ClientFrame) {
        let now = now_ms();
        let named = match &frame {
            ClientFrame::QueueBind(b) | ClientFrame::QueueUnbind(b) => Some((b.id, &b.queue)),
            ClientFrame::QueueDelete(d) => Some((d.id, &d.queue)),
            ClientFrame::QueuePurge(r) | ClientFrame::QueueInfo(r) => Some((r.id, &r.queue)),
            ClientFrame::Consume(c) => Some((c.id, &c.queue)),
            ClientFrame::Ack(a) => Some((a.id, &a.queue)),
            ClientFrame::Nack(n) => Some((n.id, &n.queue)),
            ClientFrame::Fetch(f) => Some((f.id, &f.queue)),
            _ => None,
        };
        if let Some((id, name)) = named {
            if let Err(e) = validate_queue_name(name) {
                return self.error(session, id, ErrorCode::BadRequest, e);
            }
        }
        match frame {
            ClientFrame::QueueCreate(c) => self.queue_create(session, c, now),
            ClientFrame::QueueBind(b) => {
                for p in &b.patterns {
                    if let Err(e) = topic::validate_pattern(p) {
                        return self.error(session, b.id, ErrorCode::BadRequest, e.to_string());
                    }
                }
                let Some(q) = self.queues.get_mut(&b.queue) else {
                    return self.error(
                        session,
                        b.id,
                        ErrorCode::NotFound,
                        format!("queue {:?} not found", b.queue),
                    );
                };
                for p in &b.patterns {
                    if !q.def.bindings.contains(p) {
                        q.def.bindings.push(p.clone());
                    }
                }
                // New bindings start with what is published from now on.
                self.bind_existing(&b.queue, &b.patterns, StartAt::New, 0);
                self.dirty_queues.insert(b.queue.clone());
                self.reply_queue_info(session, b.id, &b.queue, true);
            }
            ClientFrame::QueueUnbind(b) => {
                let topics: Vec<(u32, String)> = self
                    .core
                    .topics
                    .iter()
                    .map(|t| (t.id, t.name.clone()))
                    .collect();
                let view_snapshot: HashMap<u32, (u64, u64)> = topics
                    .iter()
                    .filter_map(|(id, _)| self.view()(*id).map(|r| (*id, r)))
                    .collect();
                let Some(q) = self.queues.get_mut(&b.queue) else {
                    return self.error(
                        session,
                        b.id,
                        ErrorCode::NotFound,
                        format!("queue {:?} not found", b.queue),
                    );
                };
                if b.patterns.is_empty() {
                    q.def.bindings.clear();
                } else {
                    for p in &b.patterns {
                        if !q.def.bindings.contains(p) {
                            let msg = format!("queue {:?} is not bound to {p:?}", b.queue);
                            return self.error(session, b.id, ErrorCode::NotFound, msg);
                        }
                    }
                    q.def.bindings.retain(|p| !b.patterns.contains(p));
                }
                // Topics no pattern matches any more leave the queue; what they still had
                // waiting for it is counted as dropped.
                let view = |t: u32| view_snapshot.get(&t).copied();
                let mut freed = Vec::new();
                for (id, name) in &topics {
                    if q.cursors.contains_key(id)
                        && !q.def.bindings.iter().any(|p| topic::matches(p, name))
                    {
                        freed.extend(q.unbind_topic(*id, &view));
                    }
                }
                self.free_credit(&freed);
                self.dirty_queues.insert(b.queue.clone());
                self.reply_queue_info(session, b.id, &b.queue, true);
            }
            ClientFrame::QueueDelete(d) => {
                let held = {
                    let view = self.view();
                    match self.queues.get(&d.queue) {
                        Some(q) => q.ready(&view) + q.unacked.len() as u64,
                        None => {
                            let msg = format!("queue {:?} not found", d.queue);
                            return self.error(session, d.id, ErrorCode::NotFound, msg);
                        }
                    }
                };
                if held > 0 && !d.force {
                    let msg = format!(
                        "queue {:?} still holds {held} messages; delete it with force to lose them",
                        d.queue
                    );
                    return self.error(session, d.id, ErrorCode::Conflict, msg);
                }
                if let Err(e) = self.store.remove_queue(&d.queue) {
                    return self.error(session, d.id, ErrorCode::Unavailable, e.to_string());
                }
                self.queues.remove(&d.queue);
                self.dirty_queues.remove(&d.queue);
                let gone: Vec<ConsumerId> = self
                    .consumers
                    .iter()
                    .filter(|(_, c)| c.queue == d.queue)
                    .map(|(id, _)| *id)
                    .collect();
                for c in gone {
                    let Some(cs) = self.consumers.remove(&c) else {
                        continue;
                    };
                    // Tell the consumer, so a worker loop ends instead of waiting forever.
                    if let Some(s) = self.sessions.get(&cs.session) {
                        s.outbox.reply(
                            ServerFrame::Notice(mom_proto::Notice {
                                watch: 0,
                                kind: mom_proto::NoticeKind::Ended,
                                skipped: 0,
                                message: format!("queue {:?} was deleted", d.queue),
                                consumer: Some(c),
                            }),
                            false,
                        );
                    }
                }
                let (gone, keep): (Vec<FetchWaiter>, Vec<FetchWaiter>) =
                    std::mem::take(&mut self.fetches)
                        .into_iter()
                        .partition(|f| f.queue == d.queue);
                self.fetches = keep;
                for f in gone {
                    let msg = format!("queue {:?} was deleted", d.queue);
                    self.error(f.session, f.id, ErrorCode::NotFound, msg);
                }
                self.sys_event(format!(
                    r#"{{"event":"queue_deleted","queue":{}}}"#,
                    json_str(&d.queue)
                ));
                self.dirty = true;
                self.staged_pending.push(Pending::Reply {
                    session,
                    frame: ServerFrame::Ok(Req { id: d.id }),
                });
            }
            ClientFrame::QueuePurge(r) => {
                let snapshot: HashMap<u32, (u64, u64)> = self
                    .core
                    .topics
                    .iter()
                    .filter_map(|t| self.view()(t.id).map(|v| (t.id, v)))
                    .collect();
                let Some(q) = self.queues.get_mut(&r.queue) else {
                    return self.error(
                        session,
                        r.id,
                        ErrorCode::NotFound,
                        format!("queue {:?} not found", r.queue),
                    );
                };
                q.purge(&|t: u32| snapshot.get(&t).copied());
                self.dirty_queues.insert(r.queue.clone());
                self.reply_queue_info(session, r.id, &r.queue, true);
            }
            ClientFrame::QueueInfo(r) => self.reply_queue_info(session, r.id, &r.queue, false),
            ClientFrame::QueueList(r) => {
                let queues = self.queues.values().map(|q| self.queue_info(q)).collect();
                self.reply(
                    session,
                    ServerFrame::QueueList(QueueList { id: r.id, queues }),
                );
            }
            ClientFrame::Consume(c) => {
                if !self.queues.contains_key(&c.queue) {
                    return self.error(
                        session,
                        c.id,
                        ErrorCode::NotFound,
                        format!("queue {:?} not found", c.queue),
                    );
                }
                if c.credit == 0 {
                    return self.error(
                        session,
                        c.id,
                        ErrorCode::BadRequest,
                        "credit must be at least 1",
                    );
                }
                let held = self
                    .consumers
                    .values()
                    .filter(|x| x.session == session)
                    .count();
                if held >= MAX_CONSUMERS {
                    let msg = format!("a connection may hold at most {MAX_CONSUMERS} consumers");
                    return self.error(session, c.id, ErrorCode::TooLarge, msg);
                }
                self.next_consumer += 1;
                let cid = self.next_consumer;
                self.consumers.insert(
                    cid,
                    Consumer {
                        session,
                        queue: c.queue.clone(),
                        // More credit than this would only hold memory in the broker.
                        credit: c.credit.min(MAX_CREDIT),
                        in_flight: 0,
                    },
                );
                self.reply(
                    session,
                    ServerFrame::ConsumeOk(ConsumeOk {
                        id: c.id,
                        consumer: cid,
                    }),
                );
                self.pump(&c.queue, now);
            }
            ClientFrame::Cancel(c) => match self.consumers.get(&c.consumer) {
                Some(cs) if cs.session == session => {
                    self.consumer_gone(c.consumer, now);
                    self.reply(session, ServerFrame::Ok(Req { id: c.id }));
                }
                _ => self.error(
                    session,
                    c.id,
                    ErrorCode::NotFound,
                    format!("no consumer {} on this connection", c.consumer),
                ),
            },
            ClientFrame::Ack(a) => {
                let refs = match self.refs(&a.queue, &a.msgs) {
                    Ok(r) => r,
                    Err((code, msg)) => return self.error(session, a.id, code, msg),
                };
                let mut freed = Vec::new();
                if let Some(q) = self.queues.get_mut(&a.queue) {
                    freed.extend(refs.into_iter().filter_map(|m| q.ack(m).flatten()));
                }
                self.free_credit(&freed);
                self.settled(session, a.id, &a.queue, now);
            }
            ClientFrame::Nack(n) => {
                let refs = match self.refs(&n.queue, &n.msgs) {
                    Ok(r) => r,
                    Err((code, msg)) => return self.error(session, n.id, code, msg),
                };
                let (mut dead, mut freed) = (Vec::new(), Vec::new());
                if let Some(q) = self.queues.get_mut(&n.queue) {
                    for m in refs {
                        if let Some((c, dl)) = q.nack(m, n.delay_ms, now, "nack") {
                            dead.extend(dl);
                            freed.push(c);
                        }
                    }
                }
                self.free_credit(&freed);
                self.dead_letter(&n.queue, dead);
                self.settled(session, n.id, &n.queue, now);
            }
            ClientFrame::Fetch(f) => {
                if !self.queues.contains_key(&f.queue) {
                    return self.error(
                        session,
                        f.id,
                        ErrorCode::NotFound,
                        format!("queue {:?} not found", f.queue),
                    );
                }
                self.fetches.push(FetchWaiter {
                    session,
                    id: f.id,
                    queue: f.queue.clone(),
                    max: (f.max as usize).clamp(1, MAX_BATCH),
                    deadline: now.saturating_add(f.timeout_ms),
                });
                self.pump(&f.queue, now);
                self.expire_fetches(now);
            }
            _ => {}
        }
    }

    fn queue_create(&mut self, session: u64, c: QueueCreate, now: u64) {
        if let Err(e) = validate_queue_name(&c.queue) {
            return self.error(session, c.id, ErrorCode::BadRequest, e);
        }
        for p in &c.bindings {
            if let Err(e) = topic::validate_pattern(p) {
                return self.error(session, c.id, ErrorCode::BadRequest, e.to_string());
            }
        }
        if let Some(q) = self.queues.get_mut(&c.queue) {
            if !c.exist_ok {
                let msg = format!("queue {:?} exists already", c.queue);
                return self.error(session, c.id, ErrorCode::Conflict, msg);
            }
            let new: Vec<String> = c
                .bindings
                .iter()
                .filter(|p| !q.def.bindings.contains(p))
                .cloned()
                .collect();
            q.def.bindings.extend(new.iter().cloned());
            self.bind_existing(&c.queue, &new, c.from, c.at);
            self.dirty_queues.insert(c.queue.clone());
            return self.reply_queue_info(session, c.id, &c.queue, true);
        }
        let owner = self
            .sessions
            .get(&session)
            .map(|s| s.client.user.clone())
            .unwrap_or_default();
        let def = QueueDef {
            name: c.queue.clone(),
            owner,
            created: now,
            bindings: c.bindings.clone(),
            max_deliver: c.max_deliver.unwrap_or(DEFAULT_MAX_DELIVER),
            ack_wait_ms: c.ack_wait_ms.unwrap_or(DEFAULT_ACK_WAIT_MS).max(1),
        };
        self.queues.insert(c.queue.clone(), Queue::new(def));
        self.bind_existing(&c.queue, &c.bindings, c.from, c.at);
        self.dirty_queues.insert(c.queue.clone());
        self.sys_event(format!(
            r#"{{"event":"queue_created","queue":{}}}"#,
            json_str(&c.queue)
        ));
        self.reply_queue_info(session, c.id, &c.queue, true);
    }

    /// Topic names and seqs to message refs of a queue.
    fn refs(&self, queue: &str, msgs: &[MsgKey]) -> Result<Vec<MsgRef>, (ErrorCode, String)> {
        if !self.queues.contains_key(queue) {
            return Err((ErrorCode::NotFound, format!("queue {queue:?} not found")));
        }
        // A message of a topic removed since is simply no longer held: skip it.
        Ok(msgs
            .iter()
            .filter_map(|m| self.core.topics.get(&m.topic).map(|t| (t.id, m.seq)))
            .collect())
    }

    /// A consumer ended (cancelled, or its connection closed): what it held comes back.
    pub(super) fn consumer_gone(&mut self, consumer: ConsumerId, now: u64) {
        let Some(c) = self.consumers.remove(&consumer) else {
            return;
        };
        let dead = match self.queues.get_mut(&c.queue) {
            Some(q) => q.consumer_gone(consumer, now),
            None => return,
        };
        self.dead_letter(&c.queue, dead);
        self.dirty_queues.insert(c.queue.clone());
        self.pump(&c.queue, now);
    }

    /// Ack deadlines: late deliveries come back (or go to the dead letter topic).
    pub(super) fn expire_queues(&mut self, now: u64) {
        let names: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| q.next_due().is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Some(q) = self.queues.get_mut(&name) else {
                continue;
            };
            let (consumers, dead) = q.expire(now);
            // Only a real change is written: a redelivery that merely waits for a reader
            // must not cost an fsync every tick.
            if !consumers.is_empty() || !dead.is_empty() {
                self.dirty_queues.insert(name.clone());
            }
            self.free_credit(&consumers);
            self.dead_letter(&name, dead);
        }
        // Serve what waits: due redeliveries, consumers whose connection has room again,
        // fetches whose messages could not be read a moment ago.
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
        for (name, q) in &self.queues {
            if q.cursors.contains_key(&topic) {
                self.queue_rates.entry(name.clone()).or_default().in_count += count;
            }
        }
        if self.fetches.is_empty() && self.consumers.is_empty() {
            return;
        }
        let names: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| q.cursors.contains_key(&topic))
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            self.pump(&n, now);
        }
    }

    /// Hand what queue `name` has ready to its waiting fetches first, then to its consumers
    /// as their credit allows.
    pub(super) fn pump(&mut self, name: &str, now: u64) {
        // Fetches, oldest first.
        let mut i = 0;
        while i < self.fetches.len() {
            if self.fetches[i].queue != name {
                i += 1;
                continue;
            }
            let (max, session) = (self.fetches[i].max, self.fetches[i].session);
            let msgs = self.take_messages(name, max, session_consumer_id(session), now);
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
            self.reply(
                f.session,
                ServerFrame::FetchOk(FetchOk {
                    id: f.id,
                    queue: f.queue,
                    msgs,
                }),
            );
        }
        // Consumers, each up to its credit.
        let ids: Vec<ConsumerId> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.queue == name && c.in_flight < c.credit)
            .map(|(id, _)| *id)
            .collect();
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
                return;
            }
            if let Some(c) = self.consumers.get_mut(&cid) {
                c.in_flight += msgs.len() as u32;
            }
            if let Some(s) = self.sessions.get(&session) {
                s.outbox
                    .counters
                    .msgs_out
                    .fetch_add(msgs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                s.outbox.reply(
                    ServerFrame::QueueDeliver(QueueDeliver {
                        consumer: cid,
                        queue: name.to_string(),
                        msgs,
                    }),
                    false,
                );
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
        let snapshot: HashMap<u32, (u64, u64)> = match self.queues.get(name) {
            Some(q) => q
                .cursors
                .keys()
                .filter_map(|t| self.view()(*t).map(|v| (*t, v)))
                .collect(),
            None => return Vec::new(),
        };
        let mut refs = {
            let Some(q) = self.queues.get_mut(name) else {
                return Vec::new();
            };
            let view = |t: u32| snapshot.get(&t).copied();
            q.take(&view, max, consumer, now)
        };
        if refs.is_empty() {
            return Vec::new();
        }
        self.dirty_queues.insert(name.to_string());
        refs.sort_unstable_by_key(|(m, _)| *m);
        let mut out = Vec::with_capacity(refs.len());
        let mut missing = Vec::new();
        let mut i = 0;
        while i < refs.len() {
            // A run of consecutive seqs of one topic is one read.
            let ((t, from), _) = refs[i];
            let mut j = i + 1;
            while j < refs.len() && refs[j].0 .0 == t && refs[j].0 .1 == refs[j - 1].0 .1 + 1 {
                j += 1;
            }
            let to = refs[j - 1].0 .1;
            let tname = self
                .core
                .topics
                .by_id(t)
                .map(|x| x.name.clone())
                .unwrap_or_default();
            let read = self.store.read(t, &tname, from, to, usize::MAX);
            let mut got: HashMap<u64, Message> = HashMap::new();
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
                                payload: m.payload,
                                delivery: None,
                            },
                        );
                    }
                }
            }
            for ((tt, seq), d) in &refs[i..j] {
                match got.remove(seq) {
                    Some(mut m) => {
                        m.delivery = Some(*d);
                        out.push(m);
                    }
                    None => missing.push((*tt, *seq)),
                }
            }
            i = j;
        }
        // Keep the frame under the limit: what does not fit goes back, not counted.
        let budget = self.cfg.max_frame / 2;
        let mut size = 0;
        let mut fit = out.len();
        for (k, m) in out.iter().enumerate() {
            size += m.payload.len()
                + m.topic.len()
                + 128
                + m.headers
                    .iter()
                    .map(|(a, b)| a.len() + b.len() + 8)
                    .sum::<usize>()
                + m.msg_id.as_ref().map_or(0, String::len);
            if k > 0 && size > budget {
                fit = k;
                break;
            }
        }
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
        self.delivered_total += n;
        self.total_rate.out_count += n;
        self.queue_rates
            .entry(name.to_string())
            .or_default()
            .out_count += n;
        if !missing.is_empty() {
            let firsts: HashMap<u32, u64> = missing
                .iter()
                .filter_map(|(t, _)| self.core.topics.by_id(*t).map(|ts| (*t, ts.first_seq)))
                .collect();
            // These never counted against the consumer's credit (only what is sent does).
            if let Some(q) = self.queues.get_mut(name) {
                for m in missing {
                    if firsts.get(&m.0).is_some_and(|first| m.1 >= *first) {
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

    /// Move messages that used up their deliveries to `$dlq.<queue>`, with headers saying
    /// why and from where.
    pub(super) fn dead_letter(&mut self, queue: &str, dead: Vec<DeadLetter>) {
        for d in dead {
            let (t, seq) = d.msg;
            let found = self
                .core
                .topics
                .by_id(t)
                .map(|x| x.name.clone())
                .and_then(|tname| {
                    let r = self.store.read(t, &tname, seq, seq, usize::MAX).ok()?;
                    let b = r.batches.into_iter().next()?;
                    let sender = b.sender;
                    let m = b.msgs.into_iter().next()?;
                    Some((tname, sender, m))
                });
            let Some((tname, sender, m)) = found else {
                // Gone from its topic (a hard limit, or removed): nothing to move; the queue
                // lost it.
                if let Some(q) = self.queues.get_mut(queue) {
                    q.counters.dead_lettered = q.counters.dead_lettered.saturating_sub(1);
                    q.counters.dropped += 1;
                }
                continue;
            };
            let mut headers = m.headers;
            headers.insert("dlq-queue".into(), queue.to_string());
            headers.insert("dlq-reason".into(), d.reason.to_string());
            headers.insert("dlq-topic".into(), tname.clone());
            headers.insert("dlq-seq".into(), seq.to_string());
            headers.insert("dlq-deliveries".into(), d.deliveries.to_string());
            let dlq = format!("$dlq.{queue}");
            let msg = PubMsg {
                payload: m.payload,
                headers,
                msg_id: None,
            };
            if let Err((_, e)) = self.publish((0, 0, true), &dlq, vec![msg], sender, now_ms(), true)
            {
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
                self.store.stage_queue(&mut self.staged, &q.record());
                // Deliveries and acks reach the disk with the next group commit, without
                // waiting for a publish to start one.
                self.queue_flush_wanted = true;
            }
        }
    }

    /// A session ended: its consumers go, its fetches are forgotten.
    pub(super) fn session_gone_for_queues(&mut self, session: u64) {
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
        let cid = session_consumer_id(session);
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for n in names {
            let dead = match self.queues.get_mut(&n) {
                Some(q) if q.unacked.values().any(|l| l.consumer == cid) => {
                    q.consumer_gone(cid, now)
                }
                _ => continue,
            };
            self.dead_letter(&n, dead);
            self.dirty_queues.insert(n.clone());
            self.pump(&n, now);
        }
        self.fetches.retain(|f| f.session != session);
    }
}

/// Fetches lease messages to their session: a consumer id of its own, far from the ids of
/// push consumers, so a closed connection gives its fetched, unacked messages back.
fn session_consumer_id(session: u64) -> ConsumerId {
    (1 << 63) | session
}
