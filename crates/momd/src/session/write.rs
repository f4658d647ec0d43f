//! A connection's writer task: it drains the session's outbox into the socket, in buffers
//! of many frames, and gives back the in-flight permits and bytes of the requests it
//! answered.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mom_proto::{encode_frame, ErrorCode, FrameError, MessageRef, ServerFrame};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::inflight::InFlightBytes;
use crate::core::Batch;
use crate::outbox::{Out, OutboxRx};
use crate::tls::ConnWrite;

/// A `deliver` frame written straight from a shared batch: the same bytes as
/// `ServerFrame::Deliver` without copying the messages.
#[derive(Serialize)]
struct DeliverRef<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    watch: u64,
    msgs: Vec<MessageRef<'a>>,
}

fn encode_deliver(
    watch: u64,
    batch: &Batch,
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<(), FrameError> {
    // Split so no frame exceeds the limit: the estimate errs high.
    let per = batch.topic.len() + batch.sender.user.len() + batch.sender.name.len() + 64;
    let mut start = 0;
    while start < batch.msgs.len() {
        let mut size = 64;
        let mut end = start;
        while end < batch.msgs.len() {
            let m = &batch.msgs[end];
            let s = m.size() as usize + m.msg_id.as_ref().map_or(0, String::len) + per + 32;
            if end > start && size + s > max_frame {
                break;
            }
            size += s;
            end += 1;
        }
        let msgs = batch.msgs[start..end]
            .iter()
            .enumerate()
            .map(|(i, m)| MessageRef {
                topic: &batch.topic,
                seq: batch.first_seq + (start + i) as u64,
                time: batch.time,
                headers: &m.headers,
                sender: &batch.sender,
                msg_id: m.msg_id.as_deref(),
                key: m.key.as_deref(),
                payload: &m.payload,
                delivery: None,
            })
            .collect();
        // momd refuses to start with max_payload too close to max_frame, so even a frame
        // of a single message fits.
        encode_frame(
            &DeliverRef {
                kind: "deliver",
                watch,
                msgs,
            },
            buf,
            max_frame,
        )?;
        start = end;
    }
    Ok(())
}

/// Encode a reply; one that would exceed the frame limit (a listing of very many topics)
/// becomes an `internal` error for its request instead.
fn encode_reply(
    frame: &ServerFrame,
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<(), FrameError> {
    match encode_frame(frame, buf, max_frame) {
        Err(FrameError::FrameTooLarge { len, max }) => encode_frame(
            &ServerFrame::error(
                frame.reply_id(),
                ErrorCode::Internal,
                format!("the reply is {len} bytes, over the frame limit of {max}"),
            ),
            buf,
            max_frame,
        ),
        other => other,
    }
}

/// Write all of `buf`; false when the connection broke, or when the peer took no byte for
/// `timeout` (it stopped reading: a slow consumer, closed as NATS closes one at its write
/// deadline, so what is queued for it is not held for ever). Then flush: TLS keeps what
/// it was given until then (on plaintext TCP it is a no-op).
async fn write_with_progress(wr: &mut ConnWrite, buf: &[u8], timeout: Duration) -> bool {
    let slow = || {
        tracing::info!(
            "closing a connection that read nothing for {} s (slow consumer)",
            timeout.as_secs_f64()
        );
        false
    };
    let mut pos = 0;
    while pos < buf.len() {
        match tokio::time::timeout(timeout, wr.write(&buf[pos..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => return false,
            Ok(Ok(n)) => pos += n,
            Err(_) => return slow(),
        }
    }
    match tokio::time::timeout(timeout, wr.flush()).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => slow(),
    }
}

pub(super) async fn write_loop(
    mut wr: ConnWrite,
    mut out: OutboxRx,
    permits: Arc<Semaphore>,
    inflight: Arc<InFlightBytes>,
    (max_frame, write_timeout): (usize, Duration),
    closed: CancellationToken,
) {
    // Grown on demand, and given back when a burst is over: an idle connection (of 10,000)
    // holds only what its last small frame needed (README, Limits).
    let mut buf = BytesMut::new();
    'outer: while let Some(first) = out.rx.recv().await {
        let mut item = Some(first);
        let mut close = false;
        let mut released = 0;
        let mut sent_bytes = 0;
        while let Some(o) = item.take() {
            let res = match o {
                Out::Reply {
                    frame,
                    permit,
                    bytes,
                } => {
                    if permit {
                        released += 1;
                        inflight.release(frame.reply_id());
                    }
                    sent_bytes += bytes;
                    encode_reply(&frame, &mut buf, max_frame)
                }
                Out::Release(id) => {
                    released += 1;
                    inflight.release(Some(id));
                    Ok(())
                }
                Out::Deliver {
                    watch,
                    batch,
                    bytes,
                } => {
                    sent_bytes += bytes;
                    // Nothing of a watch is sent after the `ok` to its unwatch.
                    if out.ended(watch) {
                        Ok(())
                    } else {
                        encode_deliver(watch, &batch, &mut buf, max_frame)
                    }
                }
                Out::Close(frame) => {
                    close = true;
                    encode_reply(&frame, &mut buf, max_frame)
                }
            };
            if let Err(e) = res {
                tracing::error!("cannot encode a frame: {e}");
            }
            if close || buf.len() >= 256 * 1024 {
                break;
            }
            item = out.rx.try_recv().ok();
        }
        if !write_with_progress(&mut wr, &buf, write_timeout).await {
            break 'outer;
        }
        buf.clear();
        if buf.capacity() > 64 * 1024 && out.rx.is_empty() {
            buf = BytesMut::new();
        }
        if released > 0 {
            permits.add_permits(released);
        }
        if sent_bytes > 0 {
            out.sent(sent_bytes);
        }
        if close {
            let _ = wr.shutdown().await;
            break;
        }
    }
    closed.cancel();
    // Wake any replay waiting for room: nothing more will be written.
    out.rx.close();
    while let Ok(o) = out.rx.try_recv() {
        if let Out::Deliver { bytes, .. } = o {
            out.sent(bytes);
        }
    }
}
