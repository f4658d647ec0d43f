//! Queues in cluster mode. A queue's state (cursors, deliveries out, redeliveries, counters)
//! is replicated: every change to it is an item of the data group's log (`QueueOp`), which
//! every node applies in log order with the entry's time, so the nodes' queues agree. What
//! is a connection's stays on its node: consumers, their credit, waiting fetches.
//!
//! - A change a client asks for (create, bind, ack, nack, …) is proposed; the node it came
//!   from answers it when it applies the entry, as a single node would.
//! - Handing messages out: a node proposes a `Take` for one of its consumers or fetches
//!   that has room; applying it leases the messages on every node (the same ones: the log
//!   orders the takes of all nodes), and the node it came from reads them from its store
//!   and sends them. What it cannot send goes back with an `Unlease`.
//! - Ack deadlines: the data group's leader proposes `Expire` when one is due.
//! - A consumer that ends, or a node whose process restarts, proposes giving back what it
//!   held (`ConsumerGone`, `NodeStarted`); a node that dies and stays away loses its
//!   deliveries at their ack deadline.
//!
//! Consumer ids carry the node id (bits 40–62), so they are unique across the cluster.

use mom_proto::{ClientFrame, ErrorCode, Req, ServerFrame};

use super::{now_ms, Broker};
use crate::cluster::data::{DataItem, Origin, QueueOp};
use crate::core::queues::{ConsumerId, MsgRef, DETACHED};
use crate::core::shards::Shard;

/// Replies of entries from other nodes go to no session of this one.
pub(super) const NO_SESSION: u64 = u64::MAX;

/// A take under way, for whom: at most one at a time each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TakeKey {
    Consumer(ConsumerId),
    /// A waiting fetch: session, request id.
    Fetch(u64, u64),
    /// The leader's `Expire`.
    Expire,
    /// The leader's `Retain`, of a shard's group.
    Retain(Shard),
}

/// Messages a take of this node leased, to read and send once the entry is stored.
pub(super) struct Taken {
    pub(super) queue: String,
    pub(super) consumer: ConsumerId,
    pub(super) fetch: Option<(u64, u64)>,
    pub(super) refs: Vec<(MsgRef, u32)>,
}

/// The node a consumer id belongs to (0 on a single node).
fn consumer_node(c: ConsumerId) -> u64 {
    (c >> 40) & 0x7f_ffff
}

impl Broker {
    /// This node's id, in consumer ids' bits 40–62 (0 on a single node).
    pub(super) fn node_bits(&self) -> u64 {
        self.cluster
            .as_ref()
            .map_or(0, |c| (c.node_id() & 0x7f_ffff) << 40)
    }

    /// Fetches lease messages to their session: a consumer id of its own, far from the ids
    /// of push consumers, so a closed connection gives its fetched, unacked messages back.
    pub(super) fn fetch_consumer(&self, session: u64) -> ConsumerId {
        (1 << 63) | self.node_bits() | (session & ((1 << 40) - 1))
    }

    /// A queue request in cluster mode: what only reads, or concerns this node's
    /// connections, is done here; what changes a queue is proposed.
    pub(super) fn cluster_queue_request(&mut self, session: u64, frame: ClientFrame) {
        let now = now_ms();
        match frame {
            f @ (ClientFrame::QueueInfo(_)
            | ClientFrame::QueueList(_)
            | ClientFrame::QueuePeek(_)
            | ClientFrame::Consume(_)
            | ClientFrame::Fetch(_)) => self.queue_request(session, f, now, None),
            ClientFrame::Cancel(c) => match self.consumers.get(&c.consumer) {
                Some(cs) if cs.session == session => {
                    let queue = cs.queue.clone();
                    self.consumers.remove(&c.consumer);
                    self.taking.remove(&TakeKey::Consumer(c.consumer));
                    self.propose_queue(
                        QueueOp::ConsumerGone {
                            queue: Some(queue),
                            consumer: c.consumer,
                            release: c.release,
                        },
                        None,
                    );
                    self.reply(session, ServerFrame::Ok(Req { id: c.id }));
                }
                _ => self.error(
                    session,
                    c.id,
                    ErrorCode::NotFound,
                    format!("no consumer {} on this connection", c.consumer),
                ),
            },
            f => self.cluster_change_request(session, f),
        }
    }

