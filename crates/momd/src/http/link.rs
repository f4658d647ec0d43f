//! Broker sessions of the HTTP API: HTTP requests reach the broker exactly as a TCP
//! connection's frames do — a session opened with `Cmd::Hello`, requests sent as
//! `Cmd::Request` with an admission ticket, replies and deliveries read from the session's
//! outbox — so every rule (permissions, ownership, limits, dedupe) is the broker's own.
//!
//! Two shapes:
//! - [`Link`]: a session of its own, read by one task. Live streams, reads of stored
//!   messages and request/reply use one each: its outbox budget bounds what a slow HTTP
//!   client can hold, as a watch's does, and it ends (`Cmd::Disconnect`) when dropped.
//! - [`Pool`]: one shared session per user for the stateless requests (publish, admin,
//!   fetch, ack). Its outbox is drained by a task that hands each reply to the request that
//!   waits for it. It is opened on a user's first request and kept; a session the broker
//!   closes (its user was removed) is opened again on the next request.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mom_proto::{ClientFrame, Hello, Nack, ServerFrame, PROTOCOL_VERSION};
use tokio::sync::oneshot;

use super::error::{ApiError, ApiResult};
use crate::admission::Admission;
use crate::auth::Identity;
use crate::broker::{BrokerHandle, Cmd, SessionInfo};
use crate::core::Batch;
use crate::outbox::{self, Out, OutboxRx};
use crate::session;

/// What a [`Link`] needs from the server.
#[derive(Clone)]
pub struct Broker {
    pub handle: BrokerHandle,
    pub admission: Admission,
    /// Bytes a session may have queued and unread (`--watch-buffer`).
    pub budget: usize,
    /// momd is stopping: long polls and waits for replies end at once.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Something pushed to a session that is not the reply being waited for.
pub enum Pushed {
    Deliver { batch: Arc<Batch>, bytes: usize },
    Notice(mom_proto::Notice),
}

/// A broker session read by one task.
pub struct Link {
    pub session: u64,
    pub client_id: u64,
    broker: Broker,
    rx: OutboxRx,
    next_id: u64,
    held: VecDeque<Pushed>,
}

/// Open a session for `who`, as a TCP connection's `hello` does.
async fn hello(
    broker: &Broker,
    who: &Identity,
    peer: SocketAddr,
    client: &str,
) -> ApiResult<(u64, u64, outbox::Outbox, OutboxRx)> {
    let session = session::next_session_id();
    let (outbox, rx) = outbox::outbox(broker.budget);
    let (tx, reply) = oneshot::channel();
    let info = SessionInfo {
        session,
        addr: peer.to_string(),
        outbox: outbox.clone(),
        identity: who.clone(),
    };
    let hello = Hello {
        id: 0,
        version: PROTOCOL_VERSION,
        client: client.to_string(),
        ..Hello::default()
    };
    if !broker
        .handle
        .send(Cmd::Hello {
            info,
            hello,
            reply: tx,
        })
        .await
    {
        return Err(stopping());
    }
    match reply.await {
        Ok(Ok(w)) => Ok((session, w.client_id, outbox, rx)),
        Ok(Err(frame)) => Err(ApiError::unexpected(&frame)),
        Err(_) => Err(stopping()),
    }
}

fn stopping() -> ApiError {
    ApiError::unavailable("the server is shutting down")
}

/// Send one request of `session`, admitted like a TCP connection's.
async fn send(broker: &Broker, session: u64, frame: ClientFrame, size: usize) -> ApiResult<()> {
    let ticket = broker.admission.admit(size).await;
    if broker
        .handle
        .send(Cmd::Request {
            session,
            frame,
            ticket,
        })
        .await
    {
        Ok(())
    } else {
        Err(stopping())
    }
}

/// About how many bytes a request would take as a frame (what admission charges).
fn request_size(frame: &ClientFrame) -> usize {
    match frame {
        ClientFrame::Publish(p) => {
            64 + p.topic.len()
                + p.msgs
                    .iter()
                    .map(|m| {
                        32 + m.payload.len()
                            + m.msg_id.as_ref().map_or(0, String::len)
                            + m.headers
                                .iter()
                                .map(|(k, v)| k.len() + v.len() + 4)
                                .sum::<usize>()
                    })
                    .sum::<usize>()
        }
        _ => 256,
    }
}

impl Link {
    pub async fn open(
        broker: &Broker,
        who: &Identity,
        peer: SocketAddr,
        client: &str,
    ) -> ApiResult<Link> {
        let (session, client_id, _outbox, rx) = hello(broker, who, peer, client).await?;
        Ok(Link {
            session,
            client_id,
            broker: broker.clone(),
            rx,
            next_id: 1,
            held: VecDeque::new(),
        })
    }

