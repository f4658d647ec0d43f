//! This node's batchers, one per data group: what its clients send to a group (publishes
//! and queue changes, each to the group of its shard) is gathered while earlier batches
//! are being committed (up to `IN_FLIGHT` at once) and sent to the group's leader as one
//! entry; a batch whose fate is unknown is sent again as the same batch (`origins.rs`:
//! applied once, and in the order sent).

use std::time::Duration;

use mom_proto::{ErrorCode, PublishOk, ServerFrame};
use tokio::sync::{mpsc, oneshot};

use super::data::{group_of, AppendCmdRef, DataItem, EntryReply, Origin, PubResult};
use super::origins::IN_FLIGHT;
use crate::core::shards::Shard;

/// How long a batch is tried before its publishes get an error.
const GIVE_UP: Duration = Duration::from_secs(20);

/// Most publishes in one Raft entry.
const BATCH_MAX: usize = 4096;
/// About the most bytes of messages in one Raft entry: a batch is closed once it reaches
/// this (a larger single publish gets an entry of its own). A replication request carries
/// about 2 MiB of entries (`mom_raft::log_store::REPLICATE_BYTES`), so one or two such
/// entries.
const BATCH_BYTES: usize = 1 << 20;

/// About what an item takes in a Raft entry.
fn item_bytes(item: &DataItem) -> usize {
    let item = match item {
        DataItem::Publish(p) => p,
        DataItem::Queue(_) => return 256,
    };
    let msgs: usize = item
        .msgs
        .iter()
        .map(|m| {
            m.payload.len()
                + m.msg_id.as_ref().map_or(0, String::len)
                + m.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>()
                + 8
        })
        .sum();
    msgs + item.topic.len() + item.sender.user.len() + item.sender.name.len() + 32
}

/// An item waiting in this node's batcher.
pub struct Proposal {
    pub item: DataItem,
    pub done: Done,
}

/// Where an item's result goes.
pub enum Done {
    /// To whoever waits on the channel.
    Channel(oneshot::Sender<PubResult>),
    /// Straight to the client as the answer to its publish: the batcher writes a whole
    /// batch's answers in one go, so each connection's writer finds them together and
    /// sends them in one write, instead of waking for each.
    Publish(PublishAnswer),
}

impl Done {
    fn send(self, r: PubResult) {
        match self {
            Done::Channel(tx) => {
                let _ = tx.send(r);
            }
            Done::Publish(a) => a.answer(r),
        }
    }
}

/// A client's publish waiting for its answer (`Done::Publish`).
pub struct PublishAnswer {
    pub outbox: crate::outbox::Outbox,
    pub id: u64,
    pub topic: String,
    /// The topic whose watchers count: the topic, or a partitioned topic's first partition.
    pub watched: String,
    pub no_ack: bool,
    /// This node's watchers of the topic when the publish came.
    pub watchers: crate::core::Watchers,
    /// Every message carries `reply-to`: a request, whose answer must not say "nobody
    /// watches" from what the other nodes told a moment ago (`interest.rs`).
    pub request: bool,
    pub cluster: super::Cluster,
    pub answered: bool,
    /// Its share of the admission budget, given back with the answer: what waits for the
    /// cluster counts against the budget as a single node's unflushed publishes do, so a
    /// flood of publishes waits in its clients' sockets, not in this node's memory.
    pub _ticket: crate::admission::Ticket,
}

impl PublishAnswer {
    /// Answer the client with `r`.
    pub fn answer(mut self, r: PubResult) {
        let done = match r {
            Ok(_) if self.no_ack => {
                self.answered = true;
                return self.outbox.release(self.id);
            }
            Ok(done) => done,
            Err(e) => return self.refuse(e),
        };
        let mut watchers = std::mem::take(&mut self.watchers);
        watchers.add(self.cluster.remote_watchers(&self.watched));
        if watchers.count() == 0 && done.queues == 0 && self.request {
            // Nobody, by what this node knows: the others say it now.
            tokio::spawn(async move {
                let elsewhere = self.cluster.watchers_elsewhere(&self.watched).await;
                self.publish_ok(done, elsewhere.count());
            });
        } else {
            self.publish_ok(done, watchers.count());
        }
    }

    fn publish_ok(&mut self, done: super::data::Published, watchers: u64) {
        self.answered = true;
        let frame = ServerFrame::PublishOk(PublishOk {
            id: self.id,
            topic: std::mem::take(&mut self.topic),
            seqs: done.seqs,
            duplicates: done.duplicates,
            watchers,
            queues: done.queues,
            duplicate_indexes: done.duplicate_indexes,
            partitions: done.partitions,
        });
        self.outbox.reply(frame, true);
    }

