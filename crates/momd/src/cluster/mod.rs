//! Cluster mode: this node's part in the Raft groups (openraft, through `mom_raft`).
//!
//! A node keeps every group's log in `DATA/raft` (`mom_raft::log_store`), listens for peers
//! on `--peer-listen`, and runs the metadata group with the members of `--peers`. Nodes
//! started with the same list form the cluster by themselves: each one initializes the group
//! with that list, which is safe when they all give the same one (openraft). A write to the
//! group goes to its leader: from a follower it is forwarded over the peer link.
//!
//! `identity` checks the data dir belongs to this cluster and node id; `meta` is the
//! metadata group's state (members, users and tokens); `status` answers `cluster_status`
//! and the metrics; `interest` tells the other nodes who watches what here.
//!
//! Topics are carried by data groups (`data.rs`): one, or several (`--data-groups`, fixed
//! when the data dir is made), each carrying its shard of the topics (`core/shards.rs`: a
//! topic's shard is worked out from its name) with its own leader, log, batcher, applied
//! state and snapshots (of its shard of the store alone, `store/shard_snapshot.rs`), all
//! applied by the one broker of the node. A publish or a topic's change goes to its
//! topic's group; an entry that names another group's topic is refused, the same on every
//! node. The groups' leaders start out spread (`balance.rs`); each group shares its own
//! topics' messages among watch groups by its own table (`broker/watch_groups.rs`). Queues
//! and partitioned topics keep state that is not yet spread with the topics: with several
//! groups they are refused with a reason.

mod balance;
pub mod batcher;
pub mod data;
mod forward;
pub mod identity;
mod interest;
mod membership;
mod meta;
mod origins;
mod snapshot;
mod status;
mod upkeep;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mom_raft::log_store::LogDb;
use mom_raft::net::{self, AppHandler, Groups, Identity, Peers};
use mom_raft::openraft::{self, BasicNode, ServerState};
use mom_raft::state_machine::StateMachine;
use mom_raft::{GroupId, NodeId, Raft};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::core::shards::{Shard, Shards};
use meta::{MetaCmd, MetaState, NodeInfo};

/// The metadata group.
pub const META: GroupId = 0;

/// How long a forwarded request may wait for the leader's answer.
const FORWARD_TTL: Duration = Duration::from_secs(5);
/// How long a request goes on trying the leader of its group while leadership moves.
const LEADER_RETRY: Duration = Duration::from_secs(5);

/// Cluster settings, from the flags (`config.rs`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub peer_listen: SocketAddr,
    pub peers: BTreeMap<NodeId, String>,
    /// The client listener, announced to the others.
    pub client_addr: String,
    /// The cluster secret peers must prove they hold (`--cluster-secret-file`).
    pub secret: Option<Arc<mom_raft::net::Secret>>,
    /// TLS for the peer link (`--peer-tls-cert`, `--peer-tls-key`, `--peer-tls-ca`).
    pub tls: Option<Arc<mom_raft::net::PeerTls>>,
    /// The data groups, each carrying its shard of the topics (`core/shards.rs`).
    pub shards: Shards,
}

/// What a node asks another over the peer link, besides Raft's own RPCs.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum PeerReq {
    /// A metadata command for the leader to propose.
    Write(Vec<u8>),
    /// The leader's view of replication in the request's group (`status`).
    Status,
    /// Add a node to the request's group (its leader does it).
    Join { node: NodeId, addr: String },
    /// Remove a node from the request's group (its leader does it).
    Leave { node: NodeId },
    /// Publishes for the data group's leader to propose.
    Publish {
        origin: data::Origin,
        /// The sender's batch applied before this one (`origins.rs`).
        #[serde(default)]
        after: u64,
        items: Vec<data::DataItem>,
    },
    /// How many consumers the node has on a queue (consumers belong to their node).
    Consumers { queue: String },
    /// How many consumers the node has on each of these queues.
    ConsumersOf { queues: Vec<String> },
    /// How many watchers the node has of a topic (watches belong to their node).
    Watchers { topic: String },
    /// The watches of `node`'s clients (`interest.rs`).
    Interest {
        node: NodeId,
        interest: crate::core::Interest,
    },
}

/// What the leader answered.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Done,
    Published(Vec<data::PubResult>),
    /// A metadata command committed and applied on the leader, at this log index.
    Committed(u64),
}

