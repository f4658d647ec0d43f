//! Topics: name → id, seq counters, sizes and limits.

use std::collections::{BTreeMap, HashMap};

use mom_proto::Limits;
use serde::{Deserialize, Serialize};

/// What the broker knows of one topic. Persisted as the topic's meta record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub id: u32,
    pub name: String,
    pub created: u64,
    pub limits: Limits,
    /// Oldest stored seq; `last_seq + 1` when the topic is empty.
    pub first_seq: u64,
    /// Newest seq ever assigned.
    pub last_seq: u64,
    /// Messages stored now.
    pub msgs: u64,
    /// Bytes stored now (payload + headers).
    pub bytes: u64,
    pub last_time: u64,
}

impl TopicState {
    pub fn new(id: u32, name: &str, created: u64, limits: Limits) -> Self {
        TopicState {
            id,
            name: name.to_string(),
            created,
            limits,
            first_seq: 1,
            last_seq: 0,
            msgs: 0,
            bytes: 0,
            last_time: 0,
        }
    }

    pub fn record_append(&mut self, count: u64, bytes: u64, now: u64) {
        self.last_seq += count;
        self.msgs += count;
        self.bytes += bytes;
        if count > 0 {
            self.last_time = now;
        }
    }

    /// Messages at seqs below `first_seq` were removed (retention); `bytes` of them.
    pub fn record_trim(&mut self, first_seq: u64, count: u64, bytes: u64) {
        self.first_seq = first_seq.max(self.first_seq);
        self.msgs = self.msgs.saturating_sub(count);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Do the count or byte limits ask for older messages to go?
    pub fn over_size_limits(&self) -> bool {
        (self.limits.max_msgs > 0 && self.msgs > self.limits.max_msgs)
            || (self.limits.max_bytes > 0 && self.bytes > self.limits.max_bytes)
            || (self.limits.hard_max_bytes > 0 && self.bytes > self.limits.hard_max_bytes)
    }

    /// Is there an age limit at all?
    pub fn has_age_limit(&self) -> bool {
        self.limits.max_age_ms > 0 || self.limits.hard_max_age_ms > 0
    }
}

/// All topics, by name (sorted, for listing) and by id.
#[derive(Debug, Default, Clone)]
pub struct Topics {
    by_name: BTreeMap<String, u32>,
    by_id: HashMap<u32, TopicState>,
    next_id: u32,
}

impl Topics {
    /// Rebuild from stored topic records; `next_id` is the persisted id counter.
    pub fn from_stored(states: Vec<TopicState>, next_id: u32) -> Self {
        let mut t = Topics {
            next_id,
            ..Topics::default()
        };
        for s in states {
            t.next_id = t.next_id.max(s.id.saturating_add(1));
            t.by_name.insert(s.name.clone(), s.id);
            t.by_id.insert(s.id, s);
        }
        t.next_id = t.next_id.max(1);
        t
    }

    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    pub fn get(&self, name: &str) -> Option<&TopicState> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }

    pub fn by_id(&self, id: u32) -> Option<&TopicState> {
        self.by_id.get(&id)
    }

    pub fn by_id_mut(&mut self, id: u32) -> Option<&mut TopicState> {
        self.by_id.get_mut(&id)
    }

    pub fn get_or_create(
        &mut self,
        name: &str,
        now: u64,
        limits: Limits,
    ) -> (&mut TopicState, bool) {
        let mut created = false;
        let id = match self.by_name.get(name) {
            Some(id) => *id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.by_name.insert(name.to_string(), id);
                self.by_id
                    .insert(id, TopicState::new(id, name, now, limits));
                created = true;
                id
            }
        };
        let t = self
            .by_id
            .get_mut(&id)
            .expect("by_name and by_id hold the same topics");
        (t, created)
    }

    pub fn remove(&mut self, name: &str) -> Option<TopicState> {
        let id = self.by_name.remove(name)?;
        self.by_id.remove(&id)
    }

    /// Topics in name order.
    pub fn iter(&self) -> impl Iterator<Item = &TopicState> {
        self.by_name.values().filter_map(|id| self.by_id.get(id))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}
