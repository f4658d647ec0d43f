//! The data group: a Raft group carrying publishes, applied by every node to its own store
//! (replica mode, `store/replica.rs`) through its broker task.
//!
//! A publish reaches any node. The node's batcher gathers what its clients sent while the
//! previous batch was being committed, and sends it to the group's leader (itself, or over
//! the peer link); the leader stamps the time and proposes the batch as one entry. Once a
//! majority has it in its log (each replica fsynced it), every node applies it: the core
//! sequences it as it would a local publish, watches on that node get the messages, and the
//! leader's answer (the seqs) goes back to the client. An acknowledgement therefore means
//! committed on a majority.
//!
//! A batch whose fate is unknown (its leader died or stopped answering after it was sent)
//! is sent again, as the same batch: each carries its origin (node, process, number), and
//! the state machine remembers each origin's last batch with its results, so a batch
//! committed twice is applied once and both copies get the first one's answer (what Kafka's
//! idempotent producer does). A leader change costs the client latency, not an error.
//!
//! The store keeps which entry it applied last with its index (and the origins' table); a
//! restart applies again what came after (and drops what its log held past the index).
//! A snapshot of this group is the store itself at an applied entry (`snapshot.rs`): the
//! Raft log is purged behind it, and a node too far behind installs it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mom_proto::{ErrorCode, PubMsg, Sender};
use mom_raft::openraft::storage::{RaftStateMachine, Snapshot};
use mom_raft::openraft::{
    AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use mom_raft::{Entry, LogId, NodeId, Reply, StorageError, TypeConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use crate::broker::publish::Published;
use crate::broker::{BrokerHandle, Cmd};

/// The data group's id.
pub const DATA: mom_raft::GroupId = 1;

/// The store's metadata key holding the last applied entry and the membership.
pub const APPLIED_KEY: &str = "raft_data_applied";

/// How long a batch is tried before its publishes get an error.
const GIVE_UP: Duration = Duration::from_secs(20);

/// Most publishes in one Raft entry.
const BATCH_MAX: usize = 4096;
/// Most bytes of messages in one Raft entry (a larger single publish gets an entry of its
/// own): with `max_payload_entries` it bounds a replication request well under the peer
/// frame limit.
const BATCH_BYTES: usize = 1 << 20;

type Membership = StoredMembership<NodeId, mom_raft::openraft::BasicNode>;

/// One publish request, as the data group carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PubItem {
    pub topic: String,
    pub msgs: Vec<PubMsg>,
    pub sender: Sender,
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
    /// A node's process started: what consumers of its earlier processes held comes back.
    NodeStarted { node: NodeId },
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
                items: c.items.into_iter().map(DataItem::Publish).collect(),
            })
            .map_err(|_| e)
    })
}

/// `AppendCmd` as the leader encodes it, from the batch it holds (no copy).
#[derive(Serialize)]
struct AppendCmdRef<'a> {
    time: u64,
    origin: Origin,
    items: &'a [DataItem],
}

/// The sender of a batch: a node, its process (a random number made at start), and the
/// batch's number in that process (1, 2, …; one batch in flight at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub node: NodeId,
    pub process: u64,
    pub batch: u64,
}

/// The last batch applied from one node.
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
    /// Per node, its last batch applied (for batches committed twice).
    #[serde(default)]
    origins: std::collections::BTreeMap<NodeId, LastBatch>,
}

/// Builds the applied state to store, from the results of the entries applied.
pub type ApplyFinish = Box<dyn FnOnce(&[Vec<PubResult>]) -> Vec<u8> + Send>;

/// The applied state after `news` (entry index in the broker's batch, origin) got `results`.
fn finish(base: &Applied, news: &[(usize, Origin)], results: &[Vec<PubResult>]) -> Applied {
    let mut a = base.clone();
    for (i, o) in news {
        a.origins.insert(
            o.node,
            LastBatch {
                process: o.process,
                batch: o.batch,
                results: results.get(*i).cloned().unwrap_or_default(),
            },
        );
    }
    a
}

/// The last applied entry and the membership of a stored applied state (`APPLIED_KEY`).
pub(super) fn applied_ids(stored: Option<&[u8]>) -> Result<(Option<LogId>, Membership), String> {
    let a: Applied = match stored {
        Some(v) => rmp_serde::from_slice(v)
            .map_err(|e| format!("the store's applied Raft state is unreadable: {e}"))?,
        None => Applied::default(),
    };
    Ok((a.last, a.membership))
}

