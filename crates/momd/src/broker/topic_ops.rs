//! Topic requests: list (a page: `listing`), info, set (limits), rm and purge, and which
//! topics patterns match.
//! Removing a topic or its messages is refused while a queue still holds some of them,
//! unless forced (DESIGN.md: a queue never silently loses what it holds).

use mom_proto::{topic, ClientFrame, ErrorCode, Req, ServerFrame, TopicInfoReply, TopicRm};

use super::{core_error, json_str, Broker, Pending};
use crate::core::{CoreError, TopicState};

/// Reserved topics a client may purge: dead letters are the users' to clean up.
const PURGEABLE_RESERVED: &str = "$dlq.";

impl Broker {
    /// A topic request, at time `now`. `owner`: who sent it, when not the session's user
    /// (a replica applying another node's request).
    pub(super) fn topic_request(
        &mut self,
        session: u64,
        frame: ClientFrame,
        now: u64,
        owner: Option<String>,
    ) {
        match frame {
            ClientFrame::TopicList(r) => self.topic_list(session, r),
            ClientFrame::TopicInfo(r) if self.bad_name(session, r.id, &r.topic) => {}
            ClientFrame::TopicInfo(r) => match self.core.topics.get(&r.topic) {
                Some(t) => {
                    let topic = self.topic_info(t);
                    self.reply(
                        session,
                        ServerFrame::TopicInfo(TopicInfoReply {
                            id: r.id,
                            topic,
                            purged: None,
                        }),
                    );
                }
                None => self.error(
                    session,
                    r.id,
                    ErrorCode::NotFound,
                    format!("topic {:?} not found", r.topic),
                ),
            },
            ClientFrame::TopicRm(r) => self.topic_rm(session, r),
            ClientFrame::TopicPurge(r) => self.topic_purge(session, r),
            ClientFrame::TopicCreate(c) => self.topic_create(session, c, now, owner),
            ClientFrame::TopicSet(s) => {
                let owner = owner.unwrap_or_else(|| {
                    self.sessions
                        .get(&session)
                        .map(|x| x.identity.user.clone())
                        .unwrap_or_default()
                });
                self.topic_set(session, s, now, &owner);
            }
            _ => {}
        }
    }

    /// `topic_set`: on a partitioned topic, each of its partitions gets the limits too.
    fn topic_set(&mut self, session: u64, s: mom_proto::TopicSet, now: u64, owner: &str) {
        let mut names = vec![s.topic.clone()];
        if self.core.partitions_of(&s.topic) > 0 {
            names.extend(
                self.core
                    .local_partition_ids(&s.topic)
                    .into_iter()
                    .filter_map(|id| self.core.topics.by_id(id).map(|t| t.name.to_string())),
            );
        }
        let mut first = None;
        for name in names {
            let set = mom_proto::TopicSet {
                topic: name,
                ..s.clone()
            };
            let res = self
                .core
                .set_limits(&set, now, owner)
                .map(|(t, created)| (t.clone(), created));
            let (t, created) = match res {
                Ok(x) => x,
                Err(e) => {
                    let (code, msg) = core_error(e);
                    return self.error(session, s.id, code, msg);
                }
            };
            if let Err(e) = self.store.put_topic(&t, self.core.topics.next_id()) {
                self.error(session, s.id, ErrorCode::Unavailable, e.to_string());
                return;
            }
            if created {
                self.topic_created_for_queues(t.id, &t.name);
                self.sys_event(format!(
                    r#"{{"event":"topic_created","topic":{}}}"#,
                    json_str(&t.name)
                ));
            }
            self.trim(t.id, now);
            if self.applying_replicated {
                self.hard_trim(t.id, now);
            }
            first.get_or_insert(t.id);
        }
        if let Some(t) = first {
            self.answer_topic(session, s.id, t);
        }
    }

