//! Group commit for the Raft logs of one node: appends write their entries, then hand their
//! completion callback here. One task takes every callback waiting, flushes the database
//! once for all of them, and completes them in the order they came. openraft is told an
//! entry is stored only after the flush that covers it (never on sled's own timer), and in
//! append order, so no later append is reported before an earlier one.

use std::io;

use openraft::storage::LogFlushed;
use tokio::sync::{mpsc, oneshot};

use crate::TypeConfig;

enum Waiter {
    Append(LogFlushed<TypeConfig>),
    Sync(oneshot::Sender<Result<(), String>>),
}

#[derive(Clone)]
pub(crate) struct Flusher {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl Flusher {
    /// Starts the flusher of `db` on the current tokio runtime. It stops when every handle
    /// is dropped.
    pub(crate) fn start(db: sled::Db) -> Flusher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            let mut group = Vec::new();
            while let Some(first) = rx.recv().await {
                group.push(first);
                while let Ok(more) = rx.try_recv() {
                    group.push(more);
                }
                let result = db
                    .flush_async()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
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

    /// Completes `cb` after the next flush.
    pub(crate) fn append(&self, cb: LogFlushed<TypeConfig>) {
        if let Err(mpsc::error::SendError(Waiter::Append(cb))) = self.tx.send(Waiter::Append(cb)) {
            cb.log_io_completed(Err(io::Error::other("the log flusher has stopped")));
        }
    }

    /// Waits for a flush that covers everything written so far.
    pub(crate) async fn sync(&self) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Waiter::Sync(done))
            .map_err(|_| "the log flusher has stopped".to_string())?;
        wait.await
            .map_err(|_| "the log flusher has stopped".to_string())?
    }
}