    /// `queue_info` in cluster mode: the queue's state is the cluster's; its consumers
    /// belong to their nodes, so the others are asked how many they have.
    pub(super) fn cluster_queue_info(&mut self, session: u64, id: u64, name: &str) {
        let Some(q) = self.queues.get(name) else {
            let msg = format!("queue {name:?} not found");
            return self.error(session, id, ErrorCode::NotFound, msg);
        };
        let mut queue = self.queue_info(q);
        let (Some(c), Some(outbox)) = (
            self.cluster.clone(),
            self.sessions.get(&session).map(|s| s.outbox.clone()),
        ) else {
            return;
        };
        tokio::spawn(async move {
            let elsewhere = c.consumers_elsewhere(vec![queue.name.clone()]).await;
            queue.consumers += elsewhere.iter().sum::<u64>();
            let frame = ServerFrame::QueueInfo(mom_proto::QueueInfoReply {
                id,
                queue,
                purged: None,
                redriven: None,
            });
            outbox.reply(frame, true);
        });
    }

    /// A request that changes a queue or a topic, in cluster mode: proposed, and answered
    /// by this node when it applies it.
    pub(super) fn cluster_change_request(&mut self, session: u64, frame: ClientFrame) {
        // The owner a single node would record: a topic's is the identity's user.
        let topic = matches!(
            frame,
            ClientFrame::TopicRm(_)
                | ClientFrame::TopicPurge(_)
                | ClientFrame::TopicSet(_)
                | ClientFrame::TopicCreate(_)
        );
        let user = self
            .sessions
            .get(&session)
            .map(|s| {
                if topic {
                    s.identity.user.clone()
                } else {
                    s.client.user.clone()
                }
            })
            .unwrap_or_default();
        let id = frame.id();
        if topic {
            let refused = match &frame {
                ClientFrame::TopicCreate(c) => {
                    self.refused_across_groups(&c.topic, true, Some(c.partitions))
                }
                ClientFrame::TopicSet(s) => self.refused_across_groups(&s.topic, true, None),
                ClientFrame::TopicRm(r) => self.refused_across_groups(&r.topic, false, None),
                _ => None,
            };
            if let Some((code, msg)) = refused {
                return self.error(session, id, code, msg);
            }
            if self.fan_out(session, &user, &frame) {
                return;
            }
        }
        self.propose_queue(
            QueueOp::Request {
                session,
                user,
                frame: Box::new(frame),
            },
            Some((session, id)),
        );
    }

    /// Send `op` to the data group. If it is not done (no leader, or its fate unknown),
    /// request `answer` gets the reason, and a take may be proposed again.
    pub(super) fn propose_queue(&mut self, op: QueueOp, answer: Option<(u64, u64)>) {
        self.propose_queue_in(None, op, answer)
    }

    /// `op` to every data group.
    pub(super) fn propose_everywhere(&mut self, op: QueueOp) {
        for s in self.core.topics.shards().all() {
            self.propose_queue_in(Some(s), op.clone(), None);
        }
    }

