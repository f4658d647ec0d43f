//! What is stored of a queue, and a queue rebuilt from it: a single node's record, and a
//! cluster node's exact one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

/// What is stored of a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub def: QueueDef,
    #[serde(with = "crate::core::record_codec::cursors")]
    pub cursors: BTreeMap<u32, u64>,
    /// Delivered and not acked, or waiting for redelivery: (topic, seq, deliveries).
    #[serde(with = "crate::core::record_codec::outstanding")]
    pub outstanding: Vec<(u32, u64, u32)>,
    pub counters: QueueCounters,
    /// The newest seq of `$dlq.<queue>` a redrive took back (see [`Queue::dlq_redriven`]).
    /// Last, with a default, so records written before it existed still load.
    #[serde(default)]
    pub dlq_redriven: u64,
    /// A cluster node's queue state exactly as it is (see [`Exact`]); none on a single
    /// node.
    #[serde(default)]
    pub exact: Option<Exact>,
    /// The shard whose part of the queue this is (cluster mode: each shard's part is
    /// stored apart, `core/shards.rs`); 0 on a single node.
    #[serde(default)]
    pub shard: Shard,
}

/// What a replica stores besides: whom each delivery is out with and until when, when each
/// redelivery is due, and where the round robin stands. A single node gives everything
/// outstanding back at a restart; a cluster node must not, since the other nodes still
/// hold those deliveries and every node's queue must stay the same.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Exact {
    /// (topic, seq, consumer, deadline, deliveries).
    pub leases: Vec<(u32, u64, ConsumerId, u64, u32)>,
    /// (topic, seq, due, deliveries).
    pub retries: Vec<(u32, u64, u64, u32)>,
    pub rr: u32,
}

impl Queue {
    /// Rebuild from its record: what was outstanding is delivered again (DESIGN.md: an
    /// unacked message is always redelivered after a restart).
    pub fn from_record(r: QueueRecord, now: u64) -> Self {
        let mut q = Queue::new(r.def.clone());
        if r.exact.is_some() {
            q.add_shard_record(r.shard, r);
            return q;
        }
        q.cursors = r.cursors;
        q.backlog = q.cursors.keys().copied().collect();
        q.counters.insert(0, r.counters);
        q.dlq_redriven.insert(0, r.dlq_redriven);
        for (t, s, d) in r.outstanding {
            if let Some(dl) = q.requeue((t, s), d, now, "ack_timeout") {
                q.dead.push(dl);
            }
        }
        q
    }

    /// Add shard `shard`'s part, from its store's exact record (a cluster node keeps each
    /// shard's part of a queue in that shard's store).
    pub fn add_shard_record(&mut self, shard: Shard, r: QueueRecord) {
        *self.def_in_mut(shard) = r.def;
        for (t, c) in r.cursors {
            self.cursors.insert(t, c);
            self.backlog.insert(t);
        }
        self.counters.insert(shard, r.counters);
        self.dlq_redriven.insert(shard, r.dlq_redriven);
        let Some(x) = r.exact else {
            return;
        };
        for (t, s, consumer, deadline, deliveries) in x.leases {
            let lease = Lease {
                consumer,
                deadline,
                deliveries,
            };
            self.unacked.insert((t, s), lease);
        }
        for (t, s, due, deliveries) in x.retries {
            self.retry.insert((t, s), Retry { due, deliveries });
        }
        self.rr.insert(shard, x.rr);
    }

    pub fn record(&self) -> QueueRecord {
        let mut counters = self.counters();
        // A detached delivery still out at a restart comes back uncounted, as it would at
        // its deadline (`expire`).
        let mut outstanding: Vec<(u32, u64, u32)> = self
            .unacked
            .iter()
            .map(|(r, l)| {
                if l.consumer != DETACHED {
                    return (r.0, r.1, l.deliveries);
                }
                counters.delivered = counters.delivered.saturating_sub(1);
                if l.deliveries > 1 {
                    counters.redelivered = counters.redelivered.saturating_sub(1);
                }
                (r.0, r.1, l.deliveries.saturating_sub(1))
            })
            .chain(self.retry.iter().map(|(r, x)| (r.0, r.1, x.deliveries)))
            .collect();
        outstanding.sort_unstable();
        QueueRecord {
            def: self.def.clone(),
            cursors: self.cursors.clone(),
            outstanding,
            counters,
            dlq_redriven: self.dlq_redriven(),
            exact: None,
            shard: 0,
        }
    }

    /// The record a cluster node stores of shard `shard`'s part: everything, exactly
    /// ([`Exact`]).
    pub fn exact_record(&self, shard: Shard) -> QueueRecord {
        let mine = |t: &u32| self.shards.of(*t) == shard;
        QueueRecord {
            def: self.def_in(shard).clone(),
            cursors: (self.cursors.iter())
                .filter(|(t, _)| mine(t))
                .map(|(t, c)| (*t, *c))
                .collect(),
            outstanding: {
                let leases = self.unacked.iter().map(|(m, l)| (*m, l.deliveries));
                let retries = self.retry.iter().map(|(m, x)| (*m, x.deliveries));
                let mut all: Vec<(u32, u64, u32)> = (leases.chain(retries))
                    .filter(|(m, _)| mine(&m.0))
                    .map(|(m, d)| (m.0, m.1, d))
                    .collect();
                all.sort_unstable();
                all
            },
            counters: self.counters.get(&shard).copied().unwrap_or_default(),
            dlq_redriven: self.dlq_redriven.get(&shard).copied().unwrap_or(0),
            exact: Some(Exact {
                leases: (self.unacked.iter())
                    .filter(|(m, _)| mine(&m.0))
                    .map(|(m, l)| (m.0, m.1, l.consumer, l.deadline, l.deliveries))
                    .collect(),
                retries: (self.retry.iter())
                    .filter(|(m, _)| mine(&m.0))
                    .map(|(m, x)| (m.0, m.1, x.due, x.deliveries))
                    .collect(),
                rr: self.rr.get(&shard).copied().unwrap_or(0),
            }),
            shard,
        }
    }
}
