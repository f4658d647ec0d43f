//! What a session sends: replies and deliveries queued for its writer task.
//!
//! Everything queued here is charged to one byte budget per session (`--watch-buffer`):
//! replies by an estimate of their size, deliveries by their wire size. A live delivery that
//! would exceed the budget is skipped and counted (slow consumer); a replay waits for room;
//! a reply is never dropped: instead the session reads no request while the queue is over
//! half the budget, so a client that does not read its replies stops being read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use mom_proto::ServerFrame;
use tokio::sync::{mpsc, Notify};

use crate::core::Batch;

pub enum Out {
    /// A reply; `permit` says it answers a request that holds an in-flight permit.
    Reply {
        /// Boxed: a channel allocates its slots in blocks of 32 when made, and frames are
        /// hundreds of bytes, so an idle connection would hold 12 KiB of empty slots.
        frame: Box<ServerFrame>,
        permit: bool,
        bytes: usize,
    },
    /// Messages for a watch. `bytes` were charged to the budget.
    Deliver {
        watch: u64,
        batch: Arc<Batch>,
        bytes: usize,
    },
    /// A request that needs no reply (fire-and-forget publish) is done: return its permit.
    Release(u64),
    /// Send this frame, then close the connection.
    Close(Box<ServerFrame>),
}

struct Budget {
    queued: AtomicUsize,
    limit: usize,
    room: Notify,
}

/// Per-session counters shown in stats.
#[derive(Default)]
pub struct Counters {
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
}

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    budget: Arc<Budget>,
    pub counters: Arc<Counters>,
    ended: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

pub struct OutboxRx {
    pub rx: mpsc::UnboundedReceiver<Out>,
    budget: Arc<Budget>,
    ended: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

pub fn outbox(limit: usize) -> (Outbox, OutboxRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Budget {
        queued: AtomicUsize::new(0),
        limit,
        room: Notify::new(),
    });
    let ended = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    (
        Outbox {
            tx,
            budget: budget.clone(),
            counters: Arc::default(),
            ended: ended.clone(),
        },
        OutboxRx { rx, budget, ended },
    )
}

impl Outbox {
    /// Queue a reply. False when the session is gone.
    /// Queue a reply. Its estimated size is charged to the budget too, so a client that
    /// sends requests with big answers but never reads them stops being read (the session
    /// waits for [`Outbox::room`] before each request). False when the session is gone.
    pub fn reply(&self, frame: ServerFrame, permit: bool) -> bool {
        let bytes = estimate(&frame);
        self.budget.queued.fetch_add(bytes, Ordering::AcqRel);
        if self
            .tx
            .send(Out::Reply {
                frame: Box::new(frame),
                permit,
                bytes,
            })
            .is_err()
        {
            self.budget.queued.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// The watch ended: deliveries still queued for it are not sent.
    pub fn end_watch(&self, watch: u64) {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(watch);
    }

    pub fn release(&self, id: u64) {
        let _ = self.tx.send(Out::Release(id));
    }

    pub fn close(&self, frame: ServerFrame) {
        let _ = self.tx.send(Out::Close(Box::new(frame)));
    }

    /// Queue a live delivery if it fits the budget. False means it was skipped.
    pub fn try_deliver(&self, watch: u64, batch: Arc<Batch>) -> bool {
        let bytes = batch.wire_size();
        let q = self.budget.queued.load(Ordering::Acquire);
        // An empty queue always takes one batch, so a batch bigger than the budget can pass.
        if q > 0 && q + bytes > self.budget.limit {
            return false;
        }
        self.push_deliver(watch, batch, bytes)
    }

    /// Queue a delivery regardless of the budget (replay waits for room before it reads).
    pub fn force_deliver(&self, watch: u64, batch: Arc<Batch>) -> bool {
        let bytes = batch.wire_size();
        self.push_deliver(watch, batch, bytes)
    }

    fn push_deliver(&self, watch: u64, batch: Arc<Batch>, bytes: usize) -> bool {
        self.budget.queued.fetch_add(bytes, Ordering::AcqRel);
        let n = batch.msgs.len() as u64;
        if self
            .tx
            .send(Out::Deliver {
                watch,
                batch,
                bytes,
            })
            .is_err()
        {
            self.budget.queued.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        self.counters.msgs_out.fetch_add(n, Ordering::Relaxed);
        true
    }

    /// Has the queue room (below half the budget)?
    pub fn has_room(&self) -> bool {
        self.budget.queued.load(Ordering::Acquire) <= self.budget.limit / 2
    }

    /// Wait until the queue is below half its budget.
    pub async fn room(&self) {
        loop {
            let notified = self.budget.room.notified();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }
}

impl OutboxRx {
    pub fn ended(&self, watch: u64) -> bool {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&watch)
    }

    /// The writer wrote a delivery of `bytes`.
    pub fn sent(&self, bytes: usize) {
        let prev = self.budget.queued.fetch_sub(bytes, Ordering::AcqRel);
        if prev.saturating_sub(bytes) <= self.budget.limit / 2 {
            self.budget.room.notify_waiters();
        }
    }
}

/// About how many bytes a reply takes on the wire (errs high).
fn estimate(frame: &ServerFrame) -> usize {
    const TOPIC: usize = 320;
    match frame {
        ServerFrame::TopicList(l) => {
            64 + l.topics.iter().map(|t| TOPIC + t.name.len()).sum::<usize>()
        }
        ServerFrame::Stats(s) => {
            1024 + s.topics.iter().map(|t| TOPIC + t.name.len()).sum::<usize>()
                + s.clients
                    .iter()
                    .map(|c| {
                        256 + c.name.len()
                            + c.user.len()
                            + c.addr.len()
                            + strings(&c.watch_patterns)
                            + strings(&c.consumers)
                    })
                    .sum::<usize>()
                + s.queues.iter().map(queue).sum::<usize>()
        }
        ServerFrame::PublishOk(p) => 96 + p.topic.len() + 9 * p.seqs.len(),
        ServerFrame::Error(e) => 96 + e.message.len(),
        ServerFrame::Notice(n) => 96 + n.message.len(),
        ServerFrame::TopicInfo(t) => 64 + TOPIC + t.topic.name.len(),
        ServerFrame::QueueDeliver(d) => 64 + messages(&d.msgs),
        ServerFrame::FetchOk(f) => 64 + messages(&f.msgs),
        ServerFrame::QueueList(l) => 64 + l.queues.iter().map(queue).sum::<usize>(),
        _ => 256,
    }
}

/// Each string with its MessagePack header (errs high).
fn strings(v: &[String]) -> usize {
    v.iter().map(|p| p.len() + 8).sum()
}

fn queue(q: &mom_proto::QueueInfo) -> usize {
    512 + q.name.len() + q.owner.len() + strings(&q.bindings)
}

fn messages(msgs: &[mom_proto::Message]) -> usize {
    msgs.iter()
        .map(|m| {
            let h: usize = m.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
            96 + m.topic.len() + m.payload.len() + h + m.sender.user.len() + m.sender.name.len()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    /// What an idle connection's outbox channel holds is 32 slots of this.
    #[test]
    fn an_outbox_slot_is_small() {
        assert!(std::mem::size_of::<super::Out>() <= 48);
    }
}
