//! What runs beside each Raft group of this node: elections counted and logged, the data
//! group's log purged behind its snapshots, and a group that stopped on a storage error
//! noticed.

use std::sync::atomic::Ordering;

use mom_raft::log_store::LogDb;
use mom_raft::openraft::ServerState;
use mom_raft::GroupId;

use super::{data, Cluster};
use crate::core::shards::Shard;

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