/// The data group's state machine: the broker's core and store, reached through its task.
#[derive(Clone)]
pub struct DataSm {
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
        broker: BrokerHandle,
        stored: Option<Vec<u8>>,
        snapshots: Arc<super::snapshot::Snapshots>,
    ) -> Result<DataSm, String> {
        let applied = match stored {
            Some(v) => rmp_serde::from_slice(&v)
                .map_err(|e| format!("the store's applied Raft state is unreadable: {e}"))?,
            None => Applied::default(),
        };
        Ok(DataSm {
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
        // What each entry gets: applied by the broker (its index in `batch`), the answer of
        // a copy applied before, or a refusal.
        enum Fate {
            Applied(usize, Option<Origin>),
            Repeat(Vec<PubResult>),
            /// A repeat of an entry earlier in this same call: its answer, once known.
            RepeatOf(usize),
            Refused(String),
            Nothing,
        }
        let mut batch: Vec<ApplyEntry> = Vec::new();
        let mut fates: Vec<Fate> = Vec::new();
        let (mut last, mut membership, origins) = {
            let a = self.lock();
            (a.last, a.membership.clone(), a.origins.clone())
        };
        // Origins applied earlier in this call: node → (process, batch, index in `batch`).
        let mut fresh: std::collections::BTreeMap<NodeId, (u64, u64, usize)> = Default::default();
        for entry in entries {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Normal(cmd) => match decode_append(&cmd.0) {
                    Ok(c) => {
                        let o = c.origin;
                        let seen_here = fresh
                            .get(&o.node)
                            .filter(|(p, b, _)| *p == o.process && *b >= o.batch);
                        let seen = origins
                            .get(&o.node)
                            .filter(|l| l.process == o.process && l.batch >= o.batch);
                        if let Some((_, b, i)) = seen_here {
                            fates.push(if *b == o.batch {
                                Fate::RepeatOf(*i)
                            } else {
                                Fate::Refused("an older batch of this node, sent again".into())
                            });
                        } else if let Some(l) = seen {
                            fates.push(if l.batch == o.batch {
                                Fate::Repeat(l.results.clone())
                            } else {
                                Fate::Refused("an older batch of this node, sent again".into())
                            });
                        } else {
                            fresh.insert(o.node, (o.process, o.batch, batch.len()));
                            fates.push(Fate::Applied(batch.len(), Some(o)));
                            batch.push(ApplyEntry {
                                time: c.time,
                                origin: o,
                                items: c.items,
                            });
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
            origins,
        };
        let news: Vec<(usize, Origin)> = fates
            .iter()
            .filter_map(|f| match f {
                Fate::Applied(i, Some(o)) => Some((*i, *o)),
                _ => None,
            })
            .collect();
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
        let mut replies = Vec::with_capacity(fates.len());
        for fate in fates {
            let a: Result<Vec<PubResult>, String> = match fate {
                Fate::Applied(i, _) | Fate::RepeatOf(i) => {
                    Ok(results.get(i).cloned().unwrap_or_default())
                }
                Fate::Repeat(r) => Ok(r),
                Fate::Refused(e) => Err(e),
                Fate::Nothing => Ok(Vec::new()),
            };
            replies.push(Reply(rmp_serde::to_vec(&a).map_err(sm_err)?.into()));
        }
        Ok(replies)
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
        let applied: Applied = match stored {
            Some(v) => rmp_serde::from_slice(&v).map_err(sm_err)?,
            None => Applied::default(),
        };
        *self.lock() = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.snapshots.current().await
    }
}

/// About what an item takes in a Raft entry.
fn item_bytes(item: &DataItem) -> usize {
    let item = match item {
        DataItem::Publish(p) => p,
        DataItem::Queue(_) => return 256,
    };
    let msgs: usize = item
        .msgs
        .iter()
        .map(|m| {
            m.payload.len()
                + m.msg_id.as_ref().map_or(0, String::len)
                + m.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>()
                + 8
        })
        .sum();
    msgs + item.topic.len() + item.sender.user.len() + item.sender.name.len() + 32
}

/// An item waiting in this node's batcher.
pub struct Proposal {
    pub item: DataItem,
    pub done: oneshot::Sender<PubResult>,
}

/// The batcher's queue: publishes of this node's clients, sent to the leader a batch at a
/// time. Unbounded: what a connection may have in flight is bounded before (admission).
pub type Batcher = mpsc::UnboundedSender<Proposal>;

impl super::Cluster {
    /// Runs the batcher: one batch at a time goes to the leader; what arrives meanwhile
    /// makes the next one.
    pub(super) async fn run_batcher(self, mut rx: mpsc::UnboundedReceiver<Proposal>) {
        let mut waiting: Vec<Proposal> = Vec::new();
        let process = self.inner.process;
        let mut number = 0u64;
        loop {
            if waiting.is_empty() {
                match rx.recv().await {
                    Some(p) => waiting.push(p),
                    None => return,
                }
            }
            let mut bytes = 0usize;
            while waiting.len() < BATCH_MAX && bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += item_bytes(&p.item);
                        waiting.push(p);
                    }
                    Err(_) => break,
                }
            }
            let (items, dones): (Vec<DataItem>, Vec<_>) = std::mem::take(&mut waiting)
                .into_iter()
                .map(|p| (p.item, p.done))
                .unzip();
            number += 1;
            let origin = Origin {
                node: self.node_id(),
                process,
                batch: number,
            };
            match self.propose_publishes(origin, items).await {
                Ok(results) => {
                    for (done, r) in dones.into_iter().zip(results) {
                        let _ = done.send(r);
                    }
                }
                Err(e) => {
                    for done in dones {
                        let _ = done.send(Err((ErrorCode::Unavailable, e.clone())));
                    }
                }
            }
        }
    }

    /// Sends a batch of publishes to the data group's leader and returns each one's result.
    /// A batch whose fate is unknown is sent again as the same batch (`origin`): applied
    /// once however often it is committed. `Err` for the whole batch: after `GIVE_UP`, no
    /// leader took it (then it is not stored), or its fate is still unknown.
    async fn propose_publishes(
        &self,
        origin: Origin,
        items: Vec<DataItem>,
    ) -> Result<Vec<PubResult>, String> {
        let n = items.len();
        let req = super::PeerReq::Publish { origin, items };
        let deadline = tokio::time::Instant::now() + GIVE_UP;
        let mut unknown = None;
        loop {
            match self.on_leader(DATA, &req).await {
                Ok(super::Answer::Published(r)) if r.len() == n => return Ok(r),
                Ok(_) => return Err("the leader gave an answer of another kind".into()),
                Err(super::WriteError::NoLeader(_, why)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(match unknown {
                            Some(e) => format!(
                                "may or may not be stored ({e}); retry with a msg_id to be safe"
                            ),
                            None => format!(
                                "not stored: the cluster has no reachable leader ({why}); retry"
                            ),
                        });
                    }
                }
                Err(e @ super::WriteError::Indeterminate(_)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!(
                            "may or may not be stored ({e}); retry with a msg_id to be safe"
                        ));
                    }
                    unknown = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// As the data group's leader: propose one entry of publishes, wait for it to be
    /// applied here, and return each one's result.
    pub(super) async fn lead_publish(
        &self,
        origin: Origin,
        items: &[DataItem],
    ) -> Result<Vec<PubResult>, super::WriteError> {
        let data = self.data_raft();
        if data.metrics().borrow().state != mom_raft::openraft::ServerState::Leader {
            return Err(super::WriteError::NotLeader(format!(
                "node {} does not lead the data group",
                self.node_id()
            )));
        }
        let cmd = AppendCmdRef {
            time: crate::broker::now_ms(),
            origin,
            items,
        };
        let bytes =
            super::encode_named(&cmd).map_err(|e| super::WriteError::Refused(e.to_string()))?;
        match super::committed(data.client_write(mom_raft::Cmd(bytes.into()))).await? {
            Ok(r) => {
                let r: Result<Vec<PubResult>, String> = rmp_serde::from_slice(&r.data.0)
                    .unwrap_or_else(|e| Err(format!("unreadable apply result: {e}")));
                r.map_err(super::WriteError::Refused)
            }
            // Proposed, then leadership moved: the entry may still be committed.
            Err(e) => Err(super::WriteError::Indeterminate(format!(
                "the leader changed while the publish was proposed ({e})"
            ))),
        }
    }

    /// Publishes (or changes the queues) through the cluster: queued now, in the order of
    /// the calls (a connection's requests keep their order); the answer comes once
    /// committed on a majority and applied.
    pub fn propose(&self, item: DataItem) -> impl std::future::Future<Output = PubResult> {
        let (done, wait) = oneshot::channel();
        let queued = self.inner.batcher.send(Proposal { item, done }).is_ok();
        async move {
            if !queued {
                return Err((ErrorCode::Unavailable, "the node is stopping".into()));
            }
            match tokio::time::timeout(GIVE_UP + Duration::from_secs(10), wait).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err((ErrorCode::Unavailable, "the node is stopping".into())),
                Err(_) => Err((
                    ErrorCode::Unavailable,
                    "no answer from the cluster in time: the publish may or may not be \
                     stored; retry with a msg_id to be safe"
                        .into(),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<PubItem> {
        let msg = |headers: &[(&str, &str)], msg_id: Option<&str>| PubMsg {
            payload: bytes::Bytes::from_static(b"x"),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            msg_id: msg_id.map(str::to_string),
        };
        vec![PubItem {
            topic: "t".into(),
            msgs: vec![
                msg(&[], Some("id-1")),
                msg(&[("k", "v")], Some("id-2")),
                msg(&[("k", "v")], None),
                msg(&[], None),
            ],
            sender: Sender::default(),
        }]
    }

    fn msgs_of(item: &DataItem) -> &[PubMsg] {
        match item {
            DataItem::Publish(p) => &p.msgs,
            DataItem::Queue(op) => panic!("a queue operation: {op:?}"),
        }
    }

    #[test]
    fn a_msg_id_without_headers_survives_the_entry_and_the_forward() {
        let items: Vec<DataItem> = items().into_iter().map(DataItem::Publish).collect();
        let origin = Origin {
            node: 1,
            process: 2,
            batch: 3,
        };
        let entry = super::super::encode_named(&AppendCmdRef {
            time: 7,
            origin,
            items: &items,
        })
        .unwrap();
        let cmd = decode_append(&entry).unwrap();
        assert_eq!(msgs_of(&cmd.items[0]), msgs_of(&items[0]));
        let req = super::super::PeerReq::Publish {
            origin,
            items: items.clone(),
        };
        let body = super::super::encode_named(&req).unwrap();
        match rmp_serde::from_slice(&body).unwrap() {
            super::super::PeerReq::Publish { items: got, .. } => {
                assert_eq!(msgs_of(&got[0]), msgs_of(&items[0]))
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn a_queue_request_survives_the_entry_and_an_entry_of_before_still_reads() {
        let op = DataItem::Queue(QueueOp::Request {
            session: 4,
            user: "ann".into(),
            frame: Box::new(mom_proto::ClientFrame::Ack(mom_proto::Ack {
                id: 9,
                queue: "q".into(),
                msgs: vec![mom_proto::MsgKey {
                    topic: "t".into(),
                    seq: 12,
                }],
            })),
        });
        let origin = Origin {
            node: 1,
            process: 2,
            batch: 3,
        };
        let items = vec![op];
        let entry = super::super::encode_named(&AppendCmdRef {
            time: 7,
            origin,
            items: &items,
        })
        .unwrap();
        let cmd = decode_append(&entry).unwrap();
        match &cmd.items[0] {
            DataItem::Queue(QueueOp::Request {
                session,
                user,
                frame,
            }) => {
                assert_eq!((*session, user.as_str()), (4, "ann"));
                assert!(
                    matches!(**frame, mom_proto::ClientFrame::Ack(ref a) if a.msgs[0].seq == 12)
                );
            }
            other => panic!("decoded as {other:?}"),
        }
        // An entry written before queues were replicated: publishes only.
        #[derive(Serialize)]
        struct V1<'a> {
            time: u64,
            origin: Origin,
            items: &'a [PubItem],
        }
        let old = items_v1();
        let entry = rmp_serde::to_vec(&V1 {
            time: 5,
            origin,
            items: &old,
        })
        .unwrap();
        let cmd = decode_append(&entry).unwrap();
        assert_eq!(cmd.time, 5);
        assert_eq!(msgs_of(&cmd.items[0]), &old[0].msgs[..]);
    }

    fn items_v1() -> Vec<PubItem> {
        let mut v = items();
        // Headers on every message: the array form of that version reads back as it was.
        for m in &mut v[0].msgs {
            m.headers.insert("h".into(), "1".into());
        }
        v
    }
}
