//! One client connection: a reader that decodes frames and forwards requests to the broker
//! (`ready.rs` once `hello` is done), and a writer task that drains the session's outbox
//! into the socket (`write.rs`).
//!
//! The reader holds an in-flight permit per unanswered request; with all `max_inflight`
//! permits taken it stops reading, which is the connection's backpressure. A body that does
//! not decode is answered with `bad_request` and the connection goes on (before `hello`, or
//! after [`MAX_MALFORMED_IN_A_ROW`] of them, it is closed); a length over the limit is
//! answered with `too_large` and the connection is closed; so is a partial frame that gets
//! no byte for `frame_timeout` (docs/protocol.md, 2.1, 2.4 and 9).
//!
//! Memory a hostile client can hold here: the read buffer (see `reader.rs`: at most 64 KiB
//! plus one large frame taken from the global frame budget, and a stalled partial frame is
//! closed), the outbox (its budget, checked before
//! each request is read), and the replies of requests in flight, whose size depends on the
//! broker's state (`stats`, lists, `queue_peek`): at most one of those per connection
//! (`inflight.rs`) until their reply is taken by the writer.

mod inflight;
mod ready;
mod write;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mom_proto::{
    decode_body, decode_client_frame, ClientFrame, ErrorCode, FrameError, Hello, IdOnly,
    ServerFrame, PROTOCOL_VERSION,
};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::broker::{BrokerConfig, BrokerHandle, Cmd, SessionInfo};
use crate::outbox;
use crate::reader::{self, read_frame, stalled_error, Read};
use crate::tls::{ConnRead, ConnWrite};
use inflight::InFlightBytes;
use write::write_loop;

/// What every connection shares: the read and admission budgets, and the users.
#[derive(Clone)]
pub struct Ctx {
    pub frame_budget: reader::FrameBudget,
    pub admission: Admission,
    pub auth: Arc<crate::auth::Auth>,
}

/// How long a new connection may take to send `hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest frame read before `welcome`: a `hello` is small, and an unauthenticated peer
/// must not make the server buffer `max_frame` (research/scale-and-budgets.md, 3.2).
/// No pre-hello frame needs the global frame budget.
pub const PRE_HELLO_MAX_FRAME: usize = reader::FREE_FRAME;

/// Malformed frames in a row a Ready connection may send before it is closed.
pub const MAX_MALFORMED_IN_A_ROW: u32 = 100;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A new session number, unique in this process: TCP connections and the HTTP API's
/// in-process sessions (`http/link.rs`) draw from the same counter.
pub fn next_session_id() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

impl Ctx {
    pub fn new(cfg: &BrokerConfig, auth: Arc<crate::auth::Auth>) -> Ctx {
        Ctx {
            frame_budget: reader::FrameBudget::new(cfg.frame_budget),
            admission: Admission::new(cfg.inflight_budget),
            auth,
        }
    }
}

