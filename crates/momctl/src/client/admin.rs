//! Requests that manage what the broker holds: topics, queues, clients. Listings and stats
//! (paged) are in `listing`.

use std::time::Duration;

use mom_proto::{
    ClientFrame, Message, QueueBind, QueueCreate, QueueDelete, QueueInfo, QueuePeek, QueueRedrive,
    QueueReq, QueueSet, Req, ServerFrame, TopicCreate, TopicInfo, TopicReq, TopicRm, TopicSet,
};

use super::{unexpected, Client, Result};

impl Client {
    pub async fn topic_info(&self, topic: &str) -> Result<TopicInfo> {
        let topic = topic.to_string();
        match self
            .request(|id| ClientFrame::TopicInfo(TopicReq { id, topic }))
            .await?
        {
            ServerFrame::TopicInfo(t) => Ok(t.topic),
            other => Err(unexpected(other)),
        }
    }

    /// Remove a topic; refused (conflict) while queues hold some of its messages, unless
    /// `force`.
    pub async fn topic_rm(&self, topic: &str, force: bool) -> Result<()> {
        let topic = topic.to_string();
        match self
            .request(|id| ClientFrame::TopicRm(TopicRm { id, topic, force }))
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Remove every message of a topic; returns the topic and how many were removed.
    pub async fn topic_purge(&self, topic: &str, force: bool) -> Result<(TopicInfo, u64)> {
        let topic = topic.to_string();
        match self
            .request(|id| ClientFrame::TopicPurge(TopicRm { id, topic, force }))
            .await?
        {
            ServerFrame::TopicInfo(t) => Ok((t.topic, t.purged.unwrap_or(0))),
            other => Err(unexpected(other)),
        }
    }

    pub async fn topic_set(&self, mut set: TopicSet) -> Result<TopicInfo> {
        match self
            .request(|id| {
                set.id = id;
                ClientFrame::TopicSet(set)
            })
            .await?
        {
            ServerFrame::TopicInfo(t) => Ok(t.topic),
            other => Err(unexpected(other)),
        }
    }

    /// Create a topic (with partitions); answered with the topic.
    pub async fn topic_create(&self, mut c: TopicCreate) -> Result<TopicInfo> {
        match self
            .request(|id| {
                c.id = id;
                ClientFrame::TopicCreate(c)
            })
            .await?
        {
            ServerFrame::TopicInfo(t) => Ok(t.topic),
            other => Err(unexpected(other)),
        }
    }

    /// Round trip; returns the server's time.
    pub async fn ping(&self) -> Result<u64> {
        match self.request(|id| ClientFrame::Ping(Req { id })).await? {
            ServerFrame::Pong(p) => Ok(p.time),
            other => Err(unexpected(other)),
        }
    }

    /// How the server sees its cluster (`mode` is `single` when it is not in one).
    pub async fn cluster_status(&self) -> Result<mom_proto::ClusterStatus> {
        match self
            .request(|id| ClientFrame::ClusterStatus(Req { id }))
            .await?
        {
            ServerFrame::ClusterStatus(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Add a node to the cluster; answers with the new status.
    pub async fn cluster_join(
        &self,
        node_id: u64,
        peer_addr: &str,
    ) -> Result<mom_proto::ClusterStatus> {
        let peer_addr = peer_addr.to_string();
        match self
            .request(|id| {
                ClientFrame::ClusterJoin(mom_proto::ClusterJoin {
                    id,
                    node_id,
                    peer_addr,
                })
            })
            .await?
        {
            ServerFrame::ClusterStatus(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Remove a node from the cluster; answers with the new status.
    pub async fn cluster_leave(&self, node_id: u64) -> Result<mom_proto::ClusterStatus> {
        match self
            .request(|id| ClientFrame::ClusterLeave(mom_proto::ClusterLeave { id, node_id }))
            .await?
        {
            ServerFrame::ClusterStatus(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Create a queue (with `exist_ok`, add the bindings to an existing one).
    pub async fn queue_create(&self, mut c: QueueCreate) -> Result<QueueInfo> {
        match self
            .request(|id| {
                c.id = id;
                ClientFrame::QueueCreate(c)
            })
            .await?
        {
            ServerFrame::QueueInfo(q) => Ok(q.queue),
            other => Err(unexpected(other)),
        }
    }

    pub async fn queue_bind(&self, queue: &str, patterns: Vec<String>) -> Result<QueueInfo> {
        let queue = queue.to_string();
        match self
            .request(|id| {
                ClientFrame::QueueBind(QueueBind {
                    id,
                    queue,
                    patterns,
                })
            })
            .await?
        {
            ServerFrame::QueueInfo(q) => Ok(q.queue),
            other => Err(unexpected(other)),
        }
    }

    /// Remove bindings; with no pattern, all of them.
    pub async fn queue_unbind(&self, queue: &str, patterns: Vec<String>) -> Result<QueueInfo> {
        let queue = queue.to_string();
        match self
            .request(|id| {
                ClientFrame::QueueUnbind(QueueBind {
                    id,
                    queue,
                    patterns,
                })
            })
            .await?
        {
            ServerFrame::QueueInfo(q) => Ok(q.queue),
            other => Err(unexpected(other)),
        }
    }

    pub async fn queue_delete(&self, queue: &str, force: bool) -> Result<()> {
        let queue = queue.to_string();
        match self
            .request(|id| ClientFrame::QueueDelete(QueueDelete { id, queue, force }))
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Drop what waits in a queue; returns the queue and how many were dropped.
    pub async fn queue_purge(&self, queue: &str) -> Result<(QueueInfo, u64)> {
        let queue = queue.to_string();
        match self
            .request(|id| ClientFrame::QueuePurge(QueueReq { id, queue }))
            .await?
        {
            ServerFrame::QueueInfo(q) => Ok((q.queue, q.purged.unwrap_or(0))),
            other => Err(unexpected(other)),
        }
    }

    /// Change a queue's max deliveries and ack wait (None keeps a value).
    pub async fn queue_set(
        &self,
        queue: &str,
        max_deliver: Option<u32>,
        ack_wait: Option<Duration>,
    ) -> Result<QueueInfo> {
        let queue = queue.to_string();
        let ack_wait_ms = ack_wait.map(|d| d.as_millis() as u64);
        match self
            .request(|id| {
                ClientFrame::QueueSet(QueueSet {
                    id,
                    queue,
                    max_deliver,
                    ack_wait_ms,
                })
            })
            .await?
        {
            ServerFrame::QueueInfo(q) => Ok(q.queue),
            other => Err(unexpected(other)),
        }
    }

    /// The next `max` messages the queue would deliver, without delivering them.
    pub async fn queue_peek(&self, queue: &str, max: u32) -> Result<Vec<Message>> {
        let queue = queue.to_string();
        match self
            .request(|id| ClientFrame::QueuePeek(QueuePeek { id, queue, max }))
            .await?
        {
            ServerFrame::FetchOk(f) => Ok(f.msgs),
            other => Err(unexpected(other)),
        }
    }

    /// Move the dead letters of `$dlq.<queue>` back into the queue; returns the queue and
    /// how many moved.
    pub async fn queue_redrive(&self, queue: &str) -> Result<(QueueInfo, u64)> {
        let queue = queue.to_string();
        match self
            .request(|id| ClientFrame::QueueRedrive(QueueRedrive { id, queue }))
            .await?
        {
            ServerFrame::QueueInfo(q) => Ok((q.queue, q.redriven.unwrap_or(0))),
            other => Err(unexpected(other)),
        }
    }

    /// Close another client's connection, by its global client id: its watches and
    /// consumers end and its unacked deliveries go back to their queues.
    pub async fn client_close(&self, client_id: u64) -> Result<()> {
        match self
            .request(|id| ClientFrame::ClientClose(mom_proto::ClientClose { id, client_id }))
            .await?
        {
            ServerFrame::Ok(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn queue_info(&self, queue: &str) -> Result<QueueInfo> {
        let queue = queue.to_string();
        match self
            .request(|id| ClientFrame::QueueInfo(QueueReq { id, queue }))
            .await?
        {
            ServerFrame::QueueInfo(q) => Ok(q.queue),
            other => Err(unexpected(other)),
        }
    }
}
