//! The store: everything momd keeps on disk. Message records of every topic live in one
//! append-only log of segment files ([`segments`]); sled holds the index and everything
//! small, in one tree with key prefixes, so a publish (its index entries, its topic's
//! counters and its dedupe entries) is one atomic `apply_batch` (DESIGN.md, Storage and
//! durability). A topic costs a few index keys, not files.
//!
//! sled keys:
//! - `M` topic_id(u32 BE) first_seq(u64 BE) → where a record is and what it holds (see
//!   [`IndexEntry`]). Ordered by seq, so the record holding seq N is the last key ≤ (topic,
//!   N): sled's ordered keys are the seq index.
//! - `T` topic_id → the topic's state (name, limits, first/last seq, counters).
//! - `D` topic_id msg_id → (seq, time) of a dedupe entry.
//! - `G` segment(u64 BE) → live records and bytes in that segment file (`live.rs`).
//! - `Q` queue name → the queue's definition, cursors and outstanding deliveries.
//! - `S` name → server meta (server id, next topic and client ids, where the indexed part
//!   of the log ends).
//!
//! Durability: a publish is acknowledged once its records are fdatasynced, with the heads
//! file naming how far each topic written since the index's last flush reached
//! ([`Store::sync_records`], `heads.rs`); the index catches up beside the acks, its writes
//! waiting in `overlay.rs` until then ([`Store::flush`]), and an ack waits for it too only
//! when it holds what the log cannot give back (a new or removed topic). Topic and queue
//! states also go to a journal synced with the log (`journal.rs`). At start, the records
//! written after the index's end are indexed again and a torn tail (written, never
//! acknowledged) is cut off (`tail.rs`); a log shorter than its index or the heads file
//! says is damage, reported (`recover.rs`).

mod big;
pub mod check;
mod compact;
mod flush;
mod heads;
pub mod journal;
mod keys;
mod live;
mod overlay;
mod read;
pub mod record;
mod recover;
mod replica;
mod retention;
pub mod segments;
pub mod shard_snapshot;
mod side;
pub mod snapshot;
mod space;
mod tail;
mod upgrade;

use std::path::{Path, PathBuf};

use std::sync::Arc;

use mom_proto::Sender;

use crate::core::queues::QueueRecord;
use crate::core::shards::Shard;
use crate::core::{Batch, NewMsg, TopicState};
use segments::{Loc, Segments};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("segment file: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt record {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// Did this fail for lack of disk space?
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io(e) => crate::disk::is_disk_full(e),
            StoreError::Sled(sled::Error::Io(e)) => crate::disk::is_disk_full(e),
            _ => false,
        }
    }
}

/// What was on disk at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub topics: Vec<TopicState>,
    pub next_topic_id: u32,
    /// (topic id, msg id, seq, time)
    pub dedupe: Vec<(u32, String, u64, u64)>,
    pub server_id: String,
    pub next_client_id: u64,
    pub queues: Vec<QueueRecord>,
    /// Damaged records found among each topic's newest (kept, not cut; see `recover_tail`).
    pub damage: Vec<check::Damage>,
}

/// Messages of one topic read back for a replay.
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub batches: Vec<Batch>,
    /// The next seq to read from (past the last message returned or skipped).
    pub next_seq: u64,
    /// Messages whose checksum did not match; they were skipped and logged.
    pub corrupt: u64,
}

