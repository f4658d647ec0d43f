//! Partitioned topics over several data groups (`core/shards.rs`): a topic's partitions
//! lie in consecutive shards, each in its own group's log, and a group's entries change
//! its own shard alone. So a request naming a partitioned topic is cut up by the node it
//! came to: the parent's group gets the request (it changes the parent and the partitions
//! of its own shard), and each other partition gets the same request by its own name in
//! its own group. The node answers the client once every part is done, as one answer.
//!
//! - `topic create --partitions N`: the parent's group first (it decides: a refusal there
//!   creates nothing anywhere), then the other partitions, created in their groups.
//! - `topic rm`: the other partitions first, the parent last (cut short, what is left is
//!   still whole, and the request can be sent again: a partition already gone is done).
//! - `topic purge`: all at once; the answer counts every partition's purged messages.
//! - `topic set`: all at once.
//!
//! Each part is an ordinary request of its group, applied on every node as a single node
//! would; its answer comes when this node applies it, to a session of the broker's own made
//! for the request (`Broker::reply` writes to it), read here.

use std::collections::HashMap;
use std::time::Duration;

use mom_proto::{ClientFrame, ErrorCode, Req, ServerFrame, TopicCreate, TopicRm, TopicSet};

use super::{Broker, Cmd};
use crate::cluster::data::{DataItem, QueueOp};
use crate::cluster::Cluster;
use crate::core::shards::Shard;
use crate::outbox::{Out, Outbox, OutboxRx};

/// Session numbers of fan-outs: far above any client's.
const FAN_OUT_SESSIONS: u64 = 1 << 62;

/// How long a part may take, from its proposal to this node applying it.
const PART_TIMEOUT: Duration = Duration::from_secs(60);

/// How the parts' answers make the client's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Combine {
    /// The parent's answer.
    Parent,
    /// The parent's answer, with every part's purged messages in `purged`.
    SumPurged,
}

/// A request cut into parts: phases run one after another, the parts of a phase at once.
struct Plan {
    phases: Vec<Vec<(Shard, ClientFrame)>>,
    /// The part whose answer is the parent's (by its id).
    parent: u64,
    combine: Combine,
    /// A part answered `not_found` is done (a partition already removed, or never made).
    not_found_done: bool,
}

impl Broker {
    /// If `frame` names a partitioned topic whose partitions spread over several data
    /// groups, cut it up and send the parts (answered when they are all done); false when
    /// it is an ordinary request of one group.
    pub(super) fn fan_out(&mut self, session: u64, user: &str, frame: &ClientFrame) -> bool {
        let shards = self.core.topics.shards();
        let Some(c) = self.cluster.clone() else {
            return false;
        };
        if shards.count() <= 1 {
            return false;
        }
        let Some(plan) = self.plan(frame) else {
            return false;
        };
        let Some(client) = self.sessions.get(&session).map(|s| s.outbox.clone()) else {
            return true;
        };
        self.fan_outs_made += 1;
        let own = FAN_OUT_SESSIONS | self.fan_outs_made;
        let (outbox, rx) = crate::outbox::outbox(usize::MAX / 2);
        self.fan_outs.insert(own, outbox.clone());
        let tx = self.tx.clone();
        let user = user.to_string();
        let id = frame.id();
        tokio::spawn(async move {
            let answer = run(&c, own, &user, &outbox, rx, plan).await;
            client.reply(with_id(answer, id), true);
            let _ = tx.send(Cmd::FanOutDone { session: own }).await;
        });
        true
    }

