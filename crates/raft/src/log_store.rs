//! The Raft logs of every group of a node, in one sled database (its own directory, apart
//! from the broker's index, so a log flush never waits on index writes).
//!
//! Trees:
//! - `raft_log`: `group (u64 BE) ‖ index (u64 BE)` → the entry, MessagePack;
//! - `raft_state`: `group ‖ tag` → the vote, the committed log id, the last purged log id
//!   and the group's snapshot (written by `state_machine`);
//! - `pieces`: the rest of a value over 4 KiB of either (`pieces.rs`: sled would keep it
//!   in a file its flush never fsyncs).
//!
//! The rules openraft leaves to its storage (and that lost acknowledged data elsewhere when
//! broken): a vote is flushed before `save_vote` returns; an append is reported stored only
//! after a flush (`flusher`); a purge records how far it went, flushed, before deleting, so
//! the log never has a hole; a truncation is flushed before it returns.
//!
//! A purge returns once its point is recorded; the entries below it are deleted after, in
//! small batches on a blocking thread. Deleting thousands of large entries at once held
//! Raft's own task for seconds (every node purges at the same point, so the group stalled
//! and elected again); entries at or below the purge point are never read again.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError, Vote};

use crate::flusher::Flusher;
use crate::pieces::{self, Tag};
use crate::{Entry, GroupId, LogId, NodeId, StorageError, TypeConfig};

pub(crate) const TAG_VOTE: u8 = 1;
pub(crate) const TAG_COMMITTED: u8 = 2;
pub(crate) const TAG_PURGED: u8 = 3;
pub(crate) const TAG_SNAPSHOT: u8 = 4;

/// The sled database holding every group's log and Raft state, with its flusher.
#[derive(Clone)]
pub struct LogDb {
    db: sled::Db,
    log: sled::Tree,
    state: sled::Tree,
    /// The pieces of large values of `log` and `state` after their first (`pieces.rs`).
    pieces: sled::Tree,
    /// Peer node id → the incarnation first seen for it (`net::PeerCheck`).
    peers: sled::Tree,
    flusher: Flusher,
}

impl LogDb {
    /// Opens (or creates) the database in `dir`. Must run inside a tokio runtime.
    pub fn open(dir: &Path) -> Result<LogDb, String> {
        let db = sled::Config::new()
            .path(dir)
            // Flushes are ours: an append is answered after one (never on a timer).
            .flush_every_ms(None)
            .cache_capacity(8 << 20)
            .open()
            .map_err(|e| format!("cannot open the Raft log in {}: {e}", dir.display()))?;
        let log = db.open_tree("raft_log").map_err(|e| e.to_string())?;
        let state = db.open_tree("raft_state").map_err(|e| e.to_string())?;
        let peers = db.open_tree("peers").map_err(|e| e.to_string())?;
        let pieces = db.open_tree("pieces").map_err(|e| e.to_string())?;
        let flusher = Flusher::start(db.clone());
        Ok(LogDb {
            db,
            log,
            state,
            pieces,
            peers,
            flusher,
        })
    }

