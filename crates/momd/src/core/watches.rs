//! Live watches: which watch ids want which patterns, which of them only look (passive),
//! and which share their messages in a group.
//!
//! A group is keyed by its name and its pattern set (sorted, duplicates removed: the order
//! a client lists patterns in does not change what they match). Each message of a grouped
//! watch goes to one member, round robin; [`Watches::pick`] makes that choice so it can be
//! tested without sockets.

use std::collections::{BTreeMap, HashMap};

use super::trie::PatternIndex;

pub type WatchId = u64;
pub type GroupId = u64;

#[derive(Debug, Clone)]
struct WatchEntry {
    patterns: Vec<String>,
    passive: bool,
    group: Option<GroupId>,
}

#[derive(Debug, Clone)]
struct Group {
    key: (String, Vec<String>),
    /// Members in the order they joined.
    members: Vec<WatchId>,
    /// Index into `members` of the next one to try.
    next: usize,
}

impl Group {
    fn patterns(&self) -> &[String] {
        &self.key.1
    }
}

/// Who a message of one topic goes to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Targets {
    /// Watches outside any group: each gets every message.
    pub solo: Vec<WatchId>,
    /// Groups: each message goes to one member (see [`Watches::pick`]).
    pub groups: Vec<GroupId>,
}

#[derive(Debug, Default, Clone)]
pub struct Watches {
    watches: BTreeMap<WatchId, WatchEntry>,
    groups: BTreeMap<GroupId, Group>,
    group_ids: HashMap<(String, Vec<String>), GroupId>,
    /// The patterns of watches outside any group, by watch id.
    solo_index: PatternIndex,
    /// The patterns of groups, by group id.
    group_index: PatternIndex,
    /// Patterns held by all watches together, as they were asked for.
    patterns_held: usize,
    next_id: WatchId,
    next_group: GroupId,
    /// Goes up with every watch added or removed (`changes`).
    changes: u64,
}

/// Who watches on one node, as other nodes need to know it to count watchers (cluster mode):
/// each set of patterns with how many watches outside any group hold it and the names of
/// the groups on it. Passive watches, and groups of passive members only, are left out.
pub type Interest = Vec<InterestEntry>;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InterestEntry {
    pub patterns: Vec<String>,
    pub watchers: u32,
    pub groups: Vec<String>,
}

/// A group: its name and its patterns as a set.
pub type GroupKey = (String, Vec<String>);

/// The active watchers of a topic: watches outside any group, and the groups (which count
/// once each, however many members and nodes they have).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watchers {
    pub solo: u64,
    pub groups: Vec<GroupKey>,
}

impl Watchers {
    /// As `publish_ok` counts them.
    pub fn count(&self) -> u64 {
        self.solo + self.groups.len() as u64
    }

    /// These and `other` together, a group counted once.
    pub fn add(&mut self, other: Watchers) {
        self.solo += other.solo;
        self.groups.extend(other.groups);
        self.groups.sort_unstable();
        self.groups.dedup();
    }
}

/// A pattern list as a set: what a watch is indexed under.
fn pattern_set(patterns: &[String]) -> Vec<&str> {
    let mut ps: Vec<&str> = patterns.iter().map(String::as_str).collect();
    ps.sort_unstable();
    ps.dedup();
    ps
}

/// The key of a group: its name and its patterns as a set.
fn group_key(name: &str, patterns: &[String]) -> (String, Vec<String>) {
    let mut ps = patterns.to_vec();
    ps.sort_unstable();
    ps.dedup();
    (name.to_string(), ps)
}

impl Watches {
    /// Register a watch; patterns must already be validated. A watch with a `group` joins
    /// the group of that name and pattern set (created if needed).
    pub fn add(&mut self, patterns: Vec<String>, passive: bool, group: Option<&str>) -> WatchId {
        self.next_id += 1;
        self.changes += 1;
        let id = self.next_id;
        let group = group.map(|name| {
            let key = group_key(name, &patterns);
            let gid = match self.group_ids.get(&key) {
                Some(g) => *g,
                None => {
                    self.next_group += 1;
                    let g = self.next_group;
                    for p in &key.1 {
                        self.group_index.insert(p, g);
                    }
                    self.group_ids.insert(key.clone(), g);
                    self.groups.insert(
                        g,
                        Group {
                            key,
                            members: Vec::new(),
                            next: 0,
                        },
                    );
                    g
                }
            };
            if let Some(g) = self.groups.get_mut(&gid) {
                g.members.push(id);
            }
            gid
        });
        if group.is_none() {
            for p in pattern_set(&patterns) {
                self.solo_index.insert(p, id);
            }
        }
        self.patterns_held += patterns.len();
        self.watches.insert(
            id,
            WatchEntry {
                patterns,
                passive,
                group,
            },
        );
        id
    }

