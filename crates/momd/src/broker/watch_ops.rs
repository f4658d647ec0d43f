//! The broker's side of watches: starting one (live, replayed from the store, resumed
//! after a reconnect), routing published batches to watches and watch groups, and the
//! seam between a replay and live delivery.

use std::collections::HashMap;
use std::sync::Arc;

use mom_proto::{topic, ErrorCode, Notice, NoticeKind, ServerFrame, StartAt, Watch, WatchOk};
use tokio_util::sync::CancellationToken;

use super::{now_ms, Broker, Mode, WatchState, MAX_PATTERNS, MAX_WATCHES};

/// Most patterns one connection may hold in all its watches.
pub const MAX_CONN_PATTERNS: usize = 10_000;
/// Most patterns all watches together may hold (each pattern costs its bytes plus ~40).
pub const MAX_PATTERNS_HELD: usize = 200_000;
/// Most token positions in the broker's pattern indexes (~170 bytes each, ~85 MB in all).
pub const MAX_INDEX_NODES: usize = 500_000;

/// Longest watch group name.
const MAX_GROUP_NAME: usize = 256;
use crate::core::{Batch, GroupId, WatchId};
use crate::outbox::Outbox;
use crate::replay::{self, Range};

impl Broker {
    pub(super) fn watch(&mut self, session: u64, mut w: Watch) {
        if w.patterns.len() > MAX_PATTERNS {
            let msg = format!("a watch may have at most {MAX_PATTERNS} patterns");
            return self.error(session, w.id, ErrorCode::TooLarge, msg);
        }
        if self
            .sessions
            .get(&session)
            .is_some_and(|s| s.watches.len() >= MAX_WATCHES)
        {
            let msg = format!("a connection may hold at most {MAX_WATCHES} watches");
            return self.error(session, w.id, ErrorCode::TooLarge, msg);
        }
        if w.patterns.is_empty() {
            return self.error(
                session,
                w.id,
                ErrorCode::BadRequest,
                "a watch needs at least one pattern",
            );
        }
        for p in &w.patterns {
            if let Err(e) = topic::validate_pattern(p) {
                return self.error(session, w.id, ErrorCode::BadRequest, e.to_string());
            }
        }
        // A partitioned topic named as such means its partitions.
        w.patterns = self.expanded(&w.patterns);
        // What a replay would read from a topic of this watch: `after` resumes a topic, the
        // rest start where `from` says.
        let replays = w.from != StartAt::New || !w.after.is_empty();
        if let Some(g) = &w.group {
            if g.is_empty() || g.len() > MAX_GROUP_NAME {
                let msg = format!("a group name has 1 to {MAX_GROUP_NAME} bytes");
                return self.error(session, w.id, ErrorCode::BadRequest, msg);
            }
            // The members of a group share what is published from now on; a replay has no
            // fair way to be shared between members that join at different times.
            if replays {
                let msg = "a grouped watch starts at new (no from other than new, no after)";
                return self.error(session, w.id, ErrorCode::BadRequest, msg);
            }
        }
        if let Err(msg) = self.patterns_fit(session, w.patterns.len()) {
            return self.error(session, w.id, ErrorCode::RateLimited, msg);
        }
        let wid = self
            .core
            .watches
            .add(w.patterns.clone(), w.passive, w.group.as_deref());
        if self.core.watches.index_nodes() > MAX_INDEX_NODES {
            self.core.watches.remove(wid);
            let msg = format!(
                "the broker's pattern index is full ({MAX_INDEX_NODES} token positions in \
                 all watches); watch fewer or shorter distinct patterns"
            );
            return self.error(session, w.id, ErrorCode::RateLimited, msg);
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            self.core.watches.remove(wid);
            return;
        };
        let outbox = s.outbox.clone();
        s.watches.push(wid);
        s.client.watches += 1;
        let cancel = CancellationToken::new();
        let mode = if replays {
            Mode::Replaying {
                buffer: Vec::new(),
                buffered: 0,
                overflowed: false,
                covered: HashMap::new(),
            }
        } else {
            Mode::Live
        };
        self.watches.insert(
            wid,
            WatchState {
                session,
                outbox: outbox.clone(),
                mode,
                skipped: 0,
                lost: 0,
                cancel: cancel.clone(),
                floors: HashMap::new(),
            },
        );
        // The reply is queued before any delivery of this watch.
        self.reply(
            session,
            ServerFrame::WatchOk(WatchOk {
                id: w.id,
                watch: wid,
                time: now_ms(),
            }),
        );
        if !replays {
            return;
        }
        let mut ranges = Vec::new();
        let mut covered = HashMap::new();
        // Resumed past what this node holds (or of a topic it does not have yet): the
        // client has those; what comes live up to there is not sent again.
        let mut floors: HashMap<Arc<str>, u64> = HashMap::new();
        for (name, seq) in &w.after {
            let held = self.core.topics.get(name).map_or(0, |t| t.last_seq);
            if *seq > held {
                floors.insert(Arc::from(name.as_str()), *seq);
            }
        }
        if let Some(ws) = self.watches.get_mut(&wid) {
            ws.floors = floors;
        }
        for (t, upto) in self.matching_topics(&w.patterns) {
            covered.insert(t.id, upto);
            let from = match (w.after.get(&*t.name), w.from) {
                (Some(seq), _) => seq.saturating_add(1).max(t.first_seq),
                (None, StartAt::New) => upto + 1,
                (None, StartAt::All) => t.first_seq,
                (None, StartAt::Seq) => w.at.max(t.first_seq),
                (None, StartAt::Time) => match self.store.seq_at_time(&t, w.at) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("replay by time: {e}");
                        upto + 1
                    }
                },
                (None, StartAt::Last) => (upto + 1).saturating_sub(w.at.max(1)).max(t.first_seq),
            };
            if from <= upto {
                ranges.push(Range {
                    topic_id: t.id,
                    name: t.name.clone(),
                    from,
                    to: upto,
                });
            }
        }
        if let Some(ws) = self.watches.get_mut(&wid) {
            if let Mode::Replaying { covered: c, .. } = &mut ws.mode {
                *c = covered;
            }
        }
        self.spawn_replay(wid, outbox, ranges, cancel);
    }

    /// Would `more` patterns keep this connection and the broker within their pattern
    /// limits? The error says which limit is reached.
    fn patterns_fit(&self, session: u64, more: usize) -> Result<(), String> {
        let held: usize = self.sessions.get(&session).map_or(0, |s| {
            s.watches
                .iter()
                .filter_map(|id| self.core.watches.get(*id))
                .map(<[String]>::len)
                .sum()
        });
        if held + more > MAX_CONN_PATTERNS {
            return Err(format!(
                "this connection's watches hold {held} patterns; at most {MAX_CONN_PATTERNS} \
                 in all its watches"
            ));
        }
        let all = self.core.watches.patterns_held();
        if all + more > MAX_PATTERNS_HELD {
            return Err(format!(
                "the broker holds {all} watch patterns; at most {MAX_PATTERNS_HELD} in all \
                 connections"
            ));
        }
        Ok(())
    }

    fn spawn_replay(
        &self,
        wid: WatchId,
        outbox: Outbox,
        ranges: Vec<Range>,
        cancel: CancellationToken,
    ) {
        tokio::spawn(replay::run(
            self.store.clone(),
            wid,
            outbox,
            ranges,
            self.tx.clone(),
            cancel,
        ));
    }

    pub(super) fn replay_done(&mut self, wid: WatchId, lost: u64) {
        let Some(patterns) = self.core.watches.get(wid).map(<[String]>::to_vec) else {
            return;
        };
        let topics = self.matching_topics(&patterns);
        let Some(ws) = self.watches.get_mut(&wid) else {
            return;
        };
        ws.lost += lost;
        let Mode::Replaying {
            buffer,
            overflowed,
            covered,
            ..
        } = &mut ws.mode
        else {
            return;
        };
        if !*overflowed {
            let mut n = 0;
            for b in buffer.drain(..) {
                n += b.msgs.len() as u64;
                ws.outbox.force_deliver(wid, b);
            }
            let message = if ws.lost == 0 {
                "replay done; live from here".to_string()
            } else {
                format!(
                    "replay done; live from here. {} stored messages could not be read (damaged on disk) and were skipped",
                    ws.lost
                )
            };
            ws.outbox.reply(
                ServerFrame::Notice(Notice {
                    watch: wid,
                    kind: NoticeKind::Live,
                    skipped: ws.lost,
                    message,
                    consumer: None,
                }),
                false,
            );
            ws.mode = Mode::Live;
            self.delivered_total += n;
            return;
        }
        // Live messages overflowed the buffer during the replay: read them from the store
        // too, and buffer afresh from here.
        let mut ranges = Vec::new();
        for (t, upto) in topics {
            let from = covered
                .get(&t.id)
                .map_or(t.first_seq, |c| c + 1)
                .max(t.first_seq);
            covered.insert(t.id, upto);
            if from <= upto {
                ranges.push(Range {
                    topic_id: t.id,
                    name: t.name.clone(),
                    from,
                    to: upto,
                });
            }
        }
        *overflowed = false;
        buffer.clear();
        let outbox = ws.outbox.clone();
        let cancel = ws.cancel.clone();
        self.spawn_replay(wid, outbox, ranges, cancel);
    }

    pub(super) fn route(&mut self, w: WatchId, topic_id: u32, mut batch: Arc<Batch>) {
        let Some(ws) = self.watches.get_mut(&w) else {
            return;
        };
        if let Some(floor) = ws.floors.get(&batch.topic).copied() {
            let last = (batch.first_seq + batch.msgs.len() as u64).saturating_sub(1);
            if last <= floor {
                return;
            }
            ws.floors.remove(&batch.topic);
            if batch.first_seq <= floor {
                let mut b = (*batch).clone();
                b.msgs.drain(..(floor + 1 - b.first_seq) as usize);
                b.first_seq = floor + 1;
                batch = Arc::new(b);
            }
        }
        let n = batch.msgs.len() as u64;
        let bytes: u64 = batch.msgs.iter().map(|m| m.payload.len() as u64).sum();
        match &mut ws.mode {
            Mode::Live => {
                if ws.skipped > 0 && ws.outbox.has_room() {
                    send_slow_notice(w, ws);
                }
                if ws.skipped == 0 && ws.outbox.try_deliver(w, batch) {
                    self.delivered_total += n;
                    self.total_rate.add_out(n);
                    self.rates.entry(topic_id).or_default().add_out(n);
                    self.metrics.count_out(topic_id, n, bytes);
                } else {
                    if ws.skipped == 0 {
                        tracing::debug!(watch = w, "slow consumer: skipping");
                    }
                    ws.skipped += n;
                    self.skipped_total += n;
                }
            }
            Mode::Replaying {
                buffer,
                buffered,
                overflowed,
                ..
            } => {
                if *overflowed {
                    return;
                }
                let size = batch.wire_size();
                if *buffered + size > self.cfg.watch_budget {
                    // The replay will pick these up from the store instead.
                    *overflowed = true;
                    buffer.clear();
                    *buffered = 0;
                } else {
                    *buffered += size;
                    buffer.push(batch);
                }
            }
        }
    }

    /// Each message of `batch` to one member of group `g`, round robin; a member whose
    /// connection has no room is passed over, and only when none has room is the message
    /// skipped (counted at the member whose turn it was, like a slow consumer).
    pub(super) fn route_group(
        &mut self,
        g: GroupId,
        topic_id: u32,
        batch: &Arc<Batch>,
        groups: Option<&super::watch_groups::GroupTable>,
    ) {
        let key = self.core.watches.group_key(g).cloned();
        for (i, m) in batch.msgs.iter().enumerate() {
            // In a cluster, the group's message may be another node's to give.
            let seq = batch.first_seq + i as u64;
            if let Some(k) = &key {
                if !self.group_message_here(groups, k, &batch.topic, seq) {
                    continue;
                }
            }
            let one = if batch.msgs.len() == 1 {
                batch.clone()
            } else {
                Arc::new(Batch {
                    topic: batch.topic.clone(),
                    first_seq: batch.first_seq + i as u64,
                    time: batch.time,
                    sender: batch.sender.clone(),
                    msgs: vec![m.clone()],
                })
            };
            let watches = &mut self.watches;
            // Grouped watches never replay, so they are always live.
            let picked = self.core.watches.pick(g, |w| {
                let Some(ws) = watches.get_mut(&w) else {
                    return false;
                };
                if ws.skipped > 0 && ws.outbox.has_room() {
                    send_slow_notice(w, ws);
                }
                ws.skipped == 0 && ws.outbox.try_deliver(w, one.clone())
            });
            match picked {
                Some((_, true)) => {
                    self.delivered_total += 1;
                    self.total_rate.add_out(1);
                    self.rates.entry(topic_id).or_default().add_out(1);
                    self.metrics.count_out(topic_id, 1, m.payload.len() as u64);
                }
                Some((w, false)) => {
                    if let Some(ws) = self.watches.get_mut(&w) {
                        if ws.skipped == 0 {
                            tracing::debug!(watch = w, "slow consumer in a group: skipping");
                        }
                        ws.skipped += 1;
                    }
                    self.skipped_total += 1;
                }
                None => {}
            }
        }
    }

    pub(super) fn drop_watch(&mut self, w: WatchId) {
        self.core.watches.remove(w);
        if let Some(ws) = self.watches.remove(&w) {
            ws.cancel.cancel();
            ws.outbox.end_watch(w);
        }
    }
}

pub(super) fn send_slow_notice(watch: WatchId, ws: &mut WatchState) {
    ws.outbox.reply(
        ServerFrame::Notice(Notice {
            watch,
            kind: NoticeKind::SlowConsumer,
            skipped: ws.skipped,
            message: format!(
                "{} messages were skipped: the client did not read fast enough",
                ws.skipped
            ),
            consumer: None,
        }),
        false,
    );
    ws.skipped = 0;
}
