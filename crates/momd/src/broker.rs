//! The broker task: the one owner of the core and the store. Sessions send it commands;
//! it applies them to the core, stages what must be stored, and runs group commit: while
//! one flush (fsync) is in progress, new publishes are staged and wait for the next one,
//! so concurrent publishers and pipelined batches share flushes. Acks and deliveries of a
//! publish are released only after the flush that covers it (DESIGN.md, Storage).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mom_proto::{
    topic, ClientFrame, ClientInfo, ErrorCode, Hello, Limits, PubMsg, PublishOk, Req, Sender,
    ServerFrame, Welcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::FsyncMode;
use crate::core::{Batch, Core, CoreError, PublishPlan, TopicState, WatchId};
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
}

/// A new connection, as the broker learns of it at `hello`.
pub struct SessionInfo {
    pub session: u64,
    pub addr: String,
    pub outbox: Outbox,
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
    },
    Disconnect {
        session: u64,
    },
    ReplayDone {
        watch: WatchId,
        /// Messages of the replay that could not be read.
        lost: u64,
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

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Session {
    outbox: Outbox,
    client: ClientInfo,
    watches: Vec<WatchId>,
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
}

/// Something to answer once the flush covering it is done.
enum Pending {
    Publish {
        session: u64,
        id: u64,
        no_ack: bool,
        topic_id: u32,
        topic: String,
        seqs: Vec<u64>,
        duplicates: u64,
        duplicate_indexes: Vec<u32>,
        batch: Option<Arc<Batch>>,
    },
    Reply {
        session: u64,
        frame: ServerFrame,
    },
}

#[derive(Default, Clone, Copy)]
struct Rate {
    in_count: u64,
    out_count: u64,
    in_rate: f64,
    out_rate: f64,
}

impl Rate {
    fn roll(&mut self, dt: f64) {
        // Exponential average over about five seconds.
        let a = 1.0 - (-dt / 5.0).exp();
        self.in_rate += a * (self.in_count as f64 / dt - self.in_rate);
        self.out_rate += a * (self.out_count as f64 / dt - self.out_rate);
        self.in_count = 0;
        self.out_count = 0;
    }
}

pub struct Broker {
    core: Core,
    store: Store,
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
    /// Per topic: the last seq whose deliveries were released. A replay reads up to it.
    delivered_upto: HashMap<u32, u64>,
    rates: HashMap<u32, Rate>,
    total_rate: Rate,
    delivered_total: u64,
    skipped_total: u64,
    last_tick: Instant,
    tx: mpsc::Sender<Cmd>,
    queues: std::collections::BTreeMap<String, crate::core::queues::Queue>,
    /// Queues whose state changed since the last commit.
    dirty_queues: std::collections::BTreeSet<String>,
    consumers: HashMap<crate::core::queues::ConsumerId, queue_ops::Consumer>,
    next_consumer: u64,
    fetches: Vec<queue_ops::FetchWaiter>,
    queue_rates: HashMap<String, Rate>,
    /// Queue state was written and should be flushed soon.
    queue_flush_wanted: bool,
}

mod queue_admin;
mod queue_delivery;
mod queue_ops;
mod stats;
mod topic_ops;
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

impl Broker {
    pub fn new(
        core: Core,
        store: Store,
        server_id: String,
        cfg: BrokerConfig,
        queues: Vec<crate::core::queues::QueueRecord>,
    ) -> (Broker, BrokerHandle, mpsc::Receiver<Cmd>) {
        let (tx, rx) = mpsc::channel(4096);
        let delivered_upto = core.topics.iter().map(|t| (t.id, t.last_seq)).collect();
        let now = now_ms();
        let queues = queues
            .into_iter()
            .map(|r| {
                (
                    r.def.name.clone(),
                    crate::core::queues::Queue::from_record(r, now),
                )
            })
            .collect();
        let b = Broker {
            core,
            store,
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
            delivered_upto,
            rates: HashMap::new(),
            total_rate: Rate::default(),
            delivered_total: 0,
            skipped_total: 0,
            last_tick: Instant::now(),
            tx: tx.clone(),
            queues,
            dirty_queues: Default::default(),
            consumers: HashMap::new(),
            next_consumer: 0,
            fetches: Vec::new(),
            queue_rates: HashMap::new(),
            queue_flush_wanted: false,
        };
        (b, BrokerHandle { tx }, rx)
    }

    /// Run until a `Shutdown` command (or every handle is gone).
    pub async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut batch_flush = match self.cfg.fsync {
            FsyncMode::Batch(d) => Some(tokio::time::interval(d)),
            _ => None,
        };
        let mut shutdown: Option<oneshot::Sender<bool>> = None;
        // Messages out of deliveries when momd last stopped go to their dead letter topics.
        let names: Vec<String> = self.queues.keys().cloned().collect();
        for n in names {
            let dead = self
                .queues
                .get_mut(&n)
                .map(|q| q.drain_dead())
                .unwrap_or_default();
            if !dead.is_empty() {
                self.dead_letter(&n, dead);
                self.dirty_queues.insert(n);
            }
        }
        // Ack deadlines and fetch timeouts.
        let mut queue_tick = tokio::time::interval(Duration::from_millis(100));
        queue_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                res = async { self.flush_rx.as_mut().expect("guarded by the branch condition").await }, if self.flush_rx.is_some() => {
                    self.flush_rx = None;
                    let res = res.unwrap_or_else(|_| Err(StoreError::Corrupt { key: String::new(), reason: "flush task vanished".into() }));
                    self.flush_done(res);
                }
                cmd = rx.recv(), if shutdown.is_none() => {
                    let Some(cmd) = cmd else { break };
                    if let Some(done) = self.handle(cmd) {
                        shutdown = Some(done);
                    }
                    // Group commit: take whatever else is waiting before flushing.
                    for _ in 0..1024 {
                        if shutdown.is_some() {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(cmd) => {
                                if let Some(done) = self.handle(cmd) {
                                    shutdown = Some(done);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => self.on_tick(),
                _ = queue_tick.tick() => {
                    if !self.queues.is_empty() || !self.fetches.is_empty() {
                        self.expire_queues(now_ms());
                    }
                }
                _ = async { batch_flush.as_mut().expect("guarded").tick().await }, if batch_flush.is_some() => {
                    if self.dirty && self.flush_rx.is_none() {
                        self.start_flush();
                    }
                }
            }
            // With acks waiting for fsync anyway, publishes are written to the store only when
            // the next flush can start: one sled batch per flush, however many publishes
            // arrived meanwhile (sled pays two log writes per batch).
            if self.cfg.fsync != FsyncMode::Always || self.flush_rx.is_none() {
                self.commit();
            }
            let queue_flush = self.queue_flush_wanted && self.cfg.fsync == FsyncMode::Always;
            if self.flush_rx.is_none() && (!self.pending.is_empty() || queue_flush) {
                self.queue_flush_wanted = false;
                self.start_flush();
            }
            if let Some(done) = shutdown.take() {
                if self.flush_rx.is_none() && self.pending.is_empty() {
                    let flushed = match self.store.flush() {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::error!("final flush failed: {e}");
                            false
                        }
                    };
                    let _ = done.send(flushed);
                    return;
                }
                shutdown = Some(done);
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!("final flush failed: {e}");
        }
    }

    fn start_flush(&mut self) {
        self.flushing = std::mem::take(&mut self.pending);
        self.dirty = false;
        let store = self.store.clone();
        let (tx, rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(store.flush());
        });
        self.flush_rx = Some(rx);
    }

    fn flush_done(&mut self, res: Result<usize, StoreError>) {
        let done = std::mem::take(&mut self.flushing);
        match res {
            Ok(_) => {
                for p in done {
                    self.release(p);
                }
            }
            Err(e) => {
                tracing::error!("flush failed: {e}");
                for p in done {
                    let (session, id) = match &p {
                        Pending::Publish { session, id, .. } => (*session, *id),
                        Pending::Reply { session, frame } => {
                            (*session, frame.reply_id().unwrap_or(0))
                        }
                    };
                    self.reply(
                        session,
                        ServerFrame::error(
                            Some(id),
                            ErrorCode::Unavailable,
                            format!("could not make the request durable ({e}); it may or may not be stored — retry with a msg_id to be safe"),
                        ),
                    );
                }
            }
        }
    }

    /// Stage `p` for release after the next flush, or release it now when acks do not
    /// wait for fsync.
    fn after_flush(&mut self, p: Pending) {
        self.dirty = true;
        match self.cfg.fsync {
            FsyncMode::Always => self.pending.push(p),
            FsyncMode::Batch(_) | FsyncMode::Never => self.release(p),
        }
    }

    fn release(&mut self, p: Pending) {
        match p {
            Pending::Reply { session, frame } => self.reply(session, frame),
            Pending::Publish {
                session,
                id,
                no_ack,
                topic_id,
                topic,
                seqs,
                duplicates,
                duplicate_indexes,
                batch,
            } => {
                let queues = self.queues_bound(topic_id);
                if let Some(batch) = batch {
                    let n = batch.msgs.len() as u64;
                    self.delivered_upto.insert(topic_id, batch.last_seq());
                    let rate = self.rates.entry(topic_id).or_default();
                    rate.in_count += n;
                    self.total_rate.in_count += n;
                    let targets = self.core.watches.targets(&batch.topic);
                    for w in targets.solo {
                        self.route(w, topic_id, batch.clone());
                    }
                    for g in targets.groups {
                        self.route_group(g, topic_id, &batch);
                    }
                    if queues > 0 {
                        self.pump_topic(topic_id, n, now_ms());
                    }
                }
                // Passive watches look without counting; a group counts once.
                let watchers = self.core.watches.count_active(&topic);
                if session != 0 {
                    if no_ack {
                        if let Some(s) = self.sessions.get(&session) {
                            s.outbox.release(id);
                        }
                    } else {
                        self.reply(
                            session,
                            ServerFrame::PublishOk(PublishOk {
                                id,
                                topic,
                                seqs,
                                duplicates,
                                watchers,
                                queues,
                                duplicate_indexes,
                            }),
                        );
                    }
                }
            }
        }
    }

    fn reply(&self, session: u64, frame: ServerFrame) {
        if let Some(s) = self.sessions.get(&session) {
            s.outbox.reply(frame, true);
        }
    }

    fn error(&self, session: u64, id: u64, code: ErrorCode, msg: impl Into<String>) {
        self.reply(session, ServerFrame::error(Some(id), code, msg));
    }

    /// Handle one command; returns the shutdown signal when asked to stop.
    fn handle(&mut self, cmd: Cmd) -> Option<oneshot::Sender<bool>> {
        match cmd {
            Cmd::Hello { info, hello, reply } => {
                let _ = reply.send(self.hello(info, hello));
            }
            Cmd::Request { session, frame } => self.request(session, frame),
            Cmd::Disconnect { session } => self.disconnect(session),
            Cmd::ReplayDone { watch, lost } => self.replay_done(watch, lost),
            Cmd::Shutdown { done } => return Some(done),
        }
        None
    }

    fn hello(&mut self, info: SessionInfo, hello: Hello) -> Result<Welcome, Box<ServerFrame>> {
        let next = self.store.next_client_id().map_err(|e| {
            Box::new(ServerFrame::error(
                Some(hello.id),
                ErrorCode::Unavailable,
                format!("cannot assign a client id: {e}"),
            ))
        })?;
        // A client id given before is kept, so identity survives reconnects.
        let client_id = match hello.client_id {
            Some(c)
                if c > 0
                    && c < next
                    && !self.sessions.values().any(|s| s.client.client_id == c) =>
            {
                c
            }
            _ => next,
        };
        if hello.client.len() > MAX_CLIENT_NAME {
            return Err(Box::new(ServerFrame::error(
                Some(hello.id),
                ErrorCode::BadRequest,
                format!(
                    "client name is {} bytes long; the limit is {MAX_CLIENT_NAME}",
                    hello.client.len()
                ),
            )));
        }
        self.dirty = true;
        let user = "anonymous".to_string();
        let now = now_ms();
        self.sessions.insert(
            info.session,
            Session {
                outbox: info.outbox,
                client: ClientInfo {
                    client_id,
                    name: hello.client.clone(),
                    user: user.clone(),
                    addr: info.addr.clone(),
                    since: now,
                    ..ClientInfo::default()
                },
                watches: Vec::new(),
            },
        );
        self.sys_event(format!(
            r#"{{"event":"client_connected","client_id":{client_id},"name":{},"addr":{}}}"#,
            json_str(&hello.client),
            json_str(&info.addr)
        ));
        Ok(Welcome {
            id: hello.id,
            version: mom_proto::PROTOCOL_VERSION,
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            server_id: self.server_id.clone(),
            client_id,
            user,
            max_frame: self.cfg.max_frame as u64,
            max_payload: self.cfg.max_payload as u64,
            max_inflight: self.cfg.max_inflight as u64,
        })
    }

    fn disconnect(&mut self, session: u64) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        for w in &s.watches {
            self.drop_watch(*w);
        }
        self.session_gone_for_queues(session);
        self.sys_event(format!(
            r#"{{"event":"client_disconnected","client_id":{},"name":{}}}"#,
            s.client.client_id,
            json_str(&s.client.name)
        ));
    }

    fn request(&mut self, session: u64, frame: ClientFrame) {
        let now = now_ms();
        if !matches!(frame, ClientFrame::Publish(_)) {
            // Keep the store in the order the broker applied things.
            self.commit();
        }
        match frame {
            ClientFrame::Publish(p) => {
                let sender = match self.sessions.get(&session) {
                    Some(s) => Sender {
                        user: s.client.user.clone(),
                        client: s.client.client_id,
                        name: s.client.name.clone(),
                    },
                    None => return,
                };
                if let Some(s) = self.sessions.get(&session) {
                    s.outbox
                        .counters
                        .msgs_in
                        .fetch_add(p.msgs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                let req = (session, p.id, p.no_ack);
                // Replies go to the requester's reply inbox, a reserved topic anyone may
                // publish to.
                let inbox = p.topic.starts_with(INBOX_PREFIX);
                if let Err((code, msg)) = self.publish(req, &p.topic, p.msgs, sender, now, inbox) {
                    self.error(session, p.id, code, msg);
                }
            }
            ClientFrame::Watch(w) => self.watch(session, w),
            ClientFrame::Unwatch(u) => {
                let owned = self
                    .sessions
                    .get_mut(&session)
                    .map(|s| {
                        let before = s.watches.len();
                        s.watches.retain(|x| *x != u.watch);
                        before != s.watches.len()
                    })
                    .unwrap_or(false);
                if owned {
                    self.drop_watch(u.watch);
                    self.reply(session, ServerFrame::Ok(Req { id: u.id }));
                } else {
                    self.error(
                        session,
                        u.id,
                        ErrorCode::NotFound,
                        format!("no watch {} on this connection", u.watch),
                    );
                }
            }
            f @ (ClientFrame::TopicList(_)
            | ClientFrame::TopicInfo(_)
            | ClientFrame::TopicRm(_)
            | ClientFrame::TopicPurge(_)
            | ClientFrame::TopicSet(_)) => self.topic_request(session, f, now),
            ClientFrame::Stats(r) => {
                let stats = self.stats(r.id, now);
                self.reply(session, ServerFrame::Stats(stats));
            }
            ClientFrame::Ping(r) => self.reply(
                session,
                ServerFrame::Pong(mom_proto::Pong {
                    id: r.id,
                    time: now,
                }),
            ),
            f @ (ClientFrame::QueueCreate(_)
            | ClientFrame::QueueBind(_)
            | ClientFrame::QueueUnbind(_)
            | ClientFrame::QueueDelete(_)
            | ClientFrame::QueuePurge(_)
            | ClientFrame::QueueInfo(_)
            | ClientFrame::QueueList(_)
            | ClientFrame::Consume(_)
            | ClientFrame::Cancel(_)
            | ClientFrame::Ack(_)
            | ClientFrame::Nack(_)
            | ClientFrame::Extend(_)
            | ClientFrame::Fetch(_)
            | ClientFrame::QueueSet(_)
            | ClientFrame::QueuePeek(_)
            | ClientFrame::QueueRedrive(_)) => self.queue_request(session, f),
            ClientFrame::Hello(h) => self.error(
                session,
                h.id,
                ErrorCode::BadRequest,
                "hello was already sent on this connection",
            ),
        }
    }

    /// Sequence one publish and stage it; its ack waits for [`Broker::commit`] and then
    /// the flush. `req` is (session, request id, no_ack); session 0 is the broker itself.
    fn publish(
        &mut self,
        req: (u64, u64, bool),
        name: &str,
        msgs: Vec<PubMsg>,
        sender: Sender,
        now: u64,
        reserved_ok: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let before: Option<TopicState> = self.core.topics.get(name).cloned();
        let existed = before.is_some();
        if !existed && name.starts_with(INBOX_PREFIX) {
            // A reply inbox is born with its short retention, so it is stored with it.
            let limits = Limits {
                max_msgs: 100,
                max_age_ms: INBOX_TTL_MS,
                ..Limits::default()
            };
            self.core.topics.get_or_create(name, now, limits);
        }
        let res = if reserved_ok {
            self.core.publish_any(name, msgs, sender, now)
        } else {
            self.core.publish(name, msgs, sender, now)
        };
        let plan: PublishPlan = res.map_err(core_error)?;
        let topic_id = plan.topic_id;
        if !plan.stored.is_empty() || plan.created {
            let Some(t) = self.core.topics.by_id(topic_id) else {
                return Err((ErrorCode::Internal, "topic vanished".into()));
            };
            let undo = Core::undo_of(&plan, before);
            if let Err(e) =
                self.store
                    .stage_publish(&mut self.staged, &plan, t, self.core.topics.next_id())
            {
                tracing::error!(topic = name, "cannot write publish: {e}");
                self.core.undo(undo);
                if plan.created {
                    self.delivered_upto.remove(&topic_id);
                }
                return Err((ErrorCode::Unavailable, format!("not stored: {e}")));
            }
            self.staged_undo.push(undo);
            self.to_trim.insert(topic_id);
        }
        if plan.created || !existed {
            self.delivered_upto.insert(topic_id, 0);
            self.topic_created_for_queues(topic_id, name);
            if !name.starts_with('$') {
                self.sys_event(format!(
                    r#"{{"event":"topic_created","topic":{}}}"#,
                    json_str(name)
                ));
            }
        }
        let batch = if plan.stored.is_empty() {
            None
        } else {
            Some(Arc::new(Batch {
                topic: Arc::from(name),
                first_seq: plan.first_seq,
                time: plan.time,
                sender: plan.sender,
                msgs: plan.stored,
            }))
        };
        let (session, id, no_ack) = req;
        self.staged_pending.push(Pending::Publish {
            session,
            id,
            no_ack,
            topic_id,
            topic: name.to_string(),
            seqs: plan.seqs,
            duplicates: plan.duplicates,
            duplicate_indexes: plan.duplicate_indexes,
            batch,
        });
        if self.staged.bytes >= STAGED_MAX_BYTES {
            self.commit();
        }
        Ok(())
    }

    /// Write every staged publish in one atomic batch, then let their acks wait for the
    /// flush (or go, without `--fsync always`) and apply retention to the topics touched.
    /// Called before anything else touches the store, so the store sees operations in the
    /// order the broker applied them.
    fn commit(&mut self) {
        self.stage_queues();
        if self.staged_pending.is_empty() && self.staged.count == 0 {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        let pending = std::mem::take(&mut self.staged_pending);
        let undos = std::mem::take(&mut self.staged_undo);
        match self.store.apply(staged) {
            Ok(()) => {
                for p in pending {
                    self.after_flush(p);
                }
                let now = now_ms();
                for t in std::mem::take(&mut self.to_trim) {
                    self.trim(t, now);
                }
            }
            Err(e) => {
                tracing::error!("cannot write publishes: {e}");
                for u in undos.into_iter().rev() {
                    self.core.undo(u);
                }
                self.to_trim.clear();
                let topics = &self.core.topics;
                self.delivered_upto
                    .retain(|id, _| topics.by_id(*id).is_some());
                for p in pending {
                    let (session, id) = match &p {
                        Pending::Publish { session, id, .. } => (*session, *id),
                        Pending::Reply { session, frame } => {
                            (*session, frame.reply_id().unwrap_or(0))
                        }
                    };
                    if session != 0 {
                        let msg = format!("not stored: {e}");
                        self.error(session, id, ErrorCode::Unavailable, msg);
                    }
                }
            }
        }
    }

    /// Apply the topic's retention limits.
    fn trim(&mut self, topic_id: u32, now: u64) {
        let Some(t) = self.core.topics.by_id(topic_id) else {
            return;
        };
        let lim = t.limits;
        let aged = t.has_age_limit() && t.msgs > 0;
        if !(t.over_size_limits() || aged) {
            return;
        }
        // Soft limits stop at what a queue still holds; hard limits do not (the queues then
        // count what they lose as dropped).
        let soft = Limits {
            hard_max_bytes: 0,
            hard_max_age_ms: 0,
            ..lim
        };
        let hard = Limits {
            max_bytes: lim.hard_max_bytes,
            max_age_ms: lim.hard_max_age_ms,
            ..Limits::default()
        };
        let keep_from = self.queue_floor(topic_id);
        for (lim, keep_from) in [(soft, keep_from), (hard, u64::MAX)] {
            let Some(t) = self.core.topics.by_id(topic_id) else {
                return;
            };
            match self.store.trim(t, lim, now, keep_from) {
                Ok(Some((first, n, bytes))) => {
                    if let Some(t) = self.core.topics.by_id_mut(topic_id) {
                        t.record_trim(first, n, bytes);
                    }
                    self.dirty = true;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(topic = topic_id, "retention failed: {e}"),
            }
        }
    }

    /// The broker's own events, as JSON messages on `$sys.events`.
    fn sys_event(&mut self, json: String) {
        let msgs = vec![PubMsg {
            payload: json.into_bytes().into(),
            ..PubMsg::default()
        }];
        let created = self.core.topics.get(SYS_EVENTS).is_none();
        let req = (0, 0, true);
        let res = self.publish(
            req,
            SYS_EVENTS,
            msgs,
            store::broker_sender(),
            now_ms(),
            true,
        );
        if let Err((_, e)) = res {
            tracing::warn!("cannot record event: {e}");
            return;
        }
        if created {
            // The broker's own log keeps the newest events only.
            if let Some(t) = self.core.topics.get(SYS_EVENTS).map(|t| t.id) {
                if let Some(t) = self.core.topics.by_id_mut(t) {
                    if t.limits == Limits::default() {
                        t.limits.max_msgs = 10_000;
                    }
                }
            }
        }
    }

    fn on_tick(&mut self) {
        self.commit();
        let now = now_ms();
        let dt = self.last_tick.elapsed().as_secs_f64().max(0.001);
        self.last_tick = Instant::now();
        for r in self.rates.values_mut() {
            r.roll(dt);
        }
        let queues = &self.queues;
        self.queue_rates.retain(|name, _| queues.contains_key(name));
        for r in self.queue_rates.values_mut() {
            r.roll(dt);
        }
        self.total_rate.roll(dt);
        let expired = self.core.tick(now);
        if !expired.is_empty() {
            if let Err(e) = self.store.remove_dedupe(&expired) {
                tracing::warn!("cannot remove expired dedupe entries: {e}");
            }
            self.dirty = true;
        }
        // Reply inboxes nobody watches and nothing was sent to for a while go away.
        let stale: Vec<u32> = self
            .core
            .topics
            .iter()
            .filter(|t| {
                t.name.starts_with(INBOX_PREFIX)
                    && now.saturating_sub(t.last_time.max(t.created)) > INBOX_TTL_MS
                    && self.core.watches.count_matching(&t.name) == 0
            })
            .map(|t| t.id)
            .collect();
        for id in stale {
            self.drop_topic(id);
        }
        let aged: Vec<u32> = self
            .core
            .topics
            .iter()
            .filter(|t| t.has_age_limit() && t.msgs > 0)
            .map(|t| t.id)
            .collect();
        for id in aged {
            self.trim(id, now);
        }
        // Tell slow consumers that caught up how much they missed.
        let mut noticed = Vec::new();
        for (w, ws) in &mut self.watches {
            if ws.skipped > 0 && ws.outbox.has_room() {
                noticed.push((*w, ws.session, ws.skipped));
                send_slow_notice(*w, ws);
            }
        }
        for (w, session, skipped) in noticed {
            let client = self
                .sessions
                .get(&session)
                .map_or(0, |s| s.client.client_id);
            self.sys_event(format!(
                r#"{{"event":"slow_consumer","client_id":{client},"watch":{w},"skipped":{skipped}}}"#
            ));
        }
        if self.dirty && self.flush_rx.is_none() && self.cfg.fsync != FsyncMode::Never {
            self.start_flush();
        }
    }

    /// The topics some pattern matches, each with the newest seq whose deliveries were
    /// released (what a replay or a new queue may read up to).
    fn matching_topics(&self, patterns: &[String]) -> Vec<(TopicState, u64)> {
        self.core
            .topics
            .iter()
            .filter(|t| patterns.iter().any(|p| topic::matches(p, &t.name)))
            .map(|t| {
                let upto = self
                    .delivered_upto
                    .get(&t.id)
                    .copied()
                    .unwrap_or(t.last_seq);
                (t.clone(), upto)
            })
            .collect()
    }

    /// Forget a topic the broker itself removes (reply inboxes).
    fn drop_topic(&mut self, id: u32) {
        let Some(name) = self.core.topics.by_id(id).map(|t| t.name.clone()) else {
            return;
        };
        self.core.topics.remove(&name);
        self.core.dedupe.forget_topic(id);
        let upto = self.delivered_upto.remove(&id);
        self.rates.remove(&id);
        self.topic_removed_for_queues(id, upto.map(|u| (1, u)));
        if let Err(e) = self.store.remove_topic(id) {
            tracing::warn!(topic = %name, "cannot remove: {e}");
        }
        self.dirty = true;
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
        | CoreError::MsgIdTooLong { .. } => ErrorCode::BadRequest,
        CoreError::PayloadTooLarge { .. } | CoreError::HeadersTooLarge { .. } => {
            ErrorCode::TooLarge
        }
        CoreError::TopicNotFound(_) => ErrorCode::NotFound,
    };
    (code, e.to_string())
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}
