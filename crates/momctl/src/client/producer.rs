//! A producer that batches for its callers, as Kafka's does: many tasks each call
//! [`Producer::publish`] on one shared producer and each gets the acknowledgement of its own
//! message, while one task behind it takes whatever is waiting and sends it as batch frames
//! (one per topic). Nothing waits for a batch to fill: an idle producer sends a lone message
//! at once, and a busy one sends bigger batches because more is waiting while the previous
//! ones are in flight. The bytes in flight are bounded.
//!
//! ```no_run
//! # async fn demo(client: momctl::client::Client) -> momctl::client::Result<()> {
//! let producer = client.producer();
//! let mut tasks = tokio::task::JoinSet::new();
//! for i in 0..1000 {
//!     let p = producer.clone();
//!     tasks.spawn(async move {
//!         let msg = momctl::client::message(format!("event {i}"), Default::default(), None);
//!         p.publish("orders.eu", msg).await // Ok(MsgAck { seq, duplicate }) once durable
//!     });
//! }
//! while let Some(r) = tasks.join_next().await {
//!     let _ack = r.expect("task")?;
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use mom_proto::{topic, ClientFrame, ErrorCode, PubMsg, Publish, PublishOk, ServerFrame};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{unexpected, Client, ClientError, Result};

/// The acknowledgement of one message: stored durably as `seq` of its topic (or found a
/// duplicate of the message stored there within the dedupe window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgAck {
    pub seq: u64,
    pub duplicate: bool,
}

struct Item {
    topic: String,
    msg: PubMsg,
    bytes: usize,
    done: oneshot::Sender<Result<MsgAck>>,
}

impl Client {
    /// A producer that batches the messages of many tasks publishing one at a time
    /// (see [`Producer`]), with [`DEFAULT_IN_FLIGHT`] bytes in flight at most.
    pub fn producer(&self) -> Producer {
        Producer::new(self.clone(), DEFAULT_IN_FLIGHT)
    }

    /// A producer with at most `in_flight_bytes` of publishes in flight.
    pub fn producer_with(&self, in_flight_bytes: usize) -> Producer {
        Producer::new(self.clone(), in_flight_bytes)
    }
}

/// Bytes of publishes in flight at most, by default.
pub const DEFAULT_IN_FLIGHT: usize = 8 << 20;

/// Cheap to clone; all clones share one batching task and the client's connection.
#[derive(Clone)]
pub struct Producer {
    tx: mpsc::Sender<Item>,
    client: Client,
}

impl Producer {
    fn new(client: Client, in_flight_bytes: usize) -> Producer {
        let (tx, rx) = mpsc::channel(4096);
        let max_frame = usize::try_from(client.welcome().max_frame).unwrap_or(usize::MAX);
        let limits = Limits {
            // Half a frame per batch leaves room for the frame's own fields.
            batch_bytes: (max_frame / 2).max(1),
            in_flight: in_flight_bytes.max(1),
        };
        tokio::spawn(run(client.clone(), rx, limits));
        Producer { tx, client }
    }

    /// Publish one message and wait until it is durable. A message the server would refuse
    /// for its size (payload, headers, msg id) or its topic name fails here alone, without
    /// failing the others it would have been sent with.
    pub async fn publish(&self, topic_name: &str, msg: PubMsg) -> Result<MsgAck> {
        check(&self.client, topic_name, &msg)?;
        let bytes = msg.payload.len()
            + msg.msg_id.as_ref().map_or(0, String::len)
            + msg
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
            + 32;
        let (done, rx) = oneshot::channel();
        let item = Item {
            topic: topic_name.to_string(),
            msg,
            bytes,
            done,
        };
        self.tx
            .send(item)
            .await
            .map_err(|_| self.client.closed_error())?;
        rx.await.map_err(|_| self.client.closed_error())?
    }
}