    /// With several data groups, what the node a request on `topic` came to refuses
    /// before proposing it: a group's entries see the partitioned topics of their own
    /// shard alone (`Core::partition_parent`), so the names under a partitioned topic of
    /// another shard are checked here, against this node's view of every group. `creates`:
    /// the request would make the topic (a publish, create or set); `partitions`: a
    /// create's.
    pub(super) fn refused_across_groups(
        &self,
        topic: &str,
        creates: bool,
        partitions: Option<u32>,
    ) -> Option<(ErrorCode, String)> {
        if self.core.topics.shards().count() <= 1 {
            return None;
        }
        let (parent, partition) = self.core.partition_parent_anywhere(topic)?;
        let err = match partition {
            None if creates && self.core.topics.get(topic).is_none() => {
                crate::core::CoreError::UnderPartitioned {
                    name: topic.to_string(),
                    parent: parent.name.to_string(),
                    partitions: parent.partitions,
                }
            }
            Some(_) if partitions.is_some_and(|n| n > 1) => {
                crate::core::CoreError::BadPartitions(format!(
                    "{topic:?} is a partition of {:?}: it exists, and is not partitioned again",
                    parent.name
                ))
            }
            Some(_) if partitions.is_none() && !creates => {
                return Some((
                    ErrorCode::BadRequest,
                    format!(
                        "topic {topic:?} is a partition of {:?}: remove {:?} (its partitions \
                         go with it)",
                        parent.name, parent.name
                    ),
                ))
            }
            _ => return None,
        };
        Some(super::core_error(err))
    }

    /// Where the answers to session `session` go when it is a fan-out's.
    pub(super) fn fan_out_outbox(&self, session: u64) -> Option<&Outbox> {
        self.fan_outs.get(&session)
    }

    /// The parts of a request on a partitioned topic (None: not one, or its partitions
    /// are all in its own group).
    fn plan(&self, frame: &ClientFrame) -> Option<Plan> {
        let shards = self.core.topics.shards();
        let topic = match frame {
            ClientFrame::TopicCreate(c) if c.partitions > 1 => &c.topic,
            ClientFrame::TopicRm(r) | ClientFrame::TopicPurge(r) => &r.topic,
            ClientFrame::TopicSet(s) => &s.topic,
            _ => return None,
        };
        let home = shards.place_name(topic);
        let others: Vec<(Shard, String)> = match frame {
            ClientFrame::TopicCreate(c) => {
                let n = u16::try_from(c.partitions).ok()?;
                (0..n.min(crate::core::partitions::MAX_PARTITIONS))
                    .filter(|p| shards.place(topic, Some((topic, u32::from(*p)))) != home)
                    .map(|p| crate::core::partitions::partition_name(topic, p))
                    .map(|name| (shards.place_name(&name), name))
                    .collect()
            }
            _ => self
                .core
                .partitions_elsewhere(topic)
                .into_iter()
                .map(|name| (shards.place_name(&name), name))
                .collect(),
        };
        if others.is_empty() {
            return None;
        }
        let parent = 1;
        let mut next = parent;
        let mut part = |name: &str| -> ClientFrame {
            next += 1;
            let id = next;
            match frame {
                ClientFrame::TopicCreate(c) => ClientFrame::TopicCreate(TopicCreate {
                    id,
                    topic: name.to_string(),
                    partitions: 0,
                    replicas: c.replicas,
                }),
                ClientFrame::TopicRm(r) => ClientFrame::TopicRm(TopicRm {
                    id,
                    topic: name.to_string(),
                    force: r.force,
                }),
                ClientFrame::TopicPurge(r) => ClientFrame::TopicPurge(TopicRm {
                    id,
                    topic: name.to_string(),
                    force: r.force,
                }),
                ClientFrame::TopicSet(s) => ClientFrame::TopicSet(TopicSet {
                    id,
                    topic: name.to_string(),
                    ..s.clone()
                }),
                other => other.clone(),
            }
        };
        let parts: Vec<(Shard, ClientFrame)> =
            others.iter().map(|(s, name)| (*s, part(name))).collect();
        let whole = (home, renumbered(frame, parent));
        let (phases, combine) = match frame {
            ClientFrame::TopicCreate(_) => (vec![vec![whole], parts], Combine::Parent),
            ClientFrame::TopicRm(_) => (vec![parts, vec![whole]], Combine::Parent),
            ClientFrame::TopicPurge(_) => {
                let mut all = vec![whole];
                all.extend(parts);
                (vec![all], Combine::SumPurged)
            }
            _ => {
                let mut all = vec![whole];
                all.extend(parts);
                (vec![all], Combine::Parent)
            }
        };
        Some(Plan {
            phases,
            parent,
            combine,
            not_found_done: !matches!(frame, ClientFrame::TopicCreate(_)),
        })
    }
}