/// Why a change to the cluster did not happen.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum WriteError {
    /// No leader could be reached in time: retry later.
    #[error("the cluster has no reachable leader for group {0}: {1}")]
    NoLeader(GroupId, String),
    /// The node asked no longer leads (the asker tries the new leader).
    #[error("not the leader: {0}")]
    NotLeader(String),
    #[error("{0}")]
    NotFound(String),
    /// A node to add does not answer.
    #[error("{0}")]
    Unreachable(String),
    /// The leader refused the change.
    #[error("{0}")]
    Refused(String),
    /// Sent, and no answer: it may or may not have been done.
    #[error("{0}")]
    Indeterminate(String),
    /// A batch that reached the leader before the one it follows: not applied; sent again
    /// once that one is settled.
    #[error("a batch ahead of the one before it")]
    OutOfOrder,
}

impl WriteError {
    /// The protocol error code a client gets.
    pub fn code(&self) -> mom_proto::ErrorCode {
        use mom_proto::ErrorCode;
        match self {
            WriteError::NoLeader(..)
            | WriteError::NotLeader(_)
            | WriteError::Unreachable(_)
            | WriteError::Indeterminate(_)
            | WriteError::OutOfOrder => ErrorCode::Unavailable,
            WriteError::NotFound(_) => ErrorCode::NotFound,
            WriteError::Refused(_) => ErrorCode::Conflict,
        }
    }
}

/// How long a new node may take to catch up before `join` gives up waiting (it stays a
/// learner, still being caught up).
const JOIN_CATCH_UP: Duration = Duration::from_secs(20);

/// How long a change this node proposes as leader may wait for a majority. A leader cut off
/// from the others stays leader (openraft 0.9 does not step down without a quorum), and
/// what it proposes would wait until the partition heals.
const COMMIT_WAIT: Duration = FORWARD_TTL;

/// Waits for a proposal made here, as leader, at most `COMMIT_WAIT`.
pub(super) async fn committed<T>(
    proposal: impl std::future::Future<Output = T>,
) -> Result<T, WriteError> {
    tokio::time::timeout(COMMIT_WAIT, proposal)
        .await
        .map_err(|_| {
            WriteError::Indeterminate(format!(
                "proposed, but no majority confirmed it within {COMMIT_WAIT:?} (is this node \
                 cut off from the others?): it may or may not be done"
            ))
        })
}

struct Inner {
    settings: Settings,
    /// The metadata group.
    raft: Raft,
    sm: StateMachine<MetaState>,
    /// The data groups (`data.rs`), by shard.
    data: Vec<Raft>,
    /// A batcher per data group, by shard.
    batchers: Vec<batcher::Batcher>,
    /// This process: a random number made at start, in every batch it sends.
    process: u64,
    peers: Peers,
    /// This node's broker, for what peers ask of it.
    broker: crate::broker::BrokerHandle,
    /// Per group (meta, then the data groups): elections seen (the term went up) and
    /// leader changes.
    elections: Vec<AtomicU64>,
    leader_changes: Vec<AtomicU64>,
    /// Who watches what on this node and the others (`interest.rs`).
    interests: interest::Interests,
    /// As a data group's leader: the batches proposed, per sender (`batcher.rs`), by shard.
    proposed: Vec<batcher::Proposed>,
    stop: CancellationToken,
}

/// The groups a node runs, with their names in status and metrics: the metadata group,
/// then the data groups (`data`, or `data.0`, `data.1`, … when there are several).
pub fn group_names(shards: Shards) -> Vec<(GroupId, String)> {
    let data = shards.all().map(|s| {
        let name = match shards.count() {
            1 => "data".to_string(),
            _ => format!("data.{s}"),
        };
        (data::group_of(s), name)
    });
    std::iter::once((META, "meta".to_string()))
        .chain(data)
        .collect()
}

