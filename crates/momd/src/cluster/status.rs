//! `cluster_status` and the cluster's metrics: how this node sees the groups, with the
//! leader's view of replication (asked over the peer link when this node does not lead).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mom_proto::{ClusterGroup, ClusterNode, ClusterReplica, ClusterStatus};
use mom_raft::openraft::ServerState;
use mom_raft::{Metrics, NodeId};
use serde::{Deserialize, Serialize};

use super::{Cluster, PeerReq, META};
use mom_raft::GroupId;

/// A node not heard from for this long is shown `unreachable`.
const GONE_AFTER: Duration = Duration::from_secs(3);
/// A leader no majority acknowledged for this long (over the longest election timeout)
/// shows as `isolated`.
const CUT_OFF_AFTER: Duration = Duration::from_secs(2);

/// The leader's view of replication.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct LeaderView {
    last_index: u64,
    /// Per member, the last index known to be in its log.
    matched: BTreeMap<NodeId, Option<u64>>,
    /// Per member, milliseconds since the leader last heard from it.
    contact_ms: BTreeMap<NodeId, u64>,
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "stopped",
    }
}

impl Cluster {
    fn metrics(&self, group: GroupId) -> Metrics {
        self.raft_of(group).metrics().borrow().clone()
    }

    /// This node's view of replication, if it leads `group`.
    pub(super) fn leader_view(&self, group: GroupId) -> Option<LeaderView> {
        let m = self.metrics(group);
        if m.state != ServerState::Leader {
            return None;
        }
        let contacts = self.inner.peers.contacts();
        let mut view = LeaderView {
            last_index: m.last_log_index.unwrap_or(0),
            ..Default::default()
        };
        for (id, _) in m.membership_config.membership().nodes() {
            let matched = match m.replication.as_ref() {
                Some(r) => r.get(id).and_then(|l| l.map(|l| l.index)),
                None => None,
            };
            let matched = if *id == self.node_id() {
                m.last_log_index
            } else {
                matched
            };
            view.matched.insert(*id, matched);
            if let Some(d) = contacts.since(*id) {
                view.contact_ms.insert(*id, d.as_millis() as u64);
            }
        }
        Some(view)
    }

    /// The leader's view: this node's own, or asked of the leader.
    async fn fetch_leader_view(&self, group: GroupId) -> Option<LeaderView> {
        if let Some(v) = self.leader_view(group) {
            return Some(v);
        }
        let (leader, addr) = self.leader(group)?;
        let body = rmp_serde::to_vec(&PeerReq::Status).ok()?;
        let bytes = self
            .inner
            .peers
            .call_app(leader, &addr, group, body.into(), Duration::from_secs(1))
            .await
            .ok()?
            .ok()?;
        rmp_serde::from_slice::<Option<LeaderView>>(&bytes).ok()?
    }

    /// The answer to `cluster_status`.
    pub async fn status(&self, id: u64) -> ClusterStatus {
        let mut view = self.fetch_leader_view(META).await;
        let m = self.metrics(META);
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let infos = self.inner.sm.with_app(|s| s.nodes.clone());
        let contacts = self.inner.peers.contacts();
        let me = self.node_id();
        let mut nodes = Vec::new();
        for (nid, node) in membership.nodes() {
            let voter = voters.contains(nid);
            let contact = if *nid == me {
                None
            } else if Some(*nid) == m.current_leader || view.is_none() {
                contacts.since(*nid).map(|d| d.as_millis() as u64)
            } else {
                view.as_ref()
                    .and_then(|v| v.contact_ms.get(nid).copied())
                    .or_else(|| contacts.since(*nid).map(|d| d.as_millis() as u64))
            };
            let role = if *nid == me {
                // A leader no majority has answered for a while is cut off: a new leader
                // is being (or was) elected on the other side.
                let cut_off = m
                    .millis_since_quorum_ack
                    .is_some_and(|ms| ms >= CUT_OFF_AFTER.as_millis() as u64);
                if m.state == ServerState::Leader && cut_off {
                    "isolated"
                } else {
                    role(m.state)
                }
            } else if Some(*nid) == m.current_leader {
                "leader"
            } else if view.is_none() {
                "unknown"
            } else if contact.is_some_and(|ms| ms < GONE_AFTER.as_millis() as u64) {
                if voter {
                    "follower"
                } else {
                    "learner"
                }
            } else {
                "unreachable"
            };
            let info = infos.get(nid);
            nodes.push(ClusterNode {
                id: *nid,
                addr: info.map(|i| i.addr.clone()).unwrap_or_default(),
                peer_addr: node.addr.clone(),
                voter,
                role: role.into(),
                last_contact_ms: contact,
                version: info.map(|i| i.version.clone()).unwrap_or_default(),
            });
        }
        let mut groups = Vec::new();
        for (group, name) in self.groups() {
            let view = if group == META {
                view.take()
            } else {
                self.fetch_leader_view(group).await
            };
            groups.push(self.group_status(group, &name, view));
        }
        ClusterStatus {
            id,
            mode: "cluster".into(),
            cluster_id: self.cluster_id().to_string(),
            node_id: me,
            nodes,
            groups,
        }
    }

