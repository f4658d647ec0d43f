//! Creating and changing queues, and looking into them: `queue_create` (idempotent),
//! `queue_set`, `queue_peek`, `queue_redrive` and `extend`.

use std::collections::HashMap;

use mom_proto::{
    topic, Ack, ErrorCode, FetchOk, Limits, QueueCreate, QueuePeek, QueueRedrive, QueueSet, Req,
    ServerFrame,
};

use super::queue_ops::{validate_queue_name, DEFAULT_ACK_WAIT_MS, DEFAULT_MAX_DELIVER, MAX_BATCH};
use super::{json_str, Broker};
use crate::core::queues::{MsgRef, Queue, QueueDef};

/// Bytes of dead letters read from the store per step of a redrive.
const REDRIVE_READ_CHUNK: usize = 4 * 1024 * 1024;

/// A dead letter as a redrive sees it.
struct Letter {
    /// Its seq in the dead letter topic.
    seq: u64,
    /// When it was dead-lettered.
    time: u64,
    /// The topic and seq it was dead-lettered from (its `dlq-topic` and `dlq-seq`).
    orig: Option<(String, u64)>,
}

/// Most message names an `extend` error lists.
const MAX_NAMED: usize = 10;

/// What differs between an existing queue and a `queue_create` for it, in words.
fn differences(def: &QueueDef, c: &QueueCreate) -> Vec<String> {
    let mut out = Vec::new();
    let set = |ps: &[String]| {
        let mut v = ps.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    };
    let (have, asked) = (set(&def.bindings), set(&c.bindings));
    if have != asked {
        out.push(format!(
            "bound to {} (asked {}); use queue_bind or queue_unbind to change them",
            patterns(&have),
            patterns(&asked)
        ));
    }
    if let Some(m) = c.max_deliver.filter(|m| *m != def.max_deliver) {
        out.push(format!(
            "with max_deliver {} (asked {m}); use queue_set to change it",
            def.max_deliver
        ));
    }
    if let Some(w) = c.ack_wait_ms.filter(|w| (*w).max(1) != def.ack_wait_ms) {
        out.push(format!(
            "with ack_wait_ms {} (asked {w}); use queue_set to change it",
            def.ack_wait_ms
        ));
    }
    out
}

fn patterns(ps: &[String]) -> String {
    if ps.is_empty() {
        "no pattern".into()
    } else {
        ps.join(" ")
    }
}

impl Broker {
    /// Create a queue. Creating one that exists with the same settings succeeds and changes
    /// nothing (a script can run it twice); with other settings it is a `conflict` naming
    /// them, unless `exist_ok`, which adds the new bindings, starting at `from`.
    pub(super) fn queue_create(
        &mut self,
        session: u64,
        mut c: QueueCreate,
        now: u64,
        owner: Option<String>,
    ) {
        if let Err(e) = validate_queue_name(&c.queue) {
            return self.error(session, c.id, ErrorCode::BadRequest, e);
        }
        for p in &c.bindings {
            if let Err(e) = topic::validate_pattern(p) {
                return self.error(session, c.id, ErrorCode::BadRequest, e.to_string());
            }
        }
        // A partitioned topic named as such means its partitions.
        c.bindings = self.expanded(&c.bindings);
        if let Some(q) = self.queues.get_mut(&c.queue) {
            if !c.exist_ok {
                let diffs = differences(&q.def, &c);
                if diffs.is_empty() {
                    // Answered after the flush all the same: a pipelined create of a queue
                    // just created must not be confirmed before the queue is durable.
                    return self.reply_queue_info(session, c.id, &c.queue, true);
                }
                let msg = format!("queue {:?} exists {}", c.queue, diffs.join("; "));
                return self.error(session, c.id, ErrorCode::Conflict, msg);
            }
            let new: Vec<String> = c
                .bindings
                .iter()
                .filter(|p| !q.def.bindings.contains(p))
                .cloned()
                .collect();
            self.queues
                .change_bindings(&c.queue, |bindings| bindings.extend(new.iter().cloned()));
            self.bind_existing(&c.queue, &new, c.from, c.at);
            self.dirty_queues.insert(c.queue.clone());
            return self.reply_queue_info(session, c.id, &c.queue, true);
        }
        let owner = owner.unwrap_or_else(|| {
            self.sessions
                .get(&session)
                .map(|s| s.client.user.clone())
                .unwrap_or_default()
        });
        let def = QueueDef {
            name: c.queue.clone(),
            owner,
            created: now,
            bindings: c.bindings.clone(),
            max_deliver: c.max_deliver.unwrap_or(DEFAULT_MAX_DELIVER),
            ack_wait_ms: c.ack_wait_ms.unwrap_or(DEFAULT_ACK_WAIT_MS).max(1),
        };
        self.queues.insert(Queue::new(def));
        self.bind_existing(&c.queue, &c.bindings, c.from, c.at);
        self.dirty_queues.insert(c.queue.clone());
        self.sys_event(format!(
            r#"{{"event":"queue_created","queue":{}}}"#,
            json_str(&c.queue)
        ));
        self.reply_queue_info(session, c.id, &c.queue, true);
    }

