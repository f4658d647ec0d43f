//! Who watches where. Watches belong to the node their client is connected to, so the
//! answer to a publish counts the watchers of every node from what the others told it:
//! each node sends the others its interest (the pattern sets its clients watch, with how
//! many watchers hold each: `core::Interest`) when it changes, at most every 100 ms, and
//! again every 2 s; a node's interest not heard again within 10 s is dropped (the node is
//! down, and its watches with it).
//!
//! What a node was told can be a moment old. A request (every message carries
//! `reply-to`) that would reach no watcher by it asks the other nodes at once before its
//! answer says so, so `momctl request` fails with "no responders" only when no node has
//! one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mom_raft::NodeId;
use tokio::sync::Notify;

use super::{Cluster, PeerReq};
use crate::core::{Interest, InterestIndex, Watchers};

/// How often a node sends its interest when it has not changed.
const REFRESH: Duration = Duration::from_secs(2);
/// How long another node's interest counts without being heard again.
const EXPIRE: Duration = Duration::from_secs(10);
/// How long a node waits for another's answer when it asks (a count, or taking its interest).
const ASK_TTL: Duration = Duration::from_secs(1);

struct Remote {
    index: InterestIndex,
    heard: Instant,
}

/// This node's interest, to send, and what the others sent.
#[derive(Default)]
pub struct Interests {
    local: Mutex<Interest>,
    changed: Notify,
    remote: Mutex<HashMap<NodeId, Remote>>,
}

impl Interests {
    /// The watchers of `topic` on the other nodes, as they last told.
    pub fn remote(&self, topic: &str) -> Watchers {
        let remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        let mut w = Watchers::default();
        for r in remote.values().filter(|r| r.heard.elapsed() < EXPIRE) {
            w.add(r.index.watchers(topic));
        }
        w
    }

    fn set_remote(&self, node: NodeId, interest: Interest) {
        let index = InterestIndex::new(interest);
        let mut remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        remote.retain(|_, r| r.heard.elapsed() < EXPIRE);
        remote.insert(
            node,
            Remote {
                index,
                heard: Instant::now(),
            },
        );
    }
}

impl Cluster {
    /// The broker's watches changed: the others learn of it.
    pub fn set_interest(&self, interest: Interest) {
        *self
            .inner
            .interests
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = interest;
        self.inner.interests.changed.notify_one();
    }

    /// The watchers of `topic` on the other nodes, as they last told this one.
    pub fn remote_watchers(&self, topic: &str) -> Watchers {
        self.inner.interests.remote(topic)
    }

    /// Sends this node's interest to the others when it changes, and every `REFRESH`.
    pub(super) async fn run_interest(self) {
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                _ = self.inner.interests.changed.notified() => {}
                _ = tokio::time::sleep(REFRESH) => {}
            }
            let interest = self
                .inner
                .interests
                .local
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let req = PeerReq::Interest {
                node: self.node_id(),
                interest,
            };
            // Each node is told on its own: one that does not answer holds up no other.
            for (body, id, addr) in self.to_others(&req) {
                let peers = self.inner.peers.clone();
                tokio::spawn(async move {
                    let _ = peers
                        .call_app(id, &addr, super::data::DATA, body, ASK_TTL)
                        .await;
                });
            }
        }
    }

    /// Another node told its interest.
    pub(super) fn heard_interest(&self, node: NodeId, interest: Interest) {
        if node != self.node_id() {
            self.inner.interests.set_remote(node, interest);
        }
    }

    /// This node's consumers of each of `queues`, asked by another node.
    pub(super) async fn local_consumers(&self, queues: Vec<String>) -> Vec<u64> {
        let n = queues.len();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let cmd = crate::broker::Cmd::QueueConsumers { queues, reply };
        if !self.inner.broker.send(cmd).await {
            return vec![0; n];
        }
        answer.await.unwrap_or_else(|_| vec![0; n])
    }

    /// This node's watchers of `topic`, asked by another node.
    pub(super) async fn local_watchers(&self, topic: String) -> Watchers {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let cmd = crate::broker::Cmd::Watchers { topic, reply };
        if !self.inner.broker.send(cmd).await {
            return Watchers::default();
        }
        answer.await.unwrap_or_default()
    }

    /// The watchers of `topic` on the other nodes, asked now.
    pub async fn watchers_elsewhere(&self, topic: &str) -> Watchers {
        let req = PeerReq::Watchers {
            topic: topic.to_string(),
        };
        let mut w = Watchers::default();
        for one in self.ask_others::<Watchers>(&req).await {
            w.add(one);
        }
        w
    }

    /// The request encoded, with each other member of the data group to send it to.
    fn to_others(&self, req: &PeerReq) -> Vec<(bytes::Bytes, NodeId, String)> {
        let Ok(body) = rmp_serde::to_vec(req) else {
            return Vec::new();
        };
        let body = bytes::Bytes::from(body);
        let Some(data) = self.inner.data.first() else {
            return Vec::new();
        };
        let m = data.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.node_id())
            .map(|(id, node)| (body.clone(), *id, node.addr.clone()))
            .collect()
    }

    /// Asks every other member of the data group, side by side: the answers of those that
    /// answered within `ASK_TTL`.
    pub(super) async fn ask_others<T>(&self, req: &PeerReq) -> Vec<T>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let mut asks = tokio::task::JoinSet::new();
        for (body, id, addr) in self.to_others(req) {
            let peers = self.inner.peers.clone();
            asks.spawn(async move {
                let got = peers
                    .call_app(id, &addr, super::data::DATA, body, ASK_TTL)
                    .await;
                got.ok()
                    .and_then(Result::ok)
                    .and_then(|b| rmp_serde::from_slice::<T>(&b).ok())
            });
        }
        let mut all = Vec::new();
        while let Some(r) = asks.join_next().await {
            all.extend(r.ok().flatten());
        }
        all
    }
}
