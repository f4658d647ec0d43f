//! Partitioned topics. A topic created with N partitions (2 or more) stores nothing itself:
//! its messages go to the topics `NAME.0` … `NAME.{N-1}`, each with its own seqs, order
//! and retention — Kafka's partitions, spelled as NATS spells a subject-mapped partition,
//! so that a pattern (`NAME.*`, `NAME.3`) or a queue binding picks partitions like any
//! topics. A message's key chooses its partition (FNV-1a of the key, modulo N), so one
//! key's messages keep their order; the messages of a publish without a key go together to
//! the partition its `spread` names (the receiving node's round robin, carried in the
//! command so that every replica decides the same).

use mom_proto::PubMsg;

use super::{Core, CoreError, TopicState};

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u16 = 1024;

/// Longest key, in bytes.
pub const MAX_KEY: usize = 1024;

/// The partition a key goes to among `n`: FNV-1a (32 bits) of its bytes, modulo `n`
/// (docs/protocol.md, "Partitions").
pub fn key_partition(key: &str, n: u16) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(n.max(1))) as u16
}

/// The name of partition `p` of `topic`.
pub fn partition_name(topic: &str, p: u16) -> String {
    format!("{topic}.{p}")
}

/// A publish to a partitioned topic, cut by partition.
#[derive(Debug)]
pub struct Routed {
    /// The partitions it goes to, in partition order.
    pub parts: Vec<Part>,
    /// Messages in the request.
    pub len: usize,
}

/// The messages of a publish that go to one partition, in the request's order.
#[derive(Debug)]
pub struct Part {
    pub partition: u16,
    pub topic: String,
    pub msgs: Vec<PubMsg>,
    /// Where each message was in the request.
    pub indexes: Vec<u32>,
}

/// What a publish to a partitioned topic was given, in the request's order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    pub seqs: Vec<u64>,
    pub partitions: Vec<u32>,
    pub duplicate_indexes: Vec<u32>,
}

impl Routed {
    /// The request's answer from each part's (seqs, duplicate indexes within the part),
    /// given in the order of `parts`.
    pub fn merge(&self, results: &[(&[u64], &[u32])]) -> Merged {
        let mut m = Merged {
            seqs: vec![0; self.len],
            partitions: vec![0; self.len],
            duplicate_indexes: Vec::new(),
        };
        for (part, (seqs, dups)) in self.parts.iter().zip(results) {
            for (i, at) in part.indexes.iter().enumerate() {
                let at = *at as usize;
                if let (Some(s), Some(p)) = (m.seqs.get_mut(at), m.partitions.get_mut(at)) {
                    *s = seqs.get(i).copied().unwrap_or(0);
                    *p = u32::from(part.partition);
                }
            }
            m.duplicate_indexes.extend(
                dups.iter()
                    .filter_map(|d| part.indexes.get(*d as usize).copied()),
            );
        }
        m.duplicate_indexes.sort_unstable();
        m
    }
}

impl Core {
    /// How many partitions `name` has: 0 for a topic that is not partitioned (or none).
    pub fn partitions_of(&self, name: &str) -> u16 {
        self.topics
            .get(name)
            .map_or(0, |t| if t.partitions > 1 { t.partitions } else { 0 })
    }

    /// The partitioned topic `name` lies under (`a.b` for `a.b.3` or `a.b.x.y`), with the
    /// partition `name` is, when it is one. With several shards, a parent in another
    /// shard than `name`'s is not seen: an entry of one data group must decide the same on
    /// every node, whatever the others' groups applied there (the node a request comes to
    /// checks with [`Core::partition_parent_anywhere`] before proposing it).
    pub fn partition_parent(&self, name: &str) -> Option<(&TopicState, Option<u16>)> {
        self.parent_of(name, true)
    }

    /// [`Core::partition_parent`] in any shard: this node's view of every group.
    pub fn partition_parent_anywhere(&self, name: &str) -> Option<(&TopicState, Option<u16>)> {
        self.parent_of(name, false)
    }

