//! Partitioned topics in the broker (`core/partitions.rs` decides): a publish cut into one
//! part per partition and answered as one, `topic_create`, and what a request naming a
//! partitioned topic does to each of its partitions.

use mom_proto::{ErrorCode, PubMsg, Sender, TopicCreate};

use super::publish::Published;
use super::{core_error, json_str, Broker, Pending, STAGED_MAX_BYTES};
use crate::core::TopicState;

impl Broker {
    /// Sequence one publish and stage it; its ack waits for [`Broker::commit`] and then
    /// the flush. `req` is (session, request id, no_ack); session 0 is the broker itself.
    pub(super) fn publish(
        &mut self,
        req: (u64, u64, bool),
        name: &str,
        msgs: Vec<PubMsg>,
        sender: Sender,
        now: u64,
        reserved_ok: bool,
    ) -> Result<Published, (ErrorCode, String)> {
        let spread = self.next_spread();
        self.publish_spread(req, name, msgs, sender, now, reserved_ok, spread)
    }

    /// Where the next publish without a key goes, on a partitioned topic.
    pub(super) fn next_spread(&mut self) -> u32 {
        self.spread = self.spread.wrapping_add(1);
        self.spread
    }

    /// [`Broker::publish`], with the partition the messages without a key go to chosen
    /// by the caller (in a cluster, the node the publish came to: every node applies the
    /// same).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_spread(
        &mut self,
        req: (u64, u64, bool),
        name: &str,
        msgs: Vec<PubMsg>,
        sender: Sender,
        now: u64,
        reserved_ok: bool,
        spread: u32,
    ) -> Result<Published, (ErrorCode, String)> {
        let (session, id, no_ack) = req;
        if session != 0 {
            if let Some(refused) = self.disk_refuses() {
                return Err(refused);
            }
        }
        let limited = session != 0;
        let (answer, parts) = match self.core.route(name, msgs, spread).map_err(core_error)? {
            Err(msgs) => {
                let (answer, part) =
                    self.publish_one(limited, name, msgs, sender, now, reserved_ok)?;
                (answer, vec![part])
            }
            Ok(mut routed) => {
                let mut answers = Vec::with_capacity(routed.parts.len());
                let mut parts = Vec::with_capacity(routed.parts.len());
                let mut failed = None;
                for part in &mut routed.parts {
                    let msgs = std::mem::take(&mut part.msgs);
                    match self.publish_one(limited, &part.topic, msgs, sender.clone(), now, false) {
                        Ok((a, p)) => {
                            answers.push(a);
                            parts.push(p);
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some((code, msg)) = failed {
                    // The partitions it was checked for all exist, so this is not expected;
                    // what was staged is stored and delivered, and the client is told.
                    if !parts.is_empty() {
                        self.staged_pending.push(Pending::Publish {
                            session: 0,
                            id: 0,
                            no_ack: true,
                            topic: name.to_string(),
                            answer: Published::default(),
                            parts,
                            groups: self.group_table(name),
                        });
                    }
                    return Err((
                        code,
                        format!("{msg} (some of its partitions stored theirs)"),
                    ));
                }
                let results: Vec<(&[u64], &[u32])> = answers
                    .iter()
                    .map(|a| (a.seqs.as_slice(), a.duplicate_indexes.as_slice()))
                    .collect();
                let merged = routed.merge(&results);
                let answer = Published {
                    seqs: merged.seqs,
                    duplicates: answers.iter().map(|a| a.duplicates).sum(),
                    duplicate_indexes: merged.duplicate_indexes,
                    queues: answers.iter().map(|a| a.queues).sum(),
                    partitions: merged.partitions,
                };
                (answer, parts)
            }
        };
        self.staged_pending.push(Pending::Publish {
            session,
            id,
            no_ack,
            topic: name.to_string(),
            answer: answer.clone(),
            parts,
            groups: self.group_table(name),
        });
        // A replica's entries are committed together with the applied state that names
        // them (`replica.rs`), never split.
        if self.staged.bytes >= STAGED_MAX_BYTES && !self.applying_replicated {
            self.commit();
        }
        Ok(answer)
    }

    /// `topic_create`: the topic, and its partitions if it has several. `owner`: who sent
    /// it, when not the session's user (a replica applying another node's request).
    pub(super) fn topic_create(
        &mut self,
        session: u64,
        c: TopicCreate,
        now: u64,
        owner: Option<String>,
    ) {
        let owner = owner.unwrap_or_else(|| {
            self.sessions
                .get(&session)
                .map(|x| x.identity.user.clone())
                .unwrap_or_default()
        });
        if let Err(msg) = self.check_replicas(c.replicas) {
            return self.error(session, c.id, ErrorCode::BadRequest, msg);
        }
        let replicas = u8::try_from(c.replicas).unwrap_or(u8::MAX);
        let ids = match self
            .core
            .create_topic(&c.topic, c.partitions, replicas, &owner, now)
        {
            Ok(ids) => ids,
            Err(e) => {
                let (code, msg) = core_error(e);
                return self.error(session, c.id, code, msg);
            }
        };
        if ids.is_empty() {
            // It exists as asked: answered as the first create was.
            if let Some(t) = self.core.topics.get(&c.topic).map(|t| t.id) {
                self.answer_topic(session, c.id, t);
            }
            return;
        }
        let states: Vec<TopicState> = ids
            .iter()
            .filter_map(|id| self.core.topics.by_id(*id).cloned())
            .collect();
        for (i, t) in states.iter().enumerate() {
            if let Err(e) = self.store.put_topic(t, self.core.topics.next_id()) {
                // Nothing of it is kept: the topic and its partitions go again.
                for t in states.iter().take(i) {
                    let _ = self.store.remove_topic(t.id);
                }
                for t in states.iter().rev() {
                    let _ = self.core.topics.remove(&t.name);
                }
                let msg = format!("topic {:?} was not created: {e}", c.topic);
                return self.error(session, c.id, ErrorCode::Unavailable, msg);
            }
        }
        for t in &states {
            self.topic_created_for_queues(t.id, &t.name);
        }
        self.sys_event(format!(
            r#"{{"event":"topic_created","topic":{},"partitions":{}}}"#,
            json_str(&c.topic),
            c.partitions.max(1)
        ));
        if let Some(t) = states.first() {
            self.answer_topic(session, c.id, t.id);
        }
    }

    /// May a topic ask for `replicas` copies of each message here? A single node keeps
    /// one; a cluster keeps one on each voter of its data group.
    pub(super) fn check_replicas(&self, replicas: u32) -> Result<(), String> {
        if replicas <= 1 {
            return Ok(());
        }
        let Some(c) = &self.cluster else {
            return Err(format!(
                "{replicas} replicas: a single node keeps one copy of each message (replicas \
                 need cluster mode)"
            ));
        };
        // A replica applying the request does not check again: the node it came to did,
        // and the members may have changed since.
        if self.applying_replicated {
            return Ok(());
        }
        let voters = c.data_voters();
        if replicas as usize > voters {
            return Err(format!(
                "{replicas} replicas: the cluster has {voters} voting members, and each \
                 holds one copy of every message"
            ));
        }
        Ok(())
    }

    /// Patterns as a watch or a queue holds them: a partitioned topic named as such
    /// means its partitions (`NAME.*`).
    pub(super) fn expanded(&self, patterns: &[String]) -> Vec<String> {
        patterns
            .iter()
            .map(|p| self.core.expand_pattern(p))
            .collect()
    }

    /// The topics a request naming `t` acts on: its partitions then itself, when it is
    /// partitioned; else itself. With several data groups, the partitions of its own
    /// group's shard: the others' get the request through their groups (`fan_out.rs`).
    pub(super) fn with_partitions(&self, t: &TopicState) -> Vec<TopicState> {
        let mut out: Vec<TopicState> = self
            .core
            .local_partition_ids(&t.name)
            .into_iter()
            .filter_map(|id| self.core.topics.by_id(id).cloned())
            .collect();
        out.push(t.clone());
        out
    }
}
