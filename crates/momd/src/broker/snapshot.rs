//! Cluster mode: the broker's part in snapshots of the data group (`cluster/snapshot.rs`).
//! A cut is taken between two commands, so it is one moment of the store
//! (`store/snapshot.rs`). An install replaces the store under the broker: it waits until
//! no flush of the old store is running, carries the install out, reopens the store and
//! loads the core from it again.
//!
//! Watches and queue consumers on this node end with a notice (`ended`) saying why: the
//! messages they were following were replaced by the snapshot's, and a watch that went on
//! would see seqs jump or repeat without a word. Their clients subscribe again (from the
//! seq they had, or `all`) and read the new store.

use std::path::PathBuf;

use mom_proto::{ErrorCode, Notice, NoticeKind, ServerFrame};
use tokio::sync::oneshot;

use super::{now_ms, Broker};
use crate::cluster::data::APPLIED_KEY;
use crate::core::{Dedupe, Topics};
use crate::store::snapshot::Cut;

/// What an install answers: the applied Raft state the new store holds.
pub type Installed = Result<Option<Vec<u8>>, String>;

/// What the broker's end of a notice says.
const REPLACED: &str = "this node installed a snapshot of the cluster's data: the watch \
                        ended; subscribe again to read from the new state";

impl Broker {
    /// The cut of a snapshot into `dir` (see `Store::snapshot_cut`).
    pub(super) fn snapshot_cut(&mut self, dir: PathBuf) -> Result<Cut, String> {
        // What was applied reaches the store first.
        self.commit();
        let t0 = std::time::Instant::now();
        let res = self
            .store
            .snapshot_cut(&dir, APPLIED_KEY)
            .map_err(|e| format!("taking the snapshot's cut: {e}"));
        tracing::debug!("snapshot cut in {:.1?} on the broker task", t0.elapsed());
        res
    }

    /// An install waits for the flushes of the old store in progress.
    pub(super) fn install_wanted(&mut self, reply: oneshot::Sender<Installed>) {
        if let Some(old) = self.install_waiting.replace(reply) {
            let _ = old.send(Err("another install came first".into()));
        }
    }

    /// Whether an install waits, and is now done (no flush of the old store is running).
    /// While it waits, no new flush starts.
    pub(super) fn install_pending(&mut self) -> bool {
        if self.install_waiting.is_none() {
            return false;
        }
        if self.flush_rx.is_some() || self.index_flush_rx.is_some() {
            return true;
        }
        if let Some(reply) = self.install_waiting.take() {
            let t0 = std::time::Instant::now();
            let res = self.install_now();
            tracing::info!(
                ok = res.is_ok(),
                "data group snapshot installed in the store in {:.1?}",
                t0.elapsed()
            );
            let _ = reply.send(res);
        }
        false
    }

    fn install_now(&mut self) -> Installed {
        // What is staged goes to the old store and is answered as it would be.
        self.commit();
        let flushed = self.store.flush();
        self.flushing = std::mem::take(&mut self.pending);
        self.flushing_tickets = std::mem::take(&mut self.pending_tickets);
        self.flush_done(flushed);
        self.end_followers();
        let t0 = std::time::Instant::now();
        self.store
            .finish_install()
            .map_err(|e| format!("installing the snapshot in the store: {e}"))?;
        let t1 = std::time::Instant::now();
        let store = self
            .store
            .reopen()
            .map_err(|e| format!("reopening the store after the install: {e}"))?;
        let loaded = store
            .load(now_ms(), self.core.config.dedupe_window_ms)
            .map_err(|e| format!("loading the installed store: {e}"))?;
        tracing::info!(
            "data group snapshot in the store: files and index in {:.1?}, loaded in {:.1?}",
            t1 - t0,
            t1.elapsed()
        );
        let mut dedupe = Dedupe::default();
        for (topic, id, seq, time) in loaded.dedupe {
            dedupe.insert(topic, id, seq, time);
        }
        let mut topics = Topics::from_stored(loaded.topics, loaded.next_topic_id);
        for d in &loaded.damage {
            topics.note_damage(d.topic_id, d.first_seq, d.last_seq);
        }
        // The core keeps its counters (watch ids go on, never given twice).
        self.core.topics = topics;
        self.core.dedupe = dedupe;
        let mut set = crate::core::QueueSet::default();
        let now = now_ms();
        for r in loaded.queues {
            set.insert(crate::core::queues::Queue::from_record(r, now));
        }
        self.queues = set;
        self.store = store;
        self.load_watch_groups();
        self.dirty_queues.clear();
        self.to_trim.clear();
        self.rates.clear();
        self.queue_rates.clear();
        self.consumer_rr.clear();
        // Takes under way were for consumers and fetches that just ended; what this node's
        // consumers hold in the installed queues comes back (as at a restart).
        self.taking.clear();
        self.replica_taken.clear();
        if let Some(node) = self.cluster.as_ref().map(|c| c.node_id()) {
            self.propose_queue(crate::cluster::data::QueueOp::NodeStarted { node }, None);
        }
        self.report_damage(&loaded.damage);
        self.store
            .meta(APPLIED_KEY)
            .map_err(|e| format!("reading the installed store's applied state: {e}"))
    }

    /// Ends every watch, queue consumer and waiting fetch of this node, saying why.
    fn end_followers(&mut self) {
        let watches: Vec<_> = self.watches.keys().copied().collect();
        for w in watches {
            if let Some(ws) = self.watches.get(&w) {
                ws.outbox.reply(
                    ServerFrame::Notice(Notice {
                        watch: w,
                        kind: NoticeKind::Ended,
                        skipped: 0,
                        message: REPLACED.into(),
                        consumer: None,
                    }),
                    false,
                );
            }
            self.drop_watch(w);
        }
        for s in self.sessions.values_mut() {
            s.watches.clear();
        }
        for (id, c) in std::mem::take(&mut self.consumers) {
            if let Some(s) = self.sessions.get(&c.session) {
                s.outbox.reply(
                    ServerFrame::Notice(Notice {
                        watch: 0,
                        kind: NoticeKind::Ended,
                        skipped: 0,
                        message: REPLACED.replace("the watch", "the consumer"),
                        consumer: Some(id),
                    }),
                    false,
                );
            }
        }
        for f in std::mem::take(&mut self.fetches) {
            self.error(
                f.session,
                f.id,
                ErrorCode::Unavailable,
                "this node installed a snapshot of the cluster's data: fetch again",
            );
        }
    }
}