fn check(client: &Client, topic_name: &str, msg: &PubMsg) -> Result<()> {
    let refuse = |code, message: String| Err(ClientError::Server { code, message });
    if let Err(e) = topic::validate_publish_topic(topic_name) {
        return refuse(ErrorCode::BadRequest, e.to_string());
    }
    let max_payload = client.welcome().max_payload;
    if msg.payload.len() as u64 > max_payload {
        return refuse(
            ErrorCode::TooLarge,
            format!(
                "a {}-byte payload; the limit is {max_payload}",
                msg.payload.len()
            ),
        );
    }
    let header_bytes: usize = msg.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if msg.headers.len() > mom_proto::MAX_HEADERS || header_bytes > mom_proto::MAX_HEADER_BYTES {
        return refuse(
            ErrorCode::TooLarge,
            format!(
                "{} headers of {header_bytes} bytes; the limits are {} headers and {} bytes",
                msg.headers.len(),
                mom_proto::MAX_HEADERS,
                mom_proto::MAX_HEADER_BYTES
            ),
        );
    }
    if msg.headers.keys().any(String::is_empty) {
        return refuse(ErrorCode::BadRequest, "an empty header name".into());
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Limits {
    batch_bytes: usize,
    in_flight: usize,
}

/// Take what is waiting, group it by topic in arrival order, send each group as batches,
/// and hand each message its ack when its batch's comes.
async fn run(client: Client, mut rx: mpsc::Receiver<Item>, limits: Limits) {
    // Permits are KiB, so a u32 count covers any budget.
    let kib = |b: usize| u32::try_from(b.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let budget = Arc::new(Semaphore::new(kib(limits.in_flight) as usize));
    let mut waiting: Vec<Item> = Vec::new();
    while let Some(first) = rx.recv().await {
        waiting.push(first);
        let mut bytes = waiting[0].bytes;
        // Everything already queued, up to one in-flight budget's worth.
        while bytes < limits.in_flight {
            match rx.try_recv() {
                Ok(item) => {
                    bytes += item.bytes;
                    waiting.push(item);
                }
                Err(_) => break,
            }
        }
        let mut by_topic: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for item in waiting.drain(..) {
            by_topic.entry(item.topic.clone()).or_default().push(item);
        }
        for (topic_name, items) in by_topic {
            for batch in split(items, limits.batch_bytes) {
                let size: usize = batch.iter().map(|i| i.bytes).sum();
                let want = kib(size).min(kib(limits.in_flight));
                let Ok(permit) = budget.clone().acquire_many_owned(want).await else {
                    return;
                };
                let (msgs, dones): (Vec<PubMsg>, Vec<_>) =
                    batch.into_iter().map(|i| (i.msg, i.done)).unzip();
                let topic_name = topic_name.clone();
                let sent = client
                    .send(|id| {
                        ClientFrame::Publish(Publish {
                            id,
                            topic: topic_name,
                            msgs,
                            no_ack: false,
                        })
                    })
                    .await;
                tokio::spawn(async move {
                    let reply = match sent {
                        Ok(pending) => pending.await_reply().await,
                        Err(e) => Err(e),
                    };
                    drop(permit);
                    answer(reply, dones);
                });
            }
        }
    }
}

/// Batches of at most `max_bytes` (at least one message each), in order.
fn split(items: Vec<Item>, max_bytes: usize) -> Vec<Vec<Item>> {
    let mut out: Vec<Vec<Item>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        match out.last_mut() {
            Some(last) if bytes + item.bytes <= max_bytes => {
                bytes += item.bytes;
                last.push(item);
            }
            _ => {
                bytes = item.bytes;
                out.push(vec![item]);
            }
        }
    }
    out
}

fn answer(reply: Result<ServerFrame>, dones: Vec<oneshot::Sender<Result<MsgAck>>>) {
    let ok: Result<PublishOk> = match reply {
        Ok(ServerFrame::PublishOk(ok)) if ok.seqs.len() == dones.len() => Ok(ok),
        Ok(ServerFrame::PublishOk(ok)) => Err(ClientError::Protocol(format!(
            "{} seqs acknowledged for a batch of {}",
            ok.seqs.len(),
            dones.len()
        ))),
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(e),
    };
    match ok {
        Ok(ok) => {
            for (i, (done, seq)) in dones.into_iter().zip(ok.seqs).enumerate() {
                let duplicate = ok.duplicate_indexes.contains(&(i as u32));
                let _ = done.send(Ok(MsgAck { seq, duplicate }));
            }
        }
        Err(e) => {
            for done in dones {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}
