//! Cluster mode in the broker task: a client's publish goes to the data group (its answer
//! comes back once a majority has it), and the group's committed entries are applied here
//! like local publishes, with the time and sender they carry (`cluster/data.rs`).

use mom_proto::{ErrorCode, Publish, Sender};

use super::spread_publish::MADE_PARTITIONED;
use super::{Broker, INBOX_PREFIX};
use crate::cluster::batcher::PublishAnswer;
use crate::cluster::data::{
    applied_key, ApplyEntry, ApplyFinish, DataItem, PubItem, PubResult, Published,
};
use crate::cluster::Cluster;
use crate::core::shards::Shard;

impl Broker {
    /// Why a publish (`publish`) or a topic request on `topic` in an entry of shard
    /// `shard`'s group is refused, if it is: its topic is another shard's (the same on
    /// every node: the shard is the name's), or a publish names a partitioned topic whose
    /// partitions spread over several groups (the node it came to cuts it up by partition:
    /// one that did not know the topic was partitioned sends it whole, and is told).
    pub(super) fn in_another_shard(
        &self,
        shard: Shard,
        topic: &str,
        publish: bool,
    ) -> Option<(ErrorCode, String)> {
        let shards = self.core.topics.shards();
        if shards.count() <= 1 {
            return None;
        }
        if shards.place_name(topic) != shard {
            return Some((
                ErrorCode::Unavailable,
                format!("topic {topic:?} is not data group {shard}'s: sent to the wrong group"),
            ));
        }
        (publish && self.core.partitions_of(topic) > 0).then(|| {
            (
                ErrorCode::Unavailable,
                format!("topic {topic:?} {MADE_PARTITIONED}"),
            )
        })
    }

    /// Hand a client's publish to the cluster; answer it when the cluster does.
    pub(super) fn cluster_publish(
        &mut self,
        c: &Cluster,
        session: u64,
        p: Publish,
        sender: Sender,
        ticket: crate::admission::Ticket,
    ) {
        if let Some(refused) = self.disk_refuses() {
            return self.error(session, p.id, refused.0, refused.1);
        }
        if p.msgs.is_empty() {
            return self.error(
                session,
                p.id,
                ErrorCode::BadRequest,
                "a publish needs at least one message",
            );
        }
        if let Err(e) = mom_proto::topic::validate_topic(&p.topic) {
            return self.error(session, p.id, ErrorCode::BadRequest, e.to_string());
        }
        if p.topic.starts_with('$') && !p.topic.starts_with(INBOX_PREFIX) {
            return self.error(
                session,
                p.id,
                ErrorCode::Forbidden,
                format!("topic {:?} is reserved for the broker", p.topic),
            );
        }
        if let Some((code, msg)) = self.refused_across_groups(&p.topic, true, None) {
            return self.error(session, p.id, code, msg);
        }
        let key = (!self.in_doubt.is_empty()).then(|| (session, p.topic.clone()));
        if let Some(held) = key.and_then(|k| self.in_doubt.get_mut(&k)) {
            // Behind an earlier publish of the connection to the topic, in its order.
            held.push_back((p, sender, ticket));
            return;
        }
        let Some(outbox) = self.sessions.get(&session).map(|s| s.outbox.clone()) else {
            return;
        };
        // This node's watchers now; the others' when the answer is written.
        let watched = if self.core.partitions_of(&p.topic) > 0 {
            crate::core::partitions::partition_name(&p.topic, 0)
        } else {
            p.topic.clone()
        };
        let watchers = self.core.watches.active(&watched);
        let request = p
            .msgs
            .iter()
            .all(|m| m.headers.contains_key(super::release::REPLY_TO));
        let answer = PublishAnswer {
            outbox,
            id: p.id,
            topic: p.topic.clone(),
            watched,
            no_ack: p.no_ack,
            watchers,
            request,
            cluster: c.clone(),
            answered: false,
            _ticket: ticket,
        };
        let spread = self.next_spread();
        if self.core.topics.shards().count() > 1 {
            if self.core.partitions_of(&p.topic) > 0 {
                return self.publish_by_partition(c, p.topic, p.msgs, sender, spread, answer);
            }
            if self.core.topics.get(&p.topic).is_none() {
                return self.publish_in_doubt(c, session, p, sender, answer);
            }
        }
        let item = PubItem {
            topic: p.topic,
            msgs: p.msgs,
            sender,
            spread,
        };
        // Queued here, in the broker task, so a connection's publishes keep their order.
        c.propose_publish(DataItem::Publish(item), answer);
    }