    /// Send the request `make(id)` and wait for its reply; what is pushed meanwhile is
    /// kept for [`Link::next`]. An `error` reply is returned as the error.
    pub async fn call(&mut self, make: impl FnOnce(u64) -> ClientFrame) -> ApiResult<ServerFrame> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = make(id);
        let size = request_size(&frame);
        send(&self.broker, self.session, frame, size).await?;
        loop {
            let out = tokio::select! {
                o = self.rx.rx.recv() => o,
                _ = self.broker.shutdown.cancelled() => return Err(stopping()),
            };
            match out {
                None => return Err(stopping()),
                Some(Out::Reply { frame, bytes, .. }) => {
                    let frame = *frame;
                    self.rx.sent(bytes);
                    if frame.reply_id() == Some(id) {
                        return match frame {
                            ServerFrame::Error(e) => Err(ApiError::new(e.code, e.message)),
                            f => Ok(f),
                        };
                    }
                    if let ServerFrame::Notice(n) = frame {
                        self.held.push_back(Pushed::Notice(n));
                    }
                }
                Some(Out::Deliver { batch, bytes, .. }) => {
                    self.held.push_back(Pushed::Deliver { batch, bytes });
                }
                Some(Out::Release(_)) => {}
                Some(Out::Close(frame)) => return Err(closed(&frame)),
            }
        }
    }

    /// The next delivery or notice; None when the session was closed. A delivery's bytes
    /// stay charged to the session's budget until [`Link::consumed`].
    pub async fn next(&mut self) -> Result<Pushed, ApiError> {
        if let Some(p) = self.held.pop_front() {
            return Ok(p);
        }
        loop {
            match self.rx.rx.recv().await {
                None => return Err(stopping()),
                Some(Out::Reply { frame, bytes, .. }) => {
                    let frame = *frame;
                    self.rx.sent(bytes);
                    if let ServerFrame::Notice(n) = frame {
                        return Ok(Pushed::Notice(n));
                    }
                }
                Some(Out::Deliver { batch, bytes, .. }) => {
                    return Ok(Pushed::Deliver { batch, bytes })
                }
                Some(Out::Release(_)) => {}
                Some(Out::Close(frame)) => return Err(closed(&frame)),
            }
        }
    }

    /// A delivery was passed on: its bytes are room for the next.
    pub fn consumed(&self, bytes: usize) {
        self.rx.sent(bytes);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        disconnect(&self.broker, self.session);
    }
}

fn disconnect(broker: &Broker, session: u64) {
    let handle = broker.handle.clone();
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            handle.send(Cmd::Disconnect { session }).await;
        });
    }
}

fn closed(frame: &ServerFrame) -> ApiError {
    match frame {
        ServerFrame::Error(e) => ApiError::new(e.code, e.message.clone()),
        _ => ApiError::unavailable("the session was closed"),
    }
}

/// A user and whether it is an admin: a role change gets a session of its own.
type UserKey = (String, bool);

/// One shared session per user, for requests that need nothing but their reply.
#[derive(Clone)]
pub struct Pool {
    broker: Broker,
    shared: Arc<Mutex<HashMap<UserKey, Arc<Shared>>>>,
}

struct Shared {
    session: u64,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<ServerFrame>>>,
    /// Set once the broker closed the session.
    closed: std::sync::atomic::AtomicBool,
}

