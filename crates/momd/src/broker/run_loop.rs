//! The broker's loop: commands from the connections, the group commit and its flushes,
//! the timers, and an install of a snapshot under way (`snapshot.rs`).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::*;

impl Broker {
    /// Run until a `Shutdown` command (or every handle is gone).
    pub async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut batch_flush = match self.cfg.fsync {
            FsyncMode::Batch(d) => Some(tokio::time::interval(d)),
            _ => None,
        };
        let mut shutdown: Option<oneshot::Sender<bool>> = None;
        // A new cluster node's store gets `$sys.events` first: every other topic is then
        // created by the data group's log, in its order, so topic ids (which queue state
        // refers to) are the same on every node.
        if self.store.is_replica() && self.core.topics.len() == 0 {
            self.sys_event(r#"{"event":"replica_created"}"#.to_string());
            self.commit();
        }
        // Messages out of deliveries when momd last stopped go to their dead letter topics.
        // (A cluster node's queues keep their deliveries: there are none.)
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for n in names {
            let dead = self
                .queues
                .get_mut(&n)
                .map(|q| q.drain_dead())
                .unwrap_or_default();
            if !dead.is_empty() {
                self.dead_letter(&n, dead, now_ms());
                self.dirty_queues.insert(n);
            }
        }
        // Ack deadlines and fetch timeouts.
        let mut queue_tick = tokio::time::interval(Duration::from_millis(100));
        queue_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                res = async { self.flush_rx.as_mut().expect("guarded by the branch condition").await }, if self.flush_rx.is_some() => {
                    self.flush_rx = None;
                    let res = res.unwrap_or_else(|_| Err(StoreError::Corrupt { key: String::new(), reason: "flush task vanished".into() }));
                    self.flush_done(res);
                }
                res = async { (&mut self.installing.as_mut().expect("guarded by the branch condition").done).await }, if self.installing.is_some() => {
                    let res = res.unwrap_or_else(|_| Err("the install's thread vanished".into()));
                    if let Some(done) = self.install_done(res) {
                        shutdown = Some(done);
                    }
                }
                cmd = rx.recv(), if shutdown.is_none() && (self.installing.is_some() || !self.group_full()) => {
                    let Some(cmd) = cmd else { break };
                    if self.installing.is_some() {
                        // Only what needs no store now (`snapshot.rs`).
                        self.handle_installing(cmd);
                        continue;
                    }
                    if let Some(done) = self.handle(cmd) {
                        shutdown = Some(done);
                    }
                    // Group commit: take whatever else is waiting before flushing, up to a
                    // group's worth of publishes (a command may carry many requests).
                    for _ in 0..1024 {
                        if shutdown.is_some()
                            || self.group_full()
                            || self.staged_pending.len() >= GROUP_MAX
                        {
                            break;
                        }
                        if self.installing.is_some() {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(cmd) => {
                                if let Some(done) = self.handle(cmd) {
                                    shutdown = Some(done);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                res = async { self.index_flush_rx.as_mut().expect("guarded by the branch condition").await }, if self.index_flush_rx.is_some() => {
                    self.index_flush_rx = None;
                    let res = res.unwrap_or_else(|_| Err(StoreError::Corrupt { key: String::new(), reason: "flush task vanished".into() }));
                    self.index_flush_done(res);
                }
                _ = tick.tick(), if self.installing.is_none() => self.on_tick(),
                _ = queue_tick.tick(), if self.installing.is_none() => {
                    if !self.queues.is_empty() || !self.fetches.is_empty() {
                        self.expire_queues(now_ms());
                    }
                    self.share_interest();
                    self.share_groups(now_ms());
                }
                _ = async { batch_flush.as_mut().expect("guarded").tick().await }, if batch_flush.is_some() && self.installing.is_none() => {
                    if self.dirty && self.flush_rx.is_none() {
                        self.start_flush();
                    }
                }
            }
            // A snapshot install waits for the flushes of the old store in progress; none
            // starts meanwhile.
            if self.install_pending() {
                continue;
            }
            // With acks waiting for fsync anyway, publishes are written to the store only when
            // the next flush can start: one sled batch per flush, however many publishes
            // arrived meanwhile (sled pays two log writes per batch).
            // Requests and replies are written (and delivered) at once, whatever flush is
            // in progress (`release.rs`, `deliver_early`).
            if self.cfg.fsync != FsyncMode::Always || self.flush_rx.is_none() || self.staged_early {
                self.commit();
            }
            self.maybe_flush_index();
            let queue_flush = self.queue_flush_wanted && self.cfg.fsync == FsyncMode::Always;
            if self.flush_rx.is_none() && (!self.pending.is_empty() || queue_flush) {
                self.queue_flush_wanted = false;
                self.start_flush();
            }
            if let Some(done) = shutdown.take() {
                if self.flush_rx.is_none() && self.pending.is_empty() {
                    let flushed = match self.store.flush() {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::error!("final flush failed: {e}");
                            false
                        }
                    };
                    let _ = done.send(flushed);
                    return;
                }
                shutdown = Some(done);
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!("final flush failed: {e}");
        }
    }
}
