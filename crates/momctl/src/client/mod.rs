//! An async client of the mom protocol (docs/protocol.md).
//!
//! One task reads the connection and routes each frame: replies to the request that waits
//! for them (by id), deliveries and notices to their watch or consumer. Requests are written
//! by a writer task, so many can be in flight at once (pipelining).
//!
//! The reader never waits on a consumer: a consumer's deliveries are bounded by its credit,
//! so its channel needs no bound, and a consumer that waits for the reply to its own ack
//! cannot stall the reader that would route that reply. A watch's channel is bounded (that
//! is how the broker learns of a slow watcher), so a program that reads a watch must not
//! wait for replies on the same connection while the watch is unread.

mod admin;
mod listing;
mod producer;
mod publisher;
mod servers;
pub mod tls;
mod users;
mod watch;

pub use listing::{PageOf, Pager, Section};
pub use producer::{MsgAck, Producer, DEFAULT_IN_FLIGHT};
pub use publisher::Publisher;
pub use servers::{parse_servers, server_list_arg};
pub use users::Grants;
pub use watch::{key, keys, ConsumerStream, WatchEvent, WatchStream};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mom_proto::{
    Ack, ClientFrame, Codec, Consume, ErrorCode, ErrorFrame, Fetch, Headers, Hello, Message,
    MsgKey, Nack, PubMsg, Publish, PublishOk, ServerFrame, StartAt, Watch, Welcome,
    PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// Every server of a list failed: each with its reason, in the order they were tried.
    #[error("cannot connect to any of {} servers: {}", .tried.len(), tried_list(.tried))]
    ConnectAny { tried: Vec<(String, String)> },
    #[error("{code}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("connection to the broker was lost{0}")]
    Closed(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The momctl exit code for this error (DESIGN.md, momctl).
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Connect { .. } | ClientError::ConnectAny { .. } => 4,
            ClientError::Timeout(_) => 3,
            ClientError::Server { code, .. } => match code {
                ErrorCode::Unauthorized | ErrorCode::Forbidden => 5,
                ErrorCode::NotFound => 6,
                ErrorCode::Conflict => 7,
                _ => 1,
            },
            ClientError::Closed(_) => EXIT_CONNECTION_LOST,
            ClientError::Protocol(_) => 1,
        }
    }

    /// The connection is gone (the broker stopped or the network failed): worth
    /// reconnecting.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, ClientError::Closed(_))
    }

    /// No server could be reached (exit 4).
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::ConnectAny { .. }
        )
    }

    /// Is this answer to a hello the same from every server, so that trying the next one
    /// of a list is pointless? Credentials and the protocol version are the cluster's, not a
    /// node's; a server that is shutting down, full or unreachable is only itself.
    fn holds_for_every_server(&self) -> bool {
        matches!(
            self,
            ClientError::Server {
                code: ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::BadRequest,
                ..
            }
        )
    }

    fn from_frame(e: ErrorFrame) -> Self {
        ClientError::Server {
            code: e.code,
            message: e.message,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// momctl's exit code when the connection to the broker was lost (and reconnecting was off
/// or gave up).
pub const EXIT_CONNECTION_LOST: u8 = 8;

/// `a:1: connection refused; b:2: no answer in 5s`.
fn tried_list(tried: &[(String, String)]) -> String {
    let each: Vec<String> = tried
        .iter()
        .map(|(addr, why)| format!("{addr}: {why}"))
        .collect();
    each.join("; ")
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The servers (`HOST:PORT`), tried in this order: one that cannot be reached, or fails
    /// the TLS or hello handshake for its own reasons, gives way to the next; a refusal of
    /// the credentials or the protocol version is the answer. See [`parse_servers`].
    pub servers: Vec<String>,
    pub name: String,
    pub client_id: Option<u64>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Speak TLS, trusting these CA certificates (PEM); see also `tls_insecure`.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Speak TLS without checking the server's certificate.
    pub tls_insecure: bool,
    /// Speak TLS, trusting the system's CA certificates (when `tls_ca` is not given).
    pub tls: bool,
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    /// Options for one server.
    pub fn new(addr: impl Into<String>, name: impl Into<String>) -> Self {
        ConnectOptions::with_servers(vec![addr.into()], name)
    }

    /// Options for a list of servers to fail over between, tried in this order (see
    /// [`parse_servers`] for a list as people write it).
    pub fn with_servers(servers: Vec<String>, name: impl Into<String>) -> Self {
        ConnectOptions {
            servers,
            name: name.into(),
            client_id: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_insecure: false,
            tls: false,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// The servers as written on a command line, `a:1,b:2` (what saved tokens are kept
    /// under).
    pub fn server_list(&self) -> String {
        self.servers.join(",")
    }

    /// The same options with the list turned to start at `server`: a second connection to
    /// the node the first one uses.
    pub fn starting_at(&self, server: &str) -> ConnectOptions {
        let mut o = self.clone();
        o.servers = servers::rotated(&self.servers, server, 0);
        o
    }

    /// The same options with the list turned to start after `server`: a reconnect moves on
    /// from the server it lost and comes back to it last (as NATS clients do).
    pub fn starting_after(&self, server: &str) -> ConnectOptions {
        let mut o = self.clone();
        o.servers = servers::rotated(&self.servers, server, 1);
        o
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<ServerFrame>>>>;

/// Consumers share the routing table of watches, their ids marked with this bit.
const CONSUMER_BIT: u64 = 1 << 63;
type Watches = Arc<Mutex<HashMap<u64, Route>>>;

/// Where the reader hands a watch's or a consumer's frames.
#[derive(Clone)]
enum Route {
    /// A watch: bounded, so a slow reader pushes back on the connection.
    Watch(mpsc::Sender<WatchEvent>),
    /// A consumer: its credit bounds what can arrive.
    Consumer(mpsc::UnboundedSender<WatchEvent>),
}

impl Route {
    async fn send(&self, ev: WatchEvent) {
        match self {
            Route::Watch(tx) => {
                // Waiting here is the backpressure that lets the server see a slow reader.
                let _ = tx.send(ev).await;
            }
            Route::Consumer(tx) => {
                let _ = tx.send(ev);
            }
        }
    }
}

struct Shared {
    waiters: Waiters,
    watches: Watches,
    /// Routes of watches whose `watch_ok` has not come yet, by request id. The reader moves
    /// a route to `watches` when it sees the `watch_ok`, before it reads the next frame, so
    /// no delivery can arrive unrouted.
    pending_watches: Watches,
    /// Set once the reader ends; says why.
    closed: Mutex<Option<String>>,
    /// Cancelled when the reader ends, so a caller can notice a lost connection at once.
    gone: CancellationToken,
}

/// A connection to momd. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct Client {
    out: mpsc::Sender<ClientFrame>,
    shared: Arc<Shared>,
    next_id: Arc<AtomicU64>,
    welcome: Arc<Welcome>,
    server: Arc<str>,
}

impl Client {
    /// Connect and say hello: to the first of `opts.servers` that answers (see
    /// [`ConnectOptions::servers`]).
    pub async fn connect(opts: &ConnectOptions) -> Result<Client> {
        let tls = tls::connector(opts).map_err(|reason| ClientError::Connect {
            addr: opts.server_list(),
            reason,
        })?;
        let mut tried: Vec<(String, ClientError)> = Vec::new();
        for addr in &opts.servers {
            match Client::connect_to(opts, addr, tls.as_ref()).await {
                Ok(c) => return Ok(c),
                Err(e) if e.holds_for_every_server() => return Err(e),
                Err(e) => tried.push((addr.clone(), e)),
            }
        }
        match tried.len() {
            0 => Err(ClientError::Connect {
                addr: "no server".into(),
                reason: "the server list is empty".into(),
            }),
            // One server: its own error, as it always was.
            1 => Err(tried.remove(0).1),
            _ => Err(ClientError::ConnectAny {
                tried: tried
                    .into_iter()
                    .map(|(addr, e)| {
                        let why = match e {
                            ClientError::Connect { reason, .. } => servers::compact(&reason),
                            other => other.to_string(),
                        };
                        (addr, why)
                    })
                    .collect(),
            }),
        }
    }

    /// Connect to one server and say hello.
    async fn connect_to(
        opts: &ConnectOptions,
        addr: &str,
        tls: Option<&tls::TlsConnector>,
    ) -> Result<Client> {
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let (rd, wr, over_tls) = tls::open(addr, tls, opts.connect_timeout)
            .await
            .map_err(connect_err)?;
        // Frames from the server may exceed max_frame by one payload (docs/protocol.md).
        let max_in = mom_proto::DEFAULT_MAX_FRAME * 2 + mom_proto::DEFAULT_MAX_PAYLOAD;
        let mut reader = FramedRead::with_capacity(
            rd,
            Codec::<ServerFrame, ClientFrame>::new(max_in),
            256 * 1024,
        );
        let mut writer = FramedWrite::new(wr, Codec::<ServerFrame, ClientFrame>::new(usize::MAX));

        writer
            .send(ClientFrame::Hello(Hello {
                id: 0,
                version: PROTOCOL_VERSION,
                client: opts.name.clone(),
                client_id: opts.client_id,
                user: opts.user.clone(),
                password: opts.password.clone(),
                token: opts.token.clone(),
            }))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        // A TLS server answers a plaintext hello with an alert: say so, not "frame too large".
        let speaks_tls = |r: &FramedRead<_, _>| !over_tls && tls::looks_like_tls(r.read_buffer());
        let welcome = match tokio::time::timeout(opts.connect_timeout, reader.next()).await {
            Err(_) => return Err(connect_err("no welcome from the server".into())),
            Ok(None | Some(Err(_))) if speaks_tls(&reader) => {
                return Err(connect_err(tls::SERVER_SPEAKS_TLS.into()))
            }
            Ok(None) => return Err(connect_err("the server closed the connection".into())),
            Ok(Some(Err(e))) => return Err(connect_err(format!("not a mom server? {e}"))),
            Ok(Some(Ok(ServerFrame::Welcome(w)))) => w,
            Ok(Some(Ok(ServerFrame::Error(e)))) => return Err(ClientError::from_frame(e)),
            Ok(Some(Ok(other))) => {
                return Err(ClientError::Protocol(format!(
                    "expected welcome, got {other:?}"
                )))
            }
        };
        // A server without users takes everyone as `anonymous`: a client that asked to be
        // someone must not go on believing it is.
        if let Some(u) = opts.user.as_ref().filter(|u| **u != welcome.user) {
            return Err(ClientError::Server {
                code: ErrorCode::Unauthorized,
                message: format!(
                    "this server has no users: connected as {:?}, not {u:?} (drop --user and \
                     MOM_USER, or add the user with `momctl user add`)",
                    welcome.user
                ),
            });
        }
        writer
            .encoder_mut()
            .set_max_frame(welcome.max_frame as usize);

        let shared = Arc::new(Shared {
            waiters: Waiters::default(),
            watches: Watches::default(),
            pending_watches: Watches::default(),
            closed: Mutex::new(None),
            gone: CancellationToken::new(),
        });
        let (out_tx, mut out_rx) = mpsc::channel::<ClientFrame>(1024);
        tokio::spawn(async move {
            while let Some(f) = out_rx.recv().await {
                if writer.feed(f).await.is_err() {
                    break;
                }
                // Write what is queued in one go.
                while let Ok(f) = out_rx.try_recv() {
                    if writer.feed(f).await.is_err() {
                        return;
                    }
                }
                if writer.flush().await.is_err() {
                    break;
                }
            }
        });
        let sh = shared.clone();
        tokio::spawn(async move {
            let why = loop {
                match reader.next().await {
                    None => break String::new(),
                    Some(Err(e)) => break format!(": {e}"),
                    Some(Ok(frame)) => {
                        if let Some(why) = route(&sh, frame).await {
                            break why;
                        }
                    }
                }
            };
            *sh.closed.lock().expect("lock poisoned") = Some(why);
            // Dropping the senders wakes every waiter with an error.
            sh.waiters.lock().expect("lock poisoned").clear();
            sh.watches.lock().expect("lock poisoned").clear();
            sh.pending_watches.lock().expect("lock poisoned").clear();
            sh.gone.cancel();
        });
        Ok(Client {
            out: out_tx,
            shared,
            next_id: Arc::new(AtomicU64::new(1)),
            welcome: Arc::new(welcome),
            server: addr.into(),
        })
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The server this connection is to (one of [`ConnectOptions::servers`]).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Resolves when the connection is gone (the broker stopped, the network failed).
    pub async fn closed(&self) {
        self.shared.gone.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.shared.gone.is_cancelled()
    }

    /// The error that says why the connection is gone (what the reader saw last).
    pub fn closed_error(&self) -> ClientError {
        let why = self.shared.closed.lock().expect("lock poisoned").clone();
        ClientError::Closed(why.unwrap_or_default())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Send a request and return a receiver of its reply (for pipelining).
    pub async fn send(&self, make: impl FnOnce(u64) -> ClientFrame) -> Result<PendingReply> {
        self.send_id(self.next_id(), make).await
    }

    async fn send_id(
        &self,
        id: u64,
        make: impl FnOnce(u64) -> ClientFrame,
    ) -> Result<PendingReply> {
        let (tx, rx) = oneshot::channel();
        {
            if self.shared.closed.lock().expect("lock poisoned").is_some() {
                return Err(self.closed_error());
            }
            self.shared
                .waiters
                .lock()
                .expect("lock poisoned")
                .insert(id, tx);
        }
        if self.out.send(make(id)).await.is_err() {
            return Err(self.closed_error());
        }
        Ok(PendingReply {
            rx,
            client: self.clone(),
        })
    }

    /// Send a request without waiting for a reply slot (fire-and-forget publish).
    pub async fn send_no_reply(&self, make: impl FnOnce(u64) -> ClientFrame) -> Result<()> {
        let id = self.next_id();
        self.out
            .send(make(id))
            .await
            .map_err(|_| self.closed_error())
    }

    /// Send a request and wait for its reply; an `error` reply becomes `Err`.
    pub async fn request(&self, make: impl FnOnce(u64) -> ClientFrame) -> Result<ServerFrame> {
        self.send(make).await?.await_reply().await
    }

    /// Publish a batch to one topic and wait until it is durable.
    pub async fn publish(&self, topic: &str, msgs: Vec<PubMsg>) -> Result<PublishOk> {
        let topic = topic.to_string();
        match self
            .request(|id| {
                ClientFrame::Publish(Publish {
                    id,
                    topic,
                    msgs,
                    no_ack: false,
                })
            })
            .await?
        {
            ServerFrame::PublishOk(ok) => Ok(ok),
            other => Err(unexpected(other)),
        }
    }

    /// A pipelining publisher to one topic with up to `window` batches in flight.
    pub fn publisher(&self, topic: &str, window: usize) -> Publisher {
        Publisher::new(self.clone(), topic, window)
    }

    /// Start a watch of `patterns`.
    pub async fn watch(
        &self,
        patterns: Vec<String>,
        from: StartAt,
        at: u64,
    ) -> Result<WatchStream> {
        self.watch_with(Watch {
            patterns,
            from,
            at,
            ..Watch::default()
        })
        .await
    }

    /// Start a watch with every option of the protocol (passive, group, resume); its `id`
    /// is set here.
    pub async fn watch_with(&self, mut watch: Watch) -> Result<WatchStream> {
        // Register the route before the request so no delivery can arrive unrouted.
        let (tx, rx) = mpsc::channel(8);
        let id = self.next_id();
        self.shared
            .pending_watches
            .lock()
            .expect("lock poisoned")
            .insert(id, Route::Watch(tx));
        watch.id = id;
        let res = self.send_id(id, |_| ClientFrame::Watch(watch)).await;
        let reply = match res {
            Ok(pending) => pending.await_reply().await,
            Err(e) => Err(e),
        };
        self.shared
            .pending_watches
            .lock()
            .expect("lock poisoned")
            .remove(&id);
        match reply? {
            ServerFrame::WatchOk(ok) => Ok(WatchStream::new(ok.watch, ok.time, rx, self.clone())),
            other => Err(unexpected(other)),
        }
    }

    /// Pull up to `max` messages of a queue, waiting up to `timeout` for the first. Each
    /// must be acked (or nacked) before its ack deadline, or it is delivered again.
    pub async fn fetch(&self, queue: &str, max: u32, timeout: Duration) -> Result<Vec<Message>> {
        self.fetch_with(queue, max, timeout, false).await
    }

    /// Like [`Client::fetch`]; `detached` deliveries outlive this connection and wait for an
    /// ack or nack from anyone until their deadline.
    pub async fn fetch_with(
        &self,
        queue: &str,
        max: u32,
        timeout: Duration,
        detached: bool,
    ) -> Result<Vec<Message>> {
        let queue = queue.to_string();
        let timeout_ms = timeout.as_millis() as u64;
        match self
            .request(|id| {
                ClientFrame::Fetch(Fetch {
                    id,
                    queue,
                    max,
                    timeout_ms,
                    detached,
                })
            })
            .await?
        {
            ServerFrame::FetchOk(f) => Ok(f.msgs),
            other => Err(unexpected(other)),
        }
    }

    /// Acknowledge messages of a queue; returns once the ack is on disk.
    pub async fn ack(&self, queue: &str, msgs: Vec<MsgKey>) -> Result<()> {
        let queue = queue.to_string();
        match self
            .request(|id| ClientFrame::Ack(Ack { id, queue, msgs }))
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Push the ack deadline of deliveries still being worked on.
    pub async fn extend(&self, queue: &str, msgs: Vec<MsgKey>) -> Result<()> {
        let queue = queue.to_string();
        match self
            .request(|id| ClientFrame::Extend(Ack { id, queue, msgs }))
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Give messages back to be delivered again after `delay` (a failed delivery).
    pub async fn nack(&self, queue: &str, msgs: Vec<MsgKey>, delay: Duration) -> Result<()> {
        self.give_back(queue, msgs, delay, false).await
    }

    /// Give back messages never worked on: delivered again at once, the attempt not counted.
    pub async fn release(&self, queue: &str, msgs: Vec<MsgKey>) -> Result<()> {
        self.give_back(queue, msgs, Duration::ZERO, true).await
    }

    async fn give_back(
        &self,
        queue: &str,
        msgs: Vec<MsgKey>,
        delay: Duration,
        release: bool,
    ) -> Result<()> {
        let queue = queue.to_string();
        let delay_ms = delay.as_millis() as u64;
        match self
            .request(|id| {
                ClientFrame::Nack(Nack {
                    id,
                    queue,
                    msgs,
                    delay_ms,
                    release,
                })
            })
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Start a consumer of a queue: messages are pushed, at most `credit` unacked at once.
    pub async fn consume(&self, queue: &str, credit: u32) -> Result<ConsumerStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id();
        self.shared
            .pending_watches
            .lock()
            .expect("lock poisoned")
            .insert(id, Route::Consumer(tx));
        let c = Consume {
            id,
            queue: queue.to_string(),
            credit,
        };
        let res = self.send_id(id, |_| ClientFrame::Consume(c)).await;
        let reply = match res {
            Ok(pending) => pending.await_reply().await,
            Err(e) => Err(e),
        };
        self.shared
            .pending_watches
            .lock()
            .expect("lock poisoned")
            .remove(&id);
        match reply? {
            ServerFrame::ConsumeOk(ok) => Ok(ConsumerStream::new(
                queue.to_string(),
                ok.consumer,
                rx,
                self.clone(),
            )),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) fn forget_consumer(&self, consumer: u64) {
        self.forget_watch(CONSUMER_BIT | consumer);
    }

    pub(crate) fn forget_watch(&self, watch: u64) {
        self.shared
            .watches
            .lock()
            .expect("lock poisoned")
            .remove(&watch);
    }
}

/// Build a message.
pub fn message(payload: impl Into<Bytes>, headers: Headers, msg_id: Option<String>) -> PubMsg {
    PubMsg {
        payload: payload.into(),
        headers,
        msg_id,
    }
}

fn unexpected(f: ServerFrame) -> ClientError {
    match f {
        ServerFrame::Error(e) => ClientError::from_frame(e),
        other => ClientError::Protocol(format!("unexpected reply {other:?}")),
    }
}

/// A reply not yet received.
pub struct PendingReply {
    rx: oneshot::Receiver<ServerFrame>,
    client: Client,
}

impl PendingReply {
    /// A reply that will never come: waiting for it says the connection is lost.
    pub fn closed(client: &Client) -> PendingReply {
        let (_, rx) = oneshot::channel();
        PendingReply {
            rx,
            client: client.clone(),
        }
    }

    /// Wait for the reply; an `error` reply becomes `Err`.
    pub async fn await_reply(mut self) -> Result<ServerFrame> {
        self.wait().await
    }

    /// Wait for the reply without giving the handle up, so the wait can be one branch of a
    /// `select!`. Call it until it returns; not again after that.
    pub async fn wait(&mut self) -> Result<ServerFrame> {
        match (&mut self.rx).await {
            Ok(ServerFrame::Error(e)) => Err(ClientError::from_frame(e)),
            Ok(f) => Ok(f),
            Err(_) => Err(self.client.closed_error()),
        }
    }
}

/// Route one frame; `Some(reason)` ends the connection.
async fn route(sh: &Shared, frame: ServerFrame) -> Option<String> {
    match frame {
        ServerFrame::Deliver(d) => {
            let tx = sh
                .watches
                .lock()
                .expect("lock poisoned")
                .get(&d.watch)
                .cloned();
            if let Some(tx) = tx {
                tx.send(WatchEvent::Messages(d.msgs)).await;
            }
            None
        }
        ServerFrame::QueueDeliver(d) => {
            let tx = sh
                .watches
                .lock()
                .expect("lock poisoned")
                .get(&(CONSUMER_BIT | d.consumer))
                .cloned();
            if let Some(tx) = tx {
                tx.send(WatchEvent::Messages(d.msgs)).await;
            }
            None
        }
        ServerFrame::Notice(n) => {
            let key = match n.consumer {
                Some(c) => CONSUMER_BIT | c,
                None => n.watch,
            };
            let tx = sh.watches.lock().expect("lock poisoned").get(&key).cloned();
            if let Some(tx) = tx {
                tx.send(WatchEvent::Notice(n)).await;
            }
            None
        }
        ServerFrame::Error(e) if e.id.is_none() => Some(format!(": {}: {}", e.code, e.message)),
        other => {
            if let ServerFrame::WatchOk(ok) = &other {
                let route = sh
                    .pending_watches
                    .lock()
                    .expect("lock poisoned")
                    .remove(&ok.id);
                if let Some(tx) = route {
                    sh.watches
                        .lock()
                        .expect("lock poisoned")
                        .insert(ok.watch, tx);
                }
            }
            if let ServerFrame::ConsumeOk(ok) = &other {
                let route = sh
                    .pending_watches
                    .lock()
                    .expect("lock poisoned")
                    .remove(&ok.id);
                if let Some(tx) = route {
                    sh.watches
                        .lock()
                        .expect("lock poisoned")
                        .insert(CONSUMER_BIT | ok.consumer, tx);
                }
            }
            if let Some(id) = other.reply_id() {
                let w = sh.waiters.lock().expect("lock poisoned").remove(&id);
                if let Some(w) = w {
                    let _ = w.send(other);
                }
            }
            None
        }
    }
}
