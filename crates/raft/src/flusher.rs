//! Group commit for the Raft logs of one node: appends write their entries into their
//! group's files (`log_files.rs`), note the files written, then hand their completion
//! callback here. One task takes every callback waiting, fdatasyncs the files written
//! since its last round once for all of them, and completes them in the order they came.
//! openraft is told an entry is stored only after the sync that covers it, and in append
//! order, so no later append is reported before an earlier one.
//!
//! A `sync` (a vote, a purge point, a snapshot: the Raft state in sled) flushes the sled
//! database too, in the same round.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use openraft::storage::LogFlushed;
use tokio::sync::{mpsc, oneshot};

use crate::TypeConfig;

enum Waiter {
    Append(LogFlushed<TypeConfig>),
    Sync(oneshot::Sender<Result<(), String>>),
}

/// The log files written and not yet synced, shared by every group's appends.
pub(crate) type Dirty = Arc<Mutex<Vec<Arc<File>>>>;

#[derive(Clone)]
pub(crate) struct Flusher {
    tx: mpsc::UnboundedSender<Waiter>,
}

/// Syncs each file written once (several appends of a group note the same file).
fn sync_all(mut files: Vec<Arc<File>>, db: Option<sled::Db>) -> Result<(), String> {
    files.sort_by_key(|f| Arc::as_ptr(f) as usize);
    files.dedup_by(|a, b| Arc::ptr_eq(a, b));
    for f in &files {
        f.sync_data()
            .map_err(|e| format!("cannot sync the Raft log: {e}"))?;
    }
    if let Some(db) = db {
        db.flush()
            .map_err(|e| format!("cannot flush the Raft state: {e}"))?;
    }
    Ok(())
}

impl Flusher {
    /// Starts the flusher on the current tokio runtime. It stops when every handle is
    /// dropped.
    pub(crate) fn start(db: sled::Db, dirty: Dirty) -> Flusher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            let mut group = Vec::new();
            while let Some(first) = rx.recv().await {
                group.push(first);
                while let Ok(more) = rx.try_recv() {
                    group.push(more);
                }
                // Every callback taken was sent after its files were noted.
                let files = std::mem::take(&mut *dirty.lock().unwrap_or_else(|p| p.into_inner()));
                let state = group
                    .iter()
                    .any(|w| matches!(w, Waiter::Sync(_)))
                    .then(|| db.clone());
                let result = tokio::task::spawn_blocking(move || sync_all(files, state))
                    .await
                    .unwrap_or_else(|e| Err(format!("the Raft log sync failed: {e}")));
                for waiter in group.drain(..) {
                    match waiter {
                        Waiter::Append(cb) => {
                            cb.log_io_completed(result.clone().map_err(io::Error::other))
                        }
                        Waiter::Sync(done) => {
                            let _ = done.send(result.clone());
                        }
                    }
                }
            }
        });
        Flusher { tx }
    }

    /// Completes `cb` after the next sync.
    pub(crate) fn append(&self, cb: LogFlushed<TypeConfig>) {
        if let Err(mpsc::error::SendError(Waiter::Append(cb))) = self.tx.send(Waiter::Append(cb)) {
            cb.log_io_completed(Err(io::Error::other("the log flusher has stopped")));
        }
    }

    /// Waits for a sync that covers everything written so far, the Raft state included.
    pub(crate) async fn sync(&self) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Waiter::Sync(done))
            .map_err(|_| "the log flusher has stopped".to_string())?;
        wait.await
            .map_err(|_| "the log flusher has stopped".to_string())?
    }
}