    pub fn remove(&mut self, id: WatchId) -> bool {
        let Some(w) = self.watches.remove(&id) else {
            return false;
        };
        self.changes += 1;
        self.patterns_held -= w.patterns.len();
        if w.group.is_none() {
            for p in pattern_set(&w.patterns) {
                self.solo_index.remove(p, id);
            }
        }
        if let Some(gid) = w.group {
            let empty = match self.groups.get_mut(&gid) {
                Some(g) => {
                    if let Some(i) = g.members.iter().position(|m| *m == id) {
                        g.members.remove(i);
                        // Keep the rotation where it was for the members that remain.
                        if i < g.next {
                            g.next -= 1;
                        }
                    }
                    if g.next >= g.members.len() {
                        g.next = 0;
                    }
                    g.members.is_empty()
                }
                None => false,
            };
            if empty {
                if let Some(g) = self.groups.remove(&gid) {
                    for p in g.patterns() {
                        self.group_index.remove(p, gid);
                    }
                    self.group_ids.remove(&g.key);
                }
            }
        }
        true
    }

    pub fn get(&self, id: WatchId) -> Option<&[String]> {
        self.watches.get(&id).map(|w| w.patterns.as_slice())
    }

    /// Patterns held by all watches together (each watch's list as it was asked for).
    pub fn patterns_held(&self) -> usize {
        self.patterns_held
    }

    /// Nodes of the pattern indexes: what matching costs in memory (~170 bytes each).
    pub fn index_nodes(&self) -> usize {
        self.solo_index.nodes() + self.group_index.nodes()
    }

