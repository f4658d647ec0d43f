//! Topics: name → id, seq counters, sizes and limits, and what is known to be damaged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use mom_proto::Limits;
use serde::{Deserialize, Serialize};

use super::shards::{Shard, Shards};

/// What the broker knows of one topic. Persisted as the topic's meta record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub id: u32,
    /// Shared with the name index ([`Topics`]): one copy of each name.
    pub name: Arc<str>,
    pub created: u64,
    /// Shared ([`Topics::share_limits`]): a million topics with the server's default
    /// limits hold one copy of them.
    pub limits: Arc<Limits>,
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
    /// Interned ([`Topics::intern_owner`]): a million topics of one user hold one copy.
    #[serde(default = "no_owner")]
    pub owner: Arc<str>,
    /// A partitioned topic (2 or more): it stores nothing itself; its messages are in
    /// the topics `NAME.0` … `NAME.{N-1}` (`partitions.rs`). 0 for any other topic.
    /// (Records are MessagePack arrays: these two are always written, and a record of an
    /// older momd, without them, reads as 0.)
    #[serde(default)]
    pub partitions: u16,
    /// The copies asked for at creation (`topic create --replicas`; 0: the default).
    #[serde(default)]
    pub replicas: u8,
    /// The broker's: the last seq whose deliveries were released (a replay reads up to
    /// it). Not stored: at start, everything stored counts as released.
    #[serde(skip)]
    pub delivered_upto: u64,
}

fn no_owner() -> Arc<str> {
    Arc::from("")
}

impl TopicState {
    #[cfg(test)]
    pub fn new(id: u32, name: &str, created: u64, limits: Limits) -> Self {
        Self::with_shared(id, name, created, Arc::new(limits), no_owner())
    }

