//! mom's cluster mode: Raft groups over openraft (0.9, `storage-v2`).
//!
//! One node runs many groups (the metadata group and, later, one group per topic partition)
//! over one directory for their logs and one TCP connection per peer. This crate knows
//! nothing of topics or messages: a group carries opaque commands (`Cmd`), and the
//! application applies them through the [`App`] trait. The parts are:
//!
//! - `log_store`: the Raft log of every group, each in segment files of its own
//!   (`log_files`), with the votes and purge points in a sled database beside them. An
//!   append is answered only after a sync that covers it; syncs are shared by everything
//!   appended meanwhile and answered in the order the appends came (`flusher`).
//! - `state_machine`: an in-memory application state rebuilt from a checksummed snapshot
//!   and the log after it; a snapshot that fails its checksum is refused, never trusted.
//!   A snapshot travels as a file (`SnapshotData`); `snapshot_file` makes one of bytes.
//! - `net`: the peer transport. Every connection starts with the cluster id and both node
//!   ids, and a node refuses one meant for another cluster or another node.

// openraft's storage traits return its `StorageError` (over 200 bytes) by value.
#![allow(clippy::result_large_err)]

mod flusher;
mod log_files;
pub mod log_store;
pub mod net;
pub mod pieces;
pub mod state_machine;

pub use openraft;

/// A command of some group, encoded by the application (MessagePack in momd).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cmd(pub bytes::Bytes);

/// What applying a command answered, encoded by the application.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply(pub bytes::Bytes);

openraft::declare_raft_types!(
    /// The one type configuration of every group.
    pub TypeConfig:
        D = Cmd,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        // A file, so that a group whose state is large (the data group's store) streams
        // its snapshot from disk instead of holding it in memory.
        SnapshotData = tokio::fs::File,
);

/// A Raft group id: 0 is the metadata group.
pub type GroupId = u64;

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Metrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;

/// The application state of one group.
pub trait App: Send + Sync + 'static {
    /// Applies one committed command. Must be deterministic: replicas apply the same
    /// commands in the same order and must reach the same state.
    fn apply(&mut self, log_id: &LogId, cmd: &Cmd) -> Reply;
    /// The whole state, to be given to `restore`.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot's.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String>;
}

/// An unnamed temporary file holding `bytes`, positioned at its start: the snapshot of a
/// group whose state is small enough to build in memory.
pub async fn snapshot_file(bytes: &[u8]) -> std::io::Result<tokio::fs::File> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let mut f = tokio::fs::File::from_std(tempfile::tempfile()?);
    f.write_all(bytes).await?;
    f.flush().await?;
    f.rewind().await?;
    Ok(f)
}

/// An unnamed temporary file to receive a snapshot into.
pub fn receiving_file() -> std::io::Result<tokio::fs::File> {
    Ok(tokio::fs::File::from_std(tempfile::tempfile()?))
}

/// All of a snapshot file, from its start.
pub async fn read_snapshot_file(f: &mut tokio::fs::File) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
    f.flush().await?;
    f.rewind().await?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).await?;
    Ok(out)
}