impl Pool {
    pub fn new(broker: Broker) -> Pool {
        Pool {
            broker,
            shared: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserKey, Arc<Shared>>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn session(&self, who: &Identity, peer: SocketAddr) -> ApiResult<Arc<Shared>> {
        let key = (who.user.clone(), who.admin);
        if let Some(s) = self.lock().get(&key) {
            if !s.closed.load(Ordering::Acquire) {
                return Ok(s.clone());
            }
        }
        let (session, _client_id, _outbox, rx) = hello(&self.broker, who, peer, "http").await?;
        let shared = Arc::new(Shared {
            session,
            next_id: AtomicU64::new(1),
            waiting: Mutex::default(),
            closed: Default::default(),
        });
        // Two first requests of a user may race here: the one stored is kept, the other
        // session serves the request that opened it and ends.
        let kept = {
            let mut m = self.lock();
            match m.get(&key) {
                Some(s) if !s.closed.load(Ordering::Acquire) => Some(s.clone()),
                _ => {
                    m.insert(key, shared.clone());
                    None
                }
            }
        };
        tokio::spawn(demux(
            rx,
            shared.clone(),
            self.broker.clone(),
            kept.is_some(),
        ));
        Ok(shared)
    }

    /// Send the request `make(id)` on the user's shared session and wait for its reply.
    pub async fn call(
        &self,
        who: &Identity,
        peer: SocketAddr,
        make: impl FnOnce(u64) -> ClientFrame,
    ) -> ApiResult<ServerFrame> {
        let shared = self.session(who, peer).await?;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = make(id);
        let size = request_size(&frame);
        let (tx, rx) = oneshot::channel();
        shared
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        send(&self.broker, shared.session, frame, size).await?;
        let reply = tokio::select! {
            r = rx => r,
            _ = self.broker.shutdown.cancelled() => return Err(stopping()),
        };
        match reply {
            Ok(ServerFrame::Error(e)) => Err(ApiError::new(e.code, e.message)),
            Ok(f) => Ok(f),
            Err(_) => Err(ApiError::unavailable(
                "the session was closed before the request was answered",
            )),
        }
    }
}

/// Drain a shared session's outbox: each reply to its waiting request. `once`: the session
/// lost a race to be the user's shared one; it ends when its one request is answered.
async fn demux(mut rx: OutboxRx, shared: Arc<Shared>, broker: Broker, once: bool) {
    let take = |id: Option<u64>| {
        id.and_then(|id| {
            shared
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id)
        })
    };
    while let Some(out) = rx.rx.recv().await {
        match out {
            Out::Reply { frame, bytes, .. } => {
                let frame = *frame;
                rx.sent(bytes);
                let Some(waiter) = take(frame.reply_id()) else {
                    continue;
                };
                if let Err(frame) = waiter.send(frame) {
                    // The HTTP client went away while its fetch waited: give the messages
                    // back unopened, not counted as a delivery (docs/protocol.md, 4.22).
                    give_back(&broker, shared.session, &shared, frame).await;
                }
                if once && shared.waiting.lock().map(|w| w.is_empty()).unwrap_or(true) {
                    break;
                }
            }
            Out::Deliver { bytes, .. } => rx.sent(bytes),
            Out::Release(_) => {}
            Out::Close(_) => break,
        }
    }
    shared.closed.store(true, Ordering::Release);
    // Whoever still waits learns that the session is gone (their senders drop here).
    shared
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    disconnect(&broker, shared.session);
}

async fn give_back(broker: &Broker, session: u64, shared: &Shared, frame: ServerFrame) {
    let ServerFrame::FetchOk(f) = frame else {
        return;
    };
    if f.msgs.is_empty() {
        return;
    }
    let msgs = f
        .msgs
        .iter()
        .map(|m| mom_proto::MsgKey {
            topic: m.topic.clone(),
            seq: m.seq,
        })
        .collect();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let nack = ClientFrame::Nack(Nack {
        id,
        queue: f.queue,
        msgs,
        delay_ms: 0,
        release: true,
    });
    if send(broker, session, nack, 256).await.is_err() {
        tracing::debug!("cannot give back the messages of an abandoned fetch");
    }
}
