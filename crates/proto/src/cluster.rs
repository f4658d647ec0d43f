//! Frames of cluster mode: `cluster_status` and its answer (docs/protocol.md §4.9).

use serde::{Deserialize, Serialize};

/// The answer to `cluster_status`: how this node sees the cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub id: u64,
    /// `single` (not in cluster mode: every other field is empty) or `cluster`.
    pub mode: String,
    #[serde(default)]
    pub cluster_id: String,
    /// The node that answered.
    #[serde(default)]
    pub node_id: u64,
    /// Every member, by id.
    #[serde(default)]
    pub nodes: Vec<ClusterNode>,
    /// Every Raft group, the metadata group (`meta`) first.
    #[serde(default)]
    pub groups: Vec<ClusterGroup>,
}

impl ClusterStatus {
    /// The groups node `node` leads, by name and comma-separated (`meta,data`), or `-`: a
    /// node's `role` is its role in the metadata group, and another node may lead the data
    /// group (`LEADS` in `momctl cluster status` and momtui).
    pub fn leads(&self, node: u64) -> String {
        let names: Vec<&str> = self
            .groups
            .iter()
            .filter(|g| g.leader == Some(node))
            .map(|g| g.name.as_str())
            .collect();
        if names.is_empty() {
            "-".into()
        } else {
            names.join(",")
        }
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterNode {
    pub id: u64,
    /// Where clients reach it (its `--listen`), once it has said so; empty before.
    #[serde(default)]
    pub addr: String,
    /// Where peers reach it (its `--peer-listen`).
    pub peer_addr: String,
    /// Votes in elections (false for a learner).
    pub voter: bool,
    /// `leader`, `follower`, `candidate`, `learner`, or `unknown` (not heard from).
    pub role: String,
    /// Milliseconds since the answering node last exchanged a message with it; absent for
    /// itself and for a node never reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact_ms: Option<u64>,
    /// Its momd version, once it has said so.
    #[serde(default)]
    pub version: String,
}

/// One Raft group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
    pub term: u64,
    /// Index of the last entry in the answering node's log.
    pub last_index: u64,
    /// Index of the last entry it applied.
    pub applied_index: u64,
    /// Per replica, how far its log matches the leader's: known from the leader only.
    pub replicas: Vec<ClusterReplica>,
}

/// One replica of a group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterReplica {
    pub node: u64,
    /// The leader's last index known to be in this replica's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
    /// Entries it is behind the leader; absent when unknown (no leader, or not reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// `cluster_join`: add a node to the cluster (admins).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterJoin {
    pub id: u64,
    pub node_id: u64,
    /// Where peers reach it (its `--peer-listen`).
    pub peer_addr: String,
}

/// `cluster_leave`: remove a node from the cluster (admins).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterLeave {
    pub id: u64,
    pub node_id: u64,
}
