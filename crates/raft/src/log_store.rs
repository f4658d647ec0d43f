//! The Raft logs of every group of a node, in `DATA/raft`: each group's entries in segment
//! files of its own (`log/<group>/`, `log_files.rs`), and the small state (votes, purge
//! points, snapshots, peers' incarnations) in a sled database beside them.
//!
//! sled state trees:
//! - `raft_state`: `group ‖ tag` → the vote, the committed log id, the last purged log id
//!   and the group's snapshot (written by `state_machine`);
//! - `pieces`: the rest of a value over 4 KiB of it (`pieces.rs`: sled would keep it in a
//!   file its flush never fsyncs);
//! - `raft_log`: where entries were kept before they had files of their own; moved to the
//!   files when found there.
//!
//! The rules openraft leaves to its storage (and that lost acknowledged data elsewhere when
//! broken): a vote is flushed before `save_vote` returns; an append is reported stored only
//! after the sync of its files (`flusher`); a purge records how far it went, flushed,
//! before deleting, so the log never has a hole; a truncation is synced before it returns.
//!
//! A purge returns once its point is recorded; the segment files wholly below it are
//! deleted after, on a blocking thread. Entries at or below the purge point are never read
//! again, whatever is still on disk.

use std::collections::HashMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader, StorageIOError, Vote};

use crate::flusher::{Dirty, Flusher};
use crate::log_files::LogFiles;
use crate::pieces::{self, Tag};
use crate::{Entry, GroupId, LogId, NodeId, StorageError, TypeConfig};

pub(crate) const TAG_VOTE: u8 = 1;
pub(crate) const TAG_COMMITTED: u8 = 2;
pub(crate) const TAG_PURGED: u8 = 3;
pub(crate) const TAG_SNAPSHOT: u8 = 4;

/// Bytes a log segment file takes before the next one starts (the grain of a purge).
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// Entries moved to the files at once from the old `raft_log` tree.
const MOVE_BATCH: usize = 256;

