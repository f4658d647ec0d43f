//! Queues: fetch, consume, and settling what was delivered (ack, extend, nack, release).

use super::*;

impl Client {
    /// Pull up to `max` messages of a queue, waiting up to `timeout` for the first. Each
    /// must be acked (or nacked) before its ack deadline, or it is delivered again.
    pub async fn fetch(&self, queue: &str, max: u32, timeout: Duration) -> Result<Vec<Message>> {
        self.fetch_with(queue, max, timeout, false).await
    }

    /// Like [`Client::fetch`]; `detached` deliveries outlive this connection and wait for an
    /// ack or nack from anyone until their deadline.
    pub async fn fetch_with(
        &self,
        queue: &str,
        max: u32,
        timeout: Duration,
        detached: bool,
    ) -> Result<Vec<Message>> {
        let queue = queue.to_string();
        let timeout_ms = timeout.as_millis() as u64;
        match self
            .request(|id| {
                ClientFrame::Fetch(Fetch {
                    id,
                    queue,
                    max,
                    timeout_ms,
                    detached,
                })
            })
            .await?
        {
            ServerFrame::FetchOk(f) => Ok(f.msgs),
            other => Err(unexpected(other)),
        }
    }

    /// Acknowledge messages of a queue; returns once the ack is on disk.
    pub async fn ack(&self, queue: &str, msgs: Vec<MsgKey>) -> Result<()> {
        let queue = queue.to_string();
        match self
            .request(|id| ClientFrame::Ack(Ack { id, queue, msgs }))
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Push the ack deadline of deliveries still being worked on.
    pub async fn extend(&self, queue: &str, msgs: Vec<MsgKey>) -> Result<()> {
        let queue = queue.to_string();
        match self
            .request(|id| ClientFrame::Extend(Ack { id, queue, msgs }))
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Give messages back to be delivered again after `delay` (a failed delivery).
    pub async fn nack(&self, queue: &str, msgs: Vec<MsgKey>, delay: Duration) -> Result<()> {
        self.give_back(queue, msgs, delay, false).await
    }

    /// Give back messages never worked on: delivered again at once, the attempt not counted.
    pub async fn release(&self, queue: &str, msgs: Vec<MsgKey>) -> Result<()> {
        self.give_back(queue, msgs, Duration::ZERO, true).await
    }

    async fn give_back(
        &self,
        queue: &str,
        msgs: Vec<MsgKey>,
        delay: Duration,
        release: bool,
    ) -> Result<()> {
        let queue = queue.to_string();
        let delay_ms = delay.as_millis() as u64;
        match self
            .request(|id| {
                ClientFrame::Nack(Nack {
                    id,
                    queue,
                    msgs,
                    delay_ms,
                    release,
                })
            })
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Start a consumer of a queue: messages are pushed, at most `credit` unacked at once.
    pub async fn consume(&self, queue: &str, credit: u32) -> Result<ConsumerStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id();
        self.shared
            .pending_watches
            .lock()
            .expect("lock poisoned")
            .insert(id, Route::Consumer(tx));
        let c = Consume {
            id,
            queue: queue.to_string(),
            credit,
        };
        let res = self.send_id(id, |_| ClientFrame::Consume(c)).await;
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
            ServerFrame::ConsumeOk(ok) => Ok(ConsumerStream::new(
                queue.to_string(),
                ok.consumer,
                rx,
                self.clone(),
            )),
            other => Err(unexpected(other)),
        }
    }
}