    /// [`Broker::propose_queue`] to shard `shard`'s group (None: where `op` belongs).
    pub(super) fn propose_queue_in(
        &mut self,
        shard: Option<Shard>,
        op: QueueOp,
        answer: Option<(u64, u64)>,
    ) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        let key = match &op {
            QueueOp::Take {
                consumer, fetch, ..
            } => Some(match fetch {
                Some((s, id)) => TakeKey::Fetch(*s, *id),
                None => TakeKey::Consumer(*consumer),
            }),
            QueueOp::Expire => Some(TakeKey::Expire),
            QueueOp::Retain => Some(TakeKey::Retain(shard.unwrap_or(0))),
            _ => None,
        };
        if let Some(k) = key {
            self.taking.insert(k);
        }
        let outbox = answer.and_then(|(s, id)| Some((self.sessions.get(&s)?.outbox.clone(), id)));
        let tx = self.tx.clone();
        let item = DataItem::Queue(op);
        let done = match shard {
            Some(s) => futures_util::future::Either::Left(c.propose_in(s, item)),
            None => futures_util::future::Either::Right(c.propose(item)),
        };
        tokio::spawn(async move {
            let Err((code, msg)) = done.await else {
                return;
            };
            if let Some((outbox, id)) = outbox {
                outbox.reply(ServerFrame::error(Some(id), code, msg), true);
            }
            if let Some(key) = key {
                let _ = tx.send(super::Cmd::TakeFailed { key }).await;
            }
        });
    }

    /// Apply one queue change of the data group's log (`apply_replicated`), at the entry's
    /// time. `mine`: the entry came from this process, whose clients get the answers.
    pub(super) fn apply_queue_op(&mut self, shard: Shard, op: QueueOp, now: u64, origin: &Origin) {
        let mine = self.cluster.as_ref().is_some_and(|c| c.is_mine(origin));
        if let QueueOp::NodeStarted { .. } = op {
            self.apply_group_op(shard, op.clone(), origin.node);
        }
        match op {
            QueueOp::Request {
                session,
                user,
                frame,
            } => {
                let session = if mine { session } else { NO_SESSION };
                match *frame {
                    f @ (ClientFrame::TopicRm(_)
                    | ClientFrame::TopicPurge(_)
                    | ClientFrame::TopicSet(_)
                    | ClientFrame::TopicCreate(_)) => {
                        let topic = match &f {
                            ClientFrame::TopicRm(r) | ClientFrame::TopicPurge(r) => &r.topic,
                            ClientFrame::TopicSet(r) => &r.topic,
                            ClientFrame::TopicCreate(r) => &r.topic,
                            _ => "",
                        };
                        match self.in_another_shard(shard, topic, false) {
                            Some((code, msg)) => self.error(session, f.id(), code, msg),
                            None => self.topic_request(session, f, now, Some(user)),
                        }
                    }
                    f => self.queue_request(session, f, now, Some(user)),
                }
            }
            QueueOp::Take {
                queue,
                consumer,
                max,
                fetch,
            } => {
                let refs = match self.queues.get_mut(&queue) {
                    Some(q) => q.take(
                        &super::queue_ops::topic_view(&self.core.topics, true),
                        (max as usize).clamp(1, super::queue_ops::MAX_BATCH),
                        consumer,
                        now,
                        None,
                    ),
                    None => Vec::new(),
                };
                if !refs.is_empty() {
                    self.dirty_queues.insert(queue.clone());
                }
                if mine {
                    self.replica_taken.push(Taken {
                        queue,
                        consumer,
                        fetch,
                        refs,
                    });
                }
            }
            QueueOp::Unlease {
                queue,
                consumer,
                msgs,
            } => {
                let refs = self.msg_refs(&msgs);
                if let Some(q) = self.queues.get_mut(&queue) {
                    for m in refs {
                        if q.unacked.get(&m).is_some_and(|l| l.consumer == consumer) {
                            q.unlease(m, now);
                        }
                    }
                    self.dirty_queues.insert(queue.clone());
                }
                self.pump(&queue, now);
            }
            QueueOp::Lost {
                queue,
                consumer,
                msgs,
            } => {
                let refs = self.msg_refs(&msgs);
                if let Some(q) = self.queues.get_mut(&queue) {
                    for m in refs {
                        if q.unacked.get(&m).is_some_and(|l| l.consumer == consumer) {
                            q.lost(m);
                        }
                    }
                    self.dirty_queues.insert(queue);
                }
            }
            QueueOp::ConsumerGone {
                queue,
                consumer,
                release,
            } => {
                let names: Vec<String> = match queue {
                    Some(q) => vec![q],
                    None => self
                        .queues
                        .iter()
                        .filter(|(_, q)| q.unacked.values().any(|l| l.consumer == consumer))
                        .map(|(n, _)| n.clone())
                        .collect(),
                };
                for name in names {
                    self.give_back(&name, consumer, release, now);
                }
            }
            QueueOp::Expire => {
                if mine {
                    self.taking.remove(&TakeKey::Expire);
                }
                self.expire_due(now);
            }
            QueueOp::Retain => {
                if mine {
                    self.taking.remove(&TakeKey::Retain(shard));
                }
                // The group's own topics alone: each group cuts its own at its entries' times.
                let shards = self.core.topics.shards();
                let aged: Vec<u32> = self
                    .core
                    .topics
                    .iter_unordered()
                    .filter(|t| t.limits.hard_max_age_ms > 0 && t.msgs > 0)
                    .filter(|t| shards.of(t.id) == shard)
                    .map(|t| t.id)
                    .collect();
                for id in aged {
                    self.hard_trim(id, now);
                }
            }
            op @ (QueueOp::GroupMembers { .. } | QueueOp::GroupsGone { .. }) => {
                self.apply_group_op(shard, op, origin.node)
            }
            QueueOp::NodeStarted { node } => {
                let mut gone: Vec<(String, ConsumerId)> = Vec::new();
                for (name, q) in self.queues.iter() {
                    let mut held: Vec<ConsumerId> = q
                        .unacked
                        .values()
                        .map(|l| l.consumer)
                        .filter(|c| *c != DETACHED && consumer_node(*c) == node)
                        .collect();
                    held.sort_unstable();
                    held.dedup();
                    gone.extend(held.into_iter().map(|c| (name.clone(), c)));
                }
                for (name, c) in gone {
                    self.give_back(&name, c, false, now);
                }
            }
        }
    }

    /// What `consumer` holds of queue `name` comes back (unopened if `release`).
    fn give_back(&mut self, name: &str, consumer: ConsumerId, release: bool, now: u64) {
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        if release {
            q.release_consumer(consumer, now, None);
        } else {
            let dead = q.consumer_gone(consumer, now, None);
            self.dead_letter(name, dead, now);
        }
        self.dirty_queues.insert(name.to_string());
        self.pump(name, now);
    }

    /// Ack deadlines passed by `now`: late deliveries come back (or go to the dead letter
    /// topic). The same on every node: `now` is the entry's time.
    pub(super) fn expire_due(&mut self, now: u64) {
        let names: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| q.unacked.values().any(|l| l.deadline <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Some(q) = self.queues.get_mut(&name) else {
                continue;
            };
            let (consumers, dead) = q.expire(now, None);
            self.dirty_queues.insert(name.clone());
            self.free_credit(&consumers);
            self.dead_letter(&name, dead, now);
            self.pump(&name, now);
        }
    }

    /// Named messages as this node's refs (topics it does not have are left out).
    pub(super) fn msg_refs(&self, msgs: &[(String, u64)]) -> Vec<MsgRef> {
        msgs.iter()
            .filter_map(|(t, seq)| Some((self.core.topics.get(t)?.id, *seq)))
            .collect()
    }

    pub(super) fn named(&self, refs: &[MsgRef]) -> Vec<(String, u64)> {
        refs.iter()
            .filter_map(|(t, seq)| Some((self.core.topics.by_id(*t)?.name.to_string(), *seq)))
            .collect()
    }

    /// The queue tick in cluster mode: the leader proposes `Expire` when an ack deadline
    /// passed; every node serves its consumers with room and its fetches, and answers the
    /// fetches whose time is up.
    pub(super) fn cluster_queue_tick(&mut self, now: u64) {
        let leads = self.cluster.as_ref().is_some_and(|c| c.leads_data(0));
        if leads
            && !self.taking.contains(&TakeKey::Expire)
            && self
                .queues
                .iter()
                .any(|(_, q)| q.unacked.values().any(|l| l.deadline <= now))
        {
            self.propose_queue(QueueOp::Expire, None);
        }
        // Hard age limits are applied through the log of each group, at the entry's time
        // (`hard_trim`), proposed by the group's leader.
        if now.saturating_sub(self.retained_at) >= 1000 {
            let shards = self.core.topics.shards();
            let aged: std::collections::BTreeSet<Shard> = self
                .core
                .topics
                .iter_unordered()
                .filter(|t| t.limits.hard_max_age_ms > 0 && t.msgs > 0)
                .map(|t| shards.of(t.id))
                .collect();
            self.retained_at = now;
            for s in aged {
                let leads = self.cluster.as_ref().is_some_and(|c| c.leads_data(s));
                if leads && !self.taking.contains(&TakeKey::Retain(s)) {
                    self.propose_queue_in(Some(s), QueueOp::Retain, None);
                }
            }
        }
        self.serve_waiting(now);
    }

    /// A session ended, in cluster mode: its consumers and the fetches it made give back
    /// what they held, through the log.
    pub(super) fn cluster_session_gone(&mut self, session: u64) {
        let gone: Vec<(ConsumerId, String)> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.session == session)
            .map(|(id, c)| (*id, c.queue.clone()))
            .collect();
        for (c, queue) in gone {
            self.consumers.remove(&c);
            self.taking.remove(&TakeKey::Consumer(c));
            self.propose_queue(
                QueueOp::ConsumerGone {
                    queue: Some(queue),
                    consumer: c,
                    release: false,
                },
                None,
            );
        }
        let cid = self.fetch_consumer(session);
        let holds = self
            .queues
            .iter()
            .any(|(_, q)| q.unacked.values().any(|l| l.consumer == cid));
        if holds {
            self.propose_queue(
                QueueOp::ConsumerGone {
                    queue: None,
                    consumer: cid,
                    release: false,
                },
                None,
            );
        }
        self.fetches.retain(|f| f.session != session);
        self.taking
            .retain(|k| !matches!(k, TakeKey::Fetch(s, _) if *s == session));
    }
}