/// Every group's log and Raft state on one node, with its flusher.
#[derive(Clone)]
pub struct LogDb {
    db: sled::Db,
    state: sled::Tree,
    /// The pieces of large values of `state` after their first (`pieces.rs`).
    pieces: sled::Tree,
    /// Peer node id → the incarnation first seen for it (`net::PeerCheck`).
    peers: sled::Tree,
    /// `DATA/raft/log`: a directory of segment files per group.
    logs: PathBuf,
    segment_bytes: u64,
    groups: Arc<Mutex<HashMap<GroupId, Arc<Mutex<LogFiles>>>>>,
    dirty: Dirty,
    flusher: Flusher,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogDb {
    /// Opens (or creates) the logs in `dir`. Must run inside a tokio runtime.
    pub fn open(dir: &Path) -> Result<LogDb, String> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    /// As [`LogDb::open`], with log segment files of `segment_bytes`.
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<LogDb, String> {
        let db = sled::Config::new()
            .path(dir)
            // Flushes are ours (never on a timer).
            .flush_every_ms(None)
            .cache_capacity(8 << 20)
            .open()
            .map_err(|e| format!("cannot open the Raft state in {}: {e}", dir.display()))?;
        let state = db.open_tree("raft_state").map_err(|e| e.to_string())?;
        let peers = db.open_tree("peers").map_err(|e| e.to_string())?;
        let pieces = db.open_tree("pieces").map_err(|e| e.to_string())?;
        let dirty: Dirty = Default::default();
        let flusher = Flusher::start(db.clone(), dirty.clone());
        let logs = dir.join("log");
        let this = LogDb {
            db,
            state,
            pieces,
            peers,
            logs,
            segment_bytes,
            groups: Default::default(),
            dirty,
            flusher,
        };
        this.move_old_entries()?;
        Ok(this)
    }

    /// The incarnation check of the peer transport: the first incarnation seen for a node id
    /// is kept (flushed with the next state flush); another one later is refused.
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

    /// The log store of one group (its files opened, and checked, on first use).
    pub fn group(&self, group: GroupId) -> Result<LogStore, String> {
        Ok(LogStore {
            group,
            db: self.clone(),
            files: self.files(group)?,
            committed_written: Default::default(),
        })
    }

    fn files(&self, group: GroupId) -> Result<Arc<Mutex<LogFiles>>, String> {
        let mut groups = lock(&self.groups);
        if let Some(f) = groups.get(&group) {
            return Ok(f.clone());
        }
        let dir = self.logs.join(group.to_string());
        let files = LogFiles::open(&dir, self.segment_bytes)
            .map_err(|e| format!("cannot open the Raft log of group {group}: {e}"))?;
        let files = Arc::new(Mutex::new(files));
        groups.insert(group, files.clone());
        Ok(files)
    }

    /// Entries kept in the sled tree `raft_log` by earlier versions go to their group's
    /// files (synced), then out of the tree.
    fn move_old_entries(&self) -> Result<(), String> {
        let old = self.db.open_tree("raft_log").map_err(|e| e.to_string())?;
        while let Some((key, _)) = old.first().map_err(|e| e.to_string())? {
            let group = key
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or("a key of another shape in the old Raft log")?;
            let (lo, hi) = (log_key(group, 0), log_key(group, u64::MAX));
            let files = self.files(group)?;
            // A move cut short by a crash goes on where the files end.
            let from = lock(&files).end().unwrap_or(0);
            let mut batch = Vec::new();
            for kv in old.range(log_key(group, from)..=hi) {
                let (k, v) = kv.map_err(|e| e.to_string())?;
                let whole = pieces::join(&self.pieces, Tag::LOG, &k, v)?;
                let index = k
                    .get(8..16)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .ok_or("a key of another shape in the old Raft log")?;
                batch.push((index, whole.to_vec()));
                if batch.len() == MOVE_BATCH {
                    self.write_synced(&files, &batch)?;
                    batch.clear();
                }
            }
            self.write_synced(&files, &batch)?;
            let mut out = sled::Batch::default();
            for k in old.range(lo..=hi).keys() {
                out.remove(k.map_err(|e| e.to_string())?);
            }
            let mut more = sled::Batch::default();
            pieces::remove_range(&self.pieces, Tag::LOG, &lo, &hi, &mut more)?;
            old.apply_batch(out).map_err(|e| e.to_string())?;
            self.pieces.apply_batch(more).map_err(|e| e.to_string())?;
            self.db.flush().map_err(|e| e.to_string())?;
            tracing::info!(group, "the Raft log moved to files of its own");
        }
        Ok(())
    }

    fn write_synced(
        &self,
        files: &Mutex<LogFiles>,
        entries: &[(u64, Vec<u8>)],
    ) -> Result<(), String> {
        let mut dirty = Vec::new();
        lock(files)
            .append(entries, &mut dirty)
            .map_err(|e| e.to_string())?;
        for f in dirty {
            f.sync_data().map_err(|e| e.to_string())?;
        }
        Ok(())
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

    /// Waits until everything written so far is on disk.
    pub(crate) async fn sync(&self) -> Result<(), String> {
        self.flusher.sync().await
    }

    /// The first index from which `group`'s entries up to `end` (included) take at most
    /// `max_bytes` of its log files (`end + 1` if `end` alone takes more); `None` if the
    /// files do not hold `end`.
    pub fn first_within(&self, group: GroupId, end: u64, max_bytes: u64) -> Option<u64> {
        self.files(group)
            .ok()
            .and_then(|f| lock(&f).first_within(end, max_bytes))
    }

    /// How many entries `group`'s log files hold, those a purge has not deleted yet
    /// included.
    pub fn stored_entries(&self, group: GroupId) -> usize {
        self.files(group).map_or(0, |f| lock(&f).count())
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
    files: Arc<Mutex<LogFiles>>,
    /// When the committed log id was last written.
    committed_written: Arc<Mutex<Option<std::time::Instant>>>,
}

/// How often the committed log id is written at most.
const COMMITTED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// About the most bytes of entries in one replication request. openraft gives a request
/// one heartbeat interval (100 ms) to be sent, written and fsynced by the follower: a
/// follower far behind on large entries (a flood of 1 MB messages) that were sent 32 at a
/// time never caught up, each request timing out and being sent again whole.
pub const REPLICATE_BYTES: usize = 2 << 20;

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

    /// The index of the last purged entry, if any.
    fn purged_index(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.read_id(TAG_PURGED)?.map(|id| id.index))
    }

    fn files(&self) -> MutexGuard<'_, LogFiles> {
        lock(&self.files)
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
            Bound::Included(&i) => i,
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&i) => i - 1,
            Bound::Unbounded => u64::MAX,
        };
        self.read_entries(start, end, usize::MAX)
    }

    /// What openraft sends a follower in one request: entries from `start`, stopping once
    /// they reach `REPLICATE_BYTES` (always at least one).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        match end.checked_sub(1) {
            Some(last) => self.read_entries(start, last, REPLICATE_BYTES),
            None => Ok(Vec::new()),
        }
    }
}

