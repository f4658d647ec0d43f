//! Reaching a group's leader: a change proposed here if this node leads the group, or
//! forwarded over the peer link to the node that does (retried while leadership moves),
//! and what this node answers when a peer forwards to it.

use std::time::Duration;

use bytes::Bytes;
use mom_raft::net;
use mom_raft::{GroupId, NodeId};

use super::meta::{self, MetaCmd};
use super::{
    committed, data, encode_named, Answer, Cluster, PeerReq, WriteError, COMMIT_WAIT, FORWARD_TTL,
    JOIN_CATCH_UP, LEADER_RETRY, META,
};

impl Cluster {
    /// The leader of a group and its peer address, as this node knows it.
    pub(super) fn leader(&self, group: GroupId) -> Option<(NodeId, String)> {
        let m = self.raft_of(group).metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Proposes a metadata command: on this node if it leads the group, else forwarded to
    /// the leader. Retries while leadership moves, for up to about 5 s.
    pub async fn write(&self, cmd: MetaCmd) -> Result<(), WriteError> {
        self.on_leader(META, &PeerReq::Write(cmd.encode().0.to_vec()))
            .await
            .map(|_| ())
    }

    /// `write`, answered once this node applied the command too (what a client changed
    /// through this node, this node then shows it).
    pub async fn write_applied(&self, cmd: MetaCmd) -> Result<(), WriteError> {
        let answer = self
            .on_leader(META, &PeerReq::Write(cmd.encode().0.to_vec()))
            .await?;
        let Answer::Committed(index) = answer else {
            return Err(WriteError::Refused(
                "the leader did not say what it committed".into(),
            ));
        };
        self.inner
            .raft
            .wait(Some(COMMIT_WAIT))
            .applied_index_at_least(Some(index), "a metadata change applied here")
            .await
            .map(drop)
            .map_err(|_| {
                WriteError::Indeterminate(format!(
                    "done by the cluster, but not yet applied on this node after \
                     {COMMIT_WAIT:?} (is it cut off from the others?): it is once the node \
                     catches up"
                ))
            })
    }

    /// Runs `req` on the metadata group's leader: here, or over the peer link. Retries
    /// while leadership moves, for up to about 5 s (`LEADER_RETRY`, and the try under way).
    pub(super) async fn on_leader(
        &self,
        group: GroupId,
        req: &PeerReq,
    ) -> Result<Answer, WriteError> {
        // Encoded once, and only if it goes to another node.
        let mut body: Option<Bytes> = None;
        // A join waits on the leader for the new node to catch up.
        let ttl = match req {
            PeerReq::Join { .. } => {
                JOIN_CATCH_UP + super::membership::JOIN_START_WAIT + 2 * FORWARD_TTL
            }
            _ => FORWARD_TTL,
        };
        let mut why = String::from("no leader elected yet");
        // Bounded in time, not only in tries: a leader that takes requests and never answers
        // (a one-way partition) costs FORWARD_TTL per try.
        let deadline = tokio::time::Instant::now() + LEADER_RETRY;
        // A request sent and never answered may still be done (it can arrive late, when a
        // partition heals): unless a later try settles it, the answer must say so.
        let mut unanswered = None;
        for attempt in 0..25u32 {
            if attempt > 0 {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let Some((leader, addr)) = self.leader(group) else {
                continue;
            };
            let r = if leader == self.node_id() {
                self.lead(group, req).await
            } else {
                let bytes = match &body {
                    Some(b) => b.clone(),
                    None => {
                        let b = Bytes::from(
                            encode_named(req).map_err(|e| WriteError::Refused(e.to_string()))?,
                        );
                        body = Some(b.clone());
                        b
                    }
                };
                match self
                    .inner
                    .peers
                    .call_app(leader, &addr, group, bytes, ttl)
                    .await
                {
                    Ok(Ok(bytes)) => rmp_serde::from_slice::<Result<Answer, WriteError>>(&bytes)
                        .unwrap_or_else(|e| Err(WriteError::Refused(format!("bad answer: {e}")))),
                    Ok(Err(e)) => Err(WriteError::NotLeader(e)),
                    // Not sent: safe to try the leader again.
                    Err(e @ (net::CallError::NotSent(_) | net::CallError::Refused(_))) => {
                        Err(WriteError::NotLeader(format!("node {leader}: {e}")))
                    }
                    // Sent and unanswered: a publish may have been done; the others are
                    // safe to repeat.
                    Err(e) if matches!(req, PeerReq::Publish { .. }) => Err(
                        WriteError::Indeterminate(format!("node {leader} did not answer ({e})")),
                    ),
                    Err(e) => {
                        unanswered = Some(format!("node {leader} did not answer ({e})"));
                        Err(WriteError::NotLeader(format!("node {leader}: {e}")))
                    }
                }
            };
            match r {
                Err(WriteError::NotLeader(e)) => why = e,
                other => return other,
            }
        }
        Err(match unanswered {
            Some(u) => WriteError::Indeterminate(format!(
                "{u}: it may or may not be done; run it again to be sure"
            )),
            None => WriteError::NoLeader(group, why),
        })
    }

    /// Does `req` as the leader of `group` (`NotLeader` if this node does not lead it).
    pub(super) async fn lead(&self, group: GroupId, req: &PeerReq) -> Result<Answer, WriteError> {
        let raft = self.raft_of(group);
        let not_leader = |e: &dyn std::fmt::Display| WriteError::NotLeader(e.to_string());
        match req {
            PeerReq::Write(cmd) if group == META => {
                match committed(raft.client_write(mom_raft::Cmd(cmd.clone().into()))).await? {
                    Ok(r) => meta::decode_reply(&r.data).map(|_| Answer::Committed(r.log_id.index)),
                    Err(e) if e.forward_to_leader().is_some() => Err(not_leader(&e)),
                    Err(e) => Err(WriteError::Refused(e.to_string())),
                }
            }
            PeerReq::Publish {
                origin,
                after,
                items,
            } if data::shard_of(group, self.shards()).is_some() => {
                let shard = data::shard_of(group, self.shards()).unwrap_or(0);
                self.lead_publish(shard, *origin, *after, items)
                    .await
                    .map(Answer::Published)
            }
            PeerReq::Write(_) | PeerReq::Publish { .. } => Err(WriteError::Refused(format!(
                "group {group} takes no such request"
            ))),
            PeerReq::Status
            | PeerReq::Consumers { .. }
            | PeerReq::ConsumersOf { .. }
            | PeerReq::Watchers { .. }
            | PeerReq::Interest { .. } => Ok(Answer::Done),
            PeerReq::Join { node, addr } => self.lead_join(group, *node, addr).await,
            PeerReq::Leave { node } => self.lead_leave(group, *node).await,
        }
    }

    /// Answers a peer's application request.
    pub(super) async fn serve_peer(&self, group: GroupId, body: Bytes) -> Result<Bytes, String> {
        if !self.groups().iter().any(|(g, _)| *g == group) {
            return Err(format!("no group {group} here"));
        }
        let req: PeerReq = rmp_serde::from_slice(&body).map_err(|e| e.to_string())?;
        let answer = match req {
            PeerReq::Status => rmp_serde::to_vec(&self.leader_view(group)),
            PeerReq::Consumers { queue } => {
                let n = self.local_consumers(vec![queue]).await;
                rmp_serde::to_vec(&n.first().copied().unwrap_or(0))
            }
            PeerReq::ConsumersOf { queues } => {
                rmp_serde::to_vec(&self.local_consumers(queues).await)
            }
            PeerReq::Watchers { topic } => rmp_serde::to_vec(&self.local_watchers(topic).await),
            PeerReq::Interest { node, interest } => {
                self.heard_interest(node, interest);
                rmp_serde::to_vec(&())
            }
            req => rmp_serde::to_vec(&self.lead(group, &req).await),
        };
        answer.map(Bytes::from).map_err(|e| e.to_string())
    }
}
