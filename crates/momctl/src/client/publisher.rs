//! Pipelined publishing: keep up to `window` batches in flight and collect their acks in
//! order, so a stream of batches is not paced by one round trip (or one fsync) each.

use std::collections::VecDeque;

use mom_proto::{ClientFrame, PubMsg, Publish, PublishOk, ServerFrame};

use super::{unexpected, Client, PendingReply, Result};

pub struct Publisher {
    client: Client,
    topic: String,
    window: usize,
    in_flight: VecDeque<(usize, PendingReply)>,
}

impl Publisher {
    pub(super) fn new(client: Client, topic: &str, window: usize) -> Self {
        Publisher {
            client,
            topic: topic.to_string(),
            window: window.max(1),
            in_flight: VecDeque::new(),
        }
    }

    /// Send a batch. When the window is full, first waits for the oldest ack and returns it
    /// with the size of its batch.
    pub async fn send(&mut self, msgs: Vec<PubMsg>) -> Result<Option<(usize, PublishOk)>> {
        let mut done = None;
        if self.in_flight.len() >= self.window {
            done = self.next_ack().await?;
        }
        let n = msgs.len();
        let topic = self.topic.clone();
        let pending = self
            .client
            .send(|id| {
                ClientFrame::Publish(Publish {
                    id,
                    topic,
                    msgs,
                    no_ack: false,
                })
            })
            .await?;
        self.in_flight.push_back((n, pending));
        Ok(done)
    }

    /// Wait for the oldest batch in flight; `None` when none is.
    pub async fn next_ack(&mut self) -> Result<Option<(usize, PublishOk)>> {
        let Some((n, p)) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        match p.await_reply().await? {
            ServerFrame::PublishOk(ok) => Ok(Some((n, ok))),
            other => Err(unexpected(other)),
        }
    }

    /// Messages sent whose acks have not been collected.
    pub fn unacked(&self) -> usize {
        self.in_flight.iter().map(|(n, _)| n).sum()
    }
}
