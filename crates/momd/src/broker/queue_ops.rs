//! The broker's side of queue requests: bind, unbind, delete, purge, info, consume, cancel,
//! ack, nack and fetch. Creating and changing queues, peek and redrive are in
//! `queue_admin.rs`; handing messages out in `queue_delivery.rs`. The queue state itself is
//! `core::queues`.

use std::collections::HashMap;

use mom_proto::{
    topic, ClientFrame, ConsumeOk, ErrorCode, QueueInfo, QueueInfoReply, Req, ServerFrame, StartAt,
};

use super::{json_str, Broker, Pending};
use crate::core::queues::{ConsumerId, Queue};

/// Default deliveries before a message is dead-lettered.
pub const DEFAULT_MAX_DELIVER: u32 = 5;
/// Default time to ack a delivery.
pub const DEFAULT_ACK_WAIT_MS: u64 = 30_000;
/// Most unacked messages one consumer may hold, and consumers one connection may hold.
const MAX_CREDIT: u32 = 4096;
const MAX_CONSUMERS: usize = 256;
/// Most messages in one fetch, peek or push frame.
pub(super) const MAX_BATCH: usize = 256;

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
    /// Its deliveries belong to no session (`fetch.detached`).
    pub detached: bool,
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
    pub(super) fn view(&self) -> impl Fn(u32) -> Option<(u64, u64)> + '_ {
        topic_view(&self.core.topics, self.applying_replicated)
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
        let counters = q.counters();
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
            delivered: counters.delivered,
            acked: counters.acked,
            redelivered: counters.redelivered,
            dead_lettered: counters.dead_lettered,
            dropped: counters.dropped,
            in_rate: rate.in_rate(),
            out_rate: rate.out_rate(),
            omitted: 0,
        }
    }

    /// How many queues hold cursors on a topic (an index lookup, not a scan of every
    /// queue: it is asked at every publish).
    pub(super) fn queues_bound(&self, topic: u32) -> u64 {
        self.queues.bound_count(topic)
    }

    /// The oldest seq of a topic some queue still needs.
    pub(super) fn queue_floor(&self, topic: u32) -> u64 {
        self.queues.floor(topic).unwrap_or(u64::MAX)
    }

    /// A topic was created: bind it to every queue whose patterns match, from seq 1. The
    /// pattern index finds them: the cost follows the topic's depth and the queues that
    /// match, not the number of queues.
    pub(super) fn topic_created_for_queues(&mut self, topic: u32, name: &str) {
        let bound = self.queues.bind_new_topic(topic, name);
        self.dirty_queues.extend(bound);
    }

    /// A topic is being removed (`range`: its first seq and newest durable seq): queues
    /// forget it and count what they had not delivered as dropped.
    pub(super) fn topic_removed_for_queues(&mut self, topic: u32, range: Option<(u64, u64)>) {
        let view = |_t: u32| range;
        let mut freed = Vec::new();
        for name in self.queues.referring(topic) {
            let holds = self
                .queues
                .get(&name)
                .is_some_and(|q| q.bound_topics().any(|t| t == topic) || q.floor(topic).is_some());
            if holds {
                freed.extend(self.queues.unbind_topic(&name, topic, &view));
                self.dirty_queues.insert(name.to_string());
            }
        }
        self.free_credit(&freed);
    }

    /// An ack or nack changed the queue: confirm it once the new state is on disk, and hand
    /// out what the freed credit allows.
    /// Like [`Broker::settled`], but the reply names the deliveries the queue did not hold
    /// (already settled, or never delivered): `not_found`, the others settled all the same.
    pub(super) fn settled_but(
        &mut self,
        session: u64,
        id: u64,
        queue: &str,
        now: u64,
        missing: &[String],
        (what, total): (&str, usize),
    ) {
        if missing.is_empty() {
            return self.settled(session, id, queue, now);
        }
        self.dirty_queues.insert(queue.to_string());
        let others = if missing.len() < total {
            format!("; the others were {what}")
        } else {
            String::new()
        };
        let msg = format!(
            "queue {queue:?} holds no delivery of {} (already settled, or never delivered){others}",
            super::queue_admin::name_keys(missing)
        );
        self.staged_pending.push(Pending::Reply {
            session,
            frame: ServerFrame::error(Some(id), ErrorCode::NotFound, msg),
        });
        self.pump(queue, now);
    }

    pub(super) fn settled(&mut self, session: u64, id: u64, queue: &str, now: u64) {
        self.dirty_queues.insert(queue.to_string());
        self.staged_pending.push(Pending::Reply {
            session,
            frame: ServerFrame::Ok(Req { id }),
        });
        self.pump(queue, now);
    }

    /// Consumers whose deliveries ended get their credit back.
    pub(super) fn free_credit(&mut self, consumers: &[ConsumerId]) {
        for c in consumers {
            if let Some(cs) = self.consumers.get_mut(c) {
                cs.in_flight = cs.in_flight.saturating_sub(1);
            }
        }
    }

    pub(super) fn reply_queue_info(&mut self, session: u64, id: u64, name: &str, wait_flush: bool) {
        self.reply_queue_counted(session, id, name, wait_flush, None, None);
    }

    /// Reply `queue_info`, with what a purge or a redrive moved.
    pub(super) fn reply_queue_counted(
        &mut self,
        session: u64,
        id: u64,
        name: &str,
        wait_flush: bool,
        purged: Option<u64>,
        redriven: Option<u64>,
    ) {
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
            purged,
            redriven,
        });
        if wait_flush {
            self.staged_pending.push(Pending::Reply { session, frame });
        } else {
            self.reply(session, frame);
        }
    }

    /// Bind `patterns` to queue `name` for the topics that exist now, starting at `from`.
    pub(super) fn bind_existing(
        &mut self,
        name: &str,
        patterns: &[String],
        from: StartAt,
        at: u64,
    ) {
        let mut starts = Vec::new();
        for (t, upto) in self.matching_topics(patterns) {
            let start = match from {
                StartAt::New => upto + 1,
                StartAt::All => t.first_seq,
                StartAt::Seq => at.max(t.first_seq),
                StartAt::Time => self.store.seq_at_time(&t, at).unwrap_or(upto + 1),
                StartAt::Last => (upto + 1).saturating_sub(at.max(1)).max(t.first_seq),
            };
            starts.push((t.id, start));
        }
        for (t, s) in starts {
            self.queues.bind_topic(name, t, s);
        }
    }

    /// A queue request, at time `now`. `owner`: who sent it, when not the session's user
    /// (a replica applying another node's request).
    pub(super) fn queue_request(
        &mut self,
        session: u64,
        frame: ClientFrame,
        now: u64,
        owner: Option<String>,
    ) {
        let named = match &frame {
            ClientFrame::QueueBind(b) | ClientFrame::QueueUnbind(b) => Some((b.id, &b.queue)),
            ClientFrame::QueueDelete(d) => Some((d.id, &d.queue)),
            ClientFrame::QueuePurge(r) | ClientFrame::QueueInfo(r) => Some((r.id, &r.queue)),
            ClientFrame::Consume(c) => Some((c.id, &c.queue)),
            ClientFrame::Ack(a) => Some((a.id, &a.queue)),
            ClientFrame::Nack(n) => Some((n.id, &n.queue)),
            ClientFrame::Fetch(f) => Some((f.id, &f.queue)),
            ClientFrame::Extend(a) => Some((a.id, &a.queue)),
            ClientFrame::QueueSet(s) => Some((s.id, &s.queue)),
            ClientFrame::QueuePeek(p) => Some((p.id, &p.queue)),
            ClientFrame::QueueRedrive(r) => Some((r.id, &r.queue)),
            _ => None,
        };
        if let Some((id, name)) = named {
            if let Err(e) = validate_queue_name(name) {
                return self.error(session, id, ErrorCode::BadRequest, e);
            }
        }
        match frame {
            ClientFrame::QueueCreate(c) => self.queue_create(session, c, now, owner),
            ClientFrame::QueueBind(mut b) => {
                for p in &b.patterns {
                    if let Err(e) = topic::validate_pattern(p) {
                        return self.error(session, b.id, ErrorCode::BadRequest, e.to_string());
                    }
                }
                b.patterns = self.expanded(&b.patterns);
                if !self.queues.contains_key(&b.queue) {
                    return self.error(
                        session,
                        b.id,
                        ErrorCode::NotFound,
                        format!("queue {:?} not found", b.queue),
                    );
                }
                self.queues.change_bindings(&b.queue, |bindings| {
                    for p in &b.patterns {
                        if !bindings.contains(p) {
                            bindings.push(p.clone());
                        }
                    }
                });
                // New bindings start with what is published from now on.
                self.bind_existing(&b.queue, &b.patterns, StartAt::New, 0);
                self.dirty_queues.insert(b.queue.clone());
                self.reply_queue_info(session, b.id, &b.queue, true);
            }
            ClientFrame::QueueUnbind(mut b) => {
                b.patterns = self.expanded(&b.patterns);
                let Some(q) = self.queues.get(&b.queue) else {
                    return self.error(
                        session,
                        b.id,
                        ErrorCode::NotFound,
                        format!("queue {:?} not found", b.queue),
                    );
                };
                if let Some(p) = b.patterns.iter().find(|p| !q.def.bindings.contains(p)) {
                    let msg = format!("queue {:?} is not bound to {p:?}", b.queue);
                    return self.error(session, b.id, ErrorCode::NotFound, msg);
                }
                self.queues.change_bindings(&b.queue, |bindings| {
                    if b.patterns.is_empty() {
                        bindings.clear();
                    } else {
                        bindings.retain(|p| !b.patterns.contains(p));
                    }
                });
                // Topics no pattern matches any more leave the queue; what they still had
                // waiting for it is counted as dropped. Only the queue's own topics are
                // looked at, not every topic.
                let leaving: Vec<u32> = match self.queues.get(&b.queue) {
                    Some(q) => q
                        .bound_topics()
                        .filter(|id| {
                            self.core.topics.by_id(*id).is_some_and(|t| {
                                !q.def.bindings.iter().any(|p| topic::matches(p, &t.name))
                            })
                        })
                        .collect(),
                    None => Vec::new(),
                };
                let view_snapshot: HashMap<u32, (u64, u64)> = leaving
                    .iter()
                    .filter_map(|id| self.view()(*id).map(|r| (*id, r)))
                    .collect();
                let view = |t: u32| view_snapshot.get(&t).copied();
                let mut freed = Vec::new();
                for id in leaving {
                    freed.extend(self.queues.unbind_topic(&b.queue, id, &view));
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
                        "queue {:?} still holds {held} message{}; delete it with force to lose them",
                        d.queue,
                        if held == 1 { "" } else { "s" }
                    );
                    return self.error(session, d.id, ErrorCode::Conflict, msg);
                }
                if let Err(e) = self.store.remove_queue(&d.queue, 0) {
                    return self.error(session, d.id, ErrorCode::Unavailable, e.to_string());
                }
                self.queues.remove(&d.queue);
                self.dirty_queues.remove(&d.queue);
                self.consumer_rr.remove(&d.queue);
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
                // The queue's own topics, not every topic.
                let snapshot = self.queue_snapshot(&r.queue).unwrap_or_default();
                let Some(q) = self.queues.get_mut(&r.queue) else {
                    return self.error(
                        session,
                        r.id,
                        ErrorCode::NotFound,
                        format!("queue {:?} not found", r.queue),
                    );
                };
                let purged = q.purge(&|t: u32| snapshot.get(&t).copied(), None);
                self.dirty_queues.insert(r.queue.clone());
                self.reply_queue_counted(session, r.id, &r.queue, true, Some(purged), None);
            }
            ClientFrame::QueueInfo(r) if self.cluster.is_some() => {
                self.cluster_queue_info(session, r.id, &r.queue)
            }
            ClientFrame::QueueInfo(r) => self.reply_queue_info(session, r.id, &r.queue, false),
            ClientFrame::QueueList(r) => self.queue_list(session, r),
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
                let cid = self.node_bits() | self.next_consumer;
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
                    if c.release {
                        let queue = cs.queue.clone();
                        if let Some(q) = self.queues.get_mut(&queue) {
                            q.release_consumer(c.consumer, now, None);
                        }
                        self.dirty_queues.insert(queue);
                    }
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
                if !self.queues.contains_key(&a.queue) {
                    let msg = format!("queue {:?} not found", a.queue);
                    return self.error(session, a.id, ErrorCode::NotFound, msg);
                }
                let mut freed = Vec::new();
                let mut missing = Vec::new();
                for k in &a.msgs {
                    let t = self.core.topics.get(&k.topic).map(|t| t.id);
                    let held = match (t, self.queues.get_mut(&a.queue)) {
                        (Some(t), Some(q)) => q.ack((t, k.seq)),
                        _ => None,
                    };
                    match held {
                        Some(c) => freed.extend(c),
                        None => missing.push(format!("{}#{}", k.topic, k.seq)),
                    }
                }
                self.free_credit(&freed);
                self.settled_but(
                    session,
                    a.id,
                    &a.queue,
                    now,
                    &missing,
                    ("acked", a.msgs.len()),
                );
            }
            ClientFrame::Nack(n) => {
                if !self.queues.contains_key(&n.queue) {
                    let msg = format!("queue {:?} not found", n.queue);
                    return self.error(session, n.id, ErrorCode::NotFound, msg);
                }
                let (mut dead, mut freed, mut missing) = (Vec::new(), Vec::new(), Vec::new());
                for k in &n.msgs {
                    let t = self.core.topics.get(&k.topic).map(|t| t.id);
                    let Some(q) = self.queues.get_mut(&n.queue) else {
                        break;
                    };
                    let done = match t {
                        // Given back unopened: as if it had never been delivered.
                        Some(t) if n.release => q.release((t, k.seq), now).map(|c| {
                            freed.push(c);
                        }),
                        Some(t) => q.nack((t, k.seq), n.delay_ms, now, "nack").map(|(c, dl)| {
                            dead.extend(dl);
                            freed.push(c);
                        }),
                        None => None,
                    };
                    if done.is_none() {
                        missing.push(format!("{}#{}", k.topic, k.seq));
                    }
                }
                self.free_credit(&freed);
                self.dead_letter(&n.queue, dead, now);
                self.settled_but(
                    session,
                    n.id,
                    &n.queue,
                    now,
                    &missing,
                    ("nacked", n.msgs.len()),
                );
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
                    detached: f.detached,
                });
                self.pump(&f.queue, now);
                self.expire_fetches(now);
            }
            ClientFrame::Extend(a) => self.extend(session, a, now),
            ClientFrame::QueueSet(s) => self.queue_set(session, s),
            ClientFrame::QueuePeek(p) => self.queue_peek(session, p, now),
            ClientFrame::QueueRedrive(r) => self.queue_redrive(session, r, now),
            ClientFrame::Hello(_)
            | ClientFrame::ClientClose(_)
            | ClientFrame::Publish(_)
            | ClientFrame::Watch(_)
            | ClientFrame::Unwatch(_)
            | ClientFrame::TopicList(_)
            | ClientFrame::TopicInfo(_)
            | ClientFrame::TopicRm(_)
            | ClientFrame::TopicPurge(_)
            | ClientFrame::TopicSet(_)
            | ClientFrame::TopicCreate(_)
            | ClientFrame::Stats(_)
            | ClientFrame::ClusterStatus(_)
            | ClientFrame::ClusterJoin(_)
            | ClientFrame::ClusterLeave(_)
            | ClientFrame::Ping(_)
            | ClientFrame::TokenCreate(_)
            | ClientFrame::TokenRevoke(_)
            | ClientFrame::UserAdd(_)
            | ClientFrame::UserRm(_)
            | ClientFrame::UserInfo(_)
            | ClientFrame::UserList(_)
            | ClientFrame::UserPasswd(_)
            | ClientFrame::UserGrant(_)
            | ClientFrame::UserRevoke(_) => {}
        }
    }
}

/// What a queue may deliver of each topic: (first seq, newest released seq). Borrows the
/// topics only, so a queue can take through it while the broker lends the queue out.
/// `sequenced`: up to the newest seq assigned instead, for a replica applying the data
/// group's log, where a message counts once its entry is committed (and every node must
/// see the same, however its entries were grouped into writes).
pub(super) fn topic_view(
    topics: &crate::core::Topics,
    sequenced: bool,
) -> impl Fn(u32) -> Option<(u64, u64)> + '_ {
    move |t| {
        let ts = topics.by_id(t)?;
        let upto = if sequenced {
            ts.last_seq
        } else {
            ts.delivered_upto
        };
        Some((ts.first_seq, upto))
    }
}
