//! Publishing: sequencing a batch in the core, staging it for the store, group commit
//! (one store write per flush), retention after a write, and the broker's own events.

use std::sync::Arc;

use mom_proto::{ErrorCode, Limits, PubMsg, Sender};

use super::{core_error, json_str, now_ms, Broker, INBOX_PREFIX, INBOX_TTL_MS, SYS_EVENTS};
use crate::core::{Batch, Core, PublishPlan, TopicState};
use crate::store;

/// What a publish was given: the seq of each message, and which were duplicates.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Published {
    pub seqs: Vec<u64>,
    pub duplicates: u64,
    pub duplicate_indexes: Vec<u32>,
    /// Cluster mode: the queues bound to the topic when it was applied (the same on every
    /// node: queues are replicated state).
    #[serde(default)]
    pub queues: u64,
    /// For a partitioned topic: the partition of each message (`PublishOk::partitions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<u32>,
}

impl Published {
    /// The topics the messages went to: `topic` itself, or the partitions of it they
    /// went to.
    pub fn topics(&self, topic: &str) -> Vec<String> {
        if self.partitions.is_empty() {
            return vec![topic.to_string()];
        }
        let mut ps = self.partitions.clone();
        ps.sort_unstable();
        ps.dedup();
        ps.into_iter().map(|p| format!("{topic}.{p}")).collect()
    }
}

/// What one topic of a publish stored, to be delivered once durable.
#[derive(Debug)]
pub(super) struct PubPart {
    pub topic_id: u32,
    pub topic: String,
    pub batch: Option<Arc<Batch>>,
}

impl Broker {
    /// Sequence the messages of a publish to one topic and stage them (`partitions.rs`
    /// cuts a publish to a partitioned topic into these). `limited`: a client's, which
    /// counts toward the topic cap when it creates a reply inbox.
    pub(super) fn publish_one(
        &mut self,
        limited: bool,
        name: &str,
        msgs: Vec<PubMsg>,
        sender: Sender,
        now: u64,
        reserved_ok: bool,
    ) -> Result<(Published, PubPart), (ErrorCode, String)> {
        let before: Option<TopicState> = self.core.topics.get(name).cloned();
        let existed = before.is_some();
        if !existed && name.starts_with(INBOX_PREFIX) {
            // A client's reply inbox counts toward the topic cap like any topic (the core
            // admits the others as it sequences them).
            if limited {
                self.core
                    .admit_topic(name, &sender.user, now)
                    .map_err(core_error)?;
            }
            // A reply inbox is born with its short retention, so it is stored with it.
            let limits = Limits {
                max_msgs: 100,
                max_age_ms: INBOX_TTL_MS,
                ..Limits::default()
            };
            self.core.topics.get_or_create(name, now, limits, "");
        }
        let res = if reserved_ok {
            self.core.publish_any(name, msgs, sender, now)
        } else {
            self.core.publish(name, msgs, sender, now)
        };
        let mut plan: PublishPlan = res.map_err(core_error)?;
        let topic_id = plan.topic_id;
        let undo = (!plan.stored.is_empty() || plan.created).then(|| Core::undo_of(&plan, before));
        let batch = if plan.stored.is_empty() {
            None
        } else {
            Some(Arc::new(Batch {
                topic: Arc::from(name),
                first_seq: plan.first_seq,
                time: plan.time,
                sender: plan.sender.clone(),
                msgs: std::mem::take(&mut plan.stored),
            }))
        };
        if batch.as_ref().is_some_and(|b| Self::is_early(name, b)) {
            self.staged_early = true;
        }
        if let Some(undo) = undo {
            let staged_before = self.staged.bytes;
            self.store.stage_publish(
                &mut self.staged,
                topic_id,
                plan.created || !existed,
                batch.as_ref(),
            );
            self.staged_undo.push(undo);
            self.to_trim.insert(topic_id);
            let written = self.staged.bytes.saturating_sub(staged_before);
            self.disk_charge(written as u64);
        }
        if plan.created || !existed {
            self.topic_created_for_queues(topic_id, name);
            if !name.starts_with('$') {
                self.created_events.push(format!(
                    r#"{{"event":"topic_created","topic":{}}}"#,
                    json_str(name)
                ));
            }
        }
        let published = Published {
            seqs: plan.seqs,
            duplicates: plan.duplicates,
            duplicate_indexes: plan.duplicate_indexes,
            queues: self.queues_bound(topic_id),
            partitions: Vec::new(),
        };
        let part = PubPart {
            topic_id,
            topic: name.to_string(),
            batch,
        };
        Ok((published, part))
    }

    /// Write every staged publish in one atomic batch, then let their acks wait for the
    /// flush (or go, without `--fsync always`) and apply retention to the topics touched.
    /// Called before anything else touches the store, so the store sees operations in the
    /// order the broker applied them.
    pub(super) fn commit(&mut self) {
        if !self.created_events.is_empty() {
            let events = std::mem::take(&mut self.created_events);
            self.sys_events(events);
        }
        self.stage_queues();
        if self.staged_pending.is_empty() && self.staged.count == 0 {
            return;
        }
        self.staged_early = false;
        let staged = std::mem::take(&mut self.staged);
        let pending = std::mem::take(&mut self.staged_pending);
        let tickets = std::mem::take(&mut self.staged_tickets);
        let undos = std::mem::take(&mut self.staged_undo);
        let topics = &self.core.topics;
        match self
            .store
            .apply(staged, |id| topics.by_id(id), topics.next_id())
        {
            Ok(()) => {
                for p in pending {
                    if let Some(p) = self.deliver_early(p) {
                        self.after_flush(p);
                    }
                }
                // With acks after fsync, the bytes stay admitted until the flush.
                if self.cfg.fsync == crate::config::FsyncMode::Always {
                    self.pending_tickets.extend(tickets);
                }
                let now = now_ms();
                for t in std::mem::take(&mut self.to_trim) {
                    self.trim(t, now);
                }
            }
            Err(e) => {
                tracing::error!("cannot write publishes: {e}");
                self.commit_failed = Some(e.to_string());
                self.disk_write_failed(&e);
                for u in undos.into_iter().rev() {
                    self.core.undo(u);
                }
                self.to_trim.clear();
                for p in pending {
                    let Some((session, id)) = p.requester() else {
                        continue;
                    };
                    if session != 0 {
                        let msg = format!("not stored: {e}");
                        self.error(session, id, ErrorCode::Unavailable, msg);
                    }
                }
            }
        }
    }