    /// A new topic with limits and owner already shared ([`Topics::get_or_create`]).
    fn with_shared(
        id: u32,
        name: &str,
        created: u64,
        limits: Arc<Limits>,
        owner: Arc<str>,
    ) -> Self {
        TopicState {
            id,
            name: Arc::from(name),
            created,
            limits,
            first_seq: 1,
            last_seq: 0,
            msgs: 0,
            bytes: 0,
            last_time: 0,
            owner,
            partitions: 0,
            replicas: 0,
            delivered_upto: 0,
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

/// Decodes stored topic states (the index's `T` records), sharing owners and limits as
/// it goes: a start reading a million states allocates their names, not a million copies
/// of the same owner and limits to be freed again (which left the allocator holding
/// 90 MB of holes between the names it kept).
#[derive(Debug, Default)]
pub struct StateDecoder {
    shared: Shared,
}

/// One copy of each owner name, and of the limits most topics have (the last ones given
/// out): what a million topics of one user with the server's defaults share.
#[derive(Debug, Default, Clone)]
struct Shared {
    owners: HashSet<Arc<str>>,
    limits: Option<Arc<Limits>>,
}

impl Shared {
    fn owner(&mut self, owner: &str) -> Arc<str> {
        if let Some(o) = self.owners.get(owner) {
            return o.clone();
        }
        let o: Arc<str> = Arc::from(owner);
        self.owners.insert(o.clone());
        o
    }

    fn limits(&mut self, limits: &Limits) -> Arc<Limits> {
        match &self.limits {
            Some(l) if **l == *limits => l.clone(),
            _ => {
                let l = Arc::new(*limits);
                self.limits = Some(l.clone());
                l
            }
        }
    }
}

impl StateDecoder {
    pub fn decode(&mut self, bytes: &[u8]) -> Result<TopicState, rmp_serde::decode::Error> {
        /// [`TopicState`] as stored, borrowing its strings from the bytes.
        #[derive(Deserialize)]
        struct Stored<'a> {
            id: u32,
            name: &'a str,
            created: u64,
            limits: Limits,
            first_seq: u64,
            last_seq: u64,
            msgs: u64,
            bytes: u64,
            last_time: u64,
            #[serde(default)]
            owner: &'a str,
            #[serde(default)]
            partitions: u16,
            #[serde(default)]
            replicas: u8,
        }
        let s: Stored<'_> = rmp_serde::from_slice(bytes)?;
        let owner = self.shared.owner(s.owner);
        let limits = self.shared.limits(&s.limits);
        Ok(TopicState {
            id: s.id,
            name: Arc::from(s.name),
            created: s.created,
            limits,
            first_seq: s.first_seq,
            last_seq: s.last_seq,
            msgs: s.msgs,
            bytes: s.bytes,
            last_time: s.last_time,
            owner,
            partitions: s.partitions,
            replicas: s.replicas,
            delivered_upto: 0,
        })
    }
}

/// All topics, by name (sorted, for listing) and by id.
/// The topics: states in one vector in id order (grown by an eighth at a time, so a
/// million topics do not pay for two million), found by id by a binary search of their
/// ids (4 bytes a topic, where a hash map took 20) and by name through an ordered index
/// sharing the states' names. A removed topic leaves a hole, closed up once they are many.
#[derive(Debug, Default, Clone)]
pub struct Topics {
    by_name: BTreeMap<Arc<str>, u32>,
    /// The id of each entry of `states`, ascending.
    ids: Vec<u32>,
    /// None where a topic was removed (no bigger than the state: the Arc is the niche).
    states: Vec<Option<TopicState>>,
    /// Holes in `states`.
    holes: usize,
    /// The node's topic counter: a new topic's id is made of it and its shard's number.
    next_id: u32,
    shards: Shards,
    /// Owner names and limits, shared by the topics.
    shared: Shared,
    /// Per topic, the seq ranges (first → last) of stored messages found damaged on disk.
    /// Kept as ranges so damage found twice (at each start, by each read) counts once.
    damaged: HashMap<u32, BTreeMap<u64, u64>>,
}

impl Topics {
    /// Rebuild from stored topic records; `next_id` is the persisted id counter.
    #[cfg(test)]
    pub fn from_stored(states: Vec<TopicState>, next_id: u32) -> Self {
        Topics::from_stored_in(states, next_id, Shards::ONE)
    }

    /// Rebuild from stored topic records, the topics spread over `shards`; `next_id` is
    /// the persisted topic counter.
    pub fn from_stored_in(mut states: Vec<TopicState>, next_id: u32, shards: Shards) -> Self {
        let mut t = Topics {
            next_id,
            shards,
            ..Topics::default()
        };
        // The states stay where they were read: no second copy of a million of them.
        // Built in bulk (sorted, then filled in order), not by a million inserts.
        t.by_name = states.iter().map(|s| (s.name.clone(), s.id)).collect();
        states.sort_unstable_by_key(|s| s.id);
        states.dedup_by_key(|s| s.id);
        t.ids = states.iter().map(|s| s.id).collect();
        for s in &mut states {
            s.delivered_upto = s.last_seq;
            t.next_id = t.next_id.max(shards.number(s.id).saturating_add(1));
            s.owner = t.intern_owner(&s.owner);
            s.limits = t.share_limits(&s.limits);
        }
        t.states = states.into_iter().map(Some).collect();
        t.next_id = t.next_id.max(1);
        t
    }

    /// The shared copy of an owner's name.
    pub fn intern_owner(&mut self, owner: &str) -> Arc<str> {
        self.shared.owner(owner)
    }

    /// A shared copy of `limits`: the last one given out when equal.
    pub fn share_limits(&mut self, limits: &Limits) -> Arc<Limits> {
        self.shared.limits(limits)
    }

    fn insert(&mut self, s: TopicState) {
        if self.states.len() == self.states.capacity() {
            let more = (self.states.capacity() / 8).max(1024);
            self.states.reserve_exact(more);
            self.ids.reserve_exact(more);
        }
        if let Some(old) = self.by_name.insert(s.name.clone(), s.id) {
            if old != s.id {
                self.take(old);
            }
        }
        match self.ids.binary_search(&s.id) {
            Ok(i) => {
                if let Some(slot) = self.states.get_mut(i) {
                    if slot.is_none() {
                        self.holes -= 1;
                    }
                    *slot = Some(s);
                }
            }
            // New topics have the highest id: this is a push.
            Err(i) => {
                self.ids.insert(i, s.id);
                self.states.insert(i, Some(s));
            }
        }
    }

    /// Take a topic's state out, leaving a hole; the holes are closed up once they are a
    /// quarter of the vector (ids stay in order).
    fn take(&mut self, id: u32) -> Option<TopicState> {
        let i = self.ids.binary_search(&id).ok()?;
        let s = self.states.get_mut(i)?.take()?;
        self.holes += 1;
        if self.holes > 64 && self.holes > self.states.len() / 4 {
            self.states.retain(Option::is_some);
            self.ids = self.states.iter().flatten().map(|s| s.id).collect();
            self.states
                .shrink_to(self.states.len() + self.states.len() / 8);
            self.holes = 0;
        }
        Some(s)
    }

    fn index_of(&self, id: u32) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    pub fn get(&self, name: &str) -> Option<&TopicState> {
        self.by_name.get(name).and_then(|id| self.by_id(*id))
    }

    pub fn by_id(&self, id: u32) -> Option<&TopicState> {
        self.states.get(self.index_of(id)?)?.as_ref()
    }

    pub fn by_id_mut(&mut self, id: u32) -> Option<&mut TopicState> {
        let i = self.index_of(id)?;
        self.states.get_mut(i)?.as_mut()
    }

    /// The topic named `name`, created (owned by `owner`) if there is none.
    pub fn get_or_create(
        &mut self,
        name: &str,
        now: u64,
        limits: Limits,
        owner: &str,
    ) -> (&mut TopicState, bool) {
        let mut created = false;
        let id = match self.by_name.get(name) {
            Some(id) => *id,
            None => {
                let shard = self.place(name);
                let mut id = self.shards.id(shard, self.next_id);
                self.next_id = self.next_id.wrapping_add(1);
                // Past 2^26 topics made, a shard's numbers come round again: skip those
                // still in use.
                while self.index_of(id).is_some() {
                    id = self.shards.id(shard, self.next_id);
                    self.next_id = self.next_id.wrapping_add(1);
                }
                let limits = self.share_limits(&limits);
                let owner = self.intern_owner(owner);
                self.insert(TopicState::with_shared(id, name, now, limits, owner));
                created = true;
                id
            }
        };
        let t = self
            .by_id_mut(id)
            .expect("by_name and the states hold the same topics");
        (t, created)
    }

    pub fn shards(&self) -> Shards {
        self.shards
    }

    /// The shard a new topic named `name` joins ([`Shards::place_name`]).
    pub fn place(&self, name: &str) -> Shard {
        self.shards.place_name(name)
    }

    pub fn remove(&mut self, name: &str) -> Option<TopicState> {
        let id = self.by_name.remove(name)?;
        self.damaged.remove(&id);
        self.take(id)
    }

    /// Topics in name order.
    pub fn iter(&self) -> impl Iterator<Item = &TopicState> {
        self.by_name.values().filter_map(|id| self.by_id(*id))
    }

    /// Every topic, in no particular order (cheaper than [`Topics::iter`] over them all).
    pub fn iter_unordered(&self) -> impl Iterator<Item = &TopicState> {
        self.states.iter().flatten()
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
            .filter_map(|(_, id)| self.by_id(*id))
    }

    /// Messages and bytes stored, all topics together.
    pub fn stored(&self) -> (u64, u64) {
        self.iter_unordered()
            .fold((0, 0), |(m, b), t| (m + t.msgs, b + t.bytes))
    }

    /// Seqs `first..=last` of topic `id` were found damaged on disk.
    pub fn note_damage(&mut self, id: u32, first: u64, last: u64) {
        if self.by_id(id).is_none() || last < first {
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
        let (Some(ranges), Some(t)) = (self.damaged.get(&id), self.by_id(id)) else {
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
        self.states.len() - self.holes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Topics {
        let mut t = Topics::default();
        for n in names {
            let (s, _) = t.get_or_create(n, 0, Limits::default(), "");
            s.record_append(10, 100, 0);
        }
        t
    }

    /// Removing topics moves others inside the dense vector: every lookup still finds
    /// each remaining topic, by id and by name, and owners are shared.
    #[test]
    fn removals_keep_every_lookup_right() {
        let names: Vec<String> = (0..200).map(|i| format!("t.{i}")).collect();
        let mut t = Topics::default();
        for n in &names {
            t.get_or_create(n, 0, Limits::default(), "alice");
        }
        for n in names.iter().step_by(3) {
            assert!(t.remove(n).is_some());
        }
        assert!(t.remove("t.0").is_none());
        let alice = t.intern_owner("alice");
        for (i, n) in names.iter().enumerate() {
            let got = t.get(n);
            assert_eq!(got.is_some(), i % 3 != 0, "{n}");
            if let Some(s) = got {
                assert_eq!(&*s.name, n.as_str());
                assert_eq!(t.by_id(s.id).map(|x| &*x.name), Some(n.as_str()));
                assert!(Arc::ptr_eq(&s.owner, &alice));
            }
        }
        assert_eq!(t.len(), t.iter().count());
        assert_eq!(t.len(), t.iter_unordered().count());
        // A new topic after removals gets a fresh id and is found.
        let id = t.get_or_create("new", 0, Limits::default(), "bob").0.id;
        assert_eq!(t.by_id(id).map(|x| &*x.name), Some("new"));
    }

    /// The decoder reads what the store wrote, in its compact and its named forms, and
    /// shares owners and limits between the states it reads.
    #[test]
    fn the_state_decoder_reads_stored_states_and_shares_owners() {
        let mut a = TopicState::new(7, "devices.d1", 5, Limits::default());
        a.owner = Arc::from("alice");
        a.record_append(3, 30, 9);
        let mut b = TopicState::new(8, "devices.d2", 6, Limits::default());
        b.owner = Arc::from("alice");
        let mut old = TopicState::new(9, "old", 1, Limits::default());
        Arc::make_mut(&mut old.limits).max_msgs = 10;
        let mut d = StateDecoder::default();
        let got_a = d.decode(&rmp_serde::to_vec(&a).unwrap()).unwrap();
        let got_b = d.decode(&rmp_serde::to_vec_named(&b).unwrap()).unwrap();
        let got_old = d.decode(&rmp_serde::to_vec(&old).unwrap()).unwrap();
        assert_eq!(got_a, a);
        assert_eq!(got_b, b);
        assert_eq!(got_old, old);
        assert!(Arc::ptr_eq(&got_a.owner, &got_b.owner));
        assert!(Arc::ptr_eq(&got_a.limits, &got_b.limits));
        assert!(d.decode(b"\x93\x01").is_err());
    }

    #[test]
    fn range_from_walks_names_in_order_from_a_bound() {
        let t = topics(&["b", "a.x", "a", "c"]);
        let names = |b: Bound<&str>| {
            t.range_from(b)
                .map(|s| s.name.to_string())
                .collect::<Vec<_>>()
        };
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

    #[test]
    fn a_new_topic_s_id_names_the_shard_it_is_placed_in() {
        let shards = Shards::new(3).unwrap();
        let mut t = Topics::from_stored_in(Vec::new(), 1, shards);
        let parent = t.get_or_create("clicks", 0, Limits::default(), "").0.id;
        if let Some(p) = t.by_id_mut(parent) {
            p.partitions = 6;
        }
        let mut used = std::collections::BTreeSet::new();
        for n in 0..6 {
            let name = format!("clicks.{n}");
            let id = t.get_or_create(&name, 0, Limits::default(), "").0.id;
            assert_eq!(shards.of(id), t.place(&name));
            assert_eq!(t.place(&name), shards.place(&name, Some(("clicks", n))));
            used.insert(shards.of(id));
        }
        assert_eq!(used.len(), 3, "the partitions spread over every shard");
        // A name like a partition's is placed as one: every node places it the same
        // from its name alone.
        assert_eq!(
            t.place("clicks.9"),
            shards.place("clicks.9", Some(("clicks", 9)))
        );
        assert_eq!(t.place("clicks.09"), shards.place("clicks.09", None));
        let id = t.get_or_create("orders", 0, Limits::default(), "").0.id;
        assert_eq!(shards.of(id), shards.place("orders", None));
        // Reloaded, the counter goes on past every topic's number.
        let states: Vec<TopicState> = ["clicks", "orders"]
            .iter()
            .filter_map(|n| t.get(n).cloned())
            .collect();
        let again = Topics::from_stored_in(states, 1, shards);
        assert_eq!(again.shards(), shards);
        assert!(again.next_id() > shards.number(id));
    }
}
