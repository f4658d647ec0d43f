//! Publishes on a cluster whose topics spread over several data groups (`core/shards.rs`).
//!
//! A partitioned topic's partitions lie in several groups, so the node a publish to it
//! comes to cuts it by partition (`Core::route`, the same cut a single node makes) and
//! sends each group a publish to its partitions, answering the client once all are in.
//!
//! That needs the node to know the topic is partitioned, and a topic made through another
//! node is known here once this node applied its creation. A publish to a topic this node
//! does not know yet is therefore *in doubt*: it goes whole to the group of its name, where
//! it is stored if the topic is an ordinary one, or refused if the group knows it as
//! partitioned; then this node waits until it knows the topic too and cuts it up. Until a
//! publish in doubt is answered, the connection's later publishes to the same topic wait
//! behind it, so that they keep their order.

use std::collections::VecDeque;
use std::time::Duration;

use mom_proto::{ErrorCode, PubMsg, Publish, Sender};

use super::{Broker, Cmd};
use crate::admission::Ticket;
use crate::cluster::batcher::PublishAnswer;
use crate::cluster::data::{DataItem, PubItem, PubResult, Published};
use crate::cluster::Cluster;

/// How the topic's group refuses a whole publish to a topic it knows as partitioned.
pub(super) const MADE_PARTITIONED: &str =
    "was made partitioned as this publish went to it: send it again";

/// How long a publish refused that way waits for this node to learn of the partitions.
const LEARN_WAIT: Duration = Duration::from_secs(10);
const LEARN_STEP: Duration = Duration::from_millis(20);

/// Publishes of a connection to a topic waiting behind one in doubt, in order.
pub(super) type Held = VecDeque<(Publish, Sender, Ticket)>;

impl Broker {
    /// A publish to a partitioned topic whose partitions spread over several data groups:
    /// cut by partition here, each part sent to its partition's group as a publish to the
    /// partition, and answered as one once all are in.
    pub(super) fn publish_by_partition(
        &mut self,
        c: &Cluster,
        topic: String,
        msgs: Vec<PubMsg>,
        sender: Sender,
        spread: u32,
        answer: PublishAnswer,
    ) {
        let mut routed = match self.core.route(&topic, msgs, spread) {
            Ok(Ok(routed)) => routed,
            Ok(Err(_)) => {
                let msg = format!("topic {topic:?} is no longer partitioned: send it again");
                return answer.answer(Err((ErrorCode::Unavailable, msg)));
            }
            Err(e) => return answer.answer(Err(super::core_error(e))),
        };
        let shards = self.core.topics.shards();
        // Queued now, in order: a connection's publishes keep their order in each group.
        let parts: Vec<_> = routed
            .parts
            .iter_mut()
            .map(|part| {
                let item = PubItem {
                    topic: part.topic.clone(),
                    msgs: std::mem::take(&mut part.msgs),
                    sender: sender.clone(),
                    spread: 0,
                };
                c.propose_in(shards.place_name(&part.topic), DataItem::Publish(item))
            })
            .collect();
        tokio::spawn(async move {
            let results = futures_util::future::join_all(parts).await;
            let stored = results.iter().filter(|r| r.is_ok()).count();
            let mut answers = Vec::with_capacity(results.len());
            for r in results {
                match r {
                    Ok(a) => answers.push(a),
                    Err((code, msg)) if stored > 0 => {
                        let msg = format!("{msg} (some of its partitions stored theirs)");
                        return answer.answer(Err((code, msg)));
                    }
                    Err(e) => return answer.answer(Err(e)),
                }
            }
            let each: Vec<(&[u64], &[u32])> = answers
                .iter()
                .map(|a| (a.seqs.as_slice(), a.duplicate_indexes.as_slice()))
                .collect();
            let merged = routed.merge(&each);
            answer.answer(Ok(Published {
                seqs: merged.seqs,
                duplicates: answers.iter().map(|a| a.duplicates).sum(),
                duplicate_indexes: merged.duplicate_indexes,
                queues: answers.iter().map(|a| a.queues).sum(),
                partitions: merged.partitions,
            }));
        });
    }

    /// A publish to a topic this node does not know: sent whole to its name's group, the
    /// connection's next publishes to it held until it is answered (see the module doc).
    pub(super) fn publish_in_doubt(
        &mut self,
        c: &Cluster,
        session: u64,
        p: Publish,
        sender: Sender,
        answer: PublishAnswer,
    ) {
        self.in_doubt
            .insert((session, p.topic.clone()), Held::new());
        let item = PubItem {
            topic: p.topic.clone(),
            msgs: p.msgs.clone(),
            sender: sender.clone(),
            spread: 0,
        };
        let shard = self.core.topics.shards().place_name(&p.topic);
        let done = c.propose_in(shard, DataItem::Publish(item));
        let doubt = Doubt {
            session,
            publish: p,
            sender,
            answer,
            waited: Duration::ZERO,
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = done.await;
            let _ = tx.send(Cmd::InDoubt { doubt, result }).await;
        });
    }

    /// A publish in doubt was answered: a refusal because the topic is partitioned waits
    /// for this node to know it and is cut up; anything else is the answer. Then the
    /// publishes held behind it go on, in order.
    pub(super) fn in_doubt_done(&mut self, mut d: Doubt, result: PubResult) {
        let partitioned = matches!(&result, Err((_, m)) if m.contains(MADE_PARTITIONED));
        let Some(c) = self.cluster.clone() else {
            return d.answer.answer(result);
        };
        let (session, topic) = (d.session, d.publish.topic.clone());
        if !partitioned {
            d.answer.answer(result);
        } else if self.core.partitions_of(&topic) > 0 {
            let spread = self.next_spread();
            let Doubt {
                publish,
                sender,
                answer,
                ..
            } = d;
            self.publish_by_partition(&c, topic.clone(), publish.msgs, sender, spread, answer);
        } else if d.waited < LEARN_WAIT {
            // Not yet applied here: look again in a moment.
            d.waited += LEARN_STEP;
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(LEARN_STEP).await;
                let _ = tx.send(Cmd::InDoubt { doubt: d, result }).await;
            });
            return;
        } else {
            d.answer.answer(result);
        }
        let held = self.in_doubt.remove(&(session, topic)).unwrap_or_default();
        for (p, sender, ticket) in held {
            self.cluster_publish(&c, session, p, sender, ticket);
        }
    }
}

/// A publish in doubt, on its way back to the broker task with its answer.
pub struct Doubt {
    session: u64,
    publish: Publish,
    sender: Sender,
    answer: PublishAnswer,
    /// How long it has waited for this node to learn of the topic's partitions.
    waited: Duration,
}
