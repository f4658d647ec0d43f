//! The peer transport: Raft RPCs of every group between nodes, over TCP, one connection
//! per ordered pair of nodes (each node dials the peers it sends to).
//!
//! Frames are a 4-byte big-endian length and a MessagePack body. A connection starts with
//! `Hello { cluster, from, to, incarnation, groups }`; the listener refuses it unless the
//! cluster id is its own, `to` is its node id and the dialer spreads its topics over as many
//! data groups as it does, and answers with its own incarnation. A node reached
//! at a stale or wrong address therefore never takes RPCs meant for another (openraft:
//! connecting to the wrong node can lose data). With a cluster secret, the two sides first
//! prove they hold it (`net/secret.rs`); only then does the listener believe the dialer's
//! incarnation. The dialing side is `net/dial.rs`, the listening side `net/serve.rs`.
//!
//! The incarnation is a random number made with a node's data dir. Each end checks the
//! other's against the one it first saw for that node id (`PeerCheck`): a node whose data
//! dir was wiped comes back with a new one and is refused by every peer, both ways, so it
//! can neither vote nor take entries under its old id (it forgot its votes and its log).
//! It rejoins under a new id. Requests carry an id and a group; replies echo the id, so many
//! requests share a connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, RPCTypes};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::{GroupId, NodeId, Raft, TypeConfig};

/// Largest peer frame (snapshot chunks are far smaller).
const MAX_FRAME: usize = 64 << 20;
/// How long dialing a peer and its handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, Deserialize)]
struct Hello {
    cluster: String,
    from: NodeId,
    to: NodeId,
    incarnation: u64,
    /// The dialer's nonce, when it holds a cluster secret (`secret.rs`).
    #[serde(default)]
    nonce: Option<Vec<u8>>,
    /// How many data groups the dialer's topics spread over (0: not said).
    #[serde(default)]
    groups: u16,
}

/// The dialer's answer to a `Challenge`.
#[derive(Serialize, Deserialize)]
struct Proof {
    proof: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
enum HelloReply {
    Ok {
        incarnation: u64,
    },
    Refused(String),
    /// The listener holds a cluster secret: its nonce and its proof; the dialer answers
    /// with a `Proof`, then gets `Ok` or `Refused`.
    Challenge {
        nonce: Vec<u8>,
        proof: Vec<u8>,
    },
}

/// When each peer was last heard from (a request from it, or an answer to one of ours),
/// and whether it was reported lost.
#[derive(Clone, Default)]
pub struct Contacts {
    map: Arc<Mutex<HashMap<NodeId, Contact>>>,
}

#[derive(Clone, Copy)]
struct Contact {
    at: std::time::Instant,
    lost: bool,
}

impl Contacts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Contact>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self, node: NodeId) {
        let now = std::time::Instant::now();
        let was = self.lock().insert(
            node,
            Contact {
                at: now,
                lost: false,
            },
        );
        if was.is_some_and(|c| c.lost) {
            tracing::info!(peer = node, "peer answers again");
        }
    }

    /// A call to `node` got no answer. Logged once when the peer has been silent for
    /// `SILENT` (openraft's own error for every failed heartbeat is not shown), and once
    /// more when it answers again.
    fn failed(&self, node: NodeId, addr: &str, why: &CallError) {
        let now = std::time::Instant::now();
        let mut map = self.lock();
        let c = map.entry(node).or_insert(Contact {
            at: now,
            lost: false,
        });
        if !c.lost && now.duration_since(c.at) >= SILENT {
            c.lost = true;
            drop(map);
            tracing::warn!(peer = node, addr, "peer does not answer ({why})");
        }
    }

    /// How long ago `node` was last heard from; None if never.
    pub fn since(&self, node: NodeId) -> Option<Duration> {
        self.lock().get(&node).map(|c| c.at.elapsed())
    }
}

/// Checks a peer's incarnation: `Err(reason)` refuses the connection.
pub type PeerCheck = Arc<dyn Fn(NodeId, u64) -> Result<(), String> + Send + Sync>;

#[derive(Serialize, Deserialize)]
enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// An application request (forwarding to a leader, status): handled by the `AppHandler`.
    App(Bytes),
}

type RaftErr = RaftError<NodeId>;

#[derive(Serialize, Deserialize)]
enum RpcResult {
    Append(Result<AppendEntriesResponse<NodeId>, RaftErr>),
    Vote(Result<VoteResponse<NodeId>, RaftErr>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    App(Result<Bytes, String>),
    /// The node does not run this group.
    NoGroup,
}

#[derive(Serialize, Deserialize)]
struct Request {
    id: u64,
    group: GroupId,
    rpc: Rpc,
}

#[derive(Serialize, Deserialize)]
struct Response {
    id: u64,
    result: RpcResult,
}

/// Answers application requests from peers: `(from group, bytes) → reply bytes`.
pub type AppHandler = Arc<
    dyn Fn(GroupId, Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>>
        + Send
        + Sync,
>;

/// The groups this node runs, by id, for the listener to hand RPCs to.
#[derive(Clone, Default)]
pub struct Groups {
    map: Arc<RwLock<HashMap<GroupId, Raft>>>,
}

impl Groups {
    pub fn insert(&self, group: GroupId, raft: Raft) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group, raft);
    }

