//! A connection once it is Ready: each request read, given its share of the connection's
//! and the broker's budgets, and handed to the broker.
//!
//! Every request waits, in this order, for room in the outbox, its frame, an in-flight
//! permit, its bytes in flight, the large-reply slot if its reply is large, and admission.
//! A client that pipelines requests has many of them whole in the read buffer after one
//! read: those are taken without waiting for the socket and, as long as each one gets all
//! it needs at once (the `try_` fast paths), go to the broker together as one command, so
//! the broker's channel and the wakeups it brings are paid once per read rather than once
//! per request. Whenever a request has to wait, what was gathered is sent first: it holds
//! permits and budget that only its replies give back.

use std::future::Future;
use std::sync::Arc;

use bytes::BytesMut;
use mom_proto::ServerFrame;
use mom_proto::{decode_body, decode_client_frame, ClientFrame, ErrorCode, FrameError, IdOnly};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::inflight::{Held, InFlightBytes};
use super::{frame_error, MAX_MALFORMED_IN_A_ROW};
use crate::admission::{Admission, Ticket};
use crate::auth::{self, Auth, Identity};
use crate::broker::{BrokerConfig, BrokerHandle, Cmd};
use crate::outbox::Outbox;
use crate::reader::{self, read_frame, stalled_error, FrameBudget, Frames, Read};

/// Requests sent to the broker in one command, at most.
const MAX_BATCH: usize = 256;

/// What a Ready connection reads with.
pub(super) struct Ready<'a> {
    pub session: u64,
    pub cfg: &'a BrokerConfig,
    pub broker: &'a BrokerHandle,
    pub outbox: &'a Outbox,
    pub permits: &'a Semaphore,
    pub bytes: &'a InFlightBytes,
    pub frame_budget: &'a FrameBudget,
    pub admission: &'a Admission,
    pub auth: &'a Arc<Auth>,
    pub identity: &'a Identity,
    pub shutdown: &'a CancellationToken,
    pub closed: &'a CancellationToken,
}

/// Requests admitted and not yet sent to the broker, in the order they were read.
type Gathered = Vec<(ClientFrame, Ticket)>;

/// Go on reading, or stop.
enum Flow {
    Go,
    Stop,
}

