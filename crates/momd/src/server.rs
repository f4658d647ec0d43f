//! The listeners: each accepts connections (at most `max_connections` at once, all
//! listeners together) and runs one session task per connection until shutdown. A TLS
//! listener's handshake runs in the connection's task, so a slow or silent client never
//! holds up the accept loop.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::broker::{BrokerConfig, BrokerHandle};
use crate::session;
use crate::tls::{self, ConnRead, ConnWrite};

/// A bound listener; TLS when it has an acceptor.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsSlot>,
}

/// The TLS acceptor of a listener, replaced on reload (new certificates); a connection takes
/// the one current when it is accepted.
pub type TlsSlot = Arc<RwLock<TlsAcceptor>>;

/// The connection settings, replaced on reload; a connection takes the current ones when it
/// starts (limits the broker applies, such as max_payload, change for every connection).
pub type SharedCfg = Arc<RwLock<Arc<BrokerConfig>>>;

pub fn current<T: Clone>(slot: &RwLock<T>) -> T {
    // A writer never panics while holding it (it only swaps a value in), so a poisoned lock
    // still holds a whole value.
    match slot.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Put `value` in `slot` (a reload).
pub fn replace<T>(slot: &RwLock<T>, value: T) {
    match slot.write() {
        Ok(mut g) => *g = value,
        Err(p) => *p.into_inner() = value,
    }
}

/// What every connection of every listener shares.
struct Shared {
    broker: BrokerHandle,
    cfg: SharedCfg,
    ctx: session::Ctx,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

pub async fn serve(
    listeners: Vec<Listener>,
    broker: BrokerHandle,
    cfg: SharedCfg,
    max_connections: usize,
    ctx: session::Ctx,
    shutdown: CancellationToken,
) -> TaskTracker {
    let shared = Arc::new(Shared {
        ctx,
        broker,
        cfg,
        limit: Arc::new(Semaphore::new(max_connections)),
        tracker: TaskTracker::new(),
        shutdown,
    });
    futures_util::future::join_all(listeners.into_iter().map(|l| accept_loop(l, &shared))).await;
    shared.tracker.close();
    shared.tracker.clone()
}

async fn accept_loop(listener: Listener, shared: &Arc<Shared>) {
    let shutdown = &shared.shutdown;
    loop {
        let permit = tokio::select! {
            p = shared.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.tcp.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, addr)) => {
                let (shared, tls) = (shared.clone(), listener.tls.clone());
                shared
                    .tracker
                    .clone()
                    .spawn(connection(stream, addr, tls, shared, permit));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection's task: the TLS handshake if the listener has one, then the session.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsSlot>,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr): (ConnRead, ConnWrite) = match tls {
        None => {
            let (rd, wr) = stream.into_split();
            (Box::new(rd), Box::new(wr))
        }
        Some(slot) => {
            let acceptor = current(&slot);
            let handshake = tokio::select! {
                h = tls::accept(&acceptor, stream) => h,
                _ = shared.shutdown.cancelled() => return,
            };
            match handshake {
                Ok(halves) => halves,
                Err(why) => {
                    // A port probe or a plaintext client: its business, not an error of ours.
                    tracing::debug!(%addr, "{why}");
                    return;
                }
            }
        }
    };
    // Every log line of the connection carries its address, and from hello on its client
    // id and user (STYLE.md, Logging).
    let span = tracing::info_span!(
        "conn",
        %addr,
        client_id = tracing::field::Empty,
        user = tracing::field::Empty
    );
    async {
        session::run(
            rd,
            wr,
            addr,
            shared.broker.clone(),
            current(&shared.cfg),
            shared.ctx.clone(),
            shared.shutdown.clone(),
        )
        .await;
        tracing::debug!("connection closed");
    }
    .instrument(span)
    .await;
    drop(permit);
}