    fn refuse(&mut self, (code, msg): (ErrorCode, String)) {
        self.answered = true;
        let frame = ServerFrame::error(Some(self.id), code, msg);
        self.outbox.reply(frame, true);
    }
}

impl Drop for PublishAnswer {
    /// Never left without an answer: the batcher stopped (the node is stopping).
    fn drop(&mut self) {
        if !self.answered {
            self.refuse((ErrorCode::Unavailable, "the node is stopping".into()));
        }
    }
}

/// The batcher's queue: publishes of this node's clients, sent to the leader a batch at a
/// time. Unbounded: what a connection may have in flight is bounded before (admission).
pub type Batcher = mpsc::UnboundedSender<Proposal>;

/// How long a batch that reached the leader before the one it follows waits for it.
const ORDER_WAIT: Duration = Duration::from_millis(200);

/// As the data group's leader: the last batch proposed of each sender, so that a batch
/// that arrives before the one it follows waits for it (`ORDER_WAIT` at most; the state
/// machine refuses it if it still comes first).
#[derive(Default)]
pub struct Proposed {
    last: std::sync::Mutex<std::collections::HashMap<(mom_raft::NodeId, u64), u64>>,
    changed: tokio::sync::Notify,
}

impl Proposed {
    fn upto(&self, o: &Origin) -> u64 {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.get(&(o.node, o.process)).copied().unwrap_or(0)
    }

    async fn wait_for(&self, o: &Origin, after: u64) {
        let deadline = tokio::time::Instant::now() + ORDER_WAIT;
        loop {
            let changed = self.changed.notified();
            if after == 0 || self.upto(o) >= after {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    fn note(&self, o: &Origin) {
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            // A few senders per node: the map stays small; a leader of a cluster whose
            // nodes restarted very often starts it again.
            if last.len() > 1024 {
                last.clear();
            }
            let e = last.entry((o.node, o.process)).or_default();
            *e = (*e).max(o.batch);
        }
        self.changed.notify_waiters();
    }
}

/// How this process's batches ended, for a batch to know which one it follows.
#[derive(Default)]
struct Settled {
    /// Every batch up to this one has its answer.
    upto: u64,
    /// Batches that got no answer in time, or were refused whole (never to be applied
    /// after the ones behind them); only the recent ones are kept.
    failed: std::collections::BTreeSet<u64>,
}

impl Settled {
    /// The batch that batch `number` follows: the one before it that did not fail (not
    /// settled yet counts as coming), or 0.
    fn after(&self, number: u64) -> u64 {
        let mut a = number.saturating_sub(1);
        while a > 0 && self.failed.contains(&a) {
            a -= 1;
        }
        a
    }
}

impl super::Cluster {
    /// Runs the batcher: up to `IN_FLIGHT` batches at a time go to the leader; what
    /// arrives meanwhile makes the next one. Answers go out in the order of the batches,
    /// and the state machine applies them in that order (`origins.rs`).
    pub(super) async fn run_batcher(self, shard: Shard, mut rx: mpsc::UnboundedReceiver<Proposal>) {
        use futures_util::StreamExt;
        let mut waiting: Vec<Proposal> = Vec::new();
        let mut flying = futures_util::stream::FuturesOrdered::new();
        let (settled_tx, settled) = tokio::sync::watch::channel(Settled::default());
        let mut number = 0u64;
        let mut open = true;
        loop {
            if flying.len() < IN_FLIGHT && !waiting.is_empty() {
                let mut bytes: usize = waiting.iter().map(|p| item_bytes(&p.item)).sum();
                while waiting.len() < BATCH_MAX && bytes < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(p) => {
                            bytes += item_bytes(&p.item);
                            waiting.push(p);
                        }
                        Err(_) => break,
                    }
                }
                let (items, dones): (Vec<DataItem>, Vec<_>) = std::mem::take(&mut waiting)
                    .into_iter()
                    .map(|p| (p.item, p.done))
                    .unzip();
                number += 1;
                let origin = Origin {
                    node: self.node_id(),
                    process: self.inner.process,
                    batch: number,
                };
                let this = self.clone();
                let settled = settled.clone();
                flying.push_back(async move {
                    let r = this.propose_publishes(shard, origin, items, settled).await;
                    (origin.batch, dones, r)
                });
                continue;
            }
            if !open && flying.is_empty() {
                return;
            }
            tokio::select! {
                Some((batch, dones, r)) = flying.next(), if !flying.is_empty() => {
                    let failed = r.is_err();
                    match r {
                        Ok(results) => {
                            for (done, r) in dones.into_iter().zip(results) {
                                done.send(r);
                            }
                        }
                        Err(e) => {
                            for done in dones {
                                done.send(Err((ErrorCode::Unavailable, e.clone())));
                            }
                        }
                    }
                    settled_tx.send_modify(|s| {
                        s.upto = batch;
                        if failed {
                            s.failed.insert(batch);
                        }
                        while s.failed.len() > 64 {
                            s.failed.pop_first();
                        }
                    });
                }
                p = rx.recv(), if open && flying.len() < IN_FLIGHT => match p {
                    Some(p) => waiting.push(p),
                    None => open = false,
                },
            }
        }
    }