    /// Every watch whose patterns match `name`, grouped or not: who is looking. Ascending.
    pub fn matching(&self, name: &str) -> Vec<WatchId> {
        let mut out = Vec::new();
        self.solo_index.matches(name, &mut out);
        for gid in self.group_index.matching(name) {
            if let Some(g) = self.groups.get(&gid) {
                out.extend_from_slice(&g.members);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Where a message of topic `name` goes: the ungrouped watches and the groups.
    pub fn targets(&self, name: &str) -> Targets {
        Targets {
            solo: self.solo_index.matching(name),
            groups: self.group_index.matching(name),
        }
    }

    /// Every watch matching `name`, passive ones included: is anyone waiting on it at all
    /// (a reply inbox stays while its requester watches it, however it watches).
    pub fn count_matching(&self, name: &str) -> u64 {
        self.matching(name).len() as u64
    }

    /// Watchers of `name` as `publish_ok` and `topic_info` report them (and as momctl's
    /// "no responders" reads them): passive watches do not count, and a group counts once
    /// (it gets each message once) if any of its members is not passive.
    pub fn count_active(&self, name: &str) -> u64 {
        self.active(name).count()
    }

    /// The active watchers of `name` (see [`Watchers`]).
    pub fn active(&self, name: &str) -> Watchers {
        let active = |id: &WatchId| self.watches.get(id).is_some_and(|w| !w.passive);
        let solo = self
            .solo_index
            .matching(name)
            .iter()
            .filter(|id| active(id))
            .count();
        let groups = self
            .group_index
            .matching(name)
            .iter()
            .filter_map(|gid| self.groups.get(gid))
            .filter(|g| g.members.iter().any(active))
            .map(|g| g.key.clone())
            .collect();
        Watchers {
            solo: solo as u64,
            groups,
        }
    }

    /// How many times watches were added or removed: what changed since `interest` was last
    /// taken.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The active watches as pattern sets with their watcher counts (see [`Interest`]):
    /// summed over every node's, they count what `count_active` counts on one node.
    pub fn interest(&self) -> Interest {
        let mut sets: BTreeMap<Vec<String>, InterestEntry> = BTreeMap::new();
        for w in self.watches.values() {
            if w.passive || w.group.is_some() {
                continue;
            }
            let set: Vec<String> = pattern_set(&w.patterns)
                .into_iter()
                .map(str::to_string)
                .collect();
            sets.entry(set).or_default().watchers += 1;
        }
        for g in self.groups.values() {
            let active = g
                .members
                .iter()
                .any(|id| self.watches.get(id).is_some_and(|w| !w.passive));
            if active {
                let e = sets.entry(g.patterns().to_vec()).or_default();
                e.groups.push(g.key.0.clone());
            }
        }
        sets.into_iter()
            .map(|(patterns, e)| InterestEntry { patterns, ..e })
            .collect()
    }

    /// The name and pattern set of group `gid`.
    pub fn group_key(&self, gid: GroupId) -> Option<&GroupKey> {
        self.groups.get(&gid).map(|g| &g.key)
    }

    /// Every group by its name and pattern set, with how many members it has (passive ones
    /// too: they get their share of its messages).
    pub fn group_sizes(&self) -> BTreeMap<GroupKey, u32> {
        self.groups
            .values()
            .map(|g| (g.key.clone(), g.members.len() as u32))
            .collect()
    }

    /// Choose the member of group `gid` that gets the next message: members are tried in
    /// turn from where the rotation stands, and the first that `accept`s it (a member whose
    /// connection has room takes the message) gets it, and the rotation moves past it.
    /// When none accepts, the message goes to no one and the member whose turn it was is
    /// returned with `false` (it counts the skipped message); the rotation moves on.
    pub fn pick(
        &mut self,
        gid: GroupId,
        mut accept: impl FnMut(WatchId) -> bool,
    ) -> Option<(WatchId, bool)> {
        let g = self.groups.get_mut(&gid)?;
        let n = g.members.len();
        if n == 0 {
            return None;
        }
        let start = g.next % n;
        for k in 0..n {
            let i = (start + k) % n;
            let w = *g.members.get(i)?;
            if accept(w) {
                g.next = (i + 1) % n;
                return Some((w, true));
            }
        }
        let w = *g.members.get(start)?;
        g.next = (start + 1) % n;
        Some((w, false))
    }

    /// The group a watch belongs to.
    #[cfg(test)]
    pub fn group_of(&self, id: WatchId) -> Option<GroupId> {
        self.watches.get(&id)?.group
    }
}

/// Finds the watchers of a topic in an [`Interest`] (another node's, in cluster mode).
#[derive(Debug, Default)]
pub struct InterestIndex {
    index: PatternIndex,
    entries: Interest,
}

impl InterestIndex {
    pub fn new(interest: Interest) -> InterestIndex {
        let mut index = PatternIndex::default();
        for (i, e) in interest.iter().enumerate() {
            for p in &e.patterns {
                index.insert(p, i as u64);
            }
        }
        InterestIndex {
            index,
            entries: interest,
        }
    }

    /// The watchers of `name`, as [`Watches::active`] finds them.
    pub fn watchers(&self, name: &str) -> Watchers {
        let mut sets = self.index.matching(name);
        sets.sort_unstable();
        sets.dedup();
        let mut w = Watchers::default();
        for e in sets.iter().filter_map(|i| self.entries.get(*i as usize)) {
            w.solo += u64::from(e.watchers);
            let keys = e.groups.iter().map(|g| (g.clone(), e.patterns.clone()));
            w.groups.extend(keys);
        }
        w.groups.sort_unstable();
        w.groups.dedup();
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What another node learns of this one's watches counts what this node counts.
        #[test]
        fn an_interest_counts_what_the_watches_count(
            watches in proptest::collection::vec(
                (
                    proptest::collection::vec(crate::core::trie::tests::pattern(), 1..3),
                    any::<bool>(),
                    proptest::option::of(0u8..3),
                ),
                0..12,
            ),
            gone in proptest::collection::vec(any::<bool>(), 12),
            topics in proptest::collection::vec(crate::core::trie::tests::topic_name(), 1..8),
        ) {
            let mut w = Watches::default();
            let ids: Vec<WatchId> = watches
                .into_iter()
                .map(|(ps, passive, g)| {
                    w.add(ps, passive, g.map(|g| format!("g{g}")).as_deref())
                })
                .collect();
            for (id, gone) in ids.iter().zip(gone) {
                if gone {
                    w.remove(*id);
                }
            }
            let index = InterestIndex::new(w.interest());
            for t in &topics {
                let mut want = w.active(t);
                want.groups.sort_unstable();
                prop_assert_eq!(index.watchers(t), want, "topic {}", t);
            }
        }
    }

    fn ps(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_group_is_its_name_and_its_pattern_set() {
        let mut w = Watches::default();
        let a = w.add(ps(&["x", "y"]), false, Some("g"));
        let b = w.add(ps(&["y", "x", "x"]), false, Some("g"));
        let c = w.add(ps(&["x"]), false, Some("g"));
        let d = w.add(ps(&["x", "y"]), false, Some("h"));
        assert_eq!(w.group_of(a), w.group_of(b));
        assert_ne!(w.group_of(a), w.group_of(c));
        assert_ne!(w.group_of(a), w.group_of(d));
        let t = w.targets("x");
        assert!(t.solo.is_empty());
        assert_eq!(t.groups.len(), 3);
        assert_eq!(w.matching("x").len(), 4);
    }

    #[test]
    fn group_members_take_turns_and_a_full_one_is_passed_over() {
        let mut w = Watches::default();
        let a = w.add(ps(&["t"]), false, Some("g"));
        let b = w.add(ps(&["t"]), false, Some("g"));
        let c = w.add(ps(&["t"]), false, Some("g"));
        let g = w.group_of(a).unwrap();
        let turns: Vec<WatchId> = (0..6).map(|_| w.pick(g, |_| true).unwrap().0).collect();
        assert_eq!(turns, vec![a, b, c, a, b, c]);
        // b is slow: its turns go to the next member.
        let turns: Vec<WatchId> = (0..4).map(|_| w.pick(g, |m| m != b).unwrap().0).collect();
        assert_eq!(turns, vec![a, c, a, c]);
        // Nobody has room: the member whose turn it was counts the skip.
        assert_eq!(w.pick(g, |_| false), Some((a, false)));
        assert_eq!(w.pick(g, |_| false), Some((b, false)));
        assert_eq!(w.pick(g, |_| true), Some((c, true)));
    }

    #[test]
    fn leaving_keeps_the_rotation_and_the_last_member_ends_the_group() {
        let mut w = Watches::default();
        let a = w.add(ps(&["t"]), false, Some("g"));
        let b = w.add(ps(&["t"]), false, Some("g"));
        let c = w.add(ps(&["t"]), false, Some("g"));
        let g = w.group_of(a).unwrap();
        assert_eq!(w.pick(g, |_| true), Some((a, true)));
        assert!(w.remove(a));
        assert_eq!(w.pick(g, |_| true), Some((b, true)));
        assert!(w.remove(c));
        assert_eq!(w.pick(g, |_| true), Some((b, true)));
        assert!(w.remove(b));
        assert_eq!(w.pick(g, |_| true), None);
        assert!(w.targets("t").groups.is_empty());
        // The same key later is a new, empty group.
        let d = w.add(ps(&["t"]), false, Some("g"));
        assert_eq!(w.pick(w.group_of(d).unwrap(), |_| true), Some((d, true)));
    }

    #[test]
    fn passive_watches_and_groups_count_as_watchers_only_when_active() {
        let mut w = Watches::default();
        w.add(ps(&["t"]), true, None);
        assert_eq!((w.count_active("t"), w.count_matching("t")), (0, 1));
        w.add(ps(&["t"]), false, None);
        assert_eq!(w.count_active("t"), 1);
        w.add(ps(&["t"]), true, Some("g"));
        assert_eq!(w.count_active("t"), 1, "a passive group is no watcher");
        w.add(ps(&["t"]), false, Some("g"));
        w.add(ps(&["t"]), false, Some("g"));
        assert_eq!(w.count_active("t"), 2, "a group counts once");
        assert_eq!(w.count_matching("t"), 5);
        assert_eq!(w.count_active("u"), 0);
    }
}
