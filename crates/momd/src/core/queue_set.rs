//! Every queue by name, with two indexes that find the queues a topic concerns without
//! looking at every queue: the binding patterns in a [`PatternIndex`] (which queues a new
//! topic joins) and, per topic, the queues holding a cursor on it (whom a publish wakes,
//! whose cursors retention must respect). A publish or the creation of a topic then costs
//! the topic's depth and the queues bound to it, not the number of queues.
//!
//! The indexes follow the queues only because every change of a queue's bindings or bound
//! topics goes through this type ([`QueueSet::bind_topic`], [`QueueSet::unbind_topic`],
//! [`QueueSet::change_bindings`], [`QueueSet::redrive`], insert and remove): the `Queue`
//! methods that change them are private to `core`.

use std::collections::{btree_map, BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use super::queues::{ConsumerId, MsgRef, Queue, QueueRecord, TopicView};
use super::shards::{Shard, Shards};
use super::trie::PatternIndex;

#[derive(Debug, Default)]
pub struct QueueSet {
    queues: BTreeMap<String, Queue>,
    /// Each queue's number in `patterns` (the pattern index holds numbers, not names).
    ids: HashMap<Arc<str>, u64>,
    names: HashMap<u64, Arc<str>>,
    next_id: u64,
    /// The distinct patterns of each queue's bindings, by queue number.
    patterns: PatternIndex,
    /// Per topic id, the queues with a cursor on it, sorted by name (the order the broker
    /// has always served them in).
    bound: HashMap<u32, Vec<Arc<str>>>,
    /// Queues that may hold messages of a topic they have no cursor on: a redriven dead
    /// letter, or such a state loaded at start. Rare; each is asked about every topic.
    strays: BTreeSet<Arc<str>>,
    /// How the node's topics are spread over shards: every queue has a part in each.
    shards: Shards,
}

/// Holds a message of a topic it has no cursor on.
fn is_stray(q: &Queue) -> bool {
    q.unacked
        .keys()
        .chain(q.retry.keys())
        .any(|m| !q.cursors.contains_key(&m.0))
}

impl QueueSet {
    /// An empty set whose queues spread over `shards`.
    pub fn new(shards: Shards) -> Self {
        QueueSet {
            shards,
            ..QueueSet::default()
        }
    }

    #[allow(dead_code)]
    pub fn shards(&self) -> Shards {
        self.shards
    }

    pub fn get(&self, name: &str) -> Option<&Queue> {
        self.queues.get(name)
    }

    /// The queue, to deliver, settle or change its settings. Its bindings and bound topics
    /// change only through the methods of this type.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Queue> {
        self.queues.get_mut(name)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.queues.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    pub fn keys(&self) -> btree_map::Keys<'_, String, Queue> {
        self.queues.keys()
    }

    pub fn values(&self) -> btree_map::Values<'_, String, Queue> {
        self.queues.values()
    }

    pub fn iter(&self) -> btree_map::Iter<'_, String, Queue> {
        self.queues.iter()
    }

    /// Queues by name from `start` on.
    pub fn range_from(&self, start: Bound<&str>) -> btree_map::Range<'_, String, Queue> {
        self.queues.range::<str, _>((start, Bound::Unbounded))
    }

    /// Add a queue (a new one, or one loaded at start), replacing one of the same name.
    pub fn insert(&mut self, mut q: Queue) {
        q.set_shards(self.shards);
        let name: Arc<str> = Arc::from(q.def.name.as_str());
        self.remove(&name);
        self.next_id += 1;
        let id = self.next_id;
        for p in q.all_bindings() {
            self.patterns.insert(p, id);
        }
        for t in q.cursors.keys() {
            self.add_bound(*t, &name);
        }
        if is_stray(&q) {
            self.strays.insert(name.clone());
        }
        self.ids.insert(name.clone(), id);
        self.names.insert(id, name.clone());
        self.queues.insert(q.def.name.clone(), q);
    }

    pub fn remove(&mut self, name: &str) -> Option<Queue> {
        let q = self.queues.remove(name)?;
        if let Some(id) = self.ids.remove(name) {
            self.names.remove(&id);
            for p in q.all_bindings() {
                self.patterns.remove(p, id);
            }
        }
        for t in q.cursors.keys() {
            self.remove_bound(*t, name);
        }
        self.strays.remove(name);
        Some(q)
    }

    /// Change the binding patterns of queue `name` (`change` edits the list in place);
    /// the pattern index follows. Topics are not bound or unbound here: the caller does
    /// that with [`QueueSet::bind_topic`] and [`QueueSet::unbind_topic`].
    pub fn change_bindings(&mut self, name: &str, change: impl FnOnce(&mut Vec<String>)) {
        self.change_bindings_in(name, 0, change);
    }

    /// [`QueueSet::change_bindings`] of shard `shard`'s definition.
    pub fn change_bindings_in(
        &mut self,
        name: &str,
        shard: Shard,
        change: impl FnOnce(&mut Vec<String>),
    ) {
        let (Some(q), Some(id)) = (self.queues.get_mut(name), self.ids.get(name)) else {
            return;
        };
        for p in q.all_bindings() {
            self.patterns.remove(p, *id);
        }
        change(&mut q.def_in_mut(shard).bindings);
        for p in q.all_bindings() {
            self.patterns.insert(p, *id);
        }
    }

    /// Add the queues stored (a single node's records, or each shard's part of each queue
    /// of a cluster node), at time `now`.
    pub fn load(&mut self, records: Vec<QueueRecord>, now: u64) {
        let mut by_name: BTreeMap<String, Queue> = BTreeMap::new();
        for r in records {
            match by_name.get_mut(&r.def.name) {
                Some(q) => q.add_shard_record(r.shard, r),
                None if r.exact.is_some() => {
                    let mut q = Queue::new(r.def.clone());
                    q.set_shards(self.shards);
                    q.add_shard_record(r.shard, r);
                    by_name.insert(q.def.name.clone(), q);
                }
                None => {
                    let q = Queue::from_record(r, now);
                    by_name.insert(q.def.name.clone(), q);
                }
            }
        }
        for q in by_name.into_values() {
            self.insert(q);
        }
    }

    /// Bind topic `topic` to queue `name` from seq `start` (nothing if already bound).
    pub fn bind_topic(&mut self, name: &str, topic: u32, start: u64) {
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        if q.cursors.contains_key(&topic) {
            return;
        }
        q.bind_topic(topic, start);
        if let Some((name, _)) = self.ids.get_key_value(name) {
            let name = name.clone();
            self.add_bound(topic, &name);
        }
    }

    /// Unbind topic `topic` from queue `name` (see [`Queue::unbind_topic`]).
    pub fn unbind_topic(
        &mut self,
        name: &str,
        topic: u32,
        view: &impl TopicView,
    ) -> Vec<ConsumerId> {
        let Some(q) = self.queues.get_mut(name) else {
            return Vec::new();
        };
        let was_bound = q.cursors.contains_key(&topic);
        let freed = q.unbind_topic(topic, view);
        if was_bound {
            self.remove_bound(topic, name);
        }
        freed
    }

    /// Take a dead letter back into queue `name` (see [`Queue::redrive`]).
    pub fn redrive(&mut self, name: &str, m: MsgRef, now: u64) -> bool {
        let Some(q) = self.queues.get_mut(name) else {
            return false;
        };
        let taken = q.redrive(m, now);
        if taken && !q.cursors.contains_key(&m.0) {
            if let Some((name, _)) = self.ids.get_key_value(name) {
                self.strays.insert(name.clone());
            }
        }
        taken
    }

    /// A topic was created: every queue with a pattern matching `name` binds it from seq 1.
    /// Returns the names of those queues.
    pub fn bind_new_topic(&mut self, topic: u32, name: &str) -> Vec<String> {
        let mut matching = self.matching(name);
        if self.shards.count() > 1 {
            // The index holds every shard's patterns: the topic's shard's own decide.
            let shard = self.shards.of(topic);
            let queues = &self.queues;
            matching.retain(|q| {
                queues.get(&**q).is_some_and(|q| {
                    (q.def_in(shard).bindings.iter()).any(|p| mom_proto::topic::matches(p, name))
                })
            });
        }
        for q in &matching {
            self.bind_topic(q, topic, 1);
        }
        matching.iter().map(|q| q.to_string()).collect()
    }

    /// The queues with a pattern matching topic `name`, by name, from the pattern index.
    pub(super) fn matching(&self, name: &str) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self
            .patterns
            .matching(name)
            .into_iter()
            .filter_map(|id| self.names.get(&id).cloned())
            .collect();
        out.sort_unstable();
        out
    }

    /// The queues with a cursor on `topic`, by name.
    pub fn bound_to(&self, topic: u32) -> &[Arc<str>] {
        self.bound.get(&topic).map_or(&[], Vec::as_slice)
    }

    /// How many queues have a cursor on `topic`.
    pub fn bound_count(&self, topic: u32) -> u64 {
        self.bound_to(topic).len() as u64
    }

    /// Every queue that may hold a message of `topic` (bound to it, or holding one of its
    /// messages all the same), by name: the others have nothing of it.
    pub fn referring(&self, topic: u32) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self.bound_to(topic).to_vec();
        if !self.strays.is_empty() {
            out.extend(self.strays.iter().cloned());
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// The oldest seq of `topic` some queue still needs (retention keeps it).
    pub fn floor(&self, topic: u32) -> Option<u64> {
        let bound = self.bound_to(topic).iter();
        bound
            .chain(self.strays.iter())
            .filter_map(|n| self.queues.get(&**n)?.floor(topic))
            .min()
    }

    /// Stop asking queues that hold nothing outside their bound topics any more about
    /// every topic.
    pub fn settle_strays(&mut self) {
        let queues = &self.queues;
        self.strays
            .retain(|n| queues.get(&**n).is_some_and(is_stray));
    }

    /// The queues of `topic`'s name whose patterns match it, found by a scan of every
    /// queue: what the index must answer (tests).
    #[cfg(test)]
    pub(super) fn matching_by_scan(&self, name: &str) -> Vec<String> {
        self.queues
            .values()
            .filter(|q| {
                q.def
                    .bindings
                    .iter()
                    .any(|p| mom_proto::topic::matches(p, name))
            })
            .map(|q| q.def.name.clone())
            .collect()
    }

    fn add_bound(&mut self, topic: u32, name: &Arc<str>) {
        let v = self.bound.entry(topic).or_default();
        if let Err(i) = v.binary_search(name) {
            v.insert(i, name.clone());
        }
    }

    fn remove_bound(&mut self, topic: u32, name: &str) {
        if let Some(v) = self.bound.get_mut(&topic) {
            if let Ok(i) = v.binary_search_by(|n| (**n).cmp(name)) {
                v.remove(i);
            }
            if v.is_empty() {
                self.bound.remove(&topic);
            }
        }
    }
}