    /// Answer request `id` with the info of topic `topic_id` once what the request changed
    /// is durable.
    pub(super) fn answer_topic(&mut self, session: u64, id: u64, topic_id: u32) {
        let Some(t) = self.core.topics.by_id(topic_id) else {
            return;
        };
        let topic = self.topic_info(t);
        self.after_flush(Pending::Reply {
            session,
            frame: ServerFrame::TopicInfo(TopicInfoReply {
                id,
                topic,
                purged: None,
            }),
        });
    }

    /// The topics some pattern matches, each with the newest seq whose deliveries were
    /// released (what a replay or a new queue may read up to).
    pub(super) fn matching_topics(&self, patterns: &[String]) -> Vec<(TopicState, u64)> {
        // Each pattern looks only at the names that start with its literal lead (`a.b.` of
        // `a.b.*`), in name order: a queue bound to `devices.d7.>` does not scan 100k topics.
        let mut found = std::collections::BTreeSet::new();
        for p in patterns {
            let lead = mom_proto::page::literal_lead(p);
            found.extend(
                self.core
                    .topics
                    .range_from(std::ops::Bound::Included(lead.as_str()))
                    .take_while(|t| t.name.starts_with(lead.as_str()))
                    .filter(|t| topic::matches(p, &t.name))
                    .map(|t| t.id),
            );
        }
        found
            .into_iter()
            .filter_map(|id| self.core.topics.by_id(id))
            .map(|t| (t.clone(), self.released_upto(t)))
            .collect()
    }