    fn parent_of(&self, name: &str, same_shard: bool) -> Option<(&TopicState, Option<u16>)> {
        let shards = self.topics.shards();
        let home = shards.place_name(name);
        for (at, _) in name.match_indices('.') {
            let Some(t) = self.topics.get(&name[..at]) else {
                continue;
            };
            if same_shard && shards.of(t.id) != home {
                continue;
            }
            if t.partitions > 1 {
                let p = name[at + 1..]
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p < t.partitions && name[at + 1..] == p.to_string());
                return Some((t, p));
            }
        }
        None
    }

    /// May a topic named `name` be created? Not under a partitioned topic, unless it is
    /// one of its partitions.
    pub(super) fn check_new_name(&self, name: &str) -> Result<(), CoreError> {
        match self.partition_parent(name) {
            Some((t, None)) => Err(CoreError::UnderPartitioned {
                name: name.to_string(),
                parent: t.name.to_string(),
                partitions: t.partitions,
            }),
            _ => Ok(()),
        }
    }

    /// Cut a publish to `name` by partition; None when `name` is not partitioned. The
    /// request is checked whole first, so that an error names the request's message.
    pub fn route(
        &self,
        name: &str,
        msgs: Vec<PubMsg>,
        spread: u32,
    ) -> Result<Result<Routed, Vec<PubMsg>>, CoreError> {
        let n = self.partitions_of(name);
        if n == 0 {
            return Ok(Err(msgs));
        }
        self.check_msgs(&msgs)?;
        let unkeyed = (spread % u32::from(n)) as u16;
        let mut parts: Vec<Part> = Vec::new();
        let len = msgs.len();
        for (i, m) in msgs.into_iter().enumerate() {
            let p = m.key.as_deref().map_or(unkeyed, |k| key_partition(k, n));
            let at = match parts.binary_search_by_key(&p, |x| x.partition) {
                Ok(at) => at,
                Err(at) => {
                    parts.insert(
                        at,
                        Part {
                            partition: p,
                            topic: partition_name(name, p),
                            msgs: Vec::new(),
                            indexes: Vec::new(),
                        },
                    );
                    at
                }
            };
            if let Some(part) = parts.get_mut(at) {
                part.msgs.push(m);
                part.indexes.push(i as u32);
            }
        }
        Ok(Ok(Routed { parts, len }))
    }

    /// Create topic `name` for `owner`, with `partitions` partitions (0 or 1: an ordinary
    /// topic) and `replicas` asked for. Returns the ids created: the topic's, then its
    /// partitions' — none when it exists with as many partitions already (a create sent
    /// again is answered as the first was, as `queue_create` is). Refused if it exists
    /// otherwise, if it lies under a partitioned topic, or if topics already exist under a
    /// name to be partitioned.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replicas: u8,
        owner: &str,
        now: u64,
    ) -> Result<Vec<u32>, CoreError> {
        mom_proto::topic::validate_publish_topic(name)?;
        if let Some((t, Some(_))) = self.partition_parent(name) {
            return Err(CoreError::BadPartitions(format!(
                "{name:?} is a partition of {:?}: it exists, and is not partitioned again",
                t.name
            )));
        }
        if let Some(t) = self.topics.get(name) {
            let asked = if partitions > 1 { partitions } else { 0 };
            if u32::from(t.partitions) == asked {
                return Ok(Vec::new());
            }
            return Err(CoreError::TopicExists {
                name: name.to_string(),
                partitions: u32::from(t.partitions).max(1),
            });
        }
        self.check_new_name(name)?;
        let n = if partitions > 1 {
            u16::try_from(partitions)
                .ok()
                .filter(|n| *n <= MAX_PARTITIONS)
                .ok_or_else(|| {
                    CoreError::BadPartitions(format!(
                        "{partitions} partitions: the most a topic may have is {MAX_PARTITIONS}"
                    ))
                })?
        } else {
            0
        };
        // With several shards, the parent's group creates the partitions of its own shard
        // and looks at its own topics alone; the node the request came to has each other
        // group create its partitions (`broker/fan_out.rs`).
        let shards = self.topics.shards();
        let home = shards.place_name(name);
        let ours = |id: u32| shards.of(id) == home;
        if n > 0 {
            let under = format!("{name}.");
            let taken = self
                .topics
                .range_from(std::ops::Bound::Included(under.as_str()))
                .take_while(|t| t.name.starts_with(under.as_str()))
                .find(|t| ours(t.id))
                .map(|t| t.name.to_string());
            if let Some(taken) = taken {
                return Err(CoreError::BadPartitions(format!(
                    "topic {taken:?} exists under {name:?}: the names under a partitioned \
                     topic are its partitions (remove it, or choose another name)"
                )));
            }
            let max = self.config.creation.max_topics;
            let held = self.topics.len() as u64;
            if max > 0 && held + u64::from(n) + 1 > max {
                return Err(CoreError::TooManyTopics {
                    name: name.to_string(),
                    max,
                });
            }
        }
        self.admit_topic(name, owner, now)?;
        let limits = self.config.default_limits;
        let (t, _) = self.topics.get_or_create(name, now, limits, owner);
        t.partitions = n;
        t.replicas = replicas;
        let mut ids = vec![t.id];
        for p in 0..n {
            if shards.place(name, Some((name, u32::from(p)))) != home {
                continue;
            }
            let (t, _) = self
                .topics
                .get_or_create(&partition_name(name, p), now, limits, owner);
            t.replicas = replicas;
            ids.push(t.id);
        }
        Ok(ids)
    }

    /// The partitions of `name` that exist, in order (none when it is not partitioned).
    pub fn partition_ids(&self, name: &str) -> Vec<u32> {
        (0..self.partitions_of(name))
            .filter_map(|p| self.topics.get(&partition_name(name, p)).map(|t| t.id))
            .collect()
    }

    /// The partitions of `name` in its own shard (all of them with one shard): what an
    /// entry of its group may change.
    pub fn local_partition_ids(&self, name: &str) -> Vec<u32> {
        let shards = self.topics.shards();
        let home = shards.place_name(name);
        self.partition_ids(name)
            .into_iter()
            .filter(|id| shards.of(*id) == home)
            .collect()
    }

    /// The partitions of `name` in other shards than its own, by name (none with one
    /// shard): each is created, changed and removed through its own group.
    pub fn partitions_elsewhere(&self, name: &str) -> Vec<String> {
        let shards = self.topics.shards();
        let home = shards.place_name(name);
        (0..self.partitions_of(name))
            .filter(|p| shards.place(name, Some((name, u32::from(*p)))) != home)
            .map(|p| partition_name(name, p))
            .collect()
    }

    /// A watch or binding naming a partitioned topic itself means all its partitions.
    pub fn expand_pattern(&self, pattern: &str) -> String {
        if self.partitions_of(pattern) > 0 {
            format!("{pattern}.*")
        } else {
            pattern.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CoreConfig, Dedupe, Topics};
    use bytes::Bytes;
    use mom_proto::Sender;
    use proptest::prelude::*;

    fn core() -> Core {
        Core::new(CoreConfig::default(), Topics::default(), Dedupe::default())
    }

    fn msg(key: Option<&str>, body: &str) -> PubMsg {
        PubMsg {
            payload: Bytes::from(body.to_string()),
            key: key.map(str::to_string),
            ..PubMsg::default()
        }
    }

    #[test]
    fn a_key_always_goes_to_the_same_partition_and_keys_spread() {
        // Fixed values: a key's partition must never change across versions or nodes.
        assert_eq!(key_partition("", 6), (0x811c_9dc5u32 % 6) as u16);
        assert_eq!(key_partition("a", 1000), (0xe40c_292cu32 % 1000) as u16);
        let mut seen = [0u32; 6];
        for i in 0..6000 {
            seen[usize::from(key_partition(&format!("user-{i}"), 6))] += 1;
        }
        assert!(seen.iter().all(|n| (700..1300).contains(n)), "{seen:?}");
    }

    #[test]
    fn a_partitioned_topic_has_its_partitions_and_nothing_else_under_it() {
        let mut c = core();
        let ids = c.create_topic("clicks", 3, 0, "u", 1).unwrap();
        assert_eq!(ids.len(), 4);
        assert_eq!(c.partitions_of("clicks"), 3);
        assert_eq!(c.partition_ids("clicks"), ids[1..].to_vec());
        for p in 0..3 {
            assert!(c.topics.get(&format!("clicks.{p}")).is_some());
        }
        assert!(c.create_topic("clicks", 3, 0, "u", 1).unwrap().is_empty());
        assert!(matches!(
            c.create_topic("clicks", 4, 0, "u", 1),
            Err(CoreError::TopicExists { partitions: 3, .. })
        ));
        let s = Sender::default();
        for bad in ["clicks.3", "clicks.x", "clicks.1.x", "clicks.01"] {
            let e = c
                .publish(bad, vec![msg(None, "x")], s.clone(), 2)
                .unwrap_err();
            assert!(
                matches!(e, CoreError::UnderPartitioned { .. }),
                "{bad}: {e}"
            );
        }
        assert!(c
            .publish("clicks.1", vec![msg(None, "x")], s.clone(), 2)
            .is_ok());
        assert!(matches!(
            c.publish("clicks", vec![msg(None, "x")], s, 2),
            Err(CoreError::Partitioned(_))
        ));
        // A partitioned name over existing topics, or a partition partitioned again.
        c.publish("logs.a", vec![msg(None, "x")], Sender::default(), 3)
            .unwrap();
        assert!(matches!(
            c.create_topic("logs", 2, 0, "u", 3),
            Err(CoreError::BadPartitions(_))
        ));
        assert!(matches!(
            c.create_topic("clicks.2", 2, 0, "u", 3),
            Err(CoreError::BadPartitions(_))
        ));
        assert!(c.create_topic("big", 1025, 0, "u", 3).is_err());
        // One partition is an ordinary topic.
        c.create_topic("plain", 1, 0, "u", 3).unwrap();
        assert_eq!(c.partitions_of("plain"), 0);
        assert_eq!(c.expand_pattern("clicks"), "clicks.*");
        assert_eq!(c.expand_pattern("plain"), "plain");
    }

    /// With several shards, an entry of one group sees its own shard alone: the parent's
    /// group makes the partitions of its shard, and a partition of another shard does not
    /// see the parent (the node a request comes to checks that, `partition_parent_anywhere`).
    #[test]
    fn a_partitioned_topic_over_several_shards_is_made_by_each_shard_for_its_own() {
        let shards = crate::core::shards::Shards::new(3).unwrap();
        let topics = Topics::from_stored_in(Vec::new(), 1, shards);
        let mut c = Core::new(CoreConfig::default(), topics, Dedupe::default());
        let ids = c.create_topic("clicks", 6, 0, "u", 1).unwrap();
        let home = shards.place_name("clicks");
        let ours: Vec<String> = (0..6u16)
            .map(|p| partition_name("clicks", p))
            .filter(|n| shards.place_name(n) == home)
            .collect();
        assert_eq!(ours.len(), 2, "six partitions over three shards: two each");
        assert_eq!(ids.len(), 1 + ours.len());
        for id in &ids {
            assert_eq!(shards.of(*id), home);
        }
        assert_eq!(c.partition_ids("clicks").len(), 2);
        assert_eq!(c.local_partition_ids("clicks").len(), 2);
        let elsewhere = c.partitions_elsewhere("clicks");
        assert_eq!(elsewhere.len(), 4);
        // Another shard's partition is made by its own group, as a topic of its own.
        let other = &elsewhere[0];
        assert!(c.partition_parent(other).is_none());
        assert!(matches!(
            c.partition_parent_anywhere(other),
            Some((_, Some(_)))
        ));
        let made = c.create_topic(other, 0, 0, "u", 2).unwrap();
        assert_eq!(shards.of(made[0]), shards.place_name(other));
        assert_eq!(c.partition_ids("clicks").len(), 3);
        assert_eq!(c.local_partition_ids("clicks").len(), 2);
        // Its own shard's names under it are still guarded by the parent's group.
        assert!(c.create_topic(&ours[0], 2, 0, "u", 3).is_err());
    }

    /// Topic records are positional (MessagePack arrays): a partition (0 partitions) with
    /// replicas asked for reads back as written, through both decoders, and a record
    /// written before the two fields existed reads them as 0.
    #[test]
    fn a_topic_record_keeps_its_partitions_and_replicas_apart() {
        let mut c = core();
        c.create_topic("clicks", 3, 3, "u", 1).unwrap();
        for name in ["clicks", "clicks.1"] {
            let t = c.topics.get(name).unwrap().clone();
            let v = rmp_serde::to_vec(&t).unwrap();
            let back: TopicState = rmp_serde::from_slice(&v).unwrap();
            let fast = crate::core::StateDecoder::default().decode(&v).unwrap();
            for b in [back, fast] {
                assert_eq!(
                    (b.partitions, b.replicas),
                    (t.partitions, t.replicas),
                    "{name}"
                );
            }
        }
        #[derive(serde::Serialize)]
        struct Old<'a>(
            u32,
            &'a str,
            u64,
            mom_proto::Limits,
            u64,
            u64,
            u64,
            u64,
            u64,
            &'a str,
        );
        let old =
            rmp_serde::to_vec(&Old(7, "o", 1, Default::default(), 1, 0, 0, 0, 0, "u")).unwrap();
        let back: TopicState = rmp_serde::from_slice(&old).unwrap();
        let fast = crate::core::StateDecoder::default().decode(&old).unwrap();
        assert_eq!((back.partitions, back.replicas, back.id), (0, 0, 7));
        assert_eq!((fast.partitions, fast.replicas, &*fast.owner), (0, 0, "u"));
    }

    proptest! {
        /// Every message goes to exactly one part, keyed ones to their key's partition,
        /// the others to the spread's; each part keeps the request's order, and the merge
        /// puts every answer back at its message.
        #[test]
        fn routing_cuts_a_request_by_partition_and_merges_back(
            keys in proptest::collection::vec(proptest::option::of("[a-d]{0,3}"), 1..40),
            n in 2u32..9,
            spread in any::<u32>(),
        ) {
            let mut c = core();
            c.create_topic("t", n, 0, "u", 1).unwrap();
            let msgs: Vec<PubMsg> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| msg(k.as_deref(), &i.to_string()))
                .collect();
            let r = c.route("t", msgs, spread).unwrap().unwrap();
            prop_assert_eq!(r.len, keys.len());
            let mut all: Vec<u32> = r.parts.iter().flat_map(|p| p.indexes.clone()).collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..keys.len() as u32).collect::<Vec<_>>());
            for part in &r.parts {
                prop_assert!(part.indexes.windows(2).all(|w| w[0] < w[1]));
                prop_assert_eq!(&part.topic, &format!("t.{}", part.partition));
                for (m, i) in part.msgs.iter().zip(&part.indexes) {
                    let want = i.to_string();
                    prop_assert_eq!(&m.payload[..], want.as_bytes());
                    let want = match &keys[*i as usize] {
                        Some(k) => key_partition(k, n as u16),
                        None => (spread % n) as u16,
                    };
                    prop_assert_eq!(part.partition, want);
                }
            }
            // Each part's seqs 100, 101, …; its first message a duplicate.
            let seqs: Vec<Vec<u64>> = r
                .parts
                .iter()
                .map(|p| (0..p.msgs.len() as u64).map(|s| 100 + s).collect())
                .collect();
            let results: Vec<(&[u64], &[u32])> =
                seqs.iter().map(|s| (s.as_slice(), &[0u32][..])).collect();
            let m = r.merge(&results);
            for part in &r.parts {
                for (j, i) in part.indexes.iter().enumerate() {
                    prop_assert_eq!(m.seqs[*i as usize], 100 + j as u64);
                    prop_assert_eq!(m.partitions[*i as usize], u32::from(part.partition));
                }
            }
            let mut firsts: Vec<u32> = r.parts.iter().map(|p| p.indexes[0]).collect();
            firsts.sort_unstable();
            prop_assert_eq!(m.duplicate_indexes, firsts);
        }
    }
}