/// Serve one connection, its halves plaintext or TLS (after the handshake: `server.rs`).
pub async fn run(
    rd: ConnRead,
    wr: ConnWrite,
    addr: SocketAddr,
    broker: BrokerHandle,
    cfg: Arc<BrokerConfig>,
    ctx: Ctx,
    shutdown: CancellationToken,
) {
    let Ctx {
        frame_budget,
        admission,
        auth,
    } = ctx;
    let session = next_session_id();
    let (outbox, out_rx) = outbox::outbox(cfg.watch_budget);
    let permits = Arc::new(Semaphore::new(cfg.max_inflight));
    let bytes = Arc::new(InFlightBytes::new(cfg.max_frame));
    let closed = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        wr,
        out_rx,
        permits.clone(),
        bytes.clone(),
        (cfg.max_frame, cfg.write_timeout),
        closed.clone(),
    ));
    let pre_hello_max = PRE_HELLO_MAX_FRAME.min(cfg.max_frame);
    let mut frames = reader::frames(rd, pre_hello_max);

    let hello = await_hello(&mut frames, &frame_budget, &cfg, &outbox, &shutdown).await;
    let Some(hello) = hello else {
        drop(outbox);
        let _ = writer.await;
        return;
    };
    let identity = match auth.authenticate(addr, &hello).await {
        Ok(i) => i,
        Err((code, msg)) => {
            broker
                .send(Cmd::AuthFailed {
                    addr: addr.to_string(),
                    user: hello.user.clone().unwrap_or_default(),
                    reason: msg.clone(),
                })
                .await;
            outbox.close(ServerFrame::error(Some(hello.id), code, msg));
            drop(outbox);
            let _ = writer.await;
            return;
        }
    };
    let (tx, rx) = oneshot::channel();
    let info = SessionInfo {
        session,
        addr: addr.to_string(),
        outbox: outbox.clone(),
        identity: identity.clone(),
    };
    if !broker
        .send(Cmd::Hello {
            info,
            hello,
            reply: tx,
        })
        .await
    {
        return;
    }
    match rx.await {
        Ok(Ok(welcome)) => {
            // The connection's span (server.rs) learns who this is.
            let span = tracing::Span::current();
            span.record("client_id", welcome.client_id);
            span.record("user", identity.user.as_str());
            tracing::debug!(session, client_id = welcome.client_id, %addr, "hello");
            outbox.reply(ServerFrame::Welcome(welcome), false);
        }
        Ok(Err(frame)) => {
            outbox.close(*frame);
            drop(outbox);
            let _ = writer.await;
            return;
        }
        Err(_) => return,
    }

    ready::Ready {
        session,
        cfg: &cfg,
        broker: &broker,
        outbox: &outbox,
        permits: &permits,
        bytes: &bytes,
        frame_budget: &frame_budget,
        admission: &admission,
        auth: &auth,
        identity: &identity,
        shutdown: &shutdown,
        closed: &closed,
    }
    .run(&mut frames)
    .await;

    if shutdown.is_cancelled() && !closed.is_cancelled() {
        // Finish the requests in flight, then say why the connection ends.
        let all = u32::try_from(cfg.max_inflight).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(cfg.drain_timeout, permits.acquire_many(all)).await;
        outbox.close(ServerFrame::error(
            None,
            ErrorCode::Unavailable,
            "server shutting down",
        ));
    }
    broker.send(Cmd::Disconnect { session }).await;
    drop(outbox);
    // A peer that does not read must not hold up shutdown: give the writer a moment.
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(2), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// AwaitingHello: the first frame must be a good `hello`, within [`HELLO_TIMEOUT`]. Anything
/// else gets one error and the connection is closed (docs/protocol.md, 2.1), so nothing an
/// unauthenticated peer sends can queue up.
async fn await_hello(
    frames: &mut reader::Frames,
    frame_budget: &reader::FrameBudget,
    cfg: &BrokerConfig,
    outbox: &outbox::Outbox,
    shutdown: &CancellationToken,
) -> Option<Hello> {
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let next = tokio::select! {
        f = tokio::time::timeout_at(deadline, read_frame(frames, frame_budget, cfg.frame_timeout)) => f,
        _ = shutdown.cancelled() => Ok(Read::End),
    };
    let body = match next {
        Err(_) => {
            outbox.close(ServerFrame::error(
                None,
                ErrorCode::BadRequest,
                "no hello within 10 s",
            ));
            return None;
        }
        Ok(Read::End) => return None,
        Ok(Read::Stalled) => {
            outbox.close(stalled_error(cfg.frame_timeout));
            return None;
        }
        Ok(Read::Bad(e)) => {
            outbox.close(frame_error(&e));
            return None;
        }
        Ok(Read::Frame(body, _grant)) => body,
    };
    match decode_client_frame(&body) {
        Ok(ClientFrame::Hello(h)) if h.version == PROTOCOL_VERSION => {
            // Frames pipelined after the hello are read with the full limit.
            frames.decoder_mut().set_max_frame(cfg.max_frame);
            Some(h)
        }
        Ok(ClientFrame::Hello(h)) => {
            outbox.close(ServerFrame::error(
                Some(h.id),
                ErrorCode::BadRequest,
                format!(
                    "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION}",
                    h.version
                ),
            ));
            None
        }
        Ok(other) => {
            outbox.close(ServerFrame::error(
                Some(other.id()),
                ErrorCode::Unauthorized,
                "send hello first",
            ));
            None
        }
        Err(e) => {
            let id = decode_body::<IdOnly>(&body).ok().map(|i| i.id);
            outbox.close(ServerFrame::error(
                id,
                ErrorCode::BadRequest,
                format!("{e}; send a valid hello first; closing the connection"),
            ));
            None
        }
    }
}

fn frame_error(e: &FrameError) -> ServerFrame {
    match e {
        FrameError::FrameTooLarge { .. } => ServerFrame::error(
            None,
            ErrorCode::TooLarge,
            format!("{e}; closing the connection"),
        ),
        _ => ServerFrame::error(None, ErrorCode::BadRequest, e.to_string()),
    }
}