    pub fn get(&self, group: GroupId) -> Option<Raft> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    pub fn remove(&self, group: GroupId) -> Option<Raft> {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group)
    }
}

/// Who this node is, for both ends of the handshake.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cluster: String,
    pub node: NodeId,
    /// Made with the node's data dir; a wiped node has a new one.
    pub incarnation: u64,
    /// The cluster secret, if the cluster has one: peers must prove they hold it.
    pub secret: Option<Arc<Secret>>,
    /// TLS for the peer link, if the cluster has it (`net/tls.rs`).
    pub tls: Option<Arc<PeerTls>>,
    /// How many data groups the node's topics spread over: every node of a cluster must
    /// have the same, since a topic's group is worked out from it (0: not checked).
    pub groups: u16,
}

mod dial;
mod secret;
mod serve;
mod tls;
use dial::dial;
pub use secret::Secret;
use secret::{Handshake, Role};
pub use serve::serve;
use tls::PeerStream;
pub use tls::PeerTls;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec(v).map_err(|e| e.to_string())
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<RpcResult>>>>;

/// One open connection to a peer.
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    closed: tokio_util::sync::CancellationToken,
    /// When the peer last sent anything (ms since `opened`).
    heard: Arc<std::sync::atomic::AtomicU64>,
    opened: std::time::Instant,
}

/// A connection on which requests time out and nothing has come back for this long is
/// dropped: the next request dials again, and one that cannot be sent says so (a peer
/// paused, or a link that swallows everything, would otherwise keep it open for minutes).
const SILENT: Duration = Duration::from_secs(3);

impl Conn {
    fn silent_for(&self) -> Duration {
        let heard = self.heard.load(std::sync::atomic::Ordering::Relaxed);
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(heard))
    }
}

/// The connection to one peer, dialed by one caller at a time (callers to other peers do
/// not wait for it).
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// Outbound connections of this node, shared by every group's Raft.
#[derive(Clone)]
pub struct Peers {
    me: Identity,
    check: PeerCheck,
    contacts: Contacts,
    conns: Arc<Mutex<HashMap<NodeId, Slot>>>,
    /// Addresses that replace the membership's for some nodes (a test proxy, a NAT).
    routes: Arc<RwLock<HashMap<NodeId, String>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

/// Why an RPC got no answer from the peer.
#[derive(Debug)]
pub enum CallError {
    /// Not sent: no connection could be made (or it was gone before the request was
    /// written). Safe to try again.
    NotSent(String),
    /// The connection broke after the request was sent, before the answer.
    Unreachable(String),
    /// No answer in time.
    Timeout,
    /// The peer answered that the request is not for it (wrong group).
    Refused(String),
    /// The request is over the largest frame (not sent).
    TooLarge(usize),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(e) => write!(f, "not reached: {e}"),
            CallError::Unreachable(e) => write!(f, "unreachable: {e}"),
            CallError::Timeout => write!(f, "timed out"),
            CallError::Refused(e) => write!(f, "refused: {e}"),
            CallError::TooLarge(n) => write!(
                f,
                "a {n}-byte request is over the {MAX_FRAME}-byte frame limit"
            ),
        }
    }
}

impl Peers {
    pub fn new(me: Identity, check: PeerCheck) -> Peers {
        Peers {
            me,
            check,
            contacts: Contacts::default(),
            conns: Default::default(),
            routes: Default::default(),
            next_id: Default::default(),
        }
    }

    /// When each peer was last heard from; give it to `serve` too.
    pub fn contacts(&self) -> Contacts {
        self.contacts.clone()
    }