    /// The others learn what this node's clients watch, when it changed (every 100 ms
    /// at most: `queue_tick`).
    pub(super) fn share_interest(&mut self) {
        let Some(c) = &self.cluster else {
            return;
        };
        let changes = self.core.watches.changes();
        if changes != self.interest_sent {
            self.interest_sent = changes;
            c.set_interest(self.core.watches.interest());
        }
    }

    /// Apply committed entries of the data group; each entry's publishes get their results.
    pub(super) fn apply_replicated(
        &mut self,
        shard: Shard,
        entries: Vec<ApplyEntry>,
        finish: ApplyFinish,
    ) -> Result<Vec<Vec<PubResult>>, String> {
        // Everything staged before goes first: a failure of it is not these entries'.
        self.commit();
        self.commit_failed = None;
        self.applying_replicated = true;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let mut results = Vec::with_capacity(e.items.len());
            // Topics with a hard limit this entry published to: cut at its end.
            let mut limited: Vec<u32> = Vec::new();
            for item in e.items {
                let item = match item {
                    DataItem::Publish(p) => p,
                    DataItem::Queue(op) => {
                        self.apply_queue_op(shard, op, e.time, &e.origin);
                        results.push(Ok(Published::default()));
                        continue;
                    }
                };
                if let Some(refused) = self.in_another_shard(shard, &item.topic, true) {
                    results.push(Err(refused));
                    continue;
                }
                // Reply inboxes are reserved topics anyone may publish to.
                let inbox = item.topic.starts_with(INBOX_PREFIX);
                let r = self.publish_spread(
                    (0, 0, true),
                    &item.topic,
                    item.msgs,
                    item.sender,
                    e.time,
                    inbox,
                    item.spread,
                );
                if let Ok(published) = &r {
                    for topic in published.topics(&item.topic) {
                        self.noted_in_log_order(&topic);
                        if let Some(t) = self.core.topics.get(&topic) {
                            let hard = t.limits.hard_max_bytes > 0 || t.limits.hard_max_age_ms > 0;
                            if hard && !limited.contains(&t.id) {
                                limited.push(t.id);
                            }
                        }
                    }
                }
                results.push(r);
            }
            for id in limited {
                self.hard_trim(id, e.time);
            }
            out.push(results);
        }
        self.applying_replicated = false;
        // The applied state goes with these records, in the same commit.
        let applied = finish(&out);
        self.store
            .stage_meta(&mut self.staged, &applied_key(shard), applied);
        self.commit();
        // Stored or not at all (`commit` undoes a failed write): a replica that could not
        // store an entry stops applying rather than go on without it (its messages would
        // get other seqs than on the other nodes). A restart applies again from its store.
        match self.commit_failed.take() {
            Some(e) => {
                self.replica_taken.clear();
                Err(format!("cannot store the data group's entries: {e}"))
            }
            None => {
                // What this node's takes leased is stored: send it.
                self.deliver_taken();
                Ok(out)
            }
        }
    }

    /// The queues bound to `topic` learn of its new messages now, in log order, not when
    /// the write is released: a take later in the same entries must see them on every node,
    /// however each node grouped its entries into writes.
    fn noted_in_log_order(&mut self, topic: &str) {
        let Some(id) = self.core.topics.get(topic).map(|t| t.id) else {
            return;
        };
        let names: Vec<std::sync::Arc<str>> = self.queues.bound_to(id).to_vec();
        for name in names {
            if let Some(q) = self.queues.get_mut(&name) {
                q.note_append(id);
            }
        }
    }
}
