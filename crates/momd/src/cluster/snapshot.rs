//! Snapshots of the data group: the node's store at one applied entry, as a checksummed
//! file under `DATA/snapshot/` (the format and the install's steps: `store/snapshot.rs`).
//!
//! Building one (asked for every `DATA_SNAPSHOT_EVERY` entries, no sooner than twenty times
//! the last cut's time after it: `upkeep.rs`): the broker task
//! takes the cut (a flush, the index written out, the segment files hard-linked), and the
//! file is written here, outside the task, so publishes wait for the cut only, never for
//! the copy. The file becomes `current.snap`; openraft then purges the Raft log behind it,
//! keeping what replication still needs. A follower too far behind gets `current.snap`,
//! streamed from disk in chunks.
//!
//! Receiving one: the chunks go to `incoming-N.part`; the install checks it whole (a
//! snapshot that fails its checksum is refused, never installed, and the store keeps what
//! it had), unpacks it beside the store, then has the broker swap it in and reload. The
//! checked file becomes this node's `current.snap`.
//!
//! Builds and installs take one lock: `current.snap` is replaced by one at a time.
//!
//! With several data groups (`core/shards.rs`) each has its files (the first group's in
//! `DATA/snapshot/`, group `s`'s in `DATA/snapshot/shard-s/`), and a snapshot holds its
//! group's shard of the store alone (`store/shard_snapshot.rs`); installs of different
//! groups take turns (they stage in the same place).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use mom_raft::openraft::storage::Snapshot;
use mom_raft::openraft::{AnyError, BasicNode, SnapshotMeta, StorageIOError};
use mom_raft::{NodeId, StorageError, TypeConfig};
use tokio::sync::oneshot;

use crate::broker::{BrokerHandle, Cmd};
use crate::core::shards::{Shard, Shards};
use crate::store::shard_snapshot;
use crate::store::snapshot::{self as files, DIR};

type Meta = SnapshotMeta<NodeId, BasicNode>;

const CURRENT: &str = "current.snap";

fn write_err(e: impl ToString) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(e)).into()
}

fn read_err(meta: Option<&Meta>, e: impl ToString) -> StorageError {
    StorageIOError::read_snapshot(meta.map(|m| m.signature()), AnyError::error(e)).into()
}

/// The data group's snapshot files of one node.
pub struct Snapshots {
    /// The data dir.
    data: PathBuf,
    dir: PathBuf,
    shard: Shard,
    shards: Shards,
    /// One build or install at a time.
    lock: tokio::sync::Mutex<()>,
    /// One install at a time, whatever the group (shared by the groups' `Snapshots`).
    installs: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Files being received: (device, inode) → path, to find the file openraft gives back.
    incoming: Mutex<Vec<((u64, u64), PathBuf)>>,
    next: AtomicU64,
    /// How long the last build's cut held up the broker task, in microseconds
    /// (`upkeep.rs` paces the builds by it).
    last_cut_us: AtomicU64,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Snapshots {
    /// The snapshots of shard `shard`'s group under `data`; what an interrupted build or
    /// transfer left is removed.
    pub fn open(
        data: &Path,
        shard: Shard,
        shards: Shards,
        installs: std::sync::Arc<tokio::sync::Mutex<()>>,
    ) -> std::io::Result<Snapshots> {
        let dir = match shard {
            0 => data.join(DIR),
            s => data.join(DIR).join(format!("shard-{s}")),
        };
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("build-") || name.starts_with("incoming-") {
                let p = e.path();
                if e.file_type()?.is_dir() {
                    std::fs::remove_dir_all(p)?;
                } else {
                    std::fs::remove_file(p)?;
                }
            }
        }
        Ok(Snapshots {
            data: data.to_path_buf(),
            dir,
            shard,
            shards,
            lock: tokio::sync::Mutex::new(()),
            installs,
            incoming: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            last_cut_us: AtomicU64::new(0),
        })
    }

