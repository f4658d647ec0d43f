//! Watch groups across the nodes of a cluster. A group (`subscribe --group`, the repliers
//! of `momctl reply`) gets each message once, whichever nodes its members are on: each node
//! would otherwise give every message to one member of its own.
//!
//! The nodes share a group's messages by a table in the data group's log: how many members
//! each node has in each group (`GroupMembers`, proposed by a node when its count changes).
//! Which node's members get a message is a function of the table and the message's topic
//! and seq ([`GroupTable::owner`]); every node applies the same entries in the same order,
//! so they agree, and only the owner's members are given the message (one of them, in turn,
//! as on a single node). A publish is delivered with the table as it stood at its place in
//! the log.
//!
//! - A group no node has told of yet (its first members, for the moment their count takes
//!   to be committed) is delivered by each node to its own members, as before.
//! - A node that restarts (`NodeStarted`) or that the data group's leader has not heard from
//!   for `GONE_AFTER` (`GroupsGone`) is taken out of the table; a node that finds itself taken
//!   out while it still has members tells them again.
//! - The table is stored with the store's metadata, so a restart and a snapshot keep it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mom_raft::NodeId;
use serde::{Deserialize, Serialize};

use super::Broker;
use crate::cluster::data::QueueOp;
use crate::core::shards::Shard;

/// The store's metadata key of the table.
const TABLE_KEY: &str = "watch_groups";

/// The store's metadata key of shard `shard`'s table of watch groups.
pub(super) fn table_key(shard: crate::core::shards::Shard) -> String {
    match shard {
        0 => TABLE_KEY.to_string(),
        s => format!("{TABLE_KEY}.{s}"),
    }
}

/// How long the data group's leader waits on a silent node before its members are out.
const GONE_AFTER: Duration = Duration::from_secs(5);

/// How long a node waits for its own count to show in the table before telling it again
/// (the proposal failed, or was taken out with the node).
const RETELL_AFTER_MS: u64 = 2000;

pub use crate::core::GroupKey;

/// Replicated: per group, how many members each node has.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTable {
    groups: BTreeMap<GroupKey, BTreeMap<NodeId, u32>>,
}

/// A well mixed 64-bit function (splitmix64's finalizer): the same on every node.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl GroupTable {
    /// Sets `node`'s member count in `key` (0 takes it out). Whether anything changed.
    pub fn set(&mut self, key: GroupKey, node: NodeId, members: u32) -> bool {
        if members == 0 {
            let Some(nodes) = self.groups.get_mut(&key) else {
                return false;
            };
            let changed = nodes.remove(&node).is_some();
            if nodes.is_empty() {
                self.groups.remove(&key);
            }
            return changed;
        }
        self.groups.entry(key).or_default().insert(node, members) != Some(members)
    }

    /// Takes `node` out of every group. Whether it was in one.
    pub fn forget(&mut self, node: NodeId) -> bool {
        let mut changed = false;
        self.groups.retain(|_, nodes| {
            changed |= nodes.remove(&node).is_some();
            !nodes.is_empty()
        });
        changed
    }

    /// `node`'s member count in each group.
    pub fn of_node(&self, node: NodeId) -> BTreeMap<&GroupKey, u32> {
        self.groups
            .iter()
            .filter_map(|(k, nodes)| nodes.get(&node).map(|n| (k, *n)))
            .collect()
    }

    /// Nodes with members in some group.
    pub fn nodes(&self) -> std::collections::BTreeSet<NodeId> {
        self.groups
            .values()
            .flat_map(|n| n.keys().copied())
            .collect()
    }

    /// The node whose members get message `seq` of `topic` in group `key`: each node gets a
    /// share of the messages as large as its share of the members. None when no node told
    /// of the group.
    pub fn owner(&self, key: &GroupKey, topic: &str, seq: u64) -> Option<NodeId> {
        let nodes = self.groups.get(key)?;
        let total: u64 = nodes.values().map(|n| u64::from(*n)).sum();
        if total == 0 {
            return None;
        }
        let mut slot = mix(u64::from(crc32fast::hash(topic.as_bytes())) ^ mix(seq)) % total;
        for (node, n) in nodes {
            let n = u64::from(*n);
            if slot < n {
                return Some(*node);
            }
            slot -= n;
        }
        None
    }
}

impl Broker {
    /// The tables as the store holds them (at start, and after a snapshot is installed).
    pub(super) fn load_watch_groups(&mut self) {
        let shards = self.core.topics.shards();
        self.watch_groups = shards
            .all()
            .map(|s| {
                let table = match self.store.meta(&table_key(s)) {
                    Ok(Some(v)) => rmp_serde::from_slice(&v).unwrap_or_else(|e| {
                        tracing::warn!(
                            "the stored watch groups are unreadable ({e}); starting empty"
                        );
                        GroupTable::default()
                    }),
                    Ok(None) => GroupTable::default(),
                    Err(e) => {
                        tracing::warn!("cannot read the stored watch groups ({e}); starting empty");
                        GroupTable::default()
                    }
                };
                Arc::new(table)
            })
            .collect();
        self.groups_told.clear();
    }

    /// The table a publish to topic `name` is delivered by, as it stands now (None outside
    /// cluster mode): that of the topic's group.
    pub(super) fn group_table(&self, name: &str) -> Option<Arc<GroupTable>> {
        self.cluster.as_ref()?;
        let shard = self.core.topics.shards().place_name(name);
        self.watch_groups.get(usize::from(shard)).cloned()
    }

