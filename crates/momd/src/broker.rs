//! The broker task: the one owner of the core and the store. Sessions send it commands;
//! it applies them to the core, stages what must be stored, and runs group commit: while
//! one flush (fsync) is in progress, new publishes are staged and wait for the next one,
//! so concurrent publishers and pipelined batches share flushes. Acks and deliveries of a
//! publish are released only after the flush that covers it (DESIGN.md, Storage).
//!
//! This file holds the task, its state and group commit; the requests are in `broker/`:
//! `publish`, `watch_ops`, `topic_ops`, `queue_ops` / `queue_admin` / `queue_delivery`,
//! `sessions`, `client_close`, `stats` and `tick`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mom_proto::{topic, ClientFrame, ClientInfo, ErrorCode, Hello, ServerFrame, Welcome};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::admission::Ticket;
use crate::auth::{Auth, Identity};
use crate::config::FsyncMode;
use crate::core::{Batch, Core, CoreError, WatchId};
use crate::outbox::Outbox;
use crate::store::{self, Store, StoreError};
use watch_ops::send_slow_notice;

/// Settings of the broker task.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub fsync: FsyncMode,
    pub max_frame: usize,
    pub max_payload: usize,
    pub max_inflight: usize,
    pub watch_budget: usize,
    /// How long a partial frame may go without a new byte before its connection is closed.
    pub frame_timeout: std::time::Duration,
    /// Bytes of large frames (over 64 KiB) being read at once, all connections together.
    pub frame_budget: usize,
    /// Bytes of requests admitted and not yet done with, all connections together
    /// (`admission.rs`).
    pub inflight_budget: usize,
    /// How long a connection with bytes to send may take none of them before it is closed.
    pub write_timeout: std::time::Duration,
    /// On shutdown, how long a connection's requests in flight may take to finish.
    pub drain_timeout: std::time::Duration,
}

/// A new connection, as the broker learns of it at `hello`.
pub struct SessionInfo {
    pub session: u64,
    pub addr: String,
    pub outbox: Outbox,
    /// Who the connection authenticated as.
    pub identity: Identity,
}

pub enum Cmd {
    Hello {
        info: SessionInfo,
        hello: Hello,
        reply: oneshot::Sender<Result<Welcome, Box<ServerFrame>>>,
    },
    Request {
        session: u64,
        frame: ClientFrame,
        /// Its share of the admission budget: a publish keeps it until it is durable.
        ticket: Ticket,
    },
    /// Requests of one connection read together, handled in order as many `Request`s
    /// (`session/ready.rs`). A flush group may pass `GROUP_MAX` by one of these.
    Requests {
        session: u64,
        requests: Vec<(ClientFrame, Ticket)>,
    },
    Disconnect {
        session: u64,
    },
    /// A client failed to authenticate (told on `$sys.events`).
    AuthFailed {
        addr: String,
        user: String,
        reason: String,
    },
    /// A user was removed: its connections end.
    UserRemoved {
        user: String,
    },
    ReplayDone {
        watch: WatchId,
        /// Messages of the replay that could not be read.
        lost: u64,
    },
    /// A reload (SIGHUP): settings that can change while connections stay. The broker keeps
    /// what needs a restart (fsync, max_frame) from its own settings.
    Reconfigure {
        cfg: BrokerConfig,
        core: crate::core::CoreConfig,
    },
    /// `momd backup` asked for a checkpoint (SIGUSR1): answered when it is in place.
    Checkpoint {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Cluster mode: committed entries of the data group to apply (`cluster/data.rs`),
    /// answered with each entry's publish results once they are staged in the store.
    Apply {
        /// The shard whose group they are of.
        shard: crate::core::shards::Shard,
        entries: Vec<crate::cluster::data::ApplyEntry>,
        /// Makes the applied state to store with them (`cluster::data::APPLIED_KEY`) from
        /// their results.
        finish: crate::cluster::data::ApplyFinish,
        /// `Err` when they could not be stored: the node must not apply further.
        reply: oneshot::Sender<Result<Vec<Vec<crate::cluster::data::PubResult>>, String>>,
    },
    /// Cluster mode: take the cut of a data group snapshot into `dir` (`broker/snapshot.rs`).
    SnapshotCut {
        shard: crate::core::shards::Shard,
        dir: std::path::PathBuf,
        reply: oneshot::Sender<Result<crate::store::snapshot::Cut, String>>,
    },
    /// Cluster mode: carry out the install of a data group snapshot staged under the data
    /// dir, and reload from it; answered with the new store's applied Raft state.
    InstallSnapshot {
        shard: crate::core::shards::Shard,
        reply: oneshot::Sender<snapshot::Installed>,
    },
    /// A request cut up over the data groups was answered (`fan_out.rs`).
    FanOutDone {
        session: u64,
    },
    /// A publish in doubt was answered (`spread_publish.rs`).
    InDoubt {
        doubt: spread_publish::Doubt,
        result: crate::cluster::data::PubResult,
    },
    /// Cluster mode: a take (or the leader's expire) was not done; it may be proposed
    /// again (`queue_cluster.rs`).
    TakeFailed {
        key: queue_cluster::TakeKey,
    },
    /// Cluster mode: this node's part in the cluster, once started (before the listeners
    /// are served).
    SetCluster {
        cluster: crate::cluster::Cluster,
    },
    /// Cluster mode: a peer asks how many consumers this node has on each of these queues.
    QueueConsumers {
        queues: Vec<String>,
        reply: oneshot::Sender<Vec<u64>>,
    },
    /// Cluster mode: a peer asks which watchers this node has of a topic.
    Watchers {
        topic: String,
        reply: oneshot::Sender<crate::core::Watchers>,
    },
    /// A scrape of `--metrics`: the broker's part of the text.
    Metrics {
        reply: oneshot::Sender<String>,
    },
    Shutdown {
        /// Answered with whether the final flush worked.
        done: oneshot::Sender<bool>,
    },
}

/// A cheap handle to send commands to the broker task.
#[derive(Clone)]
pub struct BrokerHandle {
    tx: mpsc::Sender<Cmd>,
}

impl BrokerHandle {
    /// False when the broker task has stopped.
    pub async fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).await.is_ok()
    }
}