    /// How long the last build's cut held up the broker task.
    pub fn last_cut(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.last_cut_us.load(Ordering::Relaxed))
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// Builds a snapshot of the store as the broker has it now.
    pub async fn build(&self, broker: &BrokerHandle) -> Result<Snapshot<TypeConfig>, StorageError> {
        let _one = self.lock.lock().await;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let cut_dir = self.dir.join(format!("build-{n}"));
        let t0 = Instant::now();
        let (tx, rx) = oneshot::channel();
        if !broker
            .send(Cmd::SnapshotCut {
                shard: self.shard,
                dir: cut_dir.clone(),
                reply: tx,
            })
            .await
        {
            return Err(write_err("the broker has stopped"));
        }
        let cut = rx
            .await
            .map_err(|_| write_err("the broker has stopped"))?
            .map_err(write_err)?;
        let cut_time = t0.elapsed();
        self.last_cut_us
            .store(cut_time.as_micros() as u64, Ordering::Relaxed);
        let (last_log_id, last_membership) =
            super::data::applied_ids(cut.applied.as_deref()).map_err(write_err)?;
        let meta = Meta {
            last_log_id,
            last_membership,
            snapshot_id: format!(
                "{}-{}-{n}-{:x}",
                last_log_id.map_or(0, |l| l.leader_id.term),
                last_log_id.map_or(0, |l| l.index),
                super::identity::random_u64()
            ),
        };
        let header = rmp_serde::to_vec(&meta).map_err(write_err)?;
        let out = self.dir.join(format!("build-{n}.snap"));
        let current = self.current_path();
        let dir = self.dir.clone();
        let t1 = Instant::now();
        let one_of_many = self.shards.count() > 1;
        let size = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let res = if one_of_many {
                shard_snapshot::write_shard_snapshot(&cut, &header, &out)
            } else {
                files::write_snapshot(&cut, &header, &out)
            };
            let _ = std::fs::remove_dir_all(&cut.dir);
            let size = res?;
            std::fs::rename(&out, &current)?;
            sync_dir(&dir)?;
            Ok(size)
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)?;
        tracing::info!(
            index = last_log_id.map_or(0, |l| l.index),
            bytes = size,
            "data group snapshot built: cut in {:.1?} on the broker task, written in {:.1?}",
            cut_time,
            t1.elapsed()
        );
        let file = tokio::fs::File::open(self.current_path())
            .await
            .map_err(write_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }

    /// A new file to receive a snapshot into.
    pub async fn begin_receiving(&self) -> Result<Box<tokio::fs::File>, StorageError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("incoming-{n}.part"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(write_err)?;
        let m = file.metadata().await.map_err(write_err)?;
        let mut inc = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        inc.push(((m.dev(), m.ino()), path));
        Ok(Box::new(file))
    }

    /// Installs a received snapshot in the store: checked, unpacked, swapped in by the
    /// broker. Returns the applied Raft state of the new store. A snapshot that fails a
    /// check is refused and the store keeps what it had.
    pub async fn install(
        &self,
        broker: &BrokerHandle,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let _one = self.lock.lock().await;
        let _turn = self.installs.lock().await;
        let t0 = Instant::now();
        let mut file = *snapshot;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| read_err(Some(meta), e))?;
        let mut file = file.into_std().await;
        let key = file
            .metadata()
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| read_err(Some(meta), e))?;
        let path = {
            let mut inc = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
            let i = inc.iter().position(|(k, _)| *k == key);
            i.map(|i| inc.remove(i).1)
        };
        let data = self.data.clone();
        let want = meta.last_log_id;
        let shard = (self.shards.count() > 1).then_some((self.shards, self.shard));
        let staged = tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            files::stage_install(&mut file, &data, shard, |header| {
                let theirs: Meta = rmp_serde::from_slice(header).map_err(|e| {
                    std::io::Error::other(format!("snapshot header unreadable: {e}"))
                })?;
                if theirs.last_log_id != want {
                    return Err(std::io::Error::other(format!(
                        "it holds the state at {:?}, not at {:?} as sent",
                        theirs.last_log_id, want
                    )));
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| read_err(Some(meta), e))?;
        match staged {
            Ok(_) => {}
            Err(e) => {
                if let Some(p) = &path {
                    let _ = std::fs::remove_file(p);
                }
                tracing::error!("data group snapshot {} refused: {e}", meta.snapshot_id);
                return Err(read_err(Some(meta), format!("snapshot refused: {e}")));
            }
        }
        let unpacked = t0.elapsed();
        let (tx, rx) = oneshot::channel();
        let cmd = Cmd::InstallSnapshot {
            shard: self.shard,
            reply: tx,
        };
        if !broker.send(cmd).await {
            return Err(write_err("the broker has stopped"));
        }
        let applied = rx
            .await
            .map_err(|_| write_err("the broker has stopped"))?
            .map_err(|e| {
                tracing::error!("{e}: this node stops applying the data group until restarted");
                write_err(e)
            })?;
        if let Some(p) = path {
            let current = self.current_path();
            let dir = self.dir.clone();
            let kept = tokio::task::spawn_blocking(move || {
                std::fs::rename(&p, &current)?;
                sync_dir(&dir)
            })
            .await;
            if !matches!(kept, Ok(Ok(()))) {
                tracing::warn!("the installed snapshot could not be kept as this node's");
            }
        }
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            "data group snapshot installed: checked and unpacked in {unpacked:.1?}, all in {:.1?}",
            t0.elapsed()
        );
        Ok(applied)
    }

    /// This node's newest snapshot, if it has one.
    pub async fn current(&self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.current_path();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_err(None, e)),
        };
        let (meta, file) = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let header = files::read_header(&mut file)?;
            let meta: Meta = rmp_serde::from_slice(&header)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            use std::io::Seek;
            file.rewind()?;
            Ok::<_, std::io::Error>((meta, file))
        })
        .await
        .map_err(|e| read_err(None, e))?
        .map_err(|e| read_err(None, format!("{}: {e}", path.display())))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}