    /// Change max_deliver and ack_wait_ms. A new ack wait applies to deliveries made from
    /// now on; a lower max_deliver takes effect at each message's next failed delivery.
    pub(super) fn queue_set(&mut self, session: u64, s: QueueSet) {
        if s.ack_wait_ms == Some(0) {
            let msg = "ack_wait_ms must be at least 1";
            return self.error(session, s.id, ErrorCode::BadRequest, msg);
        }
        let Some(q) = self.queues.get_mut(&s.queue) else {
            let msg = format!("queue {:?} not found", s.queue);
            return self.error(session, s.id, ErrorCode::NotFound, msg);
        };
        if let Some(m) = s.max_deliver {
            q.def.max_deliver = m;
        }
        if let Some(w) = s.ack_wait_ms {
            q.def.ack_wait_ms = w;
        }
        self.dirty_queues.insert(s.queue.clone());
        self.reply_queue_info(session, s.id, &s.queue, true);
    }

    /// (first seq, newest durable seq) of every topic queue `name` refers to, bound or
    /// not (a redriven dead letter may come from a topic the queue is not bound to).
    pub(super) fn queue_snapshot(&self, name: &str) -> Option<HashMap<u32, (u64, u64)>> {
        let q = self.queues.get(name)?;
        let view = self.view();
        Some(
            q.topics()
                .into_iter()
                .filter_map(|t| view(t).map(|v| (t, v)))
                .collect(),
        )
    }

    /// What the queue would deliver next, read without delivering it: nothing changes.
    pub(super) fn queue_peek(&mut self, session: u64, p: QueuePeek, now: u64) {
        let refs = match self.queues.get(&p.queue) {
            Some(q) => q.peek(&self.view(), (p.max as usize).clamp(1, MAX_BATCH), now),
            None => {
                let msg = format!("queue {:?} not found", p.queue);
                return self.error(session, p.id, ErrorCode::NotFound, msg);
            }
        };
        // A message that cannot be read now is left out; the queue is untouched.
        let (mut msgs, _unread) = self.read_messages(refs);
        msgs.truncate(self.fit_frame(&msgs));
        self.reply(
            session,
            ServerFrame::FetchOk(FetchOk {
                id: p.id,
                queue: p.queue,
                msgs,
            }),
        );
    }

    /// Push the ack deadline of deliveries still being worked on. What is not out any more
    /// (acked, or come back for redelivery) is named in a `not_found`; the rest is extended
    /// all the same.
    pub(super) fn extend(&mut self, session: u64, a: Ack, now: u64) {
        let refs: Vec<(Option<u32>, &mom_proto::MsgKey)> = a
            .msgs
            .iter()
            .map(|k| (self.core.topics.get(&k.topic).map(|t| t.id), k))
            .collect();
        let Some(q) = self.queues.get_mut(&a.queue) else {
            let msg = format!("queue {:?} not found", a.queue);
            return self.error(session, a.id, ErrorCode::NotFound, msg);
        };
        let missing: Vec<String> = refs
            .into_iter()
            .filter(|(t, k)| !t.is_some_and(|t| q.extend((t, k.seq), now)))
            .map(|(_, k)| format!("{}#{}", k.topic, k.seq))
            .collect();
        if missing.is_empty() {
            return self.reply(session, ServerFrame::Ok(Req { id: a.id }));
        }
        let named = name_keys(&missing);
        let msg = format!(
            "queue {:?} has no unacked delivery of {named} (acked, or its deadline passed and it \
             may be redelivered); the others were extended",
            a.queue
        );
        self.error(session, a.id, ErrorCode::NotFound, msg);
    }

