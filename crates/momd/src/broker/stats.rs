//! What the broker reports about itself: topic info and the `stats` reply.

use mom_proto::{ClientInfo, Limits, Stats, TopicInfo, Totals};

use super::Broker;
use crate::core::TopicState;

impl Broker {
    pub(super) fn topic_info(&self, t: &TopicState) -> TopicInfo {
        let rate = self.rates.get(&t.id).copied().unwrap_or_default();
        TopicInfo {
            name: t.name.clone(),
            messages: t.msgs,
            bytes: t.bytes,
            first_seq: t.first_seq,
            last_seq: t.last_seq,
            last_time: t.last_time,
            created: t.created,
            limits: Limits { ..t.limits },
            // Observers (passive watches: momtui, `subscribe --passive`) are not watchers.
            watchers: self.core.watches.count_active(&t.name),
            queues: self.queues_bound(t.id),
            in_rate: rate.in_rate,
            out_rate: rate.out_rate,
        }
    }

    pub(super) fn stats(&self, id: u64, now: u64) -> Stats {
        let topics: Vec<TopicInfo> = self
            .core
            .topics
            .iter()
            .map(|t| self.topic_info(t))
            .collect();
        let clients: Vec<ClientInfo> = self
            .sessions
            .iter()
            .map(|(session, s)| {
                let mut c = s.client.clone();
                let mut consumers: Vec<(u64, String)> = self
                    .consumers
                    .iter()
                    .filter(|(_, k)| k.session == *session)
                    .map(|(id, k)| (*id, k.queue.clone()))
                    .collect();
                consumers.sort_unstable();
                c.consumers = consumers.into_iter().map(|(_, q)| q).collect();
                c.consumers.extend(
                    self.fetches
                        .iter()
                        .filter(|f| f.session == *session)
                        .map(|f| format!("{} (pull)", f.queue)),
                );
                c.msgs_in = s
                    .outbox
                    .counters
                    .msgs_in
                    .load(std::sync::atomic::Ordering::Relaxed);
                c.msgs_out = s
                    .outbox
                    .counters
                    .msgs_out
                    .load(std::sync::atomic::Ordering::Relaxed);
                c.watches = s.watches.len() as u64;
                c.watch_patterns = s
                    .watches
                    .iter()
                    .filter_map(|w| self.core.watches.get(*w))
                    .map(|ps| ps.join(" "))
                    .collect();
                c
            })
            .collect::<Vec<_>>();
        let mut clients = clients;
        clients.sort_by_key(|c| c.client_id);
        Stats {
            id,
            server_id: self.server_id.clone(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            time: now,
            fsync: self.cfg.fsync.to_string(),
            totals: Totals {
                topics: topics.len() as u64,
                messages: topics.iter().map(|t| t.messages).sum(),
                bytes: topics.iter().map(|t| t.bytes).sum(),
                published: self.core.published_total,
                delivered: self.delivered_total,
                duplicates: self.core.duplicates_total,
                slow_consumer_skipped: self.skipped_total,
                connections: self.sessions.len() as u64,
                watches: self.watches.len() as u64,
                in_rate: self.total_rate.in_rate,
                out_rate: self.total_rate.out_rate,
            },
            topics,
            clients,
            queues: self.queues.values().map(|q| self.queue_info(q)).collect(),
            rss_bytes: rss_bytes(),
            disk_bytes: self.store.disk_bytes(),
        }
    }
}

/// Resident set size of this process, from /proc (0 where unavailable).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
