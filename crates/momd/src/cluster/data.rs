//! The data group: a Raft group carrying publishes and every change to queues and topics
//! (`QueueOp`, applied by `broker/queue_cluster.rs`), applied by every node to its own store
//! (replica mode, `store/replica.rs`) through its broker task.
//!
//! A publish reaches any node. The node's batcher (`batcher.rs`) gathers what its clients
//! sent while its earlier batches were being committed (two on their way at once), and
//! sends it to the group's leader (itself, or over the peer link); the leader stamps the time and proposes the batch as one entry. Once a
//! majority has it in its log (each replica fsynced it), every node applies it: the core
//! sequences it as it would a local publish, watches on that node get the messages, and the
//! leader's answer (the seqs) goes back to the client. An acknowledgement therefore means
//! committed on a majority.
//!
//! A batch whose fate is unknown (its leader died or stopped answering after it was sent)
//! is sent again, as the same batch: each carries its origin (node, process, number) and
//! the number of the batch it follows, and the state machine remembers each origin's last
//! batches with their results (`origins.rs`), so a batch committed twice is applied once and
//! both copies get the first one's answer, and batches are applied in the order their node
//! sent them (what Kafka's idempotent producer does with its five requests in flight). A
//! leader change costs the client latency, not an error.
//!
//! The store keeps which entry it applied last with its index (and the origins' table); a
//! restart applies again what came after (and drops what its log held past the index).
//! A snapshot of this group is the store itself at an applied entry (`snapshot.rs`): the
//! Raft log is purged behind it, and a node too far behind installs it.

use std::sync::{Arc, Mutex};

use mom_proto::{ErrorCode, PubMsg, Sender};
use mom_raft::openraft::storage::{RaftStateMachine, Snapshot};
use mom_raft::openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use mom_raft::{Entry, LogId, NodeId, Reply, StorageError, TypeConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::origins::{Origins, Verdict};
pub use crate::broker::publish::Published;
use crate::broker::{BrokerHandle, Cmd};
use crate::core::shards::{Shard, Shards};

/// The first data group's id; data group `s` (shard `s` of the store, `core/shards.rs`) is
/// `DATA + s`.
pub const DATA: mom_raft::GroupId = 1;

/// The store's metadata key holding the last applied entry and the membership of the
/// first data group (see [`applied_key`]).
pub const APPLIED_KEY: &str = "raft_data_applied";

/// The data group carrying shard `shard`.
pub fn group_of(shard: Shard) -> mom_raft::GroupId {
    DATA + u64::from(shard)
}

/// The shard a data group carries (None: not a data group).
pub fn shard_of(group: mom_raft::GroupId, shards: Shards) -> Option<Shard> {
    let s = group.checked_sub(DATA)?;
    (s < u64::from(shards.count())).then_some(s as Shard)
}

/// The store's metadata key holding shard `shard`'s group's applied state.
pub fn applied_key(shard: Shard) -> String {
    match shard {
        0 => APPLIED_KEY.to_string(),
        s => format!("{APPLIED_KEY}.{s}"),
    }
}

/// Tests make this node apply one group's entries late (`MOMD_APPLY_PAUSE=SHARD:MS`), to
/// see what a node behind in one group does.
fn apply_pause(shard: Shard) -> Option<std::time::Duration> {
    static PAUSE: std::sync::OnceLock<Option<(Shard, u64)>> = std::sync::OnceLock::new();
    let (s, ms) = (*PAUSE.get_or_init(|| {
        let v = std::env::var("MOMD_APPLY_PAUSE").ok()?;
        let (s, ms) = v.trim().split_once(':')?;
        Some((s.parse().ok()?, ms.parse().ok()?))
    }))?;
    (s == shard).then(|| std::time::Duration::from_millis(ms))
}

type Membership = StoredMembership<NodeId, mom_raft::openraft::BasicNode>;

/// One publish request, as the data group carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PubItem {
    pub topic: String,
    pub msgs: Vec<PubMsg>,
    pub sender: Sender,
    /// On a partitioned topic, the partition its messages without a key go to (modulo
    /// the partitions), chosen by the node the publish came to.
    #[serde(default)]
    pub spread: u32,
}

/// What applying one item gave (a queue operation gives an empty `Published`: its
/// answer goes to its client from the node it came from, when that node applies it).
pub type PubResult = Result<Published, (ErrorCode, String)>;

/// One thing the data group carries: a publish, or a change to the queues' state (which
/// every node applies in log order, so their queues agree: `broker/queue_cluster.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DataItem {
    Publish(PubItem),
    Queue(QueueOp),
}