/// This node's handle on the cluster; clones share it.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// Entries of the data group between two of its snapshots, at the least (`upkeep.rs` paces
/// the builds by what their cuts cost): the Raft log holds about this many plus
/// `DATA_LOG_KEEP` (and what a lagging follower still needs). A snapshot copies the whole
/// store (`snapshot.rs`), so this trades the log's size against how often that copy is
/// made. `MOMD_DATA_SNAPSHOT_EVERY` overrides it (tests use a small
/// value to see purges and installs quickly).
const DATA_SNAPSHOT_EVERY: u64 = 5000;
/// Most entries kept in the data group's log behind its snapshot, for a follower behind
/// to catch up from the log rather than from a whole snapshot (`MOMD_DATA_LOG_KEEP`
/// overrides it). A node that installs a snapshot (one that joined, or was down during a
/// purge) needs the log from the snapshot on, and an install of a large store takes tens
/// of seconds: the log must still start there when it is done, or it needs another
/// snapshot, and another (it did, with 1000 entries kept and 700,000 messages stored).
const DATA_LOG_KEEP: u64 = 50_000;
/// Most bytes of entries kept behind the snapshot: with large entries (megabyte
/// messages) fewer than `DATA_LOG_KEEP` are kept, so the log's size on disk stays bounded
/// (`MOMD_DATA_LOG_KEEP_BYTES` overrides it).
const DATA_LOG_KEEP_BYTES: u64 = 256 << 20;

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: {v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// `MOMD_DATA_SNAPSHOT_EVERY`, or `DATA_SNAPSHOT_EVERY`.
fn data_snapshot_every() -> anyhow::Result<u64> {
    Ok(env_u64("MOMD_DATA_SNAPSHOT_EVERY", DATA_SNAPSHOT_EVERY)?.max(1))
}

fn raft_config(cluster_id: &str, group: GroupId) -> anyhow::Result<Arc<openraft::Config>> {
    let (snapshots, keep, install_timeout) = if group == META {
        (openraft::SnapshotPolicy::LogsSinceLast(1000), 100, 200)
    } else {
        // Built when `pace_snapshots` asks, purged by `purge_data_log` (by entries and
        // bytes), not by openraft. The last chunk of a snapshot is answered once the
        // follower installed it: it checks and unpacks the whole store first.
        (openraft::SnapshotPolicy::Never, u64::MAX, 60_000)
    };
    let c = openraft::Config {
        cluster_name: cluster_id.to_string(),
        // openraft 0.9 has a follower wait out the leader's lease (`election_timeout_max`)
        // and then its own timeout (drawn once, between min and max) before it stands: a
        // leader's loss is noticed 1.2–1.6 s after its last heartbeat, and votes are
        // refused for 0.8 s after one (no pre-vote in 0.9; the lease stands in for it).
        // Twice these (what earlier versions had) made failovers take 2.4–3.2 s and up to
        // 6 s under load; shorter ones than these flap when nodes share a few busy cores
        // (heartbeats are answered late). A vote request waits `election_timeout_min` for
        // its answer, which includes the voter's fsync of its vote (`mom_raft::flusher`):
        // one slower than 0.4 s costs another round.
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: snapshots,
        // A replication request carries about `REPLICATE_BYTES` of entries
        // (`mom_raft::log_store`), and at most this many: a follower behind on small
        // entries (a node that joined, or installed a snapshot while the others went on)
        // catches up hundreds at a time, before the next purge would need another snapshot.
        max_payload_entries: 512,
        max_in_snapshot_log_to_keep: keep,
        install_snapshot_timeout: install_timeout,
        ..Default::default()
    };
    Ok(Arc::new(c.validate().context("Raft settings")?))
}

/// Starts this node's part of the cluster.
/// `broker` applies the data groups' entries; `applied` is what its store says each one
/// applied last, by shard (`data::applied_key`). `auth` is loaded from the metadata
/// group's users, and its changes go there.
pub async fn start(
    settings: Settings,
    data: &Path,
    identity: &identity::NodeIdentity,
    broker: crate::broker::BrokerHandle,
    applied: Vec<Option<Vec<u8>>>,
    auth: Arc<crate::auth::Auth>,
) -> anyhow::Result<Cluster> {
    let db = LogDb::open(&data.join("raft")).map_err(anyhow::Error::msg)?;
    let hook = meta::auth_hook(&auth, broker.clone());
    let sm = StateMachine::open(&db, META, MetaState::with_auth_hook(hook))
        .map_err(anyhow::Error::msg)
        .context("the metadata group's snapshot")?;
    let me = Identity {
        cluster: settings.cluster_id.clone(),
        node: settings.node_id,
        incarnation: identity.incarnation(),
        secret: settings.secret.clone(),
        tls: settings.tls.clone(),
        groups: settings.shards.count(),
    };
    let check = db.peer_check();
    let peers = Peers::new(me.clone(), check.clone());
    for (node, addr) in routes_from_env()? {
        tracing::info!("dialing node {node} at {addr} (MOMD_PEER_ROUTES)");
        peers.set_route(node, addr);
    }
    let raft = Raft::new(
        settings.node_id,
        raft_config(&settings.cluster_id, META)?,
        peers.group(META),
        db.group(META).map_err(anyhow::Error::msg)?,
        sm.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the metadata group: {e}"))?;
    let shards = settings.shards;
    let groups = Groups::default();
    groups.insert(META, raft.clone());
    let installs = Arc::new(tokio::sync::Mutex::new(()));
    let mut data_rafts = Vec::new();
    let mut data_snapshots = Vec::new();
    for s in shards.all() {
        let group = data::group_of(s);
        let snapshots = snapshot::Snapshots::open(data, s, shards, installs.clone())
            .context("the data group's snapshot directory")?;
        let stored = applied.get(usize::from(s)).cloned().flatten();
        let snapshots = Arc::new(snapshots);
        data_snapshots.push(snapshots.clone());
        let sm =
            data::DataSm::new(s, broker.clone(), stored, snapshots).map_err(anyhow::Error::msg)?;
        let r = Raft::new(
            settings.node_id,
            raft_config(&settings.cluster_id, group)?,
            peers.group(group),
            db.group(group).map_err(anyhow::Error::msg)?,
            sm,
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting data group {group}: {e}"))?;
        groups.insert(group, r.clone());
        data_rafts.push(r);
    }
    let (batchers, batch_rxs): (Vec<_>, Vec<_>) = shards
        .all()
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let names = group_names(shards);
    let listener = tokio::net::TcpListener::bind(settings.peer_listen)
        .await
        .with_context(|| format!("--peer-listen: listening on {}", settings.peer_listen))?;
    let inner = Arc::new(Inner {
        settings,
        raft: raft.clone(),
        sm,
        data: data_rafts.clone(),
        batchers,
        process: identity::random_u64(),
        peers: peers.clone(),
        broker: broker.clone(),
        elections: names.iter().map(|_| AtomicU64::new(0)).collect(),
        leader_changes: names.iter().map(|_| AtomicU64::new(0)).collect(),
        interests: Default::default(),
        proposed: shards.all().map(|_| Default::default()).collect(),
        stop: CancellationToken::new(),
    });
    let cluster = Cluster { inner };
    let handler: AppHandler = {
        let c = cluster.clone();
        Arc::new(move |group, body| {
            let c = c.clone();
            Box::pin(async move { c.serve_peer(group, body).await })
        })
    };
    tokio::spawn(net::serve(
        listener,
        me,
        groups,
        Some(handler),
        check,
        peers.contacts(),
    ));
    tracing::info!(
        cluster = %cluster.inner.settings.cluster_id,
        node = cluster.inner.settings.node_id,
        "cluster mode: peers on {}, {} members",
        cluster.inner.settings.peer_listen,
        cluster.inner.settings.peers.len()
    );
    let settings_node = cluster.node_id();
    let first_member = cluster
        .inner
        .settings
        .peers
        .contains_key(&cluster.node_id());
    if !first_member && !raft.is_initialized().await.unwrap_or(true) {
        tracing::info!(
            "node {} is not one of --peers: waiting to be added (momctl cluster join {} {})",
            cluster.node_id(),
            cluster.node_id(),
            cluster.inner.settings.peer_listen
        );
    }
    let members: BTreeMap<NodeId, BasicNode> = cluster
        .inner
        .settings
        .peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    // Every first member does this with the same list; all but one find the group already
    // formed, which is what they want. The one that forms a group stands for its leader at
    // once, so each member forms the data groups it is the preferred leader of first
    // (`balance.rs`) and the rest a moment later, if nobody has: the groups' leaders start
    // out spread over the nodes.
    let mine: Vec<&Raft> = std::iter::once(&raft)
        .chain(
            data_rafts
                .iter()
                .zip(shards.all())
                .filter(|(_, s)| balance::preferred(&members, *s) == Some(settings_node))
                .map(|(r, _)| r),
        )
        .collect();
    if first_member {
        for r in &mine {
            initialize(r, &members).await;
        }
        let rest: Vec<Raft> = data_rafts
            .iter()
            .filter(|r| !mine.iter().any(|m| std::ptr::eq(*m, *r)))
            .cloned()
            .collect();
        let members = members.clone();
        tokio::spawn(async move {
            tokio::time::sleep(balance::FORM_WAIT).await;
            for r in &rest {
                initialize(r, &members).await;
            }
        });
    }
    for (i, (group, _)) in names.iter().enumerate() {
        tokio::spawn(cluster.clone().watch_elections(i, *group));
    }
    for (s, rx) in shards.all().zip(batch_rxs) {
        tokio::spawn(cluster.clone().run_batcher(s, rx));
    }
    let keep = env_u64("MOMD_DATA_LOG_KEEP", DATA_LOG_KEEP)?;
    let keep_bytes = env_u64("MOMD_DATA_LOG_KEEP_BYTES", DATA_LOG_KEEP_BYTES)?;
    let every = data_snapshot_every()?;
    for (s, snapshots) in shards.all().zip(data_snapshots) {
        tokio::spawn(
            cluster
                .clone()
                .purge_data_log(db.clone(), s, keep, keep_bytes),
        );
        tokio::spawn(cluster.clone().pace_snapshots(s, snapshots, every));
    }
    tokio::spawn(cluster.clone().run_interest());
    tokio::spawn(cluster.clone().announce());
    auth.set_replicator(Arc::new(cluster.clone()));
    tokio::spawn(meta::catch_up(cluster.clone(), auth));
    Ok(cluster)
}

impl Cluster {
    pub fn node_id(&self) -> NodeId {
        self.inner.settings.node_id
    }

    /// The entry came from this process (its clients' requests are this node's to answer).
    pub fn is_mine(&self, origin: &data::Origin) -> bool {
        origin.node == self.node_id() && origin.process == self.inner.process
    }

    /// When each peer was last heard from.
    pub fn contacts(&self) -> net::Contacts {
        self.inner.peers.contacts()
    }

    /// This node leads shard `shard`'s data group (as far as it knows).
    pub fn leads_data(&self, shard: Shard) -> bool {
        self.data_raft(shard)
            .is_some_and(|r| r.metrics().borrow().state == ServerState::Leader)
    }

    /// The data groups' shards.
    pub fn shards(&self) -> Shards {
        self.inner.settings.shards
    }

    /// The groups this node runs, with their names.
    pub fn groups(&self) -> Vec<(GroupId, String)> {
        group_names(self.shards())
    }

    pub fn cluster_id(&self) -> &str {
        &self.inner.settings.cluster_id
    }

    /// Stops the groups (at shutdown).
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        for r in &self.inner.data {
            let _ = r.shutdown().await;
        }
        let _ = self.inner.raft.shutdown().await;
    }

    /// The group's Raft (the metadata group's for a group this node does not run).
    fn raft_of(&self, group: GroupId) -> &Raft {
        data::shard_of(group, self.shards())
            .and_then(|s| self.data_raft(s))
            .unwrap_or(&self.inner.raft)
    }

    pub(super) fn data_raft(&self, shard: Shard) -> Option<&Raft> {
        self.inner.data.get(usize::from(shard))
    }

    /// The voters of the data group, as this node knows them: each holds a copy of every
    /// message.
    pub fn data_voters(&self) -> usize {
        let Some(data) = self.inner.data.first() else {
            return 0;
        };
        data.metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count()
    }

    /// Says where clients reach this node, until the metadata group holds it.
    async fn announce(self) {
        let info = NodeInfo {
            addr: self.inner.settings.client_addr.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        loop {
            let known = self
                .inner
                .sm
                .with_app(|m| m.nodes.get(&self.node_id()) == Some(&info));
            if known {
                return;
            }
            let cmd = MetaCmd::NodeInfo {
                node: self.node_id(),
                info: info.clone(),
            };
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                r = self.write(cmd) => if let Err(e) = r {
                    tracing::debug!("announcing this node: {e}");
                },
            }
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// MessagePack of what carries publishes between nodes (a forwarded `PeerReq::Publish`, a
/// data entry), with every struct as a map of its field names. The default, a struct as an
/// array of its fields, loses their places where a field is skipped: `PubMsg` leaves out
/// empty headers, so a message with a `msg_id` and no headers was read back with the id
/// where the headers belong, and refused. Either form decodes, so what older nodes wrote
/// still reads.
pub(crate) fn encode_named<T: Serialize + ?Sized>(
    v: &T,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(v)
}

/// Forms a group with `members`, unless it is formed already.
async fn initialize(r: &Raft, members: &BTreeMap<NodeId, BasicNode>) {
    if !r.is_initialized().await.unwrap_or(true) {
        if let Err(e) = r.initialize(members.clone()).await {
            tracing::debug!("initialize: {e}");
        }
    }
}

/// `MOMD_PEER_ROUTES=2=HOST:PORT,3=HOST:PORT`: where this node dials some peers instead
/// of their `--peers` address (a proxy in front of them in fault tests, or a NAT). The
/// peer handshake still checks who answers.
fn routes_from_env() -> anyhow::Result<Vec<(NodeId, String)>> {
    let Ok(v) = std::env::var("MOMD_PEER_ROUTES") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("MOMD_PEER_ROUTES: {item:?} is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("MOMD_PEER_ROUTES: {item:?}: bad node id"))?;
        out.push((id, addr.trim().to_string()));
    }
    Ok(out)
}
