//! The broker core: a deterministic state machine. It owns topics (seq, counters, limits),
//! the dedupe window and the live watches, and turns commands into what must be stored and
//! who must be told. It does no I/O and reads no clock: time comes in with each command, so
//! property tests drive it alone and a replicated log could later drive it the same way.

mod creation;
mod dedupe;
pub mod partitions;
mod queue_set;
pub mod queues;
mod record_codec;
pub mod shards;
mod topics;
mod trie;
mod watches;

pub use creation::{CreationLimits, Creations, Refusal, DEFAULT_MAX_TOPICS};
pub use dedupe::Dedupe;
pub use queue_set::QueueSet;
pub use topics::{StateDecoder, TopicState, Topics};
pub use watches::{GroupId, GroupKey, Interest, InterestIndex, WatchId, Watchers, Watches};

use std::sync::Arc;

use bytes::Bytes;
use mom_proto::{topic, Headers, Limits, PubMsg, Sender};

/// Why the core refused a command. Mapped to protocol error codes in one place (server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    BadName(#[from] topic::NameError),
    #[error("message {index} of the batch has a {len}-byte payload; the limit is {max}")]
    PayloadTooLarge {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("topic {0:?} not found")]
    TopicNotFound(String),
    #[error("topic {0:?} is reserved for the broker")]
    Reserved(String),
    #[error("header name must be non-empty")]
    EmptyHeaderName,
    #[error("a publish needs at least one message")]
    EmptyBatch,
    #[error("message {index} has a {len}-byte msg_id; the limit is {max}")]
    MsgIdTooLong {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("message {index} has {len} headers; the limit is {max}")]
    TooManyHeaders {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("message {index} has {len} bytes of headers; the limit is {max}")]
    HeadersTooLarge {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error(
        "topic {name:?} was not created: the broker holds {max} topics, which is its \
         limit (max_topics); remove topics that are no longer used, or raise the limit"
    )]
    TooManyTopics { name: String, max: u64 },
    #[error(
        "topic {name:?} was not created: user {user:?} may create {rate} topics a second \
         (topic_create_rate, bursts of {burst}); retry in {retry_ms} ms"
    )]
    CreateRate {
        name: String,
        user: String,
        rate: u64,
        burst: u64,
        retry_ms: u64,
    },
    #[error("topic {name:?} exists, with {partitions} partition(s)")]
    TopicExists { name: String, partitions: u32 },
    #[error(
        "topic {name:?} is under the partitioned topic {parent:?}: publish to {parent:?} (a \
         message's key chooses its partition) or to one of its {partitions} partitions, \
         {parent}.0 to {parent}.{}", partitions.saturating_sub(1)
    )]
    UnderPartitioned {
        name: String,
        parent: String,
        partitions: u16,
    },
    #[error("{0}")]
    BadPartitions(String),
    #[error(
        "topic {0:?} is partitioned: its messages are in its partitions (internal: a publish \
         to it must be routed)"
    )]
    Partitioned(String),
    #[error("message {index} has a {len}-byte key; the limit is {max}")]
    KeyTooLong {
        index: usize,
        len: usize,
        max: usize,
    },
}

/// Longest `msg_id`.
pub const MAX_MSG_ID: usize = 1024;

/// Most headers one message may carry.
pub use mom_proto::MAX_HEADERS;
/// Most bytes of header names and values one message may carry.
pub use mom_proto::MAX_HEADER_BYTES;

/// Settings the core needs; set at start, changed by a reload (SIGHUP).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub max_payload: usize,
    pub dedupe_window_ms: u64,
    pub default_limits: Limits,
    /// The topic cap and the per-user creation rate.
    pub creation: CreationLimits,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_payload: mom_proto::DEFAULT_MAX_PAYLOAD,
            dedupe_window_ms: 120_000,
            default_limits: Limits::default(),
            creation: CreationLimits::default(),
        }
    }
}

/// One message as the store keeps it (the seq is implied by its record's first seq).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMsg {
    pub headers: Headers,
    pub msg_id: Option<String>,
    pub payload: Bytes,
    pub key: Option<String>,
}