/// A change to the queues' state. Topics are named (a topic's id is a node's own).
/// `session` is a connection on the node the entry came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum QueueOp {
    /// A client's request that changes a queue (create, set, bind, unbind, delete, purge,
    /// redrive, ack, nack, extend) or a topic (rm, purge, set), applied as a single node
    /// applies it; `user` is who sent it (a new queue's or topic's owner).
    Request {
        session: u64,
        user: String,
        #[serde(with = "frame_bytes")]
        frame: Box<mom_proto::ClientFrame>,
    },
    /// Lease up to `max` messages of `queue` to `consumer`, a consumer or a fetch (request
    /// `fetch` of `session`) of the node the entry came from.
    Take {
        queue: String,
        consumer: u64,
        max: u32,
        fetch: Option<(u64, u64)>,
    },
    /// Leased to `consumer` and not handed out (they did not fit in the frame, or the
    /// reader was gone): ready again, the delivery not counted.
    Unlease {
        queue: String,
        consumer: u64,
        msgs: Vec<(String, u64)>,
    },
    /// Leased messages the store will never give back (damaged, or gone from their topic).
    Lost {
        queue: String,
        consumer: u64,
        msgs: Vec<(String, u64)>,
    },
    /// A consumer ended (cancelled, or its connection closed): what it holds comes back,
    /// as unopened if `release`. No `queue`: every queue it holds deliveries of.
    ConsumerGone {
        queue: Option<String>,
        consumer: u64,
        release: bool,
    },
    /// Ack deadlines up to the entry's time (proposed by the leader when one is due).
    Expire,
    /// Hard age limits at the entry's time (proposed by the leader, at most once a second,
    /// while a topic with one holds messages): every node cuts the same messages.
    Retain,
    /// A node's process started: what consumers of its earlier processes held comes back.
    NodeStarted { node: NodeId },
    /// The node the entry came from has `members` watches in group `name` of `patterns`
    /// (0: none any more): the nodes share the group's messages by it
    /// (`broker/watch_groups.rs`).
    GroupMembers {
        name: String,
        patterns: Vec<String>,
        members: u32,
    },
    /// `node` has not answered the data group's leader for a while: its group members
    /// get no more messages (it tells its members again if it comes back).
    GroupsGone { node: NodeId },
}

/// A client frame inside an entry: its protocol encoding (docs/protocol.md), as bytes.
mod frame_bytes {
    use mom_proto::ClientFrame;
    use serde::{de::Error as _, ser::Error as _, Deserialize, Deserializer, Serializer};

    #[allow(clippy::borrowed_box)]
    pub fn serialize<S: Serializer>(frame: &Box<ClientFrame>, s: S) -> Result<S::Ok, S::Error> {
        let mut body = Vec::new();
        mom_proto::frame::encode_body(&**frame, &mut body).map_err(S::Error::custom)?;
        s.serialize_bytes(&body)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<ClientFrame>, D::Error> {
        let body = bytes::Bytes::deserialize(d)?;
        mom_proto::decode::decode_client_frame(&body)
            .map(Box::new)
            .map_err(D::Error::custom)
    }
}

/// A Raft entry of the data group.
#[derive(Debug, Serialize, Deserialize)]
pub struct AppendCmd {
    /// The leader's clock when it proposed the entry: every replica stores this time.
    pub time: u64,
    /// Who sent the batch, to apply it once however often it is committed.
    pub origin: Origin,
    /// The batch of the same sender applied before this one (`origins.rs`); none in
    /// entries of versions that sent one batch at a time.
    #[serde(default)]
    pub after: Option<u64>,
    pub items: Vec<DataItem>,
}

/// An entry as written before queues were replicated: publishes only.
#[derive(Debug, Deserialize)]
struct AppendCmdV1 {
    time: u64,
    origin: Origin,
    items: Vec<PubItem>,
}

/// Reads an entry, of this version or the one before.
fn decode_append(bytes: &[u8]) -> Result<AppendCmd, rmp_serde::decode::Error> {
    rmp_serde::from_slice::<AppendCmd>(bytes).or_else(|e| {
        rmp_serde::from_slice::<AppendCmdV1>(bytes)
            .map(|c| AppendCmd {
                time: c.time,
                origin: c.origin,
                after: None,
                items: c.items.into_iter().map(DataItem::Publish).collect(),
            })
            .map_err(|_| e)
    })
}

/// `AppendCmd` as the leader encodes it, from the batch it holds (no copy).
#[derive(Serialize)]
pub(super) struct AppendCmdRef<'a> {
    pub(super) time: u64,
    pub(super) origin: Origin,
    pub(super) after: u64,
    pub(super) items: &'a [DataItem],
}

