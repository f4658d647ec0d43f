//! What the broker reports about itself: topic info and the `stats` reply (a summary and
//! one page of each section; the pages are in `listing`).

use mom_proto::{ErrorCode, Page, ServerFrame, Stats, StatsReq, TopicInfo, Totals};

use super::Broker;
use crate::core::TopicState;

impl Broker {
    pub(super) fn topic_info(&self, t: &TopicState) -> TopicInfo {
        self.topic_info_with(t, self.queues_bound(t.id))
    }

    /// Topic info, given how many queues are bound to it. A partitioned topic's counts are
    /// its partitions' summed (their seqs are each their own: its `first_seq` and
    /// `last_seq` are 0).
    pub(super) fn topic_info_with(&self, t: &TopicState, queues: u64) -> TopicInfo {
        if t.partitions > 1 {
            return self.partitioned_info(t);
        }
        let rate = self.rates.get(&t.id).copied().unwrap_or_default();
        TopicInfo {
            name: t.name.to_string(),
            messages: t.msgs,
            bytes: t.bytes,
            first_seq: t.first_seq,
            last_seq: t.last_seq,
            last_time: t.last_time,
            created: t.created,
            limits: *t.limits,
            // Observers (passive watches: momtui, `subscribe --passive`) are not watchers.
            watchers: self.core.watches.count_active(&t.name),
            queues,
            in_rate: rate.in_rate(),
            out_rate: rate.out_rate(),
            damaged: self.core.topics.damaged(t.id),
            owner: t.owner.to_string(),
            partitions: 0,
            replicas: self.replicas_of(t),
        }
    }

    /// The copies kept of each message of `t`: in a cluster, one per voter of the data
    /// group (at least what `topic create --replicas` asked); 0 on a single node.
    fn replicas_of(&self, t: &TopicState) -> u32 {
        match &self.cluster {
            Some(c) => (c.data_voters() as u32).max(u32::from(t.replicas)),
            None => 0,
        }
    }

    fn partitioned_info(&self, t: &TopicState) -> TopicInfo {
        let mut info = TopicInfo {
            name: t.name.to_string(),
            created: t.created,
            limits: *t.limits,
            owner: t.owner.to_string(),
            partitions: u32::from(t.partitions),
            replicas: self.replicas_of(t),
            ..TopicInfo::default()
        };
        for id in self.core.partition_ids(&t.name) {
            let Some(p) = self.core.topics.by_id(id) else {
                continue;
            };
            let one = self.topic_info_with(p, self.queues_bound(id));
            info.messages += one.messages;
            info.bytes += one.bytes;
            info.last_time = info.last_time.max(one.last_time);
            info.watchers = info.watchers.max(one.watchers);
            info.queues = info.queues.max(one.queues);
            info.in_rate += one.in_rate;
            info.out_rate += one.out_rate;
            info.damaged += one.damaged;
        }
        info
    }

    /// `stats`: the summary, and one page of each section as the request asks.
    pub(super) fn stats_request(&self, session: u64, r: StatsReq, now: u64) {
        match self.stats(&r, now) {
            Ok(stats) => self.reply(session, ServerFrame::Stats(stats)),
            Err(e) => self.error(session, r.id, ErrorCode::BadRequest, e),
        }
    }

    /// The summary (totals over the whole broker: fixed size) and the requested page of
    /// topics, queues and clients; a section the request leaves out gets its first page.
    pub(super) fn stats(&self, r: &StatsReq, now: u64) -> Result<Stats, String> {
        let section = |p: &Option<Page>| p.clone().unwrap_or_default();
        let topics = self
            .topic_page(&section(&r.topics))
            .map_err(|e| format!("topics: {e}"))?;
        let queues = self
            .queue_page(&section(&r.queues))
            .map_err(|e| format!("queues: {e}"))?;
        let clients = self
            .client_page(&section(&r.clients))
            .map_err(|e| format!("clients: {e}"))?;
        let (messages, bytes) = self.core.topics.stored();
        Ok(Stats {
            id: r.id,
            server_id: self.server_id.clone(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            time: now,
            fsync: self.cfg.fsync.to_string(),
            totals: Totals {
                topics: self.core.topics.len() as u64,
                messages,
                bytes,
                published: self.core.published_total,
                delivered: self.delivered_total,
                duplicates: self.core.duplicates_total,
                slow_consumer_skipped: self.skipped_total,
                connections: self.sessions.len() as u64,
                watches: self.watches.len() as u64,
                in_rate: self.total_rate.in_rate(),
                out_rate: self.total_rate.out_rate(),
                queues: self.queues.len() as u64,
                damaged: self.core.topics.damaged_total(),
            },
            topics: topics.items,
            topics_next: topics.next,
            clients: clients.items,
            clients_next: clients.next,
            queues: queues.items,
            queues_next: queues.next,
            rss_bytes: rss_bytes(),
            disk_bytes: self.disk_bytes.load(std::sync::atomic::Ordering::Relaxed),
            disk_free_bytes: self.disk.as_ref().map_or(0, |d| d.free()),
            disk_full: self.disk.as_ref().is_some_and(|d| d.full()),
            watch_patterns: self.core.watches.patterns_held() as u64,
        })
    }
}

/// Resident set size of this process, from /proc (0 where unavailable).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

impl Broker {
    /// `cluster_status`: answered by the cluster module on its own task (it may ask the
    /// leader over the peer link), or at once on a single node.
    pub(super) fn cluster_status(&self, session: u64, id: u64) {
        let Some(outbox) = self.sessions.get(&session).map(|s| s.outbox.clone()) else {
            return;
        };
        match &self.cluster {
            Some(c) => {
                let c = c.clone();
                tokio::spawn(async move {
                    let st = c.status(id).await;
                    outbox.reply(ServerFrame::ClusterStatus(st), true);
                });
            }
            None => {
                outbox.reply(
                    ServerFrame::ClusterStatus(mom_proto::ClusterStatus {
                        id,
                        mode: "single".into(),
                        ..Default::default()
                    }),
                    true,
                );
            }
        }
    }
}

impl Broker {
    /// `cluster_join` / `cluster_leave`: a membership change, run by the cluster module on
    /// its own task (it may take seconds: the new node catches up first). Answered with the
    /// cluster's status once done.
    pub(super) fn cluster_change(&self, session: u64, frame: mom_proto::ClientFrame) {
        let Some(outbox) = self.sessions.get(&session).map(|s| s.outbox.clone()) else {
            return;
        };
        let id = frame.id();
        let Some(c) = self.cluster.clone() else {
            outbox.reply(
                ServerFrame::error(
                    Some(id),
                    ErrorCode::BadRequest,
                    "this momd is not in cluster mode (start it with --cluster-id, --node-id, \
                     --peer-listen and --peers)",
                ),
                true,
            );
            return;
        };
        tokio::spawn(async move {
            let r = match frame {
                mom_proto::ClientFrame::ClusterJoin(j) => c.join(j.node_id, j.peer_addr).await,
                mom_proto::ClientFrame::ClusterLeave(l) => c.leave(l.node_id).await,
                _ => return,
            };
            let frame = match r {
                Ok(()) => ServerFrame::ClusterStatus(c.status(id).await),
                Err(e) => ServerFrame::error(Some(id), e.code(), e.to_string()),
            };
            outbox.reply(frame, true);
        });
    }
}
