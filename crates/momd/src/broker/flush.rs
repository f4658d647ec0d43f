//! Group commit: when a flush of the store starts, what it covers, and what is answered
//! when it ends (acks and deliveries only after the flush that made them durable); the
//! index flush that runs beside the acks.

use std::time::Instant;

use tokio::sync::oneshot;

use super::{Broker, GROUP_MAX, INDEX_FLUSH_EVERY};
use crate::config::FsyncMode;
use crate::store::StoreError;
use mom_proto::{ErrorCode, ServerFrame};

impl Broker {
    /// Enough publishes wait for the flush in progress to make the next one: take no more
    /// requests until it is done (the connections' buffers and TCP hold them meanwhile),
    /// so one flush's index batch stays bounded however many clients publish at once.
    pub(super) fn group_full(&self) -> bool {
        self.cfg.fsync == FsyncMode::Always
            && self.flush_rx.is_some()
            && self.staged_pending.len() >= GROUP_MAX
    }

    /// Start a flush of what was written. One fdatasync of the segment files is enough
    /// for an ack when the index holds nothing they cannot give back; the index is flushed
    /// too when it does, and every `INDEX_FLUSH_EVERY`.
    pub(super) fn start_flush(&mut self) {
        // An ack waits for the segment files and the heads file (`store/heads.rs`), which
        // says how far each topic's log was acknowledged past the index's end: a log cut
        // short there is then told from a write torn by a crash. The index is flushed with
        // them only when it holds what the log cannot give back (a new or removed topic),
        // and otherwise beside the acks (`maybe_flush_index`).
        let full = self.store.take_flush_kind(false);
        self.start_flush_of(full);
    }

    /// Every `INDEX_FLUSH_EVERY` while the index is written, flush it beside the acks (not
    /// in their way: a sled batch of a quarter second's writes takes a while). What a
    /// crash takes from it, a start gets back from the segment files (`store/tail.rs`).
    pub(super) fn maybe_flush_index(&mut self) {
        if self.index_flush_rx.is_some() || self.last_full_flush.elapsed() < INDEX_FLUSH_EVERY {
            return;
        }
        self.last_full_flush = Instant::now();
        if !self.store.take_index_unsynced() {
            return;
        }
        let store = self.store.clone();
        let (tx, rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(store.flush());
        });
        self.index_flush_rx = Some(rx);
    }

    pub(super) fn index_flush_done(&mut self, res: Result<usize, StoreError>) {
        match res {
            Ok(_) => {}
            Err(e) => {
                tracing::error!("index flush failed: {e}");
                self.metrics.flush_errors += 1;
                self.store.index_flush_failed();
                self.disk_write_failed(&e);
            }
        }
    }

    pub(super) fn start_flush_of(&mut self, full: bool) {
        self.flushing = std::mem::take(&mut self.pending);
        self.flushing_tickets = std::mem::take(&mut self.pending_tickets);
        self.dirty = false;
        self.flush_started = Some((Instant::now(), self.flushing.len()));
        self.flushing_full = full;
        if full {
            self.last_full_flush = Instant::now();
        }
        let store = self.store.clone();
        let (tx, rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(if full {
                store.flush()
            } else {
                store.sync_records()
            });
        });
        self.flush_rx = Some(rx);
    }

    pub(super) fn flush_done(&mut self, res: Result<usize, StoreError>) {
        if let Some((t0, n)) = self.flush_started.take() {
            self.metrics
                .flush_seconds
                .observe(t0.elapsed().as_secs_f64());
            self.metrics.batch_size.observe(n as f64);
        }
        if res.is_err() {
            self.metrics.flush_errors += 1;
        }
        let done = std::mem::take(&mut self.flushing);
        // Durable (or failed): their bytes are admitted for others again.
        self.flushing_tickets.clear();
        if res.is_err() && self.flushing_full {
            self.store.full_flush_failed();
        }
        match res {
            Ok(_) => {
                for p in done {
                    self.release(p);
                }
            }
            Err(e) => {
                tracing::error!("flush failed: {e}");
                self.disk_write_failed(&e);
                for p in done {
                    let Some((session, id)) = p.requester() else {
                        continue;
                    };
                    self.reply(
                        session,
                        ServerFrame::error(
                            Some(id),
                            ErrorCode::Unavailable,
                            format!("could not make the request durable ({e}); it may or may not be stored — retry with a msg_id to be safe"),
                        ),
                    );
                }
            }
        }
    }
}
