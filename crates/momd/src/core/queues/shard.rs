//! A queue's parts per shard (`core/shards.rs`): what it counts, which definition applies,
//! and which of its messages an operation of one shard's group may touch. On a single node
//! there is one shard and these see the whole queue.

use super::*;

impl Queue {
    /// Spread over `shards`: set before anything is in the queue ([`super::QueueSet`]
    /// sets it as the queue joins the set).
    pub fn set_shards(&mut self, shards: Shards) {
        self.shards = shards;
    }

    pub fn shards(&self) -> Shards {
        self.shards
    }

    /// Shard `s`'s definition.
    pub fn def_in(&self, s: Shard) -> &QueueDef {
        match s {
            0 => &self.def,
            s => self.shard_defs.get(&s).unwrap_or(&self.def),
        }
    }

    /// Shard `s`'s definition, to change it. Its bindings change only through
    /// [`super::QueueSet`], which indexes them.
    pub fn def_in_mut(&mut self, s: Shard) -> &mut QueueDef {
        match s {
            0 => &mut self.def,
            s => self.shard_defs.entry(s).or_insert_with(|| self.def.clone()),
        }
    }

    /// Every shard's bindings, each pattern once.
    pub fn all_bindings(&self) -> Vec<&str> {
        let mut ps: Vec<&str> = std::iter::once(&self.def)
            .chain(self.shard_defs.values())
            .flat_map(|d| d.bindings.iter().map(String::as_str))
            .collect();
        ps.sort_unstable();
        ps.dedup();
        ps
    }

    pub(super) fn in_scope(&self, topic: u32, scope: Scope) -> bool {
        scope.is_none_or(|s| self.shards.of(topic) == s)
    }

    /// The shards `scope` names.
    pub(super) fn scoped(&self, scope: Scope) -> std::ops::Range<Shard> {
        match scope {
            Some(s) => s..s + 1,
            None => self.shards.all(),
        }
    }

    /// The counters of the shard of `topic`.
    pub(super) fn ctr(&mut self, topic: u32) -> &mut QueueCounters {
        let s = self.shards.of(topic);
        self.counters.entry(s).or_default()
    }

    /// What happened to the queue's messages, over every shard.
    pub fn counters(&self) -> QueueCounters {
        let mut sum = QueueCounters::default();
        for c in self.counters.values() {
            sum += *c;
        }
        sum
    }

    /// A dead letter found gone from its topic when it was to be moved: not dead-lettered
    /// after all, dropped.
    pub fn dead_letter_gone(&mut self, d: &DeadLetter) {
        let c = self.counters.entry(d.shard).or_default();
        c.dead_lettered = c.dead_lettered.saturating_sub(1);
        c.dropped += 1;
    }

    /// The newest seq of `$dlq.<queue>` a redrive took back.
    pub fn dlq_redriven(&self) -> u64 {
        self.dlq_redriven.values().copied().max().unwrap_or(0)
    }

    /// A redrive took `$dlq.<queue>` back up to `seq` (`shard`: the dead letter topic's).
    pub fn note_redriven(&mut self, shard: Shard, seq: u64) {
        let r = self.dlq_redriven.entry(shard).or_default();
        *r = (*r).max(seq);
    }
}
