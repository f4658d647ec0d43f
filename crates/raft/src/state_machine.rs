//! The state machine of a group: the application's state in memory, rebuilt at start from
//! the group's last snapshot and the log entries after it (openraft applies them again).
//!
//! A snapshot is `MOMSNAP1 ‖ crc32 ‖ body`, the body holding the last applied log id, the
//! membership and the application's bytes. The checksum covers the body; a snapshot that
//! fails it, received from a peer or read from disk, is refused, never installed: trusting a
//! corrupt snapshot is how NATS lost a stream. Snapshots are kept in the log database, and
//! openraft purges the log only behind one, so what a restart needs is always there.

use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};

use crate::log_store::{LogDb, TAG_SNAPSHOT};
use crate::{App, Entry, GroupId, LogId, NodeId, Reply, StorageError, TypeConfig};

const MAGIC: &[u8; 8] = b"MOMSNAP1";

type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

#[derive(serde::Serialize, serde::Deserialize)]
struct Body {
    last_applied: Option<LogId>,
    membership: Membership,
    #[serde(with = "serde_bytes_compat")]
    app: Vec<u8>,
}

/// Stores a `Vec<u8>` as MessagePack bin, not as a list of numbers.
mod serde_bytes_compat {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let b: bytes::Bytes = serde::Deserialize::deserialize(d)?;
        Ok(b.to_vec())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    meta: Meta,
    #[serde(with = "serde_bytes_compat")]
    data: Vec<u8>,
}

/// Wraps a snapshot body with its magic and checksum.
fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a sealed snapshot, or why it is refused.
pub fn unseal(data: &[u8]) -> Result<&[u8], String> {
    if data.len() < 12 || &data[..8] != MAGIC {
        return Err("not a mom snapshot (bad magic or too short)".into());
    }
    let want = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    let body = &data[12..];
    if crc32fast::hash(body) != want {
        return Err("snapshot checksum mismatch: the snapshot is corrupt".into());
    }
    Ok(body)
}

struct Inner<A> {
    group: GroupId,
    last_applied: Option<LogId>,
    membership: Membership,
    app: A,
    current: Option<Stored>,
    built: u64,
}

/// The state machine of one group; clones share it.
pub struct StateMachine<A> {
    inner: Arc<Mutex<Inner<A>>>,
    db: LogDb,
}

impl<A> Clone for StateMachine<A> {
    fn clone(&self) -> Self {
        StateMachine {
            inner: self.inner.clone(),
            db: self.db.clone(),
        }
    }
}

fn snap_err(e: impl ToString) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(e)).into()
}

impl<A: App> StateMachine<A> {
    /// The state machine of `group`, restored from its stored snapshot if it has one. A
    /// stored snapshot that fails its checksum is an error: the node must not start on it.
    pub fn open(db: &LogDb, group: GroupId, mut app: A) -> Result<StateMachine<A>, String> {
        let mut last_applied = None;
        let mut membership = Membership::default();
        let mut current = None;
        if let Some(raw) = db.get_state(group, TAG_SNAPSHOT)? {
            let stored: Stored = rmp_serde::from_slice(&raw)
                .map_err(|e| format!("group {group}: stored snapshot unreadable: {e}"))?;
            let body = unseal(&stored.data).map_err(|e| format!("group {group}: {e}"))?;
            let body: Body = rmp_serde::from_slice(body)
                .map_err(|e| format!("group {group}: snapshot body unreadable: {e}"))?;
            app.restore(&body.app)
                .map_err(|e| format!("group {group}: snapshot refused: {e}"))?;
            last_applied = body.last_applied;
            membership = body.membership;
            current = Some(stored);
        }
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(Inner {
                group,
                last_applied,
                membership,
                app,
                current,
                built: 0,
            })),
            db: db.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner<A>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the application state.
    pub fn with_app<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        f(&self.lock().app)
    }

    /// Installs a sealed snapshot: checks it, restores the application from it, and keeps it.
    fn install(&self, meta: &Meta, data: Vec<u8>) -> Result<(), String> {
        let body = unseal(&data)?;
        let body: Body =
            rmp_serde::from_slice(body).map_err(|e| format!("snapshot body unreadable: {e}"))?;
        let stored = Stored {
            meta: meta.clone(),
            data,
        };
        let raw = rmp_serde::to_vec(&stored).map_err(|e| e.to_string())?;
        let mut inner = self.lock();
        inner.app.restore(&body.app)?;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        self.db.put_state(inner.group, TAG_SNAPSHOT, &raw)?;
        inner.current = Some(stored);
        Ok(())
    }
}

impl<A: App> RaftSnapshotBuilder<TypeConfig> for StateMachine<A> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (stored, raw) = {
            let mut inner = self.lock();
            let body = Body {
                last_applied: inner.last_applied,
                membership: inner.membership.clone(),
                app: inner.app.snapshot(),
            };
            let body = rmp_serde::to_vec(&body).map_err(snap_err)?;
            inner.built += 1;
            let snapshot_id = match inner.last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, inner.built),
                None => format!("0-0-{}", inner.built),
            };
            let meta = Meta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id,
            };
            let stored = Stored {
                meta,
                data: seal(&body),
            };
            let raw = rmp_serde::to_vec(&stored).map_err(snap_err)?;
            (stored, raw)
        };
        let group = self.lock().group;
        self.db
            .put_state(group, TAG_SNAPSHOT, &raw)
            .map_err(snap_err)?;
        // On disk before openraft may purge the log it replaces.
        self.db.sync().await.map_err(snap_err)?;
        let file = crate::snapshot_file(&stored.data).await.map_err(snap_err)?;
        let snapshot = Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(file),
        };
        self.lock().current = Some(stored);
        Ok(snapshot)
    }
}

impl<A: App> RaftStateMachine<TypeConfig> for StateMachine<A> {
    type SnapshotBuilder = StateMachine<A>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut replies = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let reply = match &entry.payload {
                EntryPayload::Blank => Reply::default(),
                EntryPayload::Normal(cmd) => inner.app.apply(&entry.log_id, cmd),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Reply::default()
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        Ok(Box::new(crate::receiving_file().map_err(snap_err)?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let data = crate::read_snapshot_file(&mut snapshot)
            .await
            .map_err(|e| {
                StorageError::from(StorageIOError::read_snapshot(
                    Some(meta.signature()),
                    AnyError::error(e),
                ))
            })?;
        self.install(meta, data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::error(e),
            ))
        })?;
        self.db.sync().await.map_err(snap_err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = {
            let inner = self.lock();
            inner
                .current
                .as_ref()
                .map(|s| (s.meta.clone(), s.data.clone()))
        };
        let Some((meta, data)) = current else {
            return Ok(None);
        };
        let file = crate::snapshot_file(&data).await.map_err(snap_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}