/// Publishes gathered for one atomic write ([`Store::apply`]).
#[derive(Default)]
pub struct Staged {
    /// Index writes (dedupe entries, queue states), moved to the overlay by `apply`.
    writes: overlay::Writes,
    /// Queue states for the journal (`journal.rs`), appended by `apply`.
    queues: Vec<journal::Entry>,
    /// Publishes to write, in the order they were sequenced.
    runs: Vec<(u32, Arc<Batch>)>,
    /// Topics whose state is written with them.
    topics: std::collections::BTreeSet<u32>,
    /// Bytes of records staged (about).
    pub bytes: usize,
    /// Publishes and queue states staged.
    pub count: usize,
    /// Topics created by what is staged: each one's state goes to the log before its
    /// records (a record of seq 0), so a start that finds them past the index knows it.
    created: Vec<u32>,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    segs: Arc<Segments>,
    /// sled's log file. sled's own flush ends in `sync_file_range`, which neither flushes
    /// the device's write cache nor the file's size; an `fdatasync` of this file after it
    /// is what makes an ack survive a power cut, not just a crash of momd.
    log: Arc<std::fs::File>,
    /// Bytes kept allocated past the end of sled's log file ([`Store::keep_index_room`]).
    index_room: u64,
    /// Milliseconds momd was down in all, as of this start: a dedupe entry's time is kept
    /// less this, so the window counts only the time momd runs (see `recover.rs`).
    downtime: Arc<std::sync::atomic::AtomicU64>,
    /// sled holds writes the segment files cannot give back: the next flush must be a
    /// full one ([`Store::flush`]) before what waits for it is answered.
    index_needed: Arc<AtomicBool>,
    /// sled was written since the last full flush began.
    index_unsynced: Arc<AtomicBool>,
    /// Index writes not yet in sled (`overlay.rs`).
    overlay: Arc<std::sync::Mutex<overlay::Overlay>>,
    /// One full flush at a time: the overlay's writes reach sled in the order made.
    flush_lock: Arc<std::sync::Mutex<()>>,
    /// Queue states, durable with the segment files (`journal.rs`).
    journal: Arc<std::sync::Mutex<journal::Journal>>,
    /// The records read last, decoded: a queue takes a few messages at a time out of a
    /// record that holds a whole group commit's.
    recent: Arc<std::sync::Mutex<read::Recent>>,
    /// The message sizes of the last record a trim cut into (`retention.rs`): a topic
    /// capped by count (`$sys.events`) is cut inside its oldest record at every write.
    cut_sizes: Arc<std::sync::Mutex<Option<retention::CutSizes>>>,
    journal_sync: Arc<std::sync::Mutex<()>>,
    /// Live records per segment file (`live.rs`).
    live: Arc<std::sync::Mutex<live::Live>>,
    /// The segment being compacted (`compact.rs`).
    compacting: Arc<std::sync::Mutex<Option<compact::Compacting>>>,
    /// The topics written past the index's durable end, and the file naming their heads
    /// for the acks that wait for the log only (`heads.rs`).
    heads: Arc<std::sync::Mutex<heads::Heads>>,
    /// What that file named when the store was opened, for the start's check.
    heads_found: Arc<std::sync::Mutex<Vec<(u32, u64)>>>,
    /// The thread that runs the second of two syncs side by side (`side.rs`).
    side: Arc<side::Side>,
    /// A replica of a cluster (`replica.rs`): what the log holds past the index is
    /// dropped at start, since the Raft log gives it again.
    replica: bool,
    /// How the node's topics are spread over shards (`core/shards.rs`): a topic id is its
    /// shard and a number of the node's topic counter.
    shards: crate::core::shards::Shards,
}

use std::sync::atomic::{AtomicBool, Ordering};

pub use keys::IndexEntry;
use keys::*;

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: format!("{key:02x?}"),
        reason: reason.to_string(),
    }
}