impl NewMsg {
    /// Bytes this message counts against retention: payload plus headers.
    pub fn size(&self) -> u64 {
        msg_size(&self.headers, &self.msg_id, &self.key, &self.payload)
    }
}

/// Bytes a message counts against retention: payload, headers, msg id and key.
pub fn msg_size(
    headers: &Headers,
    msg_id: &Option<String>,
    key: &Option<String>,
    payload: &[u8],
) -> u64 {
    let h: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    (payload.len() + h + opt(msg_id) + opt(key)) as u64
}

/// Consecutive messages of one topic with one time and sender: what a publish stored, and
/// what deliveries and replays carry. Message `i` has seq `first_seq + i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub topic: Arc<str>,
    pub first_seq: u64,
    pub time: u64,
    pub sender: Sender,
    pub msgs: Vec<NewMsg>,
}

impl Batch {
    /// About how many bytes these messages take in a `deliver` frame.
    pub fn wire_size(&self) -> usize {
        let per = self.topic.len() + self.sender.user.len() + self.sender.name.len() + 64;
        self.msgs
            .iter()
            .map(|m| m.size() as usize + m.msg_id.as_ref().map_or(0, String::len) + per)
            .sum()
    }

    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.msgs.len() as u64 - 1
    }
}

/// How to take back a publish (see [`Core::undo`]).
#[derive(Debug, Clone)]
pub struct Undo {
    pub topic_id: u32,
    pub before: Option<TopicState>,
    pub msg_ids: Vec<String>,
    pub stored: u64,
    pub duplicates: u64,
}

/// What a publish command decided: what to store and whom to tell.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub topic_id: u32,
    /// Set when this publish created the topic.
    pub created: bool,
    /// Seq of the first message in `stored` (they are consecutive).
    pub first_seq: u64,
    pub time: u64,
    pub sender: Sender,
    /// Messages to append, in seq order (duplicates removed).
    pub stored: Vec<NewMsg>,
    /// The seq of every message of the request, in request order.
    pub seqs: Vec<u64>,
    pub duplicates: u64,
    /// Indexes in the request of the messages that were duplicates.
    pub duplicate_indexes: Vec<u32>,
}

/// The state machine.
#[derive(Debug)]
pub struct Core {
    pub config: CoreConfig,
    pub topics: Topics,
    pub dedupe: Dedupe,
    pub watches: Watches,
    /// Who created topics lately, for the creation rate.
    pub creations: Creations,
    pub published_total: u64,
    pub duplicates_total: u64,
}

impl Core {
    /// A reload's new settings: they apply from the next command on.
    pub fn set_config(&mut self, config: CoreConfig) {
        self.config = config;
    }

    pub fn new(config: CoreConfig, topics: Topics, dedupe: Dedupe) -> Self {
        Core {
            config,
            topics,
            dedupe,
            watches: Watches::default(),
            creations: Creations::default(),
            published_total: 0,
            duplicates_total: 0,
        }
    }

    /// Validate and sequence a publish batch. Atomic: on error nothing changed.
    pub fn publish(
        &mut self,
        name: &str,
        msgs: Vec<PubMsg>,
        sender: Sender,
        now: u64,
    ) -> Result<PublishPlan, CoreError> {
        topic::validate_publish_topic(name)?;
        self.publish_checked(name, msgs, sender, now, true)
    }

    /// Like [`Core::publish`] but allows reserved topics (the broker's own `$sys.*`), and
    /// creates topics without the creation limits (the broker's own topics are never
    /// refused; a client's reply inbox is admitted before, see [`Core::admit_topic`]).
    pub fn publish_any(
        &mut self,
        name: &str,
        msgs: Vec<PubMsg>,
        sender: Sender,
        now: u64,
    ) -> Result<PublishPlan, CoreError> {
        self.publish_checked(name, msgs, sender, now, false)
    }

