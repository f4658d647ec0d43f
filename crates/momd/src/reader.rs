//! Reading a connection's frames with bounded memory: a frame over [`FREE_FRAME`] is read
//! only once the global [`FrameBudget`] holds room for it, nothing is read past the end of
//! the frame being read, and a partial frame that stops making progress ends the connection
//! (docs/protocol.md, 2.4 and 8). The buffer grows only with bytes that arrived; the announced
//! length reserves nothing. A read that fills the buffer makes it [`BUSY_READ_BUFFER`] for the
//! next, so a client pipelining small requests is read many at a time, and a connection idle
//! for a while gives that back.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use mom_proto::frame::LEN_PREFIX;
use mom_proto::{split_frame, ErrorCode, FrameError, RawCodec, ServerFrame};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::{Decoder, FramedRead};

use crate::tls::ConnRead;

/// Frames up to this size are read without the [`FrameBudget`]: each connection may hold one
/// in its buffer (it is also the limit before `hello`).
pub const FREE_FRAME: usize = 64 * 1024;

/// Read-buffer capacity kept between frames; more is given back once the buffer is empty.
const KEEP_READ_BUFFER: usize = 64 * 1024;

/// Bytes one read may take: the part of the buffer it uses is zeroed first.
const READ_CHUNK: usize = 256 * 1024;

/// The bytes of large frames all connections may be reading at once, in KiB.
#[derive(Clone)]
pub struct FrameBudget {
    sem: Arc<Semaphore>,
    kib: usize,
}