    /// The incarnation check of the peer transport: the first incarnation seen for a node id
    /// is kept (flushed with the next log flush); another one later is refused.
    pub fn peer_check(&self) -> crate::net::PeerCheck {
        let peers = self.peers.clone();
        std::sync::Arc::new(move |node: NodeId, incarnation: u64| {
            let key = node.to_be_bytes();
            let new = incarnation.to_be_bytes();
            match peers.compare_and_swap(key, None as Option<&[u8]>, Some(&new[..])) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(cas)) => match cas.current {
                    Some(known) if known.as_ref() == new => Ok(()),
                    Some(known) => {
                        let known = <[u8; 8]>::try_from(known.as_ref())
                            .map(u64::from_be_bytes)
                            .unwrap_or(0);
                        Err(format!(
                            "node {node} came back with another data dir (incarnation \
                             {incarnation:016x}, known as {known:016x}): it lost its log and \
                             votes, so it may not rejoin as node {node}; remove it from the \
                             cluster and add it under a new id"
                        ))
                    }
                    None => Ok(()),
                },
                Err(e) => Err(format!("cannot record node {node}'s incarnation: {e}")),
            }
        })
    }

    /// Forgets a peer's incarnation (after the node is removed from the cluster).
    pub fn forget_peer(&self, node: NodeId) -> Result<(), String> {
        self.peers
            .remove(node.to_be_bytes())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The log store of one group.
    pub fn group(&self, group: GroupId) -> LogStore {
        LogStore {
            group,
            db: self.clone(),
            purging: Default::default(),
        }
    }

    pub(crate) fn state_key(group: GroupId, tag: u8) -> [u8; 9] {
        let mut k = [0u8; 9];
        k[..8].copy_from_slice(&group.to_be_bytes());
        k[8] = tag;
        k
    }

    pub(crate) fn get_state(&self, group: GroupId, tag: u8) -> Result<Option<sled::IVec>, String> {
        let key = Self::state_key(group, tag);
        match self.state.get(key).map_err(|e| e.to_string())? {
            Some(v) => pieces::join(&self.pieces, Tag::STATE, &key, v).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn put_state(&self, group: GroupId, tag: u8, value: &[u8]) -> Result<(), String> {
        let key = Self::state_key(group, tag);
        let mut more = sled::Batch::default();
        let head = if value.len() > pieces::PIECE {
            let generation = self.db.generate_id().map_err(|e| e.to_string())?;
            pieces::split(Tag::STATE, &key, value.to_vec(), generation, &mut more)?
        } else {
            pieces::split(Tag::STATE, &key, value.to_vec(), 0, &mut more)?
        };
        let keep = pieces::generation(&head);
        self.pieces.apply_batch(more).map_err(|e| e.to_string())?;
        self.state.insert(key, head).map_err(|e| e.to_string())?;
        // The pieces of the value it replaced (none for the small values written often).
        let mut old = sled::Batch::default();
        pieces::remove_others(&self.pieces, Tag::STATE, &key, keep, &mut old)?;
        self.pieces.apply_batch(old).map_err(|e| e.to_string())
    }

    /// The entry stored under `key` as `stored`, whole.
    fn entry(&self, key: &[u8], stored: sled::IVec) -> Result<Entry, StorageError> {
        let whole = pieces::join(&self.pieces, Tag::LOG, key, stored).map_err(read_err)?;
        decode(&whole)
    }

    /// Waits until everything written so far is on disk.
    pub(crate) async fn sync(&self) -> Result<(), String> {
        self.flusher.sync().await
    }

    /// How many entries `group`'s log holds, those a purge has not deleted yet included.
    pub fn stored_entries(&self, group: GroupId) -> usize {
        self.log
            .range(log_key(group, 0)..=log_key(group, u64::MAX))
            .keys()
            .count()
    }

    /// The sled database itself (for its size in metrics).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn read_err(e: impl ToString) -> StorageError {
    StorageIOError::read_logs(AnyError::error(e)).into()
}

fn write_err(e: impl ToString) -> StorageError {
    StorageIOError::write_logs(AnyError::error(e)).into()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    rmp_serde::from_slice(bytes).map_err(read_err)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    rmp_serde::to_vec(value).map_err(write_err)
}

/// The Raft log of one group.
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    db: LogDb,
    /// Held while entries below a purge point are being deleted (one deletion at a time).
    purging: std::sync::Arc<std::sync::Mutex<()>>,
}

/// Entries deleted per batch by a purge, and the pause after each batch.
const PURGE_BATCH: usize = 128;
const PURGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

impl LogStore {
    fn read_id(&self, tag: u8) -> Result<Option<LogId>, StorageError> {
        match self.db.get_state(self.group, tag).map_err(read_err)? {
            Some(v) => decode(&v),
            None => Ok(None),
        }
    }

    fn write_id(&self, tag: u8, id: &Option<LogId>) -> Result<(), StorageError> {
        self.db
            .put_state(self.group, tag, &encode(id)?)
            .map_err(write_err)
    }

    /// Deletes every entry at or below `upto`, `PURGE_BATCH` at a time (each batch's heads
    /// first, then their pieces). Returns how many entries it deleted.
    fn remove_below(&self, upto: u64) -> Result<usize, String> {
        let (lo, hi) = (log_key(self.group, 0), log_key(self.group, upto));
        let mut removed = 0;
        loop {
            let keys: Vec<sled::IVec> = self
                .db
                .log
                .range(lo..=hi)
                .keys()
                .take(PURGE_BATCH)
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
                return Ok(removed);
            };
            let mut more = sled::Batch::default();
            pieces::remove_range(&self.db.pieces, Tag::LOG, first, last, &mut more)?;
            let mut batch = sled::Batch::default();
            for k in &keys {
                batch.remove(k.clone());
            }
            self.db.log.apply_batch(batch).map_err(|e| e.to_string())?;
            self.db
                .pieces
                .apply_batch(more)
                .map_err(|e| e.to_string())?;
            removed += keys.len();
            // Room for the appends between batches: they wait on the same database.
            std::thread::sleep(PURGE_PAUSE);
        }
    }

    /// The index of the last purged entry, if any.
    fn purged_index(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.read_id(TAG_PURGED)?.map(|id| id.index))
    }

    /// Removes the entries with index in `from..=to` (their heads first: a crash between
    /// leaves pieces of no entry, never an entry without its pieces).
    fn remove_range(&self, from: u64, to: u64) -> Result<(), StorageError> {
        let (lo, hi) = (log_key(self.group, from), log_key(self.group, to));
        let mut batch = sled::Batch::default();
        for kv in self.db.log.range(lo..=hi) {
            let (k, _) = kv.map_err(read_err)?;
            batch.remove(k);
        }
        self.db.log.apply_batch(batch).map_err(write_err)?;
        let mut more = sled::Batch::default();
        pieces::remove_range(&self.db.pieces, Tag::LOG, &lo, &hi, &mut more).map_err(write_err)?;
        self.db.pieces.apply_batch(more).map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Some(i),
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&i) => Some(i - 1),
            Bound::Unbounded => None,
        };
        let hi = log_key(self.group, end.unwrap_or(u64::MAX));
        // What a purge has not deleted yet is gone all the same.
        let start = match self.purged_index()? {
            Some(p) => start.max(p.saturating_add(1)),
            None => start,
        };
        if start > end.unwrap_or(u64::MAX) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for kv in self.db.log.range(log_key(self.group, start)..=hi) {
            let (k, v) = kv.map_err(read_err)?;
            out.push(self.db.entry(&k, v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.read_id(TAG_PURGED)?;
        let last = self
            .db
            .log
            .range(log_key(self.group, 0)..=log_key(self.group, u64::MAX))
            .next_back()
            .transpose()
            .map_err(read_err)?;
        let last = match last {
            Some((k, v)) => Some(self.db.entry(&k, v)?.log_id),
            None => None,
        };
        // Entries a purge has not deleted yet do not count.
        let last_log_id = match (last, last_purged_log_id) {
            (Some(l), Some(p)) if l.index <= p.index => Some(p),
            (None, p) => p,
            (l, _) => l,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = encode(vote)?;
        let vote_err =
            |e: String| -> StorageError { StorageIOError::write_vote(AnyError::error(e)).into() };
        self.db
            .put_state(self.group, TAG_VOTE, &bytes)
            .map_err(vote_err)?;
        // A vote forgotten after a crash lets a node vote twice in one term.
        self.db.sync().await.map_err(vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        match self
            .db
            .get_state(self.group, TAG_VOTE)
            .map_err(|e| StorageError::from(StorageIOError::read_vote(AnyError::error(e))))?
        {
            Some(v) => decode(&v).map(Some),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Only a hint for applying sooner after a restart: the next flush carries it.
        self.write_id(TAG_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_id(TAG_COMMITTED)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // An index is written again only after a truncation removed it (and its pieces):
        // one generation serves every entry.
        let mut batch = sled::Batch::default();
        let mut more = sled::Batch::default();
        for entry in entries {
            let key = log_key(self.group, entry.log_id.index);
            let head =
                pieces::split(Tag::LOG, &key, encode(&entry)?, 0, &mut more).map_err(write_err)?;
            batch.insert(&key[..], head);
        }
        self.db.pieces.apply_batch(more).map_err(write_err)?;
        self.db.log.apply_batch(batch).map_err(write_err)?;
        self.db.flusher.append(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index, u64::MAX)?;
        self.db.sync().await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // How far the log was purged is on disk before any entry goes: a crash in between
        // leaves entries below the purge point (harmless), never a gap above it.
        self.write_id(TAG_PURGED, &Some(log_id))?;
        self.db.sync().await.map_err(write_err)?;
        // The deletion itself, out of Raft's way (see the module's docs). Not flushed: a
        // crash leaves entries below the point, which the next purge deletes.
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let _one = store.purging.lock().unwrap_or_else(|p| p.into_inner());
            let t0 = std::time::Instant::now();
            match store.remove_below(log_id.index) {
                Ok(n) => tracing::info!(
                    group = store.group,
                    upto = log_id.index,
                    entries = n,
                    ms = t0.elapsed().as_millis() as u64,
                    "raft log purged"
                ),
                Err(e) => tracing::warn!(group = store.group, "deleting purged entries: {e}"),
            }
        });
        Ok(())
    }
}