    /// Sends a batch of publishes to the data group's leader and returns each one's result.
    /// A batch whose fate is unknown is sent again as the same batch (`origin`): applied
    /// once however often it is committed; one that reached the leader before the batch it
    /// follows is sent again once that one is settled. `Err` for the whole batch: after
    /// `GIVE_UP`, no leader took it (then it is not stored), or its fate is still unknown.
    async fn propose_publishes(
        &self,
        shard: Shard,
        origin: Origin,
        items: Vec<DataItem>,
        mut settled: tokio::sync::watch::Receiver<Settled>,
    ) -> Result<Vec<PubResult>, String> {
        let n = items.len();
        let after = settled.borrow().after(origin.batch);
        let mut req = super::PeerReq::Publish {
            origin,
            after,
            items,
        };
        let deadline = tokio::time::Instant::now() + GIVE_UP;
        let mut unknown = None;
        loop {
            match self.on_leader(group_of(shard), &req).await {
                Ok(super::Answer::Published(r)) if r.len() == n => return Ok(r),
                Ok(_) => return Err("the leader gave an answer of another kind".into()),
                Err(super::WriteError::OutOfOrder) => {
                    // The batch before is still on its way: once it is settled, this one
                    // follows it (or the one before it, if it failed).
                    let before = origin.batch.saturating_sub(1);
                    let wait = settled.wait_for(|s| s.upto >= before);
                    if tokio::time::timeout_at(deadline, wait).await.is_err() {
                        return Err(format!(
                            "not stored: the batch before it got no answer in {GIVE_UP:?}; retry"
                        ));
                    }
                    let a = settled.borrow().after(origin.batch);
                    if let super::PeerReq::Publish { after, .. } = &mut req {
                        *after = a;
                    }
                }
                Err(super::WriteError::NoLeader(_, why)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(match unknown {
                            Some(e) => format!(
                                "may or may not be stored ({e}); retry with a msg_id to be safe"
                            ),
                            None => format!(
                                "not stored: the cluster has no reachable leader ({why}); retry"
                            ),
                        });
                    }
                }
                Err(e @ super::WriteError::Indeterminate(_)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!(
                            "may or may not be stored ({e}); retry with a msg_id to be safe"
                        ));
                    }
                    unknown = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// As the data group's leader: propose one entry of publishes, wait for it to be
    /// applied here, and return each one's result.
    pub(super) async fn lead_publish(
        &self,
        shard: Shard,
        origin: Origin,
        after: u64,
        items: &[DataItem],
    ) -> Result<Vec<PubResult>, super::WriteError> {
        let (Some(data), Some(proposed)) = (
            self.data_raft(shard),
            self.inner.proposed.get(usize::from(shard)),
        ) else {
            return Err(super::WriteError::Refused(format!(
                "no data group {shard} here"
            )));
        };
        if data.metrics().borrow().state != mom_raft::openraft::ServerState::Leader {
            return Err(super::WriteError::NotLeader(format!(
                "node {} does not lead data group {}",
                self.node_id(),
                group_of(shard)
            )));
        }
        // A batch that came before the one it follows (the two travel on their own) waits a
        // moment for it, so the log takes them in order and neither is sent again.
        proposed.wait_for(&origin, after).await;
        let cmd = AppendCmdRef {
            time: crate::broker::now_ms(),
            origin,
            after,
            items,
        };
        let bytes =
            super::encode_named(&cmd).map_err(|e| super::WriteError::Refused(e.to_string()))?;
        let proposal = data
            .client_write_ff(mom_raft::Cmd(bytes.into()))
            .await
            .map_err(|e| super::WriteError::NotLeader(e.to_string()))?;
        proposed.note(&origin);
        match super::committed(proposal).await? {
            Ok(Ok(r)) => match rmp_serde::from_slice(&r.data.0) {
                Ok(EntryReply::Done(r)) => Ok(r),
                Ok(EntryReply::Refused(e)) => Err(super::WriteError::Refused(e)),
                Ok(EntryReply::OutOfOrder) => Err(super::WriteError::OutOfOrder),
                Err(e) => Err(super::WriteError::Refused(format!(
                    "unreadable apply result: {e}"
                ))),
            },
            // Proposed, then leadership moved: the entry may still be committed.
            Ok(Err(e)) => Err(super::WriteError::Indeterminate(format!(
                "the leader changed while the publish was proposed ({e})"
            ))),
            Err(e) => Err(super::WriteError::Indeterminate(format!(
                "the data group stopped while the publish was proposed ({e})"
            ))),
        }
    }

    /// A client's publish through the cluster, queued now (a connection's publishes keep
    /// their order); the batcher answers the client once it is committed and applied.
    pub fn propose_publish(&self, item: DataItem, answer: PublishAnswer) {
        // Sent back when the batcher is gone: its drop answers that the node is stopping.
        if let Some(b) = self.batcher_of(&item) {
            let _ = b.send(Proposal {
                item,
                done: Done::Publish(answer),
            });
        }
    }

    /// The batcher of the data group an item goes to (one per shard).
    fn batcher_of(&self, item: &DataItem) -> Option<&Batcher> {
        let shard = self.route(item);
        self.inner.batchers.get(usize::from(shard))
    }

    /// The shard an item goes to: a publish, or a change to a topic, to its topic's; the
    /// rest to the first (queues are not yet spread over several).
    fn route(&self, item: &DataItem) -> Shard {
        use mom_proto::ClientFrame;
        let topic = match item {
            DataItem::Publish(p) => &p.topic,
            DataItem::Queue(super::data::QueueOp::Request { frame, .. }) => match &**frame {
                ClientFrame::TopicRm(r) => &r.topic,
                ClientFrame::TopicPurge(r) => &r.topic,
                ClientFrame::TopicSet(r) => &r.topic,
                ClientFrame::TopicCreate(r) => &r.topic,
                _ => return 0,
            },
            DataItem::Queue(_) => return 0,
        };
        self.shards().place_name(topic)
    }

    /// Publishes (or changes the queues) through the cluster: queued now, in the order of
    /// the calls (a connection's requests keep their order); the answer comes once
    /// committed on a majority and applied.
    pub fn propose(&self, item: DataItem) -> impl std::future::Future<Output = PubResult> {
        let shard = self.route(&item);
        self.propose_in(shard, item)
    }

    /// [`Cluster::propose`] to shard `shard`'s data group.
    pub fn propose_in(
        &self,
        shard: Shard,
        item: DataItem,
    ) -> impl std::future::Future<Output = PubResult> {
        let (done, wait) = oneshot::channel();
        let queued = self
            .inner
            .batchers
            .get(usize::from(shard))
            .is_some_and(|b| {
                b.send(Proposal {
                    item,
                    done: Done::Channel(done),
                })
                .is_ok()
            });
        async move {
            if !queued {
                return Err((ErrorCode::Unavailable, "the node is stopping".into()));
            }
            match tokio::time::timeout(GIVE_UP + Duration::from_secs(10), wait).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err((ErrorCode::Unavailable, "the node is stopping".into())),
                Err(_) => Err((
                    ErrorCode::Unavailable,
                    "no answer from the cluster in time: the publish may or may not be \
                     stored; retry with a msg_id to be safe"
                        .into(),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(batch: u64) -> Origin {
        Origin {
            node: 2,
            process: 5,
            batch,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_ahead_of_the_one_it_follows_waits_for_it_to_be_proposed() {
        let proposed = std::sync::Arc::new(Proposed::default());
        // Batch 1 needs nothing before it.
        proposed.wait_for(&origin(1), 0).await;
        // Batch 3 came first: it waits until batch 2 is proposed, not for `ORDER_WAIT`.
        let p = proposed.clone();
        let start = tokio::time::Instant::now();
        let waiter = tokio::spawn(async move {
            p.wait_for(&origin(3), 2).await;
            tokio::time::Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        proposed.note(&origin(1));
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "batch 1 is not the one batch 3 follows"
        );
        proposed.note(&origin(2));
        let done = waiter.await.unwrap();
        assert_eq!(done - start, Duration::from_millis(50));
        // Another sender's batches do not count; a batch whose predecessor never comes
        // goes after `ORDER_WAIT` (the state machine judges it).
        let other = Origin {
            process: 6,
            ..origin(4)
        };
        let start = tokio::time::Instant::now();
        proposed.wait_for(&other, 3).await;
        assert_eq!(tokio::time::Instant::now() - start, ORDER_WAIT);
        // Once its predecessor is proposed, a batch goes at once.
        let start = tokio::time::Instant::now();
        proposed.wait_for(&origin(3), 2).await;
        assert_eq!(tokio::time::Instant::now() - start, Duration::ZERO);
    }

    #[test]
    fn a_batch_follows_the_last_one_before_it_that_did_not_fail() {
        let mut s = Settled::default();
        assert_eq!(s.after(1), 0);
        assert_eq!(s.after(5), 4);
        s.failed.extend([4, 3]);
        assert_eq!(s.after(5), 2);
        s.failed.extend([1, 2]);
        assert_eq!(s.after(5), 0);
    }
}