    /// May `user` create topic `name` now (the topic cap, and the user's creation rate
    /// for topics that are not reserved)? Counts the creation when it may. A topic that
    /// exists is always admitted.
    pub fn admit_topic(&mut self, name: &str, user: &str, now: u64) -> Result<(), CoreError> {
        if self.topics.get(name).is_some() {
            return Ok(());
        }
        let held = self.topics.len() as u64;
        // The only reserved topics a client creates are reply inboxes, gone within a
        // minute by themselves: they count toward the cap, not the rate.
        let rated = !name.starts_with('$');
        self.creations
            .admit(&self.config.creation, user, held, rated, now)
            .map_err(|r| match r {
                Refusal::Full { max } => CoreError::TooManyTopics {
                    name: name.to_string(),
                    max,
                },
                Refusal::Rate {
                    rate,
                    burst,
                    retry_ms,
                } => CoreError::CreateRate {
                    name: name.to_string(),
                    user: user.to_string(),
                    rate,
                    burst,
                    retry_ms,
                },
            })
    }

    /// `limited`: a new topic must pass [`Core::admit_topic`] for the sender's user.
    fn publish_checked(
        &mut self,
        name: &str,
        msgs: Vec<PubMsg>,
        sender: Sender,
        now: u64,
        limited: bool,
    ) -> Result<PublishPlan, CoreError> {
        topic::validate_topic(name)?;
        self.check_msgs(&msgs)?;
        match self.topics.get(name) {
            Some(t) if t.partitions > 1 => return Err(CoreError::Partitioned(name.to_string())),
            Some(_) => {}
            None => self.check_new_name(name)?,
        }
        // Last of the checks: a refused batch does not count against the creation rate.
        if limited {
            self.admit_topic(name, &sender.user, now)?;
        }
        let default_limits = self.config.default_limits;
        let (t, created) = self
            .topics
            .get_or_create(name, now, default_limits, &sender.user);
        let topic_id = t.id;
        // A topic's times never go backwards, even if the clock does: replay by time and
        // retention by age rely on it.
        let now = now.max(t.last_time);
        let first_seq = t.last_seq + 1;
        let mut next = first_seq;
        let mut seqs = Vec::with_capacity(msgs.len());
        let mut stored = Vec::with_capacity(msgs.len());
        let mut duplicates = 0;
        let mut duplicate_indexes = Vec::new();
        let mut bytes = 0;
        for (index, m) in msgs.into_iter().enumerate() {
            if let Some(id) = &m.msg_id {
                if let Some(orig) = self.dedupe.check(topic_id, id) {
                    seqs.push(orig);
                    duplicates += 1;
                    duplicate_indexes.push(index as u32);
                    continue;
                }
                self.dedupe.insert(topic_id, id.clone(), next, now);
            }
            let nm = NewMsg {
                headers: m.headers,
                msg_id: m.msg_id,
                payload: m.payload,
                key: m.key,
            };
            bytes += nm.size();
            seqs.push(next);
            stored.push(nm);
            next += 1;
        }
        let t = self
            .topics
            .by_id_mut(topic_id)
            .expect("topic was just looked up");
        t.record_append(stored.len() as u64, bytes, now);
        self.published_total += stored.len() as u64;
        self.duplicates_total += duplicates;
        Ok(PublishPlan {
            topic_id,
            created,
            first_seq,
            time: now,
            sender,
            stored,
            seqs,
            duplicates,
            duplicate_indexes,
        })
    }

    /// The checks every message of a publish passes, whatever its topic.
    fn check_msgs(&self, msgs: &[PubMsg]) -> Result<(), CoreError> {
        if msgs.is_empty() {
            return Err(CoreError::EmptyBatch);
        }
        for (index, m) in msgs.iter().enumerate() {
            if m.payload.len() > self.config.max_payload {
                return Err(CoreError::PayloadTooLarge {
                    index,
                    len: m.payload.len(),
                    max: self.config.max_payload,
                });
            }
            if m.headers.keys().any(String::is_empty) {
                return Err(CoreError::EmptyHeaderName);
            }
            if let Some(id) = &m.msg_id {
                if id.len() > MAX_MSG_ID {
                    return Err(CoreError::MsgIdTooLong {
                        index,
                        len: id.len(),
                        max: MAX_MSG_ID,
                    });
                }
            }
            if let Some(k) = &m.key {
                if k.len() > partitions::MAX_KEY {
                    return Err(CoreError::KeyTooLong {
                        index,
                        len: k.len(),
                        max: partitions::MAX_KEY,
                    });
                }
            }
            if m.headers.len() > MAX_HEADERS {
                return Err(CoreError::TooManyHeaders {
                    index,
                    len: m.headers.len(),
                    max: MAX_HEADERS,
                });
            }
            let len: usize = m.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
            if len > MAX_HEADER_BYTES {
                return Err(CoreError::HeadersTooLarge {
                    index,
                    len,
                    max: MAX_HEADER_BYTES,
                });
            }
        }
        Ok(())
    }