impl Ready<'_> {
    /// Read requests until the connection ends, the server shuts down or the writer stops.
    pub async fn run(&self, frames: &mut Frames) {
        let mut gathered = Gathered::new();
        let mut malformed_in_a_row = 0u32;
        loop {
            // A client that does not read what it is sent stops being read (replies to
            // malformed frames included): first room in its queue, then one permit per
            // request. The end of the connection is looked for once per gathering (a look
            // takes a lock every connection shares).
            let ending =
                gathered.is_empty() && (self.shutdown.is_cancelled() || self.closed.is_cancelled());
            if gathered.len() >= MAX_BATCH || ending || !self.outbox.has_room() {
                if !self.send(&mut gathered).await {
                    return;
                }
                tokio::select! {
                    _ = self.outbox.room() => {}
                    _ = self.shutdown.cancelled() => break,
                    _ = self.closed.cancelled() => break,
                }
            }
            let (body, grant) = match reader::buffered_frame(frames) {
                Some(body) => (body, None),
                None => {
                    if !self.send(&mut gathered).await {
                        return;
                    }
                    let next = tokio::select! {
                        f = read_frame(frames, self.frame_budget, self.cfg.frame_timeout) => f,
                        _ = self.shutdown.cancelled() => break,
                        _ = self.closed.cancelled() => break,
                    };
                    match next {
                        Read::End => break,
                        Read::Stalled => {
                            self.outbox.close(stalled_error(self.cfg.frame_timeout));
                            break;
                        }
                        Read::Bad(e) => {
                            self.outbox.close(frame_error(&e));
                            break;
                        }
                        Read::Frame(body, grant) => (body, grant),
                    }
                }
            };
            let flow = match decode_client_frame(&body) {
                Ok(frame) => {
                    malformed_in_a_row = 0;
                    self.request(frame, body, grant, &mut gathered).await
                }
                Err(e) => {
                    // Its error follows the requests read before it to the broker.
                    if !self.send(&mut gathered).await {
                        return;
                    }
                    self.malformed(&body, e, &mut malformed_in_a_row)
                }
            };
            if let Flow::Stop = flow {
                break;
            }
        }
        // Requests gathered hold permits and were admitted: the broker answers them (on
        // shutdown, the connection's drain waits for those answers).
        self.send(&mut gathered).await;
    }

    /// Take what a decoded request needs, then gather it for the broker (or answer it here,
    /// for a user or token request).
    async fn request(
        &self,
        frame: ClientFrame,
        body: BytesMut,
        grant: Option<OwnedSemaphorePermit>,
        gathered: &mut Gathered,
    ) -> Flow {
        let permits = self.permits;
        let Some(permit) = self
            .take(gathered, permits.try_acquire().ok(), async {
                permits.acquire().await.ok()
            })
            .await
        else {
            return Flow::Stop;
        };
        permit.forget();
        let (sem, weight) = (&self.bytes.sem, (body.len() / 1024 + 1).min(self.bytes.cap));
        let n = weight as u32;
        let Some(held) = self
            .take(gathered, sem.try_acquire_many(n).ok(), async {
                sem.acquire_many(n).await.ok()
            })
            .await
        else {
            return Flow::Stop;
        };
        held.forget();
        // Its reply is built from the broker's state and charged to the outbox only once
        // built: wait until the previous one was taken by the writer.
        let large = has_large_reply(&frame);
        if large {
            let sem = &self.bytes.large;
            let Some(held) = self
                .take(gathered, sem.try_acquire().ok(), async {
                    sem.acquire().await.ok()
                })
                .await
            else {
                return Flow::Stop;
            };
            held.forget();
        }
        self.bytes.hold(frame.id(), Held { kib: weight, large });
        // Users and tokens are answered here: a password is not checked in the broker.
        if auth::frames::is_auth_frame(&frame) {
            if !self.send(gathered).await {
                return Flow::Stop;
            }
            let reply = auth::frames::handle(self.auth, self.identity, frame, self.broker).await;
            self.outbox.reply(reply, true);
            return Flow::Go;
        }
        // The global admission last: a frame waiting for it keeps its frame-budget grant,
        // so frames read and not yet admitted are bounded too.
        let (admission, len) = (self.admission, body.len());
        let Some(ticket) = self
            .take(gathered, admission.try_admit(len), async {
                Some(admission.admit(len).await)
            })
            .await
        else {
            return Flow::Stop;
        };
        drop(grant);
        drop(body);
        gathered.push((frame, ticket));
        Flow::Go
    }

    /// `now` when it is there; else, what was gathered sent first, what `wait` gives, unless
    /// the connection ends before. None: stop reading.
    async fn take<T>(
        &self,
        gathered: &mut Gathered,
        now: Option<T>,
        wait: impl Future<Output = Option<T>>,
    ) -> Option<T> {
        if now.is_some() {
            return now;
        }
        if !self.send(gathered).await {
            return None;
        }
        tokio::select! {
            t = wait => t,
            _ = self.shutdown.cancelled() => None,
            _ = self.closed.cancelled() => None,
        }
    }

    /// Send what was gathered to the broker, in one command. False when the broker is gone.
    async fn send(&self, gathered: &mut Gathered) -> bool {
        let session = self.session;
        let cmd = match gathered.len() {
            0 => return true,
            // Taken whole, so an idle connection holds no room for requests.
            1 => match std::mem::take(gathered).pop() {
                Some((frame, ticket)) => Cmd::Request {
                    session,
                    frame,
                    ticket,
                },
                None => return true,
            },
            _ => Cmd::Requests {
                session,
                requests: std::mem::take(gathered),
            },
        };
        self.broker.send(cmd).await
    }

    /// Answer a frame that did not decode. Well formed but over a limit: `too_large`.
    /// Otherwise `bad_request`, and the connection is closed after
    /// [`MAX_MALFORMED_IN_A_ROW`] of them.
    fn malformed(&self, body: &[u8], e: FrameError, in_a_row: &mut u32) -> Flow {
        let id = decode_body::<IdOnly>(body).ok().map(|i| i.id);
        if let FrameError::TooLarge(e) = e {
            // Refused part-way through decoding.
            self.outbox
                .reply(ServerFrame::error(id, ErrorCode::TooLarge, e), false);
            return Flow::Go;
        }
        *in_a_row += 1;
        if *in_a_row > MAX_MALFORMED_IN_A_ROW {
            self.outbox.close(ServerFrame::error(
                id,
                ErrorCode::BadRequest,
                format!(
                    "{e}; more than {MAX_MALFORMED_IN_A_ROW} malformed frames in a row; \
                     closing the connection"
                ),
            ));
            return Flow::Stop;
        }
        self.outbox.reply(
            ServerFrame::error(id, ErrorCode::BadRequest, e.to_string()),
            false,
        );
        Flow::Go
    }
}

/// Requests whose reply grows with the broker's state rather than with the request.
fn has_large_reply(frame: &ClientFrame) -> bool {
    matches!(
        frame,
        ClientFrame::Stats(_)
            | ClientFrame::TopicList(_)
            | ClientFrame::QueueList(_)
            | ClientFrame::QueuePeek(_)
    )
}