    /// Dials `addr` instead of the membership's address for `node`.
    pub fn set_route(&self, node: NodeId, addr: String) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node, addr);
    }

    fn route(&self, node: NodeId, addr: &str) -> String {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }

    async fn conn(&self, target: NodeId, addr: &str) -> Result<Arc<Conn>, CallError> {
        let slot = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.closed.is_cancelled() {
                return Ok(c.clone());
            }
        }
        // TLS checks the node's own address; a route only says where to connect.
        let routed = self.route(target, addr);
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            dial(&self.me, &self.check, target, &routed, addr),
        )
        .await
        .map_err(|_| CallError::Unreachable(format!("connecting to {routed} timed out")))??;
        let conn = Arc::new(conn);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Sends one request to `target` and waits for its answer.
    async fn call(
        &self,
        target: NodeId,
        addr: &str,
        group: GroupId,
        rpc: Rpc,
        ttl: Duration,
    ) -> Result<RpcResult, CallError> {
        let r = self.call_once(target, addr, group, rpc, ttl).await;
        if let Err(e) = &r {
            self.contacts.failed(target, addr, e);
        }
        r
    }

    async fn call_once(
        &self,
        target: NodeId,
        addr: &str,
        group: GroupId,
        rpc: Rpc,
        ttl: Duration,
    ) -> Result<RpcResult, CallError> {
        let conn = self.conn(target, addr).await.map_err(|e| match e {
            CallError::Unreachable(s) => CallError::NotSent(s),
            other => other,
        })?;
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bytes = encode(&Request { id, group, rpc }).map_err(CallError::NotSent)?;
        if bytes.len() > MAX_FRAME {
            return Err(CallError::TooLarge(bytes.len()));
        }
        let (done, wait) = oneshot::channel();
        conn.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, done);
        let forget = || {
            conn.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        };
        if conn.tx.send(bytes).await.is_err() {
            forget();
            return Err(CallError::NotSent("connection closed".into()));
        }
        match tokio::time::timeout(ttl, wait).await {
            Ok(Ok(RpcResult::NoGroup)) => Err(CallError::Refused(format!(
                "node {target} does not run group {group}"
            ))),
            Ok(Ok(r)) => {
                self.contacts.touch(target);
                Ok(r)
            }
            Ok(Err(_)) => Err(CallError::Unreachable("connection closed".into())),
            Err(_) => {
                forget();
                if conn.silent_for() >= SILENT {
                    tracing::debug!(
                        target,
                        "no answer on the connection for {SILENT:?}: dropped"
                    );
                    conn.closed.cancel();
                }
                Err(CallError::Timeout)
            }
        }
    }

    /// Sends an application request to `target` (at `addr`, unless routed elsewhere).
    pub async fn call_app(
        &self,
        target: NodeId,
        addr: &str,
        group: GroupId,
        body: Bytes,
        ttl: Duration,
    ) -> Result<Result<Bytes, String>, CallError> {
        match self.call(target, addr, group, Rpc::App(body), ttl).await? {
            RpcResult::App(r) => Ok(r),
            _ => Err(CallError::Refused("unexpected answer".into())),
        }
    }

    /// The network factory of one group.
    pub fn group(&self, group: GroupId) -> GroupNetwork {
        GroupNetwork {
            peers: self.clone(),
            group,
        }
    }
}

/// The network of one group: what openraft calls to reach the group's other replicas.
#[derive(Clone)]
pub struct GroupNetwork {
    peers: Peers,
    group: GroupId,
}

/// A client of one peer for one group.
pub struct PeerClient {
    peers: Peers,
    group: GroupId,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            peers: self.peers.clone(),
            group: self.group,
            target,
            addr: node.addr.clone(),
        }
    }
}

type NetErr<E = RaftErr> = RPCError<NodeId, BasicNode, E>;

impl PeerClient {
    fn fail<E: std::error::Error>(
        &self,
        e: CallError,
        action: RPCTypes,
        ttl: Duration,
    ) -> NetErr<E> {
        match e {
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.peers.me.node,
                target: self.target,
                timeout: ttl,
            }),
            CallError::Unreachable(e) | CallError::NotSent(e) => {
                RPCError::Unreachable(Unreachable::from(AnyError::error(e)))
            }
            CallError::Refused(e) => RPCError::Network(NetworkError::from(AnyError::error(e))),
            CallError::TooLarge(n) => RPCError::Network(NetworkError::from(AnyError::error(
                format!("a {n}-byte request is over the frame limit"),
            ))),
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> NetErr<E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }

    fn unexpected<E: std::error::Error>(&self) -> NetErr<E> {
        RPCError::Network(NetworkError::from(AnyError::error(
            "unexpected answer kind",
        )))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, NetErr> {
        let ttl = option.hard_ttl();
        let entries = rpc.entries.len() as u64;
        let r = self
            .peers
            .call(self.target, &self.addr, self.group, Rpc::Append(rpc), ttl)
            .await
            .map_err(|e| match e {
                // openraft sends fewer entries at a time when told how many might fit.
                CallError::TooLarge(_) if entries > 1 => RPCError::PayloadTooLarge(
                    openraft::error::PayloadTooLarge::new_entries_hint(entries / 2),
                ),
                e => self.fail(e, RPCTypes::AppendEntries, ttl),
            })?;
        match r {
            RpcResult::Append(Ok(r)) => Ok(r),
            RpcResult::Append(Err(e)) => Err(self.remote(e)),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, NetErr<RaftError<NodeId, InstallSnapshotError>>>
    {
        let ttl = option.hard_ttl();
        let r = self
            .peers
            .call(self.target, &self.addr, self.group, Rpc::Snapshot(rpc), ttl)
            .await
            .map_err(|e| self.fail(e, RPCTypes::InstallSnapshot, ttl))?;
        match r {
            RpcResult::Snapshot(Ok(r)) => Ok(r),
            RpcResult::Snapshot(Err(e)) => Err(self.remote(e)),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, NetErr> {
        let ttl = option.hard_ttl();
        let r = self
            .peers
            .call(self.target, &self.addr, self.group, Rpc::Vote(rpc), ttl)
            .await
            .map_err(|e| self.fail(e, RPCTypes::Vote, ttl))?;
        match r {
            RpcResult::Vote(Ok(r)) => Ok(r),
            RpcResult::Vote(Err(e)) => Err(self.remote(e)),
            _ => Err(self.unexpected()),
        }
    }
}
