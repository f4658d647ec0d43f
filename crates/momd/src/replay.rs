//! Replay of stored messages for a watch that starts in the past. A task per watch reads
//! ranges from the store, waiting for room in the session's queue (replayed messages are
//! never skipped), then tells the broker it is done so the broker can switch the watch to
//! live at exactly the seq the replay ended (broker.rs, `replay_done`).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::Cmd;
use crate::core::{Batch, WatchId};
use crate::outbox::Outbox;
use crate::store::Store;

/// Seqs `from..=to` of one topic.
#[derive(Debug, Clone)]
pub struct Range {
    pub topic_id: u32,
    pub name: Arc<str>,
    pub from: u64,
    pub to: u64,
}

/// Bytes of payload read from the store per step.
const READ_CHUNK: usize = 512 * 1024;

pub async fn run(
    store: Store,
    watch: WatchId,
    outbox: Outbox,
    ranges: Vec<Range>,
    broker: mpsc::Sender<Cmd>,
    cancel: CancellationToken,
) {
    // Messages that could not be read (corrupt, or the read failed): reported, not hidden.
    let mut lost = 0u64;
    for r in ranges {
        let mut from = r.from;
        while from <= r.to {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = outbox.room() => {}
            }
            let st = store.clone();
            let name = r.name.clone();
            let (topic, to) = (r.topic_id, r.to);
            let res =
                tokio::task::spawn_blocking(move || st.read(topic, &name, from, to, READ_CHUNK))
                    .await;
            let batches: Vec<Batch> = match res {
                Ok(Ok(read)) => {
                    from = read.next_seq.max(from + 1);
                    lost += read.corrupt;
                    read.batches
                }
                Ok(Err(e)) => {
                    tracing::error!(watch, topic = &*r.name, "replay read failed: {e}");
                    lost += r.to + 1 - from;
                    break;
                }
                Err(_) => return,
            };
            for b in batches {
                if cancel.is_cancelled() || !outbox.force_deliver(watch, Arc::new(b)) {
                    return;
                }
            }
        }
    }
    if !cancel.is_cancelled() {
        let _ = broker.send(Cmd::ReplayDone { watch, lost }).await;
    }
}