/// Send the plan's parts, phase after phase; the answer to give the client.
async fn run(
    c: &Cluster,
    session: u64,
    user: &str,
    outbox: &Outbox,
    mut rx: OutboxRx,
    plan: Plan,
) -> ServerFrame {
    let mut answers: HashMap<u64, ServerFrame> = HashMap::new();
    let deadline = tokio::time::Instant::now() + PART_TIMEOUT;
    for phase in plan.phases {
        let mut waiting: Vec<u64> = Vec::with_capacity(phase.len());
        for (shard, frame) in phase {
            let id = frame.id();
            waiting.push(id);
            let done = c.propose_in(
                shard,
                DataItem::Queue(QueueOp::Request {
                    session,
                    user: user.to_string(),
                    frame: Box::new(frame),
                }),
            );
            // A part that is not done gets its answer here: nothing else will come.
            let outbox = outbox.clone();
            tokio::spawn(async move {
                if let Err((code, msg)) = done.await {
                    outbox.reply(ServerFrame::error(Some(id), code, msg), false);
                }
            });
        }
        while !waiting.is_empty() {
            let out = match tokio::time::timeout_at(deadline, rx.rx.recv()).await {
                Ok(Some(out)) => out,
                Ok(None) => {
                    return ServerFrame::error(None, ErrorCode::Unavailable, "the node is stopping")
                }
                Err(_) => {
                    return ServerFrame::error(
                        None,
                        ErrorCode::Unavailable,
                        "no answer from every data group in time: some of the topic's \
                         partitions may have been changed; send the request again",
                    )
                }
            };
            let Out::Reply { frame, .. } = out else {
                continue;
            };
            let Some(id) = frame.reply_id() else {
                continue;
            };
            if let Some(at) = waiting.iter().position(|w| *w == id) {
                waiting.swap_remove(at);
                answers.insert(id, *frame);
            }
        }
        // A phase with a refusal ends the request: the next phase is not sent.
        let refused = answers.values().find_map(|a| match a {
            ServerFrame::Error(e) if !(plan.not_found_done && e.code == ErrorCode::NotFound) => {
                Some(a.clone())
            }
            _ => None,
        });
        if let Some(e) = refused {
            return e;
        }
    }
    let purged: u64 = answers
        .values()
        .filter_map(|a| match a {
            ServerFrame::TopicInfo(t) => t.purged,
            _ => None,
        })
        .sum();
    match answers.remove(&plan.parent) {
        Some(ServerFrame::TopicInfo(mut t)) if plan.combine == Combine::SumPurged => {
            t.purged = Some(purged);
            ServerFrame::TopicInfo(t)
        }
        Some(a) => a,
        None => ServerFrame::error(None, ErrorCode::Internal, "the request had no answer"),
    }
}

/// `frame` as the answer to request `id`.
fn with_id(frame: ServerFrame, id: u64) -> ServerFrame {
    match frame {
        ServerFrame::TopicInfo(mut t) => {
            t.id = id;
            ServerFrame::TopicInfo(t)
        }
        ServerFrame::Error(mut e) => {
            e.id = Some(id);
            ServerFrame::Error(e)
        }
        _ => ServerFrame::Ok(Req { id }),
    }
}

/// A topic request as request `id`.
fn renumbered(frame: &ClientFrame, id: u64) -> ClientFrame {
    match frame {
        ClientFrame::TopicCreate(c) => ClientFrame::TopicCreate(TopicCreate { id, ..c.clone() }),
        ClientFrame::TopicRm(r) => ClientFrame::TopicRm(TopicRm { id, ..r.clone() }),
        ClientFrame::TopicPurge(r) => ClientFrame::TopicPurge(TopicRm { id, ..r.clone() }),
        ClientFrame::TopicSet(s) => ClientFrame::TopicSet(TopicSet { id, ..s.clone() }),
        other => other.clone(),
    }
}