impl Store {
    /// Open (or create) the store in `dir`. The caller holds the directory lock.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        space::remove_unfinished_snapshots(&dir.join("db"))?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(cache_bytes)
            // Only momd flushes the index, and only after the segment files it points into
            // are synced (`flush`): an index entry on disk then always names a record that
            // reached the disk whole, so one that does not read back is damage, never a
            // write torn by a crash.
            .flush_every_ms(None)
            .open()?;
        // Opened for writing only so that room can be allocated past its end.
        let log = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("db").join("db"))?;
        let store = Store::assemble(db, Arc::new(log), dir)?;
        store.upgrade_topic_dirs()?;
        Ok(store)
    }

    /// The store over an open index: the segment files, journal and heads file of `dir`
    /// opened, the live counts read from the index.
    fn assemble(db: sled::Db, log: Arc<std::fs::File>, dir: &Path) -> Result<Store> {
        let segs = Segments::open(&dir.join(segments::DIR))?;
        let mut counts = live::Live::default();
        for kv in db.scan_prefix([P_SEG]) {
            let (k, v) = kv?;
            let (Some(seg), Some(v)) = (live::segment_of_key(&k), live::SegLive::decode(&v)) else {
                return Err(corrupt(&k, "not a segment count"));
            };
            counts.set(seg, v);
        }
        let (heads, heads_found) = heads::Heads::open(dir)?;
        let store = Store {
            db,
            dir: dir.to_path_buf(),
            segs: Arc::new(segs),
            log,
            index_room: 0,
            replica: false,
            shards: Default::default(),
            downtime: Arc::default(),
            index_needed: Arc::default(),
            index_unsynced: Arc::default(),
            overlay: Arc::default(),
            flush_lock: Arc::default(),
            journal: Arc::new(std::sync::Mutex::new(journal::Journal::open(
                &dir.join("queues"),
            )?)),
            journal_sync: Arc::default(),
            recent: Arc::default(),
            cut_sizes: Arc::default(),
            live: Arc::new(std::sync::Mutex::new(counts)),
            compacting: Arc::default(),
            heads: Arc::new(std::sync::Mutex::new(heads)),
            heads_found: Arc::new(std::sync::Mutex::new(heads_found)),
            side: Arc::new(side::Side::new()?),
        };
        Ok(store)
    }

    /// Add a publish to `staged`: its dedupe entries now; its records, index entries and
    /// the topic's state when [`Store::apply`] writes them, with every other publish to
    /// the same topic in one record (up to `RECORD_MAX_BYTES`).
    pub fn stage_publish(
        &self,
        staged: &mut Staged,
        topic_id: u32,
        created: bool,
        batch: Option<&Arc<Batch>>,
    ) {
        if created && !staged.created.contains(&topic_id) {
            staged.created.push(topic_id);
        }
        if let Some(b) = batch {
            for (i, m) in b.msgs.iter().enumerate() {
                if let Some(id) = &m.msg_id {
                    let mut v = Vec::with_capacity(16);
                    v.extend_from_slice(&(b.first_seq + i as u64).to_be_bytes());
                    v.extend_from_slice(&b.time.saturating_sub(self.downtime()).to_be_bytes());
                    staged.writes.insert(dedupe_key(topic_id, id), Some(v));
                }
            }
            staged.bytes += b.msgs.iter().map(|m| m.size() as usize + 24).sum::<usize>() + 64;
            staged.runs.push((topic_id, b.clone()));
        }
        staged.topics.insert(topic_id);
        staged.count += 1;
    }

    /// Add a queue's state to `staged`.
    pub fn stage_queue(&self, staged: &mut Staged, q: &QueueRecord) {
        let v = rmp_serde::to_vec(q).expect("a queue record always encodes");
        staged.bytes += v.len();
        staged.queues.push(journal::Entry::Put(v.clone()));
        staged
            .writes
            .insert(queue_key(&q.def.name, q.shard), Some(v));
        staged.count += 1;
    }

    /// Remove shard `shard`'s part of a queue's state (written with the next flush).
    pub fn remove_queue(&self, name: &str, shard: Shard) -> Result<()> {
        let mut o = self.overlay();
        self.journal()
            .append(&journal::Entry::Remove(name.to_string(), shard))?;
        o.remove(queue_key(name, shard));
        self.index_unsynced.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Write what was staged: each topic's records to the log (one append per record),
    /// then the index entries, topic states (`topic` gives each one's state now) and dedupe
    /// entries to the overlay, for the next full flush. On failure nothing of it stays: the
    /// records already appended are cut off again, so their seqs can be given anew.
    pub fn apply<'t>(
        &self,
        mut staged: Staged,
        topic: impl Fn(u32) -> Option<&'t TopicState>,
        next_topic_id: u32,
    ) -> Result<()> {
        if staged.count == 0 {
            return Ok(());
        }
        self.index_unsynced.store(true, Ordering::Relaxed);
        let mut by_topic: std::collections::BTreeMap<u32, Vec<&Batch>> = Default::default();
        for (t, b) in &staged.runs {
            by_topic.entry(*t).or_default().push(b);
        }
        // Where the log ended before this write: cut back to it on failure.
        let mut first_loc: Option<Loc> = None;
        let mut last_loc: Option<Loc> = None;
        let mut locs: Vec<Loc> = Vec::new();
        let mut writes = std::mem::take(&mut staged.writes);
        let res = (|| -> Result<()> {
            for id in &staged.created {
                if let Some(t) = topic(*id) {
                    let loc = self.segs.append(*id, 0, &encode_topic(t))?;
                    first_loc.get_or_insert(loc);
                    last_loc = Some(loc);
                }
            }
            for (t, batches) in &by_topic {
                for rec in record::plan(batches) {
                    let body = rec.encode();
                    let loc = self.segs.append(*t, rec.first_seq, &body)?;
                    first_loc.get_or_insert(loc);
                    last_loc = Some(loc);
                    locs.push(loc);
                    let entry = IndexEntry {
                        loc,
                        count: rec.count,
                        time: rec.time,
                        bytes: rec.bytes,
                    };
                    writes.insert(
                        msg_key(*t, rec.first_seq).to_vec(),
                        Some(entry.encode().to_vec()),
                    );
                }
            }
            Ok(())
        })();
        let cut_back = |first_loc: Option<Loc>| {
            self.recent().clear();
            if let Some(loc) = first_loc {
                if let Err(e) = self.segs.cut_at(loc) {
                    tracing::error!("cannot cut back a failed write: {e}");
                }
            }
        };
        if let Err(e) = res {
            cut_back(first_loc);
            return Err(e);
        }
        for id in &staged.topics {
            if let Some(t) = topic(*id) {
                writes.insert(topic_key(t.id).to_vec(), Some(encode_topic(t)));
            }
        }
        writes.insert(
            meta_key("next_topic_id"),
            Some(u64::from(next_topic_id).to_be_bytes().to_vec()),
        );
        if let Some(end) = last_loc {
            writes.insert(meta_key(LOG_END), Some(encode_pos(end.end())));
        }
        // The overlay's lock covers the journal's append too: a full flush takes both at
        // one point (`flush`).
        let mut o = self.overlay();
        let entries = staged.queues;
        if !entries.is_empty() {
            let mut j = self.journal();
            for e in &entries {
                if let Err(e) = j.append(e) {
                    drop(j);
                    drop(o);
                    cut_back(first_loc);
                    return Err(e.into());
                }
            }
        }
        {
            let mut live = self.live();
            for loc in &locs {
                let (seg, v) = live.add(loc);
                writes.insert(live::seg_key(seg).to_vec(), Some(v.encode()));
            }
        }
        o.extend(writes);
        drop(o);
        {
            let mut h = self.heads();
            for (t, batches) in &by_topic {
                let last = batches
                    .iter()
                    .map(|b| b.first_seq + (b.msgs.len() as u64).saturating_sub(1))
                    .max();
                if let Some(last) = last.filter(|_| batches.iter().any(|b| !b.msgs.is_empty())) {
                    h.note_write(*t, last);
                }
            }
        }
        // A new topic is named by id in the heads file (and in queue bindings): its state
        // is in the index before anything waiting for this write is answered.
        if !staged.created.is_empty() {
            self.needs_index_flush();
        }
        Ok(())
    }

    /// Stage and write one publish.
    #[cfg(test)]
    pub fn append(
        &self,
        plan: &crate::core::PublishPlan,
        topics: &crate::core::Topics,
    ) -> Result<()> {
        let mut staged = Staged::default();
        let batch = (!plan.stored.is_empty()).then(|| {
            Arc::new(Batch {
                topic: Arc::from(""),
                first_seq: plan.first_seq,
                time: plan.time,
                sender: plan.sender.clone(),
                msgs: plan.stored.clone(),
            })
        });
        self.stage_publish(&mut staged, plan.topic_id, plan.created, batch.as_ref());
        self.apply(staged, |id| topics.by_id(id), topics.next_id())
    }

    /// Stage a topic's state (limits changed, or created empty).
    pub fn put_topic(&self, topic: &TopicState, next_topic_id: u32) -> Result<()> {
        let mut o = self.overlay();
        self.journal()
            .append(&journal::Entry::Topic(encode_topic(topic)))?;
        self.index_unsynced.store(true, Ordering::Relaxed);
        o.put(topic_key(topic.id).to_vec(), encode_topic(topic));
        o.put(
            meta_key("next_topic_id"),
            u64::from(next_topic_id).to_be_bytes().to_vec(),
        );
        Ok(())
    }

    /// Remove a topic: its index and dedupe entries and its state, in the overlay (gone
    /// from sled together with the next full flush, which whoever asked waits for). Its
    /// records stay in the log as dead bytes; a segment file goes when none of its records
    /// is live (`live.rs`), and compaction copies the others out of a mostly dead one.
    pub fn remove_topic(&self, topic: u32) -> Result<()> {
        self.recent().clear();
        self.needs_index_flush();
        let mut removals: Vec<(Vec<u8>, Option<Loc>)> = Vec::new();
        for item in self.entries_from(topic, 0)? {
            let (_, e, key) = item?;
            removals.push((key, Some(e.loc)));
        }
        let lo = prefix(P_DEDUPE, topic).to_vec();
        let mut hi = lo.clone();
        hi.push(0xff);
        let over = self.overlay().range(&lo, &hi);
        let sled = self.db.scan_prefix(&lo).map(|kv| {
            let (k, v) = kv?;
            Ok((k.to_vec(), v.to_vec()))
        });
        for kv in read::overlay_merge(over, sled) {
            removals.push((kv?.0, None));
        }
        let mut o = self.overlay();
        let mut live = self.live();
        for (k, loc) in removals {
            if let Some(loc) = loc {
                let (seg, v) = live.sub(&loc);
                o.put(live::seg_key(seg).to_vec(), v.encode());
            }
            o.remove(k);
        }
        o.remove(topic_key(topic).to_vec());
        Ok(())
    }

    pub fn remove_dedupe(&self, entries: &[(u32, String)]) -> Result<()> {
        self.index_unsynced.store(true, Ordering::Relaxed);
        let mut o = self.overlay();
        for (t, id) in entries {
            o.remove(dedupe_key(*t, id));
        }
        Ok(())
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, overlay::Overlay> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, journal::Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve the next global client id (persisted with the next flush).
    pub fn next_client_id(&self) -> Result<u64> {
        self.index_unsynced.store(true, Ordering::Relaxed);
        let v = self
            .db
            .update_and_fetch(meta_key("next_client_id"), |old| {
                let n = old.and_then(be_u64).unwrap_or(1) + 1;
                Some(n.to_be_bytes().to_vec())
            })?;
        Ok(v.and_then(|v| be_u64(&v)).unwrap_or(2) - 1)
    }

    /// `n` client ids at once, to be given out while the store may not be touched (an
    /// install: `broker/snapshot.rs`).
    pub fn reserve_client_ids(&self, n: u64) -> Result<std::ops::Range<u64>> {
        self.index_unsynced.store(true, Ordering::Relaxed);
        let v = self
            .db
            .update_and_fetch(meta_key("next_client_id"), |old| {
                let next = old.and_then(be_u64).unwrap_or(1) + n;
                Some(next.to_be_bytes().to_vec())
            })?;
        let end = v.and_then(|v| be_u64(&v)).unwrap_or(n + 1);
        Ok(end - n..end)
    }

    /// Milliseconds momd was down in all, as of this start.
    fn downtime(&self) -> u64 {
        self.downtime.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Note that momd is alive at `now` (written with the next flush): at start, the time
    /// since then is downtime, which the dedupe window does not count.
    pub fn set_alive(&self, now: u64) {
        self.index_unsynced.store(true, Ordering::Relaxed);
        self.overlay()
            .put(meta_key("alive"), now.to_be_bytes().to_vec());
    }

    /// The index store itself, for the users and tokens kept beside the topics.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn heads(&self) -> std::sync::MutexGuard<'_, heads::Heads> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self) -> std::sync::MutexGuard<'_, live::Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Meta key: where the part of the log the index covers ends (the end of the newest
/// record indexed), as (segment, offset).
const LOG_END: &str = "log_end";

fn encode_pos((segment, offset): (u64, u64)) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&segment.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v
}

fn decode_pos(v: &[u8]) -> Option<(u64, u64)> {
    Some((be_u64(v)?, be_u64(v.get(8..)?)?))
}

fn encode_topic(t: &TopicState) -> Vec<u8> {
    rmp_serde::to_vec(t).expect("a TopicState always encodes")
}

/// A random id for a new data dir.
fn new_server_id() -> String {
    format!("{:016x}", crate::cluster::identity::random_u64())
}

/// The sender recorded for messages the broker publishes itself.
pub fn broker_sender() -> Sender {
    Sender {
        user: "$broker".into(),
        client: 0,
        name: "momd".into(),
    }
}

#[cfg(test)]
mod tail_tests;
#[cfg(test)]
mod tests;