/// The sender of a batch: a node, its process (a random number made at start), and the
/// batch's number in that process (1, 2, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub node: NodeId,
    pub process: u64,
    pub batch: u64,
}

/// The last batch applied from one node, as versions that sent one batch at a time kept
/// it (read from their stores and snapshots, and moved to `Origins`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastBatch {
    process: u64,
    batch: u64,
    results: Vec<PubResult>,
}

/// One entry for the broker to apply: its items (none for Raft's own entries).
pub struct ApplyEntry {
    pub time: u64,
    pub origin: Origin,
    pub items: Vec<DataItem>,
}

/// The applied state as stored: the last entry applied and the membership then.
#[derive(Clone, Serialize, Deserialize, Default)]
struct Applied {
    last: Option<LogId>,
    membership: Membership,
    /// Per node, its last batch applied, as earlier versions kept it (empty once read).
    #[serde(default)]
    origins: std::collections::BTreeMap<NodeId, LastBatch>,
    /// The batches each sender had applied (`origins.rs`).
    #[serde(default)]
    senders: Origins,
}

impl Applied {
    /// Reads a stored applied state, moving an earlier version's table to `senders`.
    fn read(stored: Option<&[u8]>) -> Result<Applied, String> {
        let mut a: Applied = match stored {
            Some(v) => rmp_serde::from_slice(v)
                .map_err(|e| format!("the store's applied Raft state is unreadable: {e}"))?,
            None => Applied::default(),
        };
        for (node, l) in std::mem::take(&mut a.origins) {
            let o = Origin {
                node,
                process: l.process,
                batch: l.batch,
            };
            a.senders.record(&o, &l.results);
        }
        Ok(a)
    }
}

/// Builds the applied state to store, from the results of the entries applied.
pub type ApplyFinish = Box<dyn FnOnce(&[Vec<PubResult>]) -> Vec<u8> + Send>;

/// The applied state after `news` (entry index in the broker's batch, origin) got `results`.
fn finish(base: &Applied, news: &[(usize, Origin)], results: &[Vec<PubResult>]) -> Applied {
    let mut a = base.clone();
    for (i, o) in news {
        a.senders
            .record(o, results.get(*i).map_or(&[][..], Vec::as_slice));
    }
    a
}

/// What the leader gets back for an entry it proposed (on that node only, never stored).
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum EntryReply {
    Done(Vec<PubResult>),
    Refused(String),
    /// Not applied: the batch it follows is not applied yet (`origins.rs`).
    OutOfOrder,
}

/// The last applied entry and the membership of a stored applied state (`APPLIED_KEY`).
pub(super) fn applied_ids(stored: Option<&[u8]>) -> Result<(Option<LogId>, Membership), String> {
    let a = Applied::read(stored)?;
    Ok((a.last, a.membership))
}

/// What an entry of an apply call gets: applied by the broker (its index in the broker's
/// batch), the answer of a copy applied before, or a refusal.
enum Fate {
    Applied(usize, Option<Origin>),
    Repeat(Vec<PubResult>),
    /// A repeat of an entry earlier in this same call: its answer, once known.
    RepeatOf(usize),
    Refused(String),
    OutOfOrder,
    Nothing,
}

/// The replies of an apply call's entries, from their fates and the broker's results. Each
/// applied entry's results are moved into its reply (one per message: no copy), and a
/// repeat later in the call gets the same encoded reply.
fn replies(
    fates: Vec<Fate>,
    mut results: Vec<Vec<PubResult>>,
) -> Result<Vec<Reply>, rmp_serde::encode::Error> {
    let encode = |a: &EntryReply| rmp_serde::to_vec(a).map(bytes::Bytes::from);
    let mut encoded: Vec<Option<bytes::Bytes>> = vec![None; results.len()];
    let mut out = Vec::with_capacity(fates.len());
    for fate in fates {
        let bytes = match fate {
            Fate::Applied(i, _) | Fate::RepeatOf(i) => match encoded.get(i).cloned().flatten() {
                Some(b) => b,
                None => {
                    let r = results.get_mut(i).map(std::mem::take).unwrap_or_default();
                    let b = encode(&EntryReply::Done(r))?;
                    if let Some(slot) = encoded.get_mut(i) {
                        *slot = Some(b.clone());
                    }
                    b
                }
            },
            Fate::Repeat(r) => encode(&EntryReply::Done(r))?,
            Fate::Refused(e) => encode(&EntryReply::Refused(e))?,
            Fate::OutOfOrder => encode(&EntryReply::OutOfOrder)?,
            Fate::Nothing => encode(&EntryReply::Done(Vec::new()))?,
        };
        out.push(Reply(bytes));
    }
    Ok(out)
}