    /// Applies a change of shard `shard`'s table (at its place in its group's log).
    pub(super) fn apply_group_op(&mut self, shard: Shard, op: QueueOp, origin_node: NodeId) {
        let me = self.cluster.as_ref().map(|c| c.node_id());
        let Some(table) = self.watch_groups.get_mut(usize::from(shard)) else {
            return;
        };
        let table = Arc::make_mut(table);
        let (changed, me_out) = match op {
            QueueOp::GroupMembers {
                name,
                patterns,
                members,
            } => (table.set((name, patterns), origin_node, members), false),
            QueueOp::GroupsGone { node } | QueueOp::NodeStarted { node } => {
                (table.forget(node), Some(node) == me)
            }
            _ => (false, false),
        };
        if me_out {
            // Told again at the next share (`share_groups`), if this node still has members.
            self.groups_told.clear();
        }
        if changed {
            match rmp_serde::to_vec(&*table) {
                Ok(v) => self
                    .store
                    .stage_meta(&mut self.staged, &table_key(shard), v),
                Err(e) => tracing::error!("cannot encode the watch groups: {e}"),
            }
        }
    }

    /// Tells the others how many members this node has in each group, where the table says
    /// otherwise; as the data group's leader, takes silent nodes out of it.
    pub(super) fn share_groups(&mut self, now: u64) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        let me = c.node_id();
        let sizes: BTreeMap<GroupKey, u32> = self.core.watches.group_sizes();
        // Each group's table is told apart: its messages are decided in its own log.
        let mut tell = Vec::new();
        for (s, table) in self.core.topics.shards().all().zip(&self.watch_groups) {
            let have = table.of_node(me);
            let mut want = sizes.clone();
            for k in have.keys() {
                want.entry((*k).clone()).or_insert(0);
            }
            for (key, n) in want {
                let told = (s, key);
                if have.get(&told.1).copied().unwrap_or(0) == n {
                    self.groups_told.remove(&told);
                    continue;
                }
                let recent = self
                    .groups_told
                    .get(&told)
                    .is_some_and(|(t, at)| *t == n && now.saturating_sub(*at) < RETELL_AFTER_MS);
                if !recent {
                    tell.push((told, n));
                }
            }
        }
        for (told, n) in tell {
            self.groups_told.insert(told.clone(), (n, now));
            let (s, key) = told;
            let op = QueueOp::GroupMembers {
                name: key.0,
                patterns: key.1,
                members: n,
            };
            self.propose_queue_in(Some(s), op, None);
        }
        if now.saturating_sub(self.groups_pruned_at) >= 1000 {
            let contacts = c.contacts();
            let mut gone = Vec::new();
            for (s, table) in self.core.topics.shards().all().zip(&self.watch_groups) {
                if !c.leads_data(s) {
                    continue;
                }
                for node in table.nodes() {
                    let silent = contacts.since(node).is_some_and(|d| d >= GONE_AFTER);
                    if node != me && silent {
                        gone.push((s, node));
                    }
                }
            }
            for (s, node) in gone {
                self.groups_pruned_at = now;
                self.propose_queue_in(Some(s), QueueOp::GroupsGone { node }, None);
            }
        }
    }

    /// Whether this node gives message `seq` of `topic` to its members of group `key`, by
    /// the table `groups` of the publish (None outside cluster mode).
    pub(super) fn group_message_here(
        &self,
        groups: Option<&GroupTable>,
        key: &GroupKey,
        topic: &str,
        seq: u64,
    ) -> bool {
        let (Some(t), Some(c)) = (groups, self.cluster.as_ref()) else {
            return true;
        };
        match t.owner(key, topic, seq) {
            Some(node) => node == c.node_id(),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> GroupKey {
        (n.to_string(), vec!["svc.>".to_string()])
    }

    #[test]
    fn each_message_has_one_owner_in_proportion_to_the_members() {
        let mut t = GroupTable::default();
        assert_eq!(t.owner(&key("g"), "svc.a", 1), None);
        assert!(t.set(key("g"), 1, 1));
        assert!(t.set(key("g"), 3, 3));
        assert!(!t.set(key("g"), 3, 3), "the same count changes nothing");
        let mut got: BTreeMap<NodeId, u32> = BTreeMap::new();
        for seq in 1..=4000 {
            let o = t.owner(&key("g"), "svc.a", seq).unwrap();
            *got.entry(o).or_default() += 1;
        }
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        // 1 in 4 to node 1, give or take.
        assert!((800..1200).contains(&got[&1]), "{got:?}");
        // Another group is its own.
        assert_eq!(t.owner(&key("h"), "svc.a", 1), None);
        assert!(t.forget(3));
        assert!((1..=100).all(|s| t.owner(&key("g"), "svc.a", s) == Some(1)));
        assert!(t.set(key("g"), 1, 0));
        assert_eq!(t.owner(&key("g"), "svc.a", 1), None);
        assert!(t.nodes().is_empty());
    }

    #[test]
    fn the_table_survives_its_encoding() {
        let mut t = GroupTable::default();
        t.set(key("g"), 2, 5);
        t.set(key("h"), 1, 1);
        let v = rmp_serde::to_vec(&t).unwrap();
        let back: GroupTable = rmp_serde::from_slice(&v).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.of_node(2).len(), 1);
    }
}
