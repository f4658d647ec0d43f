//! Topics: name → id, seq counters, sizes and limits, and what is known to be damaged.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

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
    /// The user who created it (empty for topics made before owners were recorded).
    #[serde(default)]
    pub owner: String,
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
            owner: String::new(),
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
    /// Per topic, the seq ranges (first → last) of stored messages found damaged on disk.
    /// Kept as ranges so damage found twice (at each start, by each read) counts once.
    damaged: HashMap<u32, BTreeMap<u64, u64>>,
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
        self.damaged.remove(&id);
        self.by_id.remove(&id)
    }

    /// Topics in name order.
    pub fn iter(&self) -> impl Iterator<Item = &TopicState> {
        self.by_name.values().filter_map(|id| self.by_id.get(id))
    }

    /// Every topic, in no particular order (cheaper than [`Topics::iter`] over them all).
    pub fn iter_unordered(&self) -> impl Iterator<Item = &TopicState> {
        self.by_id.values()
    }

    /// The topics whose names start with `prefix`, in name order: costs them, not the
    /// number of topics.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a TopicState> + 'a {
        self.range_from(Bound::Included(prefix))
            .take_while(move |t| t.name.starts_with(prefix))
    }

    /// Topics in name order from `start` on: what a page of a listing walks, costing the
    /// page, not the number of topics.
    pub fn range_from<'a>(
        &'a self,
        start: Bound<&'a str>,
    ) -> impl Iterator<Item = &'a TopicState> + 'a {
        self.by_name
            .range::<str, _>((start, Bound::Unbounded))
            .filter_map(|(_, id)| self.by_id.get(id))
    }

    /// Messages and bytes stored, all topics together.
    pub fn stored(&self) -> (u64, u64) {
        self.by_id
            .values()
            .fold((0, 0), |(m, b), t| (m + t.msgs, b + t.bytes))
    }

    /// Seqs `first..=last` of topic `id` were found damaged on disk.
    pub fn note_damage(&mut self, id: u32, first: u64, last: u64) {
        if !self.by_id.contains_key(&id) || last < first {
            return;
        }
        let ranges = self.damaged.entry(id).or_default();
        // Merge with every range it touches, so each seq counts once.
        let (mut lo, mut hi) = (first, last);
        let touching: Vec<(u64, u64)> = ranges
            .range(..=hi.saturating_add(1))
            .filter(|(_, l)| l.saturating_add(1) >= lo)
            .map(|(f, l)| (*f, *l))
            .collect();
        for (f, l) in touching {
            ranges.remove(&f);
            lo = lo.min(f);
            hi = hi.max(l);
        }
        ranges.insert(lo, hi);
    }

    /// Stored messages of topic `id` known to be damaged (those below its first seq, gone
    /// by retention or purge, no longer count).
    pub fn damaged(&self, id: u32) -> u64 {
        let (Some(ranges), Some(t)) = (self.damaged.get(&id), self.by_id.get(&id)) else {
            return 0;
        };
        ranges
            .iter()
            .map(|(f, l)| {
                let f = (*f).max(t.first_seq);
                let l = (*l).min(t.last_seq);
                if l >= f {
                    l - f + 1
                } else {
                    0
                }
            })
            .sum()
    }

    /// Damaged messages, all topics together.
    pub fn damaged_total(&self) -> u64 {
        self.damaged.keys().map(|id| self.damaged(*id)).sum()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Topics {
        let mut t = Topics::default();
        for n in names {
            let (s, _) = t.get_or_create(n, 0, Limits::default());
            s.record_append(10, 100, 0);
        }
        t
    }

    #[test]
    fn range_from_walks_names_in_order_from_a_bound() {
        let t = topics(&["b", "a.x", "a", "c"]);
        let names = |b: Bound<&str>| t.range_from(b).map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(Bound::Unbounded), ["a", "a.x", "b", "c"]);
        assert_eq!(names(Bound::Excluded("a.x")), ["b", "c"]);
        assert_eq!(names(Bound::Included("a.x")), ["a.x", "b", "c"]);
        assert_eq!(names(Bound::Excluded("zzz")), Vec::<String>::new());
    }

    #[test]
    fn damage_counts_each_seq_once_and_only_while_stored() {
        let mut t = topics(&["a", "b"]);
        let a = t.get("a").map(|s| s.id).unwrap();
        t.note_damage(a, 3, 4);
        t.note_damage(a, 4, 6);
        t.note_damage(a, 3, 3);
        t.note_damage(a, 9, 9);
        assert_eq!(t.damaged(a), 5);
        t.note_damage(a, 7, 8);
        assert_eq!(t.damaged(a), 7, "adjacent ranges merge");
        assert_eq!(t.damaged_total(), 7);
        // Retention took seqs 1-5: their damage is gone with them.
        t.by_id_mut(a).unwrap().record_trim(6, 5, 50);
        assert_eq!(t.damaged(a), 4);
        // Damage of an unknown topic is not kept.
        t.note_damage(999, 1, 1);
        assert_eq!(t.damaged_total(), 4);
        t.remove("a");
        assert_eq!(t.damaged_total(), 0);
    }
}