impl FrameBudget {
    pub fn new(bytes: usize) -> FrameBudget {
        let kib = (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        FrameBudget {
            sem: Arc::new(Semaphore::new(kib)),
            kib,
        }
    }

    /// Wait for room for a frame body of `len` bytes. One larger than the whole budget takes
    /// all of it, so it is read alone rather than never.
    async fn reserve(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let kib = len.div_ceil(1024).min(self.kib);
        let n = u32::try_from(kib).unwrap_or(u32::MAX);
        self.sem.clone().acquire_many_owned(n).await.ok()
    }
}

/// A connection's frames, read through [`Limited`] with [`SessionCodec`].
pub type Frames = FramedRead<Limited, SessionCodec>;

pub fn frames(rd: ConnRead, max_frame: usize) -> Frames {
    let allowed = Arc::new(AtomicUsize::new(FREE_FRAME + LEN_PREFIX));
    let filled = Arc::new(AtomicBool::new(false));
    FramedRead::with_capacity(
        Limited {
            rd,
            allowed: allowed.clone(),
            filled: filled.clone(),
        },
        SessionCodec {
            raw: RawCodec::new(max_frame),
            granted: false,
            allowed,
            filled,
        },
        // Small: an idle connection holds it for good, and it grows as bytes arrive.
        READ_BUFFER,
    )
}

/// The read buffer a connection starts with, and goes back to when idle.
const READ_BUFFER: usize = 1024;

/// The read buffer of a connection whose last read filled its buffer: more is likely
/// waiting (a client with many requests in flight), and one read takes up to this much.
/// Within [`KEEP_READ_BUFFER`], so kept between frames while the connection is busy.
const BUSY_READ_BUFFER: usize = 16 * 1024;

/// The socket, read at most `allowed` bytes at a time: set by [`SessionCodec`] before each
/// read, so no read goes past the end of the frame in progress.
pub struct Limited {
    rd: ConnRead,
    allowed: Arc<AtomicUsize>,
    /// The last read took all the room the buffer had.
    filled: Arc<AtomicBool>,
}

impl AsyncRead for Limited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Never 0: a zero-byte read would look like the end of the stream.
        let allowed = match this.allowed.load(Ordering::Acquire) {
            0 => 1,
            n => n,
        };
        let room = buf.remaining();
        let n = allowed.min(room).min(READ_CHUNK);
        let dst = buf.initialize_unfilled_to(n);
        let mut part = ReadBuf::new(dst);
        match Pin::new(&mut this.rd).poll_read(cx, &mut part) {
            Poll::Ready(Ok(())) => {
                let got = part.filled().len();
                buf.advance(got);
                this.filled.store(got > 0 && got == room, Ordering::Release);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// What the decoder found at the front of the buffer.
pub enum Decoded {
    Frame(BytesMut),
    /// A frame body of this many bytes (over [`FREE_FRAME`]) is announced: it is read only
    /// after [`FrameBudget`] room was taken for it.
    NeedBudget(usize),
}

/// [`RawCodec`] plus the budget gate, and the read limit for [`Limited`].
pub struct SessionCodec {
    raw: RawCodec,
    granted: bool,
    allowed: Arc<AtomicUsize>,
    filled: Arc<AtomicBool>,
}

impl SessionCodec {
    pub fn set_max_frame(&mut self, max: usize) {
        self.raw.set_max_frame(max);
    }
}

/// The body length announced at the front of `buf`, once its prefix is there.
fn announced(buf: &BytesMut) -> Option<usize> {
    let p = buf.get(..LEN_PREFIX)?;
    Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize)
}

impl Decoder for SessionCodec {
    type Item = Decoded;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, FrameError> {
        let len = announced(src);
        if let Some(len) = len {
            // A length over the limit is refused by the codec, without budget.
            if len > FREE_FRAME && len <= self.raw.max_frame() && !self.granted {
                return Ok(Some(Decoded::NeedBudget(len)));
            }
        }
        if let Some(body) = self.raw.decode(src)? {
            self.granted = false;
            return Ok(Some(Decoded::Frame(body)));
        }
        // More bytes are needed: read up to the end of this frame, or of a small one.
        let end = len.map_or(0, |l| l.saturating_add(LEN_PREFIX));
        let allowed = end.max(FREE_FRAME + LEN_PREFIX).saturating_sub(src.len());
        self.allowed.store(allowed, Ordering::Release);
        if self.filled.swap(false, Ordering::AcqRel) && src.capacity() < BUSY_READ_BUFFER {
            src.reserve(BUSY_READ_BUFFER - src.len());
        }
        Ok(None)
    }
}

/// The next frame if it is already whole in the read buffer and small enough to need no
/// [`FrameBudget`], taken without touching the socket; None leaves everything (a frame over
/// the limit included) to [`read_frame`]. A client that pipelines requests has many in one
/// read, and the session takes them together (`session/ready.rs`).
pub fn buffered_frame(frames: &mut Frames) -> Option<BytesMut> {
    let max = frames.decoder().raw.max_frame().min(FREE_FRAME);
    let buf = frames.read_buffer_mut();
    if announced(buf)? > max {
        return None;
    }
    // `FramedRead` decodes from its buffer before it reads again, so what is left there
    // (and the read limit `SessionCodec::decode` sets from it) stays in step.
    let body = split_frame(buf, max).ok().flatten()?;
    if buf.is_empty() && buf.capacity() > KEEP_READ_BUFFER {
        *buf = BytesMut::new();
    }
    Some(body)
}

/// What reading the next frame gave.
pub enum Read {
    /// A frame, with the frame-budget grant its body was read under (for a large one):
    /// keep it while the body or what it decodes to is held.
    Frame(BytesMut, Option<OwnedSemaphorePermit>),
    /// A frame-level error after which the stream cannot go on (a length over the limit).
    Bad(FrameError),
    /// The peer closed the connection, or it broke.
    End,
    /// A partial frame got no new byte for the frame timeout.
    Stalled,
}

/// Read the next frame. A partial frame must keep making progress: when no byte of it
/// arrives for `stall`, the connection is given up, so a peer that announces a big frame
/// and stops cannot hold its buffer (and budget) for ever. An idle connection between frames
/// is fine, and so is waiting for the budget.
pub async fn read_frame(frames: &mut Frames, budget: &FrameBudget, stall: Duration) -> Read {
    let tick = (stall / 4).max(Duration::from_millis(10));
    let mut seen = frames.read_buffer().len();
    let mut progress = tokio::time::Instant::now();
    // Held until this frame is returned (its body is decoded right after). A grant from a
    // call that was cancelled is gone with it, so ask again.
    frames.decoder_mut().granted = false;
    let mut grant = None;
    loop {
        // `FramedRead::next` is cancel-safe: bytes read stay in its buffer.
        match tokio::time::timeout(tick, frames.next()).await {
            Ok(Some(Ok(Decoded::Frame(body)))) => {
                // A big frame grew the buffer: do not keep that much per idle connection.
                let buf = frames.read_buffer_mut();
                if buf.is_empty() && buf.capacity() > KEEP_READ_BUFFER {
                    *buf = BytesMut::new();
                }
                return Read::Frame(body, grant);
            }
            Ok(Some(Ok(Decoded::NeedBudget(len)))) => {
                match budget.reserve(len).await {
                    Some(g) => grant = Some(g),
                    None => return Read::End,
                }
                frames.decoder_mut().granted = true;
                // Waiting for the budget is not the peer's stall.
                progress = tokio::time::Instant::now();
            }
            Ok(None) | Ok(Some(Err(FrameError::Io(_)))) => return Read::End,
            Ok(Some(Err(e))) => return Read::Bad(e),
            Err(_) => {
                let len = frames.read_buffer().len();
                if len == 0 && frames.read_buffer().capacity() > READ_BUFFER {
                    // Idle between frames: a busy connection's buffer is given back.
                    *frames.read_buffer_mut() = BytesMut::with_capacity(READ_BUFFER);
                }
                if len != seen {
                    seen = len;
                    progress = tokio::time::Instant::now();
                } else if len > 0 && progress.elapsed() >= stall {
                    return Read::Stalled;
                }
            }
        }
    }
}

pub fn stalled_error(stall: Duration) -> ServerFrame {
    ServerFrame::error(
        None,
        ErrorCode::BadRequest,
        format!(
            "a frame was left incomplete for {} s; closing the connection",
            stall.as_secs_f64()
        ),
    )
}