    fn group_status(&self, group: GroupId, name: &str, view: Option<LeaderView>) -> ClusterGroup {
        let m = self.metrics(group);
        let replicas = m
            .membership_config
            .membership()
            .nodes()
            .map(|(nid, _)| {
                let matched = view
                    .as_ref()
                    .and_then(|v| v.matched.get(nid).copied().flatten());
                ClusterReplica {
                    node: *nid,
                    matched,
                    lag: view
                        .as_ref()
                        .zip(matched)
                        .map(|(v, i)| v.last_index.saturating_sub(i)),
                }
            })
            .collect();
        ClusterGroup {
            name: name.into(),
            leader: m.current_leader,
            term: m.current_term,
            last_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            replicas,
        }
    }

    /// The cluster's part of `/metrics` (Prometheus text).
    pub fn metrics_text(&self) -> String {
        let mut t = String::new();
        for (slot, (group, name)) in self.groups().iter().enumerate() {
            self.group_metrics(&mut t, slot, *group, name);
        }
        self.peer_metrics(&mut t);
        t
    }

    fn group_metrics(&self, t: &mut String, slot: usize, group: GroupId, name: &str) {
        let m = self.metrics(group);
        let last = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let g = format!("group=\"{name}\"");
        let g = g.as_str();
        let head = slot == 0;
        let count = |c: &[std::sync::atomic::AtomicU64]| {
            c.get(slot).map_or(0, |c| c.load(Ordering::Relaxed))
        };
        let mut gauge = |name: &str, help: &str, kind: &str, lines: Vec<(String, u64)>| {
            if head {
                let _ = writeln!(t, "# HELP {name} {help}\n# TYPE {name} {kind}");
            }
            for (labels, v) in lines {
                let _ = writeln!(t, "{name}{{{labels}}} {v}");
            }
        };
        gauge(
            "mom_raft_term",
            "Current Raft term of the group.",
            "gauge",
            vec![(g.into(), m.current_term)],
        );
        gauge(
            "mom_raft_leader",
            "Node id of the group's leader as this node knows it (0: none).",
            "gauge",
            vec![(g.into(), m.current_leader.unwrap_or(0))],
        );
        gauge(
            "mom_raft_is_leader",
            "1 when this node leads the group.",
            "gauge",
            vec![(g.into(), u64::from(m.state == ServerState::Leader))],
        );
        gauge(
            "mom_raft_last_log_index",
            "Index of the last entry in this node's log.",
            "gauge",
            vec![(g.into(), last)],
        );
        gauge(
            "mom_raft_applied_index",
            "Index of the last entry this node applied.",
            "gauge",
            vec![(g.into(), applied)],
        );
        gauge(
            "mom_raft_commit_lag",
            "Entries in this node's log not yet applied.",
            "gauge",
            vec![(g.into(), last.saturating_sub(applied))],
        );
        if let Some(view) = self.leader_view(group) {
            let lines = view
                .matched
                .iter()
                .filter(|(id, _)| **id != self.node_id())
                .map(|(id, matched)| {
                    let lag = view.last_index.saturating_sub(matched.unwrap_or(0));
                    (format!("{g},node=\"{id}\""), lag)
                })
                .collect();
            gauge(
                "mom_raft_replica_lag",
                "On the leader: entries each other replica is behind.",
                "gauge",
                lines,
            );
        }
        gauge(
            "mom_raft_elections_total",
            "Elections seen by this node (the term went up).",
            "counter",
            vec![(g.into(), count(&self.inner.elections))],
        );
        gauge(
            "mom_raft_leader_changes_total",
            "Times this node saw the group's leader change.",
            "counter",
            vec![(g.into(), count(&self.inner.leader_changes))],
        );
    }

    fn peer_metrics(&self, t: &mut String) {
        let m = self.metrics(META);
        let contacts = self.inner.peers.contacts();
        let mut lines = String::new();
        for (id, _) in m.membership_config.membership().nodes() {
            if *id == self.node_id() {
                continue;
            }
            if let Some(d) = contacts.since(*id) {
                let _ = writeln!(
                    lines,
                    "mom_raft_peer_last_contact_seconds{{node=\"{id}\"}} {:.3}",
                    d.as_secs_f64()
                );
            }
        }
        let _ = writeln!(
            t,
            "# HELP mom_raft_peer_last_contact_seconds Seconds since this node last heard from \
             each peer.\n# TYPE mom_raft_peer_last_contact_seconds gauge"
        );
        t.push_str(&lines);
    }
}

impl Cluster {
    /// The consumers of each of `queues` on the other members of the data group, asked
    /// side by side; a node that does not answer within a second counts none.
    pub async fn consumers_elsewhere(&self, queues: Vec<String>) -> Vec<u64> {
        let mut sum = vec![0u64; queues.len()];
        let req = PeerReq::ConsumersOf { queues };
        for counts in self.ask_others::<Vec<u64>>(&req).await {
            for (s, n) in sum.iter_mut().zip(counts) {
                *s += n;
            }
        }
        sum
    }
}
