//! Replay of stored messages for a watch that starts in the past. A task per watch reads
//! ranges from the store, waiting for room in the session's queue (replayed messages are
//! never skipped), then tells the broker it is done so the broker can switch the watch to
//! live at exactly the seq the replay ended (broker.rs, `replay_done`).

use std::collections::VecDeque;
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

/// Bytes of payload read from the store per step, shared by the topics of a replay (each
/// reads at least `MIN_CHUNK`).
const READ_CHUNK: usize = 512 * 1024;
const MIN_CHUNK: usize = 16 * 1024;

/// Where the replay of one topic is.
struct Cursor {
    range: Range,
    from: u64,
    buf: VecDeque<Batch>,
}

impl Cursor {
    fn exhausted(&self) -> bool {
        self.from > self.range.to
    }
}

/// Replay `ranges`, merged by time across topics (each topic in seq order; a topic's
/// times never decrease, so the merge is in publish order at the grain of a record).
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
    let chunk = (READ_CHUNK / ranges.len().max(1)).max(MIN_CHUNK);
    let mut cursors: Vec<Cursor> = ranges
        .into_iter()
        .map(|range| Cursor {
            from: range.from,
            range,
            buf: VecDeque::new(),
        })
        .collect();
    loop {
        // Every topic with more to read has its next batches at hand.
        for c in cursors
            .iter_mut()
            .filter(|c| c.buf.is_empty() && !c.exhausted())
        {
            let st = store.clone();
            let name = c.range.name.clone();
            let (topic, from, to) = (c.range.topic_id, c.from, c.range.to);
            let res =
                tokio::task::spawn_blocking(move || st.read(topic, &name, from, to, chunk)).await;
            match res {
                Ok(Ok(read)) => {
                    c.from = read.next_seq.max(from + 1);
                    lost += read.corrupt;
                    c.buf.extend(read.batches);
                }
                Ok(Err(e)) => {
                    tracing::error!(watch, topic = &*c.range.name, "replay read failed: {e}");
                    lost += to + 1 - from;
                    c.from = to + 1;
                }
                Err(_) => return,
            }
        }
        // The oldest batch at hand goes next.
        let next = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buf.front().map(|b| (b.time, i)))
            .min();
        let Some((_, i)) = next else {
            if cursors.iter().all(Cursor::exhausted) {
                break;
            }
            continue;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = outbox.room() => {}
        }
        let Some(b) = cursors[i].buf.pop_front() else {
            continue;
        };
        if cancel.is_cancelled() || !outbox.force_deliver(watch, Arc::new(b)) {
            return;
        }
    }
    if !cancel.is_cancelled() {
        let _ = broker.send(Cmd::ReplayDone { watch, lost }).await;
    }
}