    /// Apply the topic's retention limits.
    pub(super) fn trim(&mut self, topic_id: u32, now: u64) {
        let Some(t) = self.core.topics.by_id(topic_id) else {
            return;
        };
        let lim = *t.limits;
        let aged = t.has_age_limit() && t.msgs > 0;
        if !(t.over_size_limits() || aged) {
            return;
        }
        // Soft limits stop at what a queue still holds; hard limits do not (the queues then
        // count what they lose as dropped).
        let soft = Limits {
            hard_max_bytes: 0,
            hard_max_age_ms: 0,
            ..lim
        };
        let hard = Limits {
            max_bytes: lim.hard_max_bytes,
            max_age_ms: lim.hard_max_age_ms,
            ..Limits::default()
        };
        let keep_from = self.queue_floor(topic_id);
        // In a cluster, hard limits cut into queues: only at points of the log, the same on
        // every node (`hard_trim`), never on this node's own schedule.
        let passes: &[(Limits, u64)] = if self.cluster.is_some() {
            &[(soft, keep_from)]
        } else {
            &[(soft, keep_from), (hard, u64::MAX)]
        };
        for &(lim, keep_from) in passes {
            let Some(t) = self.core.topics.by_id(topic_id) else {
                return;
            };
            match self.store.trim(t, lim, now, keep_from) {
                Ok(Some((first, n, bytes))) => {
                    if let Some(t) = self.core.topics.by_id_mut(topic_id) {
                        t.record_trim(first, n, bytes);
                    }
                    self.dirty = true;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(topic = topic_id, "retention failed: {e}"),
            }
        }
    }

    /// Cluster mode, applying the data group's log: the topic's hard limits at the entry's
    /// time `now`. What the entries applied so far staged is written first, so every node
    /// cuts from the same stored messages however it grouped its writes; the queues count
    /// what they lose as dropped when they next look, as on a single node.
    pub(super) fn hard_trim(&mut self, topic_id: u32, now: u64) {
        let Some(t) = self.core.topics.by_id(topic_id) else {
            return;
        };
        let hard = Limits {
            max_bytes: t.limits.hard_max_bytes,
            max_age_ms: t.limits.hard_max_age_ms,
            ..Limits::default()
        };
        let over = hard.max_bytes > 0 && t.bytes > hard.max_bytes;
        if !(over || (hard.max_age_ms > 0 && t.msgs > 0)) {
            return;
        }
        if self.staged.count > 0 {
            self.commit();
            if self.commit_failed.is_some() {
                return;
            }
        }
        let Some(t) = self.core.topics.by_id(topic_id) else {
            return;
        };
        match self.store.trim(t, hard, now, u64::MAX) {
            Ok(Some((first, n, bytes))) => {
                if let Some(t) = self.core.topics.by_id_mut(topic_id) {
                    t.record_trim(first, n, bytes);
                }
                self.dirty = true;
            }
            Ok(None) => {}
            // The same store on every node: a failure here is this node's disk.
            Err(e) => {
                tracing::error!(topic = topic_id, "retention failed: {e}");
                self.commit_failed = Some(format!("retention failed: {e}"));
            }
        }
    }

    /// Damage found at start (store/check.rs): one `record_damaged` event per range.
    pub fn report_damage(&mut self, damage: &[store::check::Damage]) {
        for d in damage {
            self.sys_event(format!(
                r#"{{"event":"record_damaged","topic":{},"first_seq":{},"last_seq":{},"segment":{},"offset":{},"reason":{}}}"#,
                json_str(&d.topic),
                d.first_seq,
                d.last_seq,
                json_str(&d.segment),
                d.offset,
                json_str(&d.reason)
            ));
        }
    }

    /// The broker's own events, as JSON messages on `$sys.events`.
    pub(super) fn sys_event(&mut self, json: String) {
        self.sys_events(vec![json]);
    }

    /// Several events in one publish.
    pub(super) fn sys_events(&mut self, events: Vec<String>) {
        let msgs = events
            .into_iter()
            .map(|json| PubMsg {
                payload: json.into_bytes().into(),
                ..PubMsg::default()
            })
            .collect();
        let created = self.core.topics.get(SYS_EVENTS).is_none();
        let req = (0, 0, true);
        let res = self.publish(
            req,
            SYS_EVENTS,
            msgs,
            store::broker_sender(),
            now_ms(),
            true,
        );
        if let Err((_, e)) = res {
            tracing::warn!("cannot record event: {e}");
            return;
        }
        if created {
            // The broker's own log keeps the newest events only.
            if let Some(t) = self.core.topics.get(SYS_EVENTS).map(|t| t.id) {
                if let Some(t) = self.core.topics.by_id_mut(t) {
                    if *t.limits == Limits::default() {
                        std::sync::Arc::make_mut(&mut t.limits).max_msgs = 10_000;
                    }
                }
            }
        }
    }
}
