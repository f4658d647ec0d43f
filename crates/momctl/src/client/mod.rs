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
mod connect;
mod listing;
mod producer;
mod publisher;
mod queue;
mod servers;
pub mod tls;
mod users;
mod watch;

use connect::tried_list;
pub use connect::ConnectOptions;
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
        key: None,
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
