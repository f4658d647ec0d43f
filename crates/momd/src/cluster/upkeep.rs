//! What runs beside each Raft group of this node: elections counted and logged, the data
//! group's log purged behind its snapshots, and a group that stopped on a storage error
//! noticed.

use std::sync::atomic::Ordering;

use mom_raft::log_store::LogDb;
use mom_raft::openraft::ServerState;
use mom_raft::GroupId;

use super::{data, Cluster};
use crate::core::shards::Shard;

/// A data group's snapshot builds are apart by at least this many times what the last one's
/// cut held up the broker task (`Cluster::pace_snapshots`).
const PACE: u32 = 20;
/// And by at least this, however quick the cut (a build asked for is not asked again while
/// it runs).
const MIN_BETWEEN: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether a data group with `behind` entries applied since its snapshot builds another,
/// `since` after the last was asked for (None: never), whose cut took `last_cut`.
fn snapshot_due(
    behind: u64,
    every: u64,
    since: Option<std::time::Duration>,
    last_cut: std::time::Duration,
) -> bool {
    behind >= every && since.is_none_or(|s| s >= (last_cut * PACE).max(MIN_BETWEEN))
}

impl Cluster {
    /// Waits until a group's Raft stops on an error of its own (its log could not be
    /// written: a full or failing disk) and says why. openraft does not go on after a
    /// storage error, so such a node can no longer take part in that group; it stops, and
    /// a restart (systemd's `Restart=on-failure`) brings it back into the cluster, which
    /// catches it up, once its disk takes writes again. Pending forever on a node that
    /// stops for another reason.
    pub async fn failed(&self) -> String {
        let watch = |group: GroupId, name: String| {
            let mut rx = self.raft_of(group).metrics();
            let stop = self.inner.stop.clone();
            Box::pin(async move {
                loop {
                    if let Err(e) = &rx.borrow().running_state {
                        return format!("the {name} group stopped: {e}");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => std::future::pending::<()>().await,
                        r = rx.changed() => if r.is_err() {
                            // Gone without saying why: only a shutdown does that.
                            std::future::pending::<()>().await
                        },
                    }
                }
            })
        };
        let all = self.groups().into_iter().map(|(g, name)| watch(g, name));
        futures_util::future::select_all(all).await.0
    }

    /// Has data group `shard` build a snapshot once `every` entries were applied since the
    /// last one, but not sooner after the last build than `PACE` times what its cut held
    /// up the broker task. A cut lists the store's index on the broker task (seconds with
    /// millions of messages, each with its dedupe entry): on a large store, snapshots then
    /// come less often instead of taking a growing share of the broker's time (at most
    /// 1/`PACE`); the log is longer between them meanwhile.
    pub(super) async fn pace_snapshots(
        self,
        shard: Shard,
        snapshots: std::sync::Arc<super::snapshot::Snapshots>,
        every: u64,
    ) {
        let Some(raft) = self.data_raft(shard).cloned() else {
            return;
        };
        let mut rx = raft.metrics();
        let mut asked: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                r = tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed()) => {
                    if matches!(r, Ok(Err(_))) {
                        return;
                    }
                }
            }
            let (applied, snapshot) = {
                let m = rx.borrow();
                (
                    m.last_applied.map_or(0, |l| l.index),
                    m.snapshot.map_or(0, |l| l.index),
                )
            };
            let since = asked.map(|at| at.elapsed());
            if !snapshot_due(
                applied - snapshot.min(applied),
                every,
                since,
                snapshots.last_cut(),
            ) {
                continue;
            }
            asked = Some(tokio::time::Instant::now());
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
    }

    /// Purges the data group's log behind each new snapshot, keeping the last
    /// `DATA_LOG_KEEP` entries (`MOMD_DATA_LOG_KEEP`), or fewer if they take more than
    /// `DATA_LOG_KEEP_BYTES`. openraft deletes them once no replication reads them.
    pub(super) async fn purge_data_log(self, log: LogDb, shard: Shard, keep: u64, keep_bytes: u64) {
        let Some(raft) = self.data_raft(shard).cloned() else {
            return;
        };
        let mut rx = raft.metrics();
        let mut seen = None;
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
            let (snapshot, purged) = {
                let m = rx.borrow();
                (m.snapshot, m.purged)
            };
            let Some(snapshot) = snapshot.map(|s| s.index) else {
                continue;
            };
            if seen == Some(snapshot) {
                continue;
            }
            seen = Some(snapshot);
            let by_entries = snapshot.saturating_sub(keep);
            let by_bytes = log
                .first_within(data::group_of(shard), snapshot, keep_bytes)
                .map_or(0, |first| first.saturating_sub(1));
            let upto = by_entries.max(by_bytes);
            if upto > 0 && purged.is_none_or(|p| p.index < upto) {
                if let Err(e) = raft.trigger().purge_log(upto).await {
                    tracing::debug!("purging the data group's log: {e}");
                    return;
                }
            }
        }
    }

    /// Counts elections and leader changes, and logs them.
    pub(super) async fn watch_elections(self, slot: usize, group: GroupId) {
        let name = self
            .groups()
            .get(slot)
            .map_or_else(|| format!("group {group}"), |(_, n)| n.clone());
        let mut rx = self.raft_of(group).metrics();
        let (mut term, mut leader) = {
            let m = rx.borrow();
            (m.current_term, m.current_leader)
        };
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
            let (t, l, state) = {
                let m = rx.borrow();
                (m.current_term, m.current_leader, m.state)
            };
            if t > term {
                if let Some(e) = self.inner.elections.get(slot) {
                    e.fetch_add(t - term, Ordering::Relaxed);
                }
                term = t;
            }
            if l != leader {
                if let Some(c) = self.inner.leader_changes.get(slot) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                leader = l;
                match l {
                    Some(id) if state == ServerState::Leader => {
                        tracing::info!(term = t, "this node ({id}) leads the {name} group")
                    }
                    Some(id) => tracing::info!(term = t, "node {id} leads the {name} group"),
                    None => tracing::info!(term = t, "the {name} group has no leader"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn snapshots_come_every_so_many_entries_but_never_take_more_than_a_twentieth_of_the_broker() {
        let ms = Duration::from_millis;
        // Not enough entries: never.
        assert!(!snapshot_due(4999, 5000, None, ms(0)));
        assert!(snapshot_due(5000, 5000, None, ms(0)));
        // A cut of 2 s: the next waits 40 s, whatever the entries.
        assert!(!snapshot_due(50_000, 5000, Some(ms(39_000)), ms(2000)));
        assert!(snapshot_due(50_000, 5000, Some(ms(40_000)), ms(2000)));
        // A quick cut: the floor between two asks.
        assert!(!snapshot_due(5000, 5000, Some(ms(100)), ms(1)));
        assert!(snapshot_due(5000, 5000, Some(ms(200)), ms(1)));
    }
}