/// The data group's state machine: the broker's core and store, reached through its task.
#[derive(Clone)]
pub struct DataSm {
    /// The shard this group carries.
    shard: Shard,
    broker: BrokerHandle,
    applied: Arc<Mutex<Applied>>,
    snapshots: Arc<super::snapshot::Snapshots>,
}

fn sm_err(e: impl ToString) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e)).into()
}

impl DataSm {
    /// `stored`: the store's `APPLIED_KEY` value, if any.
    pub fn new(
        shard: Shard,
        broker: BrokerHandle,
        stored: Option<Vec<u8>>,
        snapshots: Arc<super::snapshot::Snapshots>,
    ) -> Result<DataSm, String> {
        let applied = Applied::read(stored.as_deref())?;
        Ok(DataSm {
            shard,
            broker,
            applied: Arc::new(Mutex::new(applied)),
            snapshots,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for DataSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.snapshots.build(&self.broker).await
    }
}

impl RaftStateMachine<TypeConfig> for DataSm {
    type SnapshotBuilder = DataSm;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let a = self.lock();
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch: Vec<ApplyEntry> = Vec::new();
        let mut fates: Vec<Fate> = Vec::new();
        let (mut last, mut membership, senders) = {
            let a = self.lock();
            (a.last, a.membership.clone(), a.senders.clone())
        };
        // The table as this call's entries change it (their results still to come), and
        // the batches applied in this call: origin → index in `batch`.
        let mut table = senders.clone();
        let mut fresh: std::collections::HashMap<(NodeId, u64, u64), usize> = Default::default();
        for entry in entries {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Normal(cmd) => match decode_append(&cmd.0) {
                    Ok(c) => {
                        let o = c.origin;
                        match table.judge(&o, c.after) {
                            Verdict::Apply => {
                                table.record(&o, &[]);
                                fresh.insert((o.node, o.process, o.batch), batch.len());
                                fates.push(Fate::Applied(batch.len(), Some(o)));
                                batch.push(ApplyEntry {
                                    time: c.time,
                                    origin: o,
                                    items: c.items,
                                });
                            }
                            Verdict::Repeat(r) => {
                                fates.push(match fresh.get(&(o.node, o.process, o.batch)) {
                                    Some(i) => Fate::RepeatOf(*i),
                                    None => Fate::Repeat(r),
                                })
                            }
                            Verdict::Older => fates.push(Fate::Refused(
                                "an older batch of this node, sent again".into(),
                            )),
                            Verdict::OutOfOrder => fates.push(Fate::OutOfOrder),
                        }
                    }
                    // The same on every replica: an entry this version cannot read.
                    Err(e) => fates.push(Fate::Refused(format!("unreadable data entry: {e}"))),
                },
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                    fates.push(Fate::Nothing);
                }
                EntryPayload::Blank => fates.push(Fate::Nothing),
            }
        }
        // The broker applies `batch` and stores the applied state with it, in one commit:
        // the origins' table needs the results, so the broker finishes it (`finish`).
        let base = Applied {
            last,
            membership,
            origins: Default::default(),
            senders,
        };
        let news: Vec<(usize, Origin)> = fates
            .iter()
            .filter_map(|f| match f {
                Fate::Applied(i, Some(o)) => Some((*i, *o)),
                _ => None,
            })
            .collect();
        if let Some(pause) = apply_pause(self.shard) {
            tokio::time::sleep(pause).await;
        }
        let (tx, rx) = oneshot::channel();
        let finisher: ApplyFinish = {
            let base = base.clone();
            let news = news.clone();
            Box::new(move |results: &[Vec<PubResult>]| {
                rmp_serde::to_vec(&finish(&base, &news, results)).unwrap_or_default()
            })
        };
        if !self
            .broker
            .send(Cmd::Apply {
                shard: self.shard,
                entries: batch,
                finish: finisher,
                reply: tx,
            })
            .await
        {
            return Err(sm_err("the broker has stopped"));
        }
        let results = rx
            .await
            .map_err(|_| sm_err("the broker has stopped"))?
            .map_err(|e| {
                tracing::error!("{e}: this node stops applying the data group until restarted");
                sm_err(e)
            })?;
        *self.lock() = finish(&base, &news, &results);
        replies(fates, results).map_err(sm_err)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        self.snapshots.begin_receiving().await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, mom_raft::openraft::BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let stored = self.snapshots.install(&self.broker, meta, snapshot).await?;
        *self.lock() = Applied::read(stored.as_deref()).map_err(sm_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.snapshots.current().await
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
