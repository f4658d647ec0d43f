//! A watch as a stream of events.

use mom_proto::{ClientFrame, Message, MsgKey, Notice, NoticeKind, Unwatch};
use tokio::sync::mpsc;

use super::{Client, ClientError, Result};

#[derive(Debug, Clone)]
pub enum WatchEvent {
    Messages(Vec<Message>),
    Notice(Notice),
}

pub struct WatchStream {
    id: u64,
    time: u64,
    rx: mpsc::Receiver<WatchEvent>,
    client: Client,
}

impl WatchStream {
    pub(super) fn new(id: u64, time: u64, rx: mpsc::Receiver<WatchEvent>, client: Client) -> Self {
        WatchStream {
            id,
            time,
            rx,
            client,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The broker's time when the watch started (ms since the epoch; 0 from an older
    /// broker).
    pub fn started(&self) -> u64 {
        self.time
    }

    /// The next event; `Err` when the connection is gone or the server ended the watch.
    pub async fn next(&mut self) -> Result<WatchEvent> {
        match self.rx.recv().await {
            Some(WatchEvent::Notice(n)) if n.kind == NoticeKind::Ended => Err(ClientError::Closed(
                format!(": the server ended the watch: {}", n.message),
            )),
            Some(ev) => Ok(ev),
            None => Err(self.client.closed_error()),
        }
    }

    /// End the watch on the server.
    pub async fn unwatch(mut self) -> Result<()> {
        self.client.forget_watch(self.id);
        // Deliveries still on their way wait for room in this stream's buffer, and the
        // connection's reader with them: nobody reads it any more, so the answer to the
        // unwatch would never be read. Closed, the buffer refuses them and the reader goes
        // on.
        self.rx.close();
        let watch = self.id;
        self.client
            .request(|id| ClientFrame::Unwatch(Unwatch { id, watch }))
            .await
            .map(|_| ())
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.client.forget_watch(self.id);
    }
}

/// A queue consumer as a stream of deliveries; ack each message (or nack it) through
/// [`ConsumerStream::ack`] so the server sends more.
pub struct ConsumerStream {
    queue: String,
    id: u64,
    rx: mpsc::UnboundedReceiver<WatchEvent>,
    client: Client,
}

impl ConsumerStream {
    pub(super) fn new(
        queue: String,
        id: u64,
        rx: mpsc::UnboundedReceiver<WatchEvent>,
        client: Client,
    ) -> Self {
        ConsumerStream {
            queue,
            id,
            rx,
            client,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next batch of messages.
    pub async fn next(&mut self) -> Result<Vec<Message>> {
        loop {
            match self.rx.recv().await {
                Some(WatchEvent::Messages(m)) => return Ok(m),
                Some(WatchEvent::Notice(n)) if n.kind == NoticeKind::Ended => {
                    return Err(ClientError::Server {
                        code: mom_proto::ErrorCode::NotFound,
                        message: n.message,
                    })
                }
                Some(WatchEvent::Notice(_)) => continue,
                None => return Err(self.client.closed_error()),
            }
        }
    }

    /// The next batch if one has come already; None if none is waiting.
    pub fn try_next(&mut self) -> Option<Result<Vec<Message>>> {
        loop {
            match self.rx.try_recv() {
                Ok(WatchEvent::Messages(m)) => return Some(Ok(m)),
                Ok(WatchEvent::Notice(n)) if n.kind == NoticeKind::Ended => {
                    return Some(Err(ClientError::Server {
                        code: mom_proto::ErrorCode::NotFound,
                        message: n.message,
                    }))
                }
                Ok(WatchEvent::Notice(_)) => continue,
                Err(mpsc::error::TryRecvError::Empty) => return None,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    return Some(Err(self.client.closed_error()))
                }
            }
        }
    }

    /// Acknowledge messages this consumer received.
    pub async fn ack(&self, msgs: &[Message]) -> Result<()> {
        self.client.ack(&self.queue, keys(msgs)).await
    }

    /// Stop this consumer. With `release`, what it still holds goes back as if never
    /// delivered (it was never worked on); otherwise as after a failed delivery.
    pub async fn cancel(self, release: bool) -> Result<()> {
        let consumer = self.id;
        self.client
            .request(|id| {
                ClientFrame::Cancel(mom_proto::Cancel {
                    id,
                    consumer,
                    release,
                })
            })
            .await
            .map(|_| ())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }
}

/// The keys that name messages in an ack, nack or extend.
pub fn keys(msgs: &[Message]) -> Vec<MsgKey> {
    msgs.iter().map(key).collect()
}

pub fn key(m: &Message) -> MsgKey {
    MsgKey {
        topic: m.topic.clone(),
        seq: m.seq,
    }
}

impl Drop for ConsumerStream {
    fn drop(&mut self) {
        self.client.forget_consumer(self.id);
    }
}
