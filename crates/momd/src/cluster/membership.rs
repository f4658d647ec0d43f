//! Joining and leaving: a node added as a learner, caught up, then made a voter, in both
//! groups; a node removed; and membership changes that wait for one under way.

use std::time::Duration;

use mom_raft::net;
use mom_raft::openraft::{self, BasicNode};
use mom_raft::{GroupId, NodeId, Raft};

use super::{
    committed, data, Answer, Cluster, PeerReq, WriteError, COMMIT_WAIT, JOIN_CATCH_UP, META,
};

/// How long a node to add is asked again while it does not answer (started a moment ago).
/// A forwarded join waits this long more for its answer (`forward.rs`).
pub(super) const JOIN_START_WAIT: Duration = Duration::from_secs(5);

/// How long a join waits, once the node is a member, for it to say where its clients reach
/// it (`cluster::announce`), so the status it answers with shows the new node whole.
const JOIN_ANNOUNCE_WAIT: Duration = Duration::from_secs(3);

/// Proposes the membership change `change` picks from the current membership (`None`: it is
/// already as asked). While another change is under way (one that arrived late, after its
/// sender gave up on it) it waits for that one and looks again, for up to `COMMIT_WAIT`.
async fn change_members(
    raft: &Raft,
    change: impl Fn(
        &openraft::Membership<NodeId, BasicNode>,
    ) -> Result<Option<openraft::ChangeMembers<NodeId, BasicNode>>, WriteError>,
) -> Result<(), WriteError> {
    let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
    loop {
        let membership = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let Some(c) = change(&membership)? else {
            return Ok(());
        };
        match committed(raft.change_membership(c, false)).await? {
            Ok(_) => return Ok(()),
            Err(e) if e.forward_to_leader().is_some() => {
                return Err(WriteError::NotLeader(e.to_string()))
            }
            Err(e)
                if matches!(
                    e.api_error(),
                    Some(openraft::error::ClientWriteError::ChangeMembershipError(
                        openraft::error::ChangeMembershipError::InProgress(_)
                    ))
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(WriteError::Refused(e.to_string())),
        }
    }
}

impl Cluster {
    /// Adds node `node`, whose peer listener is `addr`: as a learner, caught up, then as a
    /// voter.
    pub async fn join(&self, node: NodeId, addr: String) -> Result<(), WriteError> {
        let join = || PeerReq::Join {
            node,
            addr: addr.clone(),
        };
        self.on_leader(META, &join()).await?;
        for s in self.shards().all() {
            self.on_leader(data::group_of(s), &join()).await?;
        }
        let give_up = tokio::time::Instant::now() + JOIN_ANNOUNCE_WAIT;
        while !self.inner.sm.with_app(|m| m.nodes.contains_key(&node))
            && tokio::time::Instant::now() < give_up
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Removes node `node` from the cluster (it should be stopped afterwards).
    pub async fn leave(&self, node: NodeId) -> Result<(), WriteError> {
        for s in self.shards().all() {
            match self
                .on_leader(data::group_of(s), &PeerReq::Leave { node })
                .await
            {
                Ok(_) | Err(WriteError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.on_leader(META, &PeerReq::Leave { node })
            .await
            .map(|_| ())
    }

    /// As `group`'s leader: add node `node` (peer listener `addr`).
    pub(super) async fn lead_join(
        &self,
        group: GroupId,
        node: NodeId,
        addr: &str,
    ) -> Result<Answer, WriteError> {
        let raft = self.raft_of(group);
        let not_leader = |e: &dyn std::fmt::Display| WriteError::NotLeader(e.to_string());
        let node = &node;
        let addr = &addr.to_string();
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if let Some(n) = membership.get_node(node) {
            if membership.voter_ids().any(|v| v == *node) {
                return if n.addr == *addr {
                    Ok(Answer::Done)
                } else {
                    Err(WriteError::Refused(format!(
                        "node {node} is already a member, at {}",
                        n.addr
                    )))
                };
            }
        }
        // Who answers at `addr` must be node `node` of this cluster (the handshake
        // checks its cluster id, node id and data dir). A node started a moment ago may not
        // listen yet: one that does not answer is asked again for `JOIN_START_WAIT`.
        let probe = bytes::Bytes::from(rmp_serde::to_vec(&PeerReq::Status).unwrap_or_default());
        let give_up = tokio::time::Instant::now() + JOIN_START_WAIT;
        loop {
            // Each try within what is left of the wait (a try takes at least half a second).
            let left = give_up
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(500));
            let e = match self
                .inner
                .peers
                .call_app(*node, addr, group, probe.clone(), left)
                .await
            {
                Ok(_) => break,
                Err(e) => e,
            };
            match e {
                net::CallError::Refused(why) => {
                    return Err(WriteError::Refused(format!(
                        "{addr} did not answer as node {node} of cluster {:?}: {why}",
                        self.cluster_id()
                    )))
                }
                _ if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                other => {
                    return Err(WriteError::Unreachable(format!(
                        "node {node} does not answer at {addr} ({other}): start it first \
                         (momd --cluster-id {} --node-id {node} --peer-listen {addr} \
                         --peers <the members>)",
                        self.cluster_id()
                    )))
                }
            }
        }
        let added = tokio::time::timeout(
            JOIN_CATCH_UP,
            raft.add_learner(*node, BasicNode { addr: addr.clone() }, true),
        )
        .await
        .map_err(|_| {
            WriteError::Unreachable(format!(
                "node {node} was added as a learner but did not catch up within \
                 {JOIN_CATCH_UP:?}; it keeps catching up: run the join again to make \
                 it a voter"
            ))
        })?;
        match added {
            Ok(_) => {}
            Err(e) if e.forward_to_leader().is_some() => return Err(not_leader(&e)),
            Err(e) => return Err(WriteError::Refused(e.to_string())),
        }
        change_members(raft, |membership| {
            Ok((!membership.voter_ids().any(|v| v == *node))
                .then(|| openraft::ChangeMembers::AddVoterIds([*node].into())))
        })
        .await?;
        tracing::info!("node {node} ({addr}) joined group {group}");
        Ok(Answer::Done)
    }

    /// As `group`'s leader: remove node `node`.
    pub(super) async fn lead_leave(
        &self,
        group: GroupId,
        node: NodeId,
    ) -> Result<Answer, WriteError> {
        let raft = self.raft_of(group);
        let node = &node;
        let m = raft.metrics().borrow().clone();
        if m.membership_config.membership().get_node(node).is_none() {
            return Err(WriteError::NotFound(format!(
                "node {node} is not a member of cluster {:?}",
                self.cluster_id()
            )));
        }
        change_members(raft, |membership| {
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            if voters.contains(node) {
                if voters.len() == 1 {
                    return Err(WriteError::Refused(format!(
                        "node {node} is the last voter: a cluster cannot lose it"
                    )));
                }
                Ok(Some(openraft::ChangeMembers::RemoveVoters([*node].into())))
            } else if membership.get_node(node).is_some() {
                Ok(Some(openraft::ChangeMembers::RemoveNodes([*node].into())))
            } else {
                // Removed meanwhile, by an earlier request that arrived late.
                Ok(None)
            }
        })
        .await?;
        tracing::info!("node {node} left group {group}");
        Ok(Answer::Done)
    }
}