    /// Why `t` may not lose its messages: the queues that still hold some (not delivered
    /// yet, delivered and unacked, or waiting for redelivery), as a `conflict` message.
    /// Messages stored but not yet released by a flush count too: they are the queues'.
    fn held_by_queues(&self, t: &TopicState, fix: &str) -> Option<String> {
        let view = |_: u32| Some((t.first_seq, t.last_seq));
        let referring = self.queues.referring(t.id);
        let held: Vec<(&str, u64)> = referring
            .iter()
            .filter_map(|n| self.queues.get(n))
            .map(|q| (q.def.name.as_str(), q.held_in(t.id, &view)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if held.is_empty() {
            return None;
        }
        let total: u64 = held.iter().map(|(_, n)| n).sum();
        let each: Vec<String> = held.iter().map(|(q, n)| format!("{q}: {n}")).collect();
        Some(format!(
            "topic {:?} has {total} messages queues still hold ({}); {fix} with force to drop them",
            t.name,
            each.join(", ")
        ))
    }

    /// An invalid name is a bad request, not a missing topic (docs/protocol.md §3.1): it
    /// could never name a topic. True when the request was answered so.
    /// The newest seq of `t` a queue or replay may read. A replica applying the data
    /// group's log counts every seq assigned (their entries are committed), so that every
    /// node decides the same however its entries were grouped into writes.
    pub(super) fn released_upto(&self, t: &TopicState) -> u64 {
        if self.applying_replicated {
            t.last_seq
        } else {
            t.delivered_upto
        }
    }

    fn bad_name(&mut self, session: u64, id: u64, name: &str) -> bool {
        match topic::validate_topic(name) {
            Ok(()) => false,
            Err(e) => {
                self.error(session, id, ErrorCode::BadRequest, e.to_string());
                true
            }
        }
    }

    fn topic_rm(&mut self, session: u64, r: TopicRm) {
        if self.bad_name(session, r.id, &r.topic) {
            return;
        }
        if r.topic.starts_with('$') {
            let (code, msg) = core_error(CoreError::Reserved(r.topic));
            return self.error(session, r.id, code, msg);
        }
        let Some(t) = self.core.topics.get(&r.topic).cloned() else {
            let (code, msg) = core_error(CoreError::TopicNotFound(r.topic));
            return self.error(session, r.id, code, msg);
        };
        if let Some((parent, Some(_))) = self.core.partition_parent(&r.topic) {
            let msg = format!(
                "topic {:?} is a partition of {:?}: remove {:?} (its partitions go with it)",
                r.topic, parent.name, parent.name
            );
            return self.error(session, r.id, ErrorCode::BadRequest, msg);
        }
        let targets = self.with_partitions(&t);
        if !r.force {
            for t in &targets {
                if let Some(msg) = self.held_by_queues(t, "remove it") {
                    return self.error(session, r.id, ErrorCode::Conflict, msg);
                }
            }
        }
        // Partitions first, the topic last: cut short, what is left is still whole.
        for t in targets {
            if let Err(msg) = self.remove_one(&t) {
                return self.error(session, r.id, ErrorCode::Unavailable, msg);
            }
        }
        self.after_flush(Pending::Reply {
            session,
            frame: ServerFrame::Ok(Req { id: r.id }),
        });
    }

    /// Remove one topic: from the store first, so that when it cannot (a failing disk) the
    /// topic stays as it was, visible and whole.
    fn remove_one(&mut self, t: &TopicState) -> Result<(), String> {
        if let Err(e) = self.store.remove_topic(t.id) {
            return Err(format!("topic {:?} could not be removed: {e}", t.name));
        }
        let t = self.core.remove_topic(&t.name).map_err(|e| e.to_string())?;
        let upto = self.released_upto(&t);
        self.rates.remove(&t.id);
        self.metrics.forget(t.id);
        self.topic_removed_for_queues(t.id, Some((t.first_seq, upto)));
        self.sys_event(format!(
            r#"{{"event":"topic_removed","topic":{}}}"#,
            json_str(&t.name)
        ));
        Ok(())
    }

    /// Remove every stored message of a topic; its seqs go on from where they were (first
    /// seq becomes last seq + 1), so no seq is ever used twice. With force, queues count
    /// what they held of it as dropped, as after a hard retention limit.
    fn topic_purge(&mut self, session: u64, r: TopicRm) {
        if self.bad_name(session, r.id, &r.topic) {
            return;
        }
        if r.topic.starts_with('$') && !r.topic.starts_with(PURGEABLE_RESERVED) {
            let (code, msg) = core_error(CoreError::Reserved(r.topic));
            return self.error(session, r.id, code, msg);
        }
        let Some(t) = self.core.topics.get(&r.topic).cloned() else {
            let (code, msg) = core_error(CoreError::TopicNotFound(r.topic));
            return self.error(session, r.id, code, msg);
        };
        let targets = self.with_partitions(&t);
        if !r.force {
            for t in &targets {
                if let Some(msg) = self.held_by_queues(t, "purge it") {
                    return self.error(session, r.id, ErrorCode::Conflict, msg);
                }
            }
        }
        let mut purged = 0;
        for t in &targets {
            match self.purge_one(t.id) {
                Ok(n) => purged += n,
                Err(e) => {
                    let msg = format!("purge of {:?} failed: {e}", t.name);
                    return self.error(session, r.id, ErrorCode::Unavailable, msg);
                }
            }
        }
        let Some(t) = self.core.topics.by_id(t.id) else {
            return;
        };
        let topic = self.topic_info(t);
        // After the flush, with the queues' new state: a purge acknowledged is durable.
        self.staged_pending.push(Pending::Reply {
            session,
            frame: ServerFrame::TopicInfo(TopicInfoReply {
                id: r.id,
                topic,
                purged: Some(purged),
            }),
        });
    }

    /// Remove every stored message of one topic; the queues skip past them.
    fn purge_one(&mut self, id: u32) -> Result<u64, String> {
        let purged = self
            .remove_oldest(id, u64::MAX)
            .map_err(|e| e.to_string())?;
        let Some(t) = self.core.topics.by_id(id).cloned() else {
            return Ok(purged);
        };
        let mut touched = Vec::new();
        for name in self.queues.referring(t.id) {
            if let Some(q) = self.queues.get_mut(&name) {
                if q.skip_to(t.id, t.first_seq) > 0 {
                    touched.push(name.to_string());
                }
            }
        }
        self.dirty_queues.extend(touched);
        if purged > 0 {
            self.sys_event(format!(
                r#"{{"event":"topic_purged","topic":{},"messages":{purged}}}"#,
                json_str(&t.name)
            ));
        }
        Ok(purged)
    }
}