    /// What it takes to undo `plan` if the store cannot write it; `before` is the topic's
    /// state before the publish (None if the publish created it).
    pub fn undo_of(plan: &PublishPlan, before: Option<TopicState>) -> Undo {
        Undo {
            topic_id: plan.topic_id,
            before,
            msg_ids: plan
                .stored
                .iter()
                .filter_map(|m| m.msg_id.clone())
                .collect(),
            stored: plan.stored.len() as u64,
            duplicates: plan.duplicates,
        }
    }

    /// Undo a publish the store could not write: the topic goes back to its state before
    /// (or away, if the publish created it) and the batch's dedupe entries are forgotten.
    /// Several undos are applied newest first.
    pub fn undo(&mut self, u: Undo) {
        for id in &u.msg_ids {
            self.dedupe.remove(u.topic_id, id);
        }
        self.published_total -= u.stored;
        self.duplicates_total -= u.duplicates;
        match u.before {
            Some(b) => {
                if let Some(t) = self.topics.by_id_mut(u.topic_id) {
                    *t = b;
                }
            }
            None => {
                let name = self.topics.by_id(u.topic_id).map(|t| t.name.clone());
                if let Some(name) = name {
                    self.topics.remove(&name);
                }
            }
        }
    }

    /// Set limits (creating the topic if needed).
    pub fn set_limits(
        &mut self,
        set: &mom_proto::TopicSet,
        now: u64,
        owner: &str,
    ) -> Result<(&TopicState, bool), CoreError> {
        topic::validate_publish_topic(&set.topic)?;
        if self.topics.get(&set.topic).is_none() {
            self.check_new_name(&set.topic)?;
        }
        self.admit_topic(&set.topic, owner, now)?;
        let default_limits = self.config.default_limits;
        let (t, created) = self
            .topics
            .get_or_create(&set.topic, now, default_limits, owner);
        let l = std::sync::Arc::make_mut(&mut t.limits);
        for (field, v) in [
            (&mut l.max_msgs, set.max_msgs),
            (&mut l.max_bytes, set.max_bytes),
            (&mut l.max_age_ms, set.max_age_ms),
            (&mut l.hard_max_bytes, set.hard_max_bytes),
            (&mut l.hard_max_age_ms, set.hard_max_age_ms),
        ] {
            if let Some(v) = v {
                *field = v;
            }
        }
        Ok((t, created))
    }

    /// Remove a topic and forget its dedupe entries.
    pub fn remove_topic(&mut self, name: &str) -> Result<TopicState, CoreError> {
        if name.starts_with('$') {
            return Err(CoreError::Reserved(name.to_string()));
        }
        let t = self
            .topics
            .remove(name)
            .ok_or_else(|| CoreError::TopicNotFound(name.to_string()))?;
        self.dedupe.forget_topic(t.id);
        Ok(t)
    }

    /// Advance time: expire dedupe entries, forget creation buckets that filled up. Returns the expired (topic id, msg id) pairs so
    /// the store can delete them too.
    pub fn tick(&mut self, now: u64) -> Vec<(u32, String)> {
        self.creations.tidy(&self.config.creation, now);
        self.dedupe.expire(now, self.config.dedupe_window_ms)
    }
}

#[cfg(test)]
mod creation_tests;
#[cfg(test)]
mod queue_set_tests;
#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod shard_queue_tests;
#[cfg(test)]
mod tests;
