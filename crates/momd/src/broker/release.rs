//! Answering what waited for a flush: acks of publishes and the delivery of their
//! messages to watches and queues — and, for requests and replies, delivery before the
//! flush (README, "Request and reply").

use std::sync::Arc;

use mom_proto::{PublishOk, ServerFrame};

use super::{now_ms, Broker, Pending, INBOX_PREFIX};
use crate::config::FsyncMode;
use crate::core::Batch;

/// The header that makes a message a request (`momctl request`, docs/protocol.md §5).
pub(super) const REPLY_TO: &str = "reply-to";

impl Broker {
    /// Stage `p` for release after the next flush, or release it now when acks do not
    /// wait for fsync.
    pub(super) fn after_flush(&mut self, p: Pending) {
        self.dirty = true;
        match self.cfg.fsync {
            FsyncMode::Always => self.pending.push(p),
            FsyncMode::Batch(_) | FsyncMode::Never => self.release(p),
        }
    }

    pub(super) fn release(&mut self, p: Pending) {
        match p {
            Pending::Reply { session, frame } => self.reply(session, frame),
            Pending::Push { session, frame } => {
                if let Some(s) = self.sessions.get(&session) {
                    s.outbox.reply(frame, false);
                }
            }
            Pending::Publish {
                session,
                id,
                no_ack,
                topic,
                answer,
                parts,
                groups,
            } => {
                let (mut queues, mut watchers) = (0, 0);
                for part in parts {
                    let bound = self.queues_bound(part.topic_id);
                    queues += bound;
                    if let Some(batch) = part.batch {
                        self.deliver(part.topic_id, &batch, bound, groups.as_deref());
                    }
                    // Passive watches look without counting; a group counts once.
                    watchers = watchers.max(self.core.watches.count_active(&part.topic));
                }
                if session != 0 {
                    if no_ack {
                        if let Some(s) = self.sessions.get(&session) {
                            s.outbox.release(id);
                        }
                    } else {
                        self.reply(
                            session,
                            ServerFrame::PublishOk(PublishOk {
                                id,
                                topic,
                                seqs: answer.seqs,
                                duplicates: answer.duplicates,
                                watchers,
                                queues,
                                duplicate_indexes: answer.duplicate_indexes,
                                partitions: answer.partitions,
                            }),
                        );
                    }
                }
            }
        }
    }

    /// Requests (every message carries `reply-to`) and replies (to a `$inbox.` topic) are
    /// delivered and acknowledged as soon as they are written, without waiting for the
    /// flush: the reply is what the requester waits for, and a round trip must not wait
    /// for fdatasyncs. They are made durable by the next flush (within a second), and a
    /// crash before it may lose them — the requester then times out and asks again
    /// (README, "Request and reply"). An ordinary publish's ack still waits for the flush.
    /// Only when every earlier message of the topic was delivered (order holds) and no
    /// queue is bound to it (a queue keeps the ordinary promise). Returns what is left to
    /// release after the flush.
    pub(super) fn deliver_early(&mut self, p: Pending) -> Option<Pending> {
        let Pending::Publish { parts, .. } = &p else {
            return Some(p);
        };
        let [super::publish::PubPart {
            topic_id,
            topic,
            batch: Some(batch),
        }] = parts.as_slice()
        else {
            return Some(p);
        };
        let early = self.cfg.fsync == FsyncMode::Always
            && Self::is_early(topic, batch)
            && self
                .core
                .topics
                .by_id(*topic_id)
                .is_some_and(|t| t.delivered_upto + 1 == batch.first_seq)
            && self.queues_bound(*topic_id) == 0;
        if !early {
            return Some(p);
        }
        self.dirty = true;
        self.release(p);
        None
    }

    /// A reply (to a `$inbox.` topic) or a request (every message has `reply-to`).
    pub(super) fn is_early(topic: &str, batch: &Batch) -> bool {
        topic.starts_with(INBOX_PREFIX)
            || batch.msgs.iter().all(|m| m.headers.contains_key(REPLY_TO))
    }

    /// Hand a stored batch to the watches of its topic and to its queues (`queues` bound).
    /// `groups`: in cluster mode, the watch groups' table at the publish's place in the log.
    fn deliver(
        &mut self,
        topic_id: u32,
        batch: &Arc<Batch>,
        queues: u64,
        groups: Option<&super::watch_groups::GroupTable>,
    ) {
        let n = batch.msgs.len() as u64;
        if let Some(t) = self.core.topics.by_id_mut(topic_id) {
            t.delivered_upto = batch.last_seq();
        }
        let bytes = batch.msgs.iter().map(|m| m.payload.len() as u64).sum();
        self.metrics.count_in(topic_id, n, bytes);
        let rate = self.rates.entry(topic_id).or_default();
        rate.add_in(n);
        self.total_rate.add_in(n);
        let targets = self.core.watches.targets(&batch.topic);
        for w in targets.solo {
            self.route(w, topic_id, batch.clone());
        }
        for g in targets.groups {
            self.route_group(g, topic_id, batch, groups);
        }
        if queues > 0 {
            self.pump_topic(topic_id, n, now_ms());
        }
    }
}