impl LogStore {
    /// The entries `start..=end` the log holds, stopping once they reach `max_bytes`
    /// (always at least one).
    fn read_entries(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        // What a purge has not deleted yet is gone all the same.
        let start = match self.purged_index()? {
            Some(p) => start.max(p.saturating_add(1)),
            None => start,
        };
        let files = self.files();
        let Some(last) = files.last() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for index in start..=end.min(last) {
            if bytes >= max_bytes {
                break;
            }
            match files.read(index).map_err(read_err)? {
                Some(b) => {
                    bytes += b.len();
                    out.push(decode(&b)?);
                }
                // Below the files' first entry: a purge deleted it.
                None if out.is_empty() => continue,
                None => return Err(read_err(format!("entry {index} is missing"))),
            }
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.read_id(TAG_PURGED)?;
        let last = {
            let files = self.files();
            match files.last() {
                Some(last) => match files.read(last).map_err(read_err)? {
                    Some(bytes) => Some(decode::<Entry>(&bytes)?.log_id),
                    None => None,
                },
                None => None,
            }
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
        // Only a hint for applying sooner after a restart, and any committed id is one for
        // good: written at most once a second (a sled write per commit kept sled's thread
        // pool busy), carried by the next state flush.
        let mut last = lock(&self.committed_written);
        if last.is_some_and(|t| t.elapsed() < COMMITTED_EVERY) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
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
        let mut encoded = Vec::new();
        for entry in entries {
            encoded.push((entry.log_id.index, encode(&entry)?));
        }
        let mut written = Vec::new();
        self.files()
            .append(&encoded, &mut written)
            .map_err(write_err)?;
        lock(&self.db.dirty).extend(written);
        self.db.flusher.append(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || lock(&files).truncate_from(log_id.index))
            .await
            .map_err(write_err)?
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // How far the log was purged is on disk before any entry goes: a crash in between
        // leaves entries below the purge point (harmless), never a gap above it.
        self.write_id(TAG_PURGED, &Some(log_id))?;
        self.db.sync().await.map_err(write_err)?;
        // The deletion itself, out of Raft's way. A crash leaves files below the point,
        // which the next purge deletes.
        let (files, group) = (self.files.clone(), self.group);
        tokio::task::spawn_blocking(move || {
            let t0 = std::time::Instant::now();
            match lock(&files).remove_below(log_id.index) {
                Ok(entries) => tracing::info!(
                    group,
                    upto = log_id.index,
                    entries,
                    ms = t0.elapsed().as_millis() as u64,
                    "raft log purged"
                ),
                Err(e) => tracing::warn!(group, "deleting purged Raft log files: {e}"),
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::Cmd(vec![index as u8; 100].into())),
        }
    }

    #[tokio::test]
    async fn a_move_from_the_old_tree_cut_short_by_a_crash_goes_on_where_the_files_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let raw = sled::open(dir.path()).expect("open raw");
            let old = raw.open_tree("raft_log").expect("tree");
            for i in 1..=600u64 {
                let bytes = rmp_serde::to_vec(&entry(i)).expect("encode");
                old.insert(log_key(3, i), bytes).expect("insert");
            }
            raw.flush().expect("flush");
        }
        // The crash came after the first 300 reached the files.
        {
            let mut files =
                LogFiles::open(&dir.path().join("log").join("3"), SEGMENT_BYTES).expect("files");
            let first: Vec<(u64, Vec<u8>)> = (1..=300u64)
                .map(|i| (i, rmp_serde::to_vec(&entry(i)).expect("encode")))
                .collect();
            let mut dirty = Vec::new();
            files.append(&first, &mut dirty).expect("append");
        }
        let db = LogDb::open(dir.path()).expect("open");
        let mut log = db.group(3).expect("group");
        let got = log.try_get_log_entries(0..).await.expect("read");
        let ids: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        assert_eq!(ids, (1..=600).collect::<Vec<u64>>());
        assert_eq!(db.stored_entries(3), 600);
    }

    #[tokio::test]
    async fn a_replication_request_carries_about_replicate_bytes_and_at_least_one_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = |index: u64, len: usize| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::Cmd(vec![7u8; len].into())),
        };
        {
            let mut files =
                LogFiles::open(&dir.path().join("log").join("1"), SEGMENT_BYTES).expect("files");
            // 20 entries of 300 KB, then one of 5 MiB, then small ones.
            let mut all: Vec<Entry> = (1..=20u64).map(|i| big(i, 300_000)).collect();
            all.push(big(21, 5 << 20));
            all.extend((22..=30u64).map(entry));
            let records: Vec<(u64, Vec<u8>)> = all
                .iter()
                .map(|e| (e.log_id.index, rmp_serde::to_vec(e).expect("encode")))
                .collect();
            let mut dirty = Vec::new();
            files.append(&records, &mut dirty).expect("append");
        }
        let db = LogDb::open(dir.path()).expect("open");
        let mut log = db.group(1).expect("group");
        let ids = |got: &[Entry]| got.iter().map(|e| e.log_id.index).collect::<Vec<u64>>();
        // 2 MiB of 300 KB entries: seven of them (the seventh reaches the bound).
        let got = log.limited_get_log_entries(1, 31).await.expect("read");
        assert_eq!(ids(&got), (1..=7).collect::<Vec<u64>>());
        let got = log.limited_get_log_entries(15, 31).await.expect("read");
        assert_eq!(
            ids(&got),
            (15..=21).collect::<Vec<u64>>(),
            "the large one ends it"
        );
        // An entry over the bound goes alone.
        let got = log.limited_get_log_entries(21, 31).await.expect("read");
        assert_eq!(ids(&got), vec![21]);
        // Small entries: the whole range.
        let got = log.limited_get_log_entries(22, 31).await.expect("read");
        assert_eq!(ids(&got), (22..=30).collect::<Vec<u64>>());
        // The range's end is kept.
        let got = log.limited_get_log_entries(3, 5).await.expect("read");
        assert_eq!(ids(&got), vec![3, 4]);
    }
}