    /// Move the dead letters of `$dlq.<queue>` back into the queue with fresh delivery
    /// counts. A dead letter whose original message its topic still stores brings that
    /// message back (acks name the original topic and seq); otherwise the dead letter itself
    /// is requeued, so nothing is lost. Moved dead letters are then removed from the dead
    /// letter topic — from its oldest on, up to the first one the queue (or any queue) still
    /// holds, since a topic's log only loses its oldest messages.
    pub(super) fn queue_redrive(&mut self, session: u64, r: QueueRedrive, now: u64) {
        let Some(watermark) = self.queues.get(&r.queue).map(|q| q.dlq_redriven()) else {
            let msg = format!("queue {:?} not found", r.queue);
            return self.error(session, r.id, ErrorCode::NotFound, msg);
        };
        let dlq = format!("$dlq.{}", r.queue);
        let Some(t) = self.core.topics.get(&dlq).cloned() else {
            return self.reply_queue_counted(session, r.id, &r.queue, false, None, Some(0));
        };
        let from = t.first_seq.max(watermark.saturating_add(1));
        let to = t.last_seq;
        let mut letters: Vec<Letter> = Vec::new();
        let mut next = from;
        while next <= to {
            let read = match self.store.read(t.id, &dlq, next, to, REDRIVE_READ_CHUNK) {
                Ok(read) => read,
                Err(e) => {
                    let msg = format!("cannot read {dlq}: {e}");
                    return self.error(session, r.id, ErrorCode::Unavailable, msg);
                }
            };
            for b in read.batches {
                for (k, m) in b.msgs.into_iter().enumerate() {
                    let orig = m
                        .headers
                        .get("dlq-topic")
                        .cloned()
                        .zip(m.headers.get("dlq-seq").and_then(|s| s.parse::<u64>().ok()));
                    letters.push(Letter {
                        seq: b.first_seq + k as u64,
                        time: b.time,
                        orig,
                    });
                }
            }
            next = read.next_seq.max(next + 1);
        }
        // A dead letter that could not be read stays where it is (and is not redriven).
        let unread = (from..=to)
            .zip(
                letters
                    .iter()
                    .map(|l| l.seq)
                    .chain(std::iter::repeat(u64::MAX)),
            )
            .find(|(want, got)| want != got)
            .map_or(u64::MAX, |(want, _)| want);
        let targets: Vec<MsgRef> = letters
            .iter()
            .map(|Letter { seq, time, orig }| {
                let original = orig.as_ref().and_then(|(name, oseq)| {
                    let ot = self.core.topics.get(name)?;
                    // Still stored, and the same topic (not one of the same name created
                    // after the message was dead-lettered).
                    let stored = ot.first_seq <= *oseq && *oseq <= ot.last_seq;
                    (stored && ot.created <= *time).then_some((ot.id, *oseq))
                });
                original.unwrap_or((t.id, *seq))
            })
            .collect();
        let queues = &mut self.queues;
        let redriven = targets
            .into_iter()
            .filter(|m| queues.redrive(&r.queue, *m, now))
            .count() as u64;
        let Some(q) = self.queues.get_mut(&r.queue) else {
            return;
        };
        // Unreadable ones included: they stay in the topic, but are not tried again.
        q.note_redriven(q.shards().of(t.id), to);
        self.dirty_queues.insert(r.queue.clone());
        let keep_from = self.queue_floor(t.id).min(unread).min(to + 1);
        if let Err(e) = self.remove_oldest(t.id, keep_from) {
            // The dead letters stay; the watermark keeps them from being redriven twice.
            tracing::error!(topic = %dlq, "cannot remove redriven dead letters: {e}");
        }
        if redriven > 0 {
            self.sys_event(format!(
                r#"{{"event":"queue_redriven","queue":{},"count":{redriven}}}"#,
                json_str(&r.queue)
            ));
        }
        self.reply_queue_counted(session, r.id, &r.queue, true, None, Some(redriven));
        self.pump(&r.queue, now);
    }

    /// Remove every stored message of topic `id` below seq `keep_from`, through the same
    /// path retention takes. Returns how many went.
    pub(super) fn remove_oldest(
        &mut self,
        id: u32,
        keep_from: u64,
    ) -> Result<u64, crate::store::StoreError> {
        let Some(t) = self.core.topics.by_id(id) else {
            return Ok(0);
        };
        // An age limit of 1 ms at the end of time: every message is old enough.
        let all = Limits {
            max_age_ms: 1,
            ..Limits::default()
        };
        let Some((first, n, bytes)) = self.store.trim(t, all, u64::MAX, keep_from)? else {
            return Ok(0);
        };
        if let Some(t) = self.core.topics.by_id_mut(id) {
            t.record_trim(first, n, bytes);
        }
        self.dirty = true;
        Ok(n)
    }
}

/// `a#1, a#2 and 8 more`: the keys a reply names (at most a few of them).
pub(super) fn name_keys(keys: &[String]) -> String {
    let mut named = keys
        .iter()
        .take(MAX_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > MAX_NAMED {
        named.push_str(&format!(" and {} more", keys.len() - MAX_NAMED));
    }
    named
}