/// Wall-clock milliseconds: the one clock momd reads. `MOMD_FAULT_CLOCK_OFFSET_MS` (signed,
/// read once) shifts it, so a fault-injection run (`momcheck --faults clock`) can restart
/// momd with its clock jumped backwards or forwards.
pub fn now_ms() -> u64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET.get_or_init(|| {
        std::env::var("MOMD_FAULT_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    });
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    real.saturating_add(offset).max(0) as u64
}

struct Session {
    outbox: Outbox,
    client: ClientInfo,
    watches: Vec<WatchId>,
    identity: Identity,
}

enum Mode {
    Live,
    Replaying {
        buffer: Vec<Arc<Batch>>,
        buffered: usize,
        overflowed: bool,
        /// Per topic, the last seq handed to the replay task.
        covered: HashMap<u32, u64>,
    },
}

struct WatchState {
    session: u64,
    outbox: Outbox,
    mode: Mode,
    skipped: u64,
    /// Replayed messages that could not be read.
    lost: u64,
    cancel: CancellationToken,
    /// Topics the watch resumes (`after`) past what this node holds yet (a cluster node
    /// behind the one the client was on): live messages up to that seq are not sent again.
    floors: HashMap<Arc<str>, u64>,
}

/// Something to answer once the flush covering it is done.
enum Pending {
    Publish {
        session: u64,
        id: u64,
        no_ack: bool,
        /// The topic as the request named it.
        topic: String,
        answer: publish::Published,
        /// What each topic stored (one, or a partitioned topic's partitions).
        parts: Vec<publish::PubPart>,
        /// Cluster mode: the watch groups' table at the publish's place in the log.
        groups: Option<Arc<watch_groups::GroupTable>>,
    },
    Reply {
        session: u64,
        frame: ServerFrame,
    },
    /// A queue delivery: sent once the queue state that counts it is durable, so a crash
    /// can never hand the same message out again with a lower delivery count.
    Push {
        session: u64,
        frame: ServerFrame,
    },
}

impl Pending {
    /// Who must hear that this could not be made durable (session, request id); None for a
    /// delivery, which is simply not sent (its lease runs out and it comes back).
    fn requester(&self) -> Option<(u64, u64)> {
        match self {
            Pending::Publish { session, id, .. } => Some((*session, *id)),
            Pending::Reply { session, frame } => Some((*session, frame.reply_id().unwrap_or(0))),
            Pending::Push { .. } => None,
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Rate {
    /// Counted since the last roll (a second's worth: u32 is plenty).
    in_count: u32,
    out_count: u32,
    /// Messages a second, averaged over about five seconds. f32: a million topics' rates
    /// cost a third less than in f64, and a rate needs no more digits.
    in_rate: f32,
    out_rate: f32,
}

impl Rate {
    fn add_in(&mut self, n: u64) {
        self.in_count = self
            .in_count
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn add_out(&mut self, n: u64) {
        self.out_count = self
            .out_count
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn in_rate(&self) -> f64 {
        f64::from(self.in_rate)
    }

    fn out_rate(&self) -> f64 {
        f64::from(self.out_rate)
    }

    fn roll(&mut self, dt: f64) {
        // Exponential average over about five seconds.
        let a = 1.0 - (-dt / 5.0).exp();
        let step = |rate: f32, count: u32| {
            let rate = f64::from(rate);
            (rate + a * (f64::from(count) / dt - rate)) as f32
        };
        self.in_rate = step(self.in_rate, self.in_count);
        self.out_rate = step(self.out_rate, self.out_count);
        self.in_count = 0;
        self.out_count = 0;
    }

    /// Nothing came or went for long enough that both rates read as 0.0 (a message a
    /// second for one second is forgotten after about six).
    fn idle(&self) -> bool {
        self.in_count == 0 && self.out_count == 0 && self.in_rate < 0.05 && self.out_rate < 0.05
    }
}

pub struct Broker {
    core: Core,
    store: Store,
    /// Users and what they may do (shared with the connections, which authenticate).
    auth: Arc<Auth>,
    cfg: BrokerConfig,
    server_id: String,
    started: Instant,
    sessions: HashMap<u64, Session>,
    watches: HashMap<WatchId, WatchState>,
    /// Publishes sequenced but not yet written to the store (see `commit`).
    staged: store::Staged,
    staged_pending: Vec<Pending>,
    staged_undo: Vec<crate::core::Undo>,
    /// Topics written since the last commit, to apply retention to.
    to_trim: std::collections::BTreeSet<u32>,
    /// Written, waiting for a flush to start.
    pending: Vec<Pending>,
    /// Covered by the flush in progress.
    flushing: Vec<Pending>,
    flush_rx: Option<oneshot::Receiver<Result<usize, StoreError>>>,
    /// Something was staged since the last flush started.
    dirty: bool,
    rates: HashMap<u32, Rate>,
    total_rate: Rate,
    delivered_total: u64,
    skipped_total: u64,
    last_tick: Instant,
    tx: mpsc::Sender<Cmd>,
    /// Queues by name, with the indexes that find those a topic concerns.
    queues: crate::core::QueueSet,
    /// Queues whose state changed since the last commit.
    dirty_queues: std::collections::BTreeSet<String>,
    consumers: HashMap<crate::core::queues::ConsumerId, queue_ops::Consumer>,
    /// Per queue, the consumer served first by its last delivery (`queue_delivery.rs`).
    consumer_rr: HashMap<String, crate::core::queues::ConsumerId>,
    next_consumer: u64,
    fetches: Vec<queue_ops::FetchWaiter>,
    /// Cluster mode: takes under way (`queue_cluster.rs`), and what this node's takes
    /// leased in the entries being applied, to send once they are stored.
    taking: std::collections::HashSet<queue_cluster::TakeKey>,
    /// Cluster mode, as the data group's leader: when it last proposed `Retain`.
    retained_at: u64,
    replica_taken: Vec<queue_cluster::Taken>,
    queue_rates: HashMap<String, Rate>,
    /// Queue state was written and should be flushed soon.
    queue_flush_wanted: bool,
    /// Ticks since start (some chores run every few).
    ticks: u64,
    /// Bytes of the data dir, measured off the broker's task every few seconds (walking a
    /// data dir of many topics takes a while): what `stats` reports.
    disk_bytes: Arc<std::sync::atomic::AtomicU64>,
    disk_bytes_measuring: Arc<std::sync::atomic::AtomicBool>,
    /// Admission tickets of publishes: staged, waiting for the next flush, in the flush.
    staged_tickets: Vec<Ticket>,
    pending_tickets: Vec<Ticket>,
    flushing_tickets: Vec<Ticket>,
    /// This node's part in a cluster (cluster mode only).
    cluster: Option<crate::cluster::Cluster>,
    /// `core.watches.changes()` when the cluster last learnt this node's watches.
    interest_sent: u64,
    /// Cluster mode: how the nodes share the messages of watch groups (`watch_groups.rs`).
    /// Per shard: each data group shares its own topics' messages by its own table.
    watch_groups: Vec<Arc<watch_groups::GroupTable>>,
    /// Member counts this node told the others lately (count, when).
    groups_told: std::collections::BTreeMap<
        (crate::core::shards::Shard, watch_groups::GroupKey),
        (u32, u64),
    >,
    /// When the data group's leader last took a silent node out of the watch groups.
    groups_pruned_at: u64,
    /// Why the last commit failed, if it did (a replica must not apply past it).
    commit_failed: Option<String>,
    /// Entries of the data group are being applied: they are committed as one.
    applying_replicated: bool,
    /// The partition the next publish without a key goes to (modulo the partitions).
    spread: u32,
    /// Requests on partitioned topics cut up over the data groups (`fan_out.rs`): where
    /// the answers to each one's parts go, by its session number.
    fan_outs: HashMap<u64, crate::outbox::Outbox>,
    fan_outs_made: u64,
    /// Publishes of a connection to a topic held behind one in doubt
    /// (`spread_publish.rs`), by (session, topic).
    in_doubt: HashMap<(u64, String), spread_publish::Held>,
    /// Free space under the data dir; publishes are refused while it is short.
    disk: Option<crate::disk::Disk>,
    /// Counters for `--metrics`.
    metrics: metrics::Metrics,
    /// When the flush in progress started, and how many requests it covers.
    flush_started: Option<(Instant, usize)>,
    /// The flush in progress is a full one (the index too), not the segment files only.
    flushing_full: bool,
    /// When the last full flush started.
    last_full_flush: Instant,
    /// A request or a reply is staged (`release.rs`, `deliver_early`).
    staged_early: bool,
    /// `topic_created` events of the publishes staged: written as one publish to
    /// `$sys.events` with them ([`Broker::commit`]), not one each.
    created_events: Vec<String>,
    /// The index flush that runs beside the acks, every `INDEX_FLUSH_EVERY`.
    index_flush_rx: Option<oneshot::Receiver<Result<usize, StoreError>>>,
    /// A snapshot install waiting for the flushes in progress (`snapshot.rs`).
    install_waiting: Option<(
        crate::core::shards::Shard,
        oneshot::Sender<snapshot::Installed>,
    )>,
    /// An install under way: the store is not to be touched until it is done.
    installing: Option<snapshot::Installing>,
}

mod authz;
mod client_close;
mod disk_guard;
mod dispatch;
mod fan_out;
mod flush;
mod listing;
pub mod metrics;
mod partitions;
pub(crate) mod publish;
mod queue_admin;
mod queue_cluster;
mod queue_cluster_deliver;
mod queue_delivery;
mod queue_ops;
mod release;
mod replica;
mod run_loop;
mod sessions;
mod snapshot;
mod spread_publish;
mod stats;
mod tick;
mod topic_ops;
mod watch_groups;
mod watch_ops;

pub const SYS_EVENTS: &str = "$sys.events";

/// Longest client name in `hello`.
const MAX_CLIENT_NAME: usize = 256;
/// Most watches one connection may hold, and most patterns in one watch.
const MAX_WATCHES: usize = 1024;
const MAX_PATTERNS: usize = 256;

/// Reply inboxes: `$inbox.<client id>.<nonce>`, kept a minute after their last message.
pub const INBOX_PREFIX: &str = "$inbox.";
const INBOX_TTL_MS: u64 = 60_000;

/// Staged record bytes that make the broker write them out before the drain ends.
const STAGED_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Publishes made durable by one flush, at most (`group_full`).
const GROUP_MAX: usize = 4096;
/// The index is flushed this often beside the acks, which wait for the log only: what a
/// start must index again (`store/tail.rs`) is what was written since.
const INDEX_FLUSH_EVERY: Duration = Duration::from_millis(250);

impl Broker {
    /// How many topics get their own label in the metrics (`--metrics-topics`).
    pub fn set_metrics_topics(&mut self, n: usize) {
        self.metrics.max_topics = n;
    }

    pub fn new(
        core: Core,
        store: Store,
        server_id: String,
        cfg: BrokerConfig,
        queues: Vec<crate::core::queues::QueueRecord>,
        auth: Arc<Auth>,
    ) -> (Broker, BrokerHandle, mpsc::Receiver<Cmd>) {
        let shards = core.topics.shards();
        let (tx, rx) = mpsc::channel(4096);
        let disk_bytes = store.disk_bytes();
        let now = now_ms();
        let mut set = crate::core::QueueSet::new(core.topics.shards());
        set.load(queues, now);
        let queues = set;
        let b = Broker {
            core,
            store,
            auth,
            cfg,
            server_id,
            started: Instant::now(),
            sessions: HashMap::new(),
            watches: HashMap::new(),
            staged: store::Staged::default(),
            staged_pending: Vec::new(),
            staged_undo: Vec::new(),
            to_trim: Default::default(),
            pending: Vec::new(),
            flushing: Vec::new(),
            flush_rx: None,
            dirty: false,
            rates: HashMap::new(),
            total_rate: Rate::default(),
            delivered_total: 0,
            skipped_total: 0,
            last_tick: Instant::now(),
            tx: tx.clone(),
            queues,
            dirty_queues: Default::default(),
            consumers: HashMap::new(),
            consumer_rr: HashMap::new(),
            next_consumer: 0,
            fetches: Vec::new(),
            taking: Default::default(),
            retained_at: 0,
            replica_taken: Vec::new(),
            queue_rates: HashMap::new(),
            queue_flush_wanted: false,
            disk: None,
            metrics: metrics::Metrics::new(20),
            flush_started: None,
            flushing_full: false,
            last_full_flush: Instant::now(),
            staged_early: false,
            created_events: Vec::new(),
            index_flush_rx: None,
            install_waiting: None,
            installing: None,
            disk_bytes: Arc::new(std::sync::atomic::AtomicU64::new(disk_bytes)),
            disk_bytes_measuring: Default::default(),
            ticks: 0,
            staged_tickets: Vec::new(),
            pending_tickets: Vec::new(),
            flushing_tickets: Vec::new(),
            cluster: None,
            interest_sent: 0,
            watch_groups: vec![Default::default(); usize::from(shards.count())],
            groups_told: Default::default(),
            groups_pruned_at: 0,
            commit_failed: None,
            applying_replicated: false,
            spread: 0,
            fan_outs: HashMap::new(),
            fan_outs_made: 0,
            in_doubt: HashMap::new(),
        };
        (b, BrokerHandle { tx }, rx)
    }

    fn reply(&self, session: u64, frame: ServerFrame) {
        if let Some(s) = self.sessions.get(&session) {
            s.outbox.reply(frame, true);
        } else if let Some(o) = self.fan_out_outbox(session) {
            o.reply(frame, false);
        }
    }

    fn error(&self, session: u64, id: u64, code: ErrorCode, msg: impl Into<String>) {
        self.reply(session, ServerFrame::error(Some(id), code, msg));
    }
}

/// Map a core refusal to a protocol error (the one place this mapping lives).
pub fn core_error(e: CoreError) -> (ErrorCode, String) {
    let code = match &e {
        CoreError::BadName(topic::NameError::Reserved(_)) | CoreError::Reserved(_) => {
            ErrorCode::Forbidden
        }
        CoreError::BadName(_)
        | CoreError::EmptyHeaderName
        | CoreError::EmptyBatch
        | CoreError::MsgIdTooLong { .. }
        | CoreError::KeyTooLong { .. }
        | CoreError::UnderPartitioned { .. }
        | CoreError::BadPartitions(_)
        | CoreError::Partitioned(_) => ErrorCode::BadRequest,
        CoreError::TopicExists { .. } => ErrorCode::Conflict,
        CoreError::PayloadTooLarge { .. }
        | CoreError::HeadersTooLarge { .. }
        | CoreError::TooManyHeaders { .. }
        | CoreError::TooManyTopics { .. } => ErrorCode::TooLarge,
        CoreError::CreateRate { .. } => ErrorCode::RateLimited,
        CoreError::TopicNotFound(_) => ErrorCode::NotFound,
    };
    (code, e.to_string())
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}
