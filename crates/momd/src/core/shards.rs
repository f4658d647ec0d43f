//! Shards: how a node's topics are spread over its data groups.
//!
//! In cluster mode each topic (each partition of a partitioned topic) belongs to one data
//! group, a Raft group of its own, so the groups' leaders spread over the nodes and a
//! topic's messages, seqs, dedupe and the queue cursors on it are decided in its group's
//! log alone. The part of a node's state one group carries is a *shard*. A single node has
//! one shard, holding everything.
//!
//! A topic's shard is written in its id: the top bits are the shard, the low `ID_BITS` the
//! node's topic counter (which goes on across shards), so every lookup by id finds the shard
//! without a table, and two shards never give the same id. With one shard the id is the
//! counter, and every id is shard 0's, whatever its bits.
//! Which shard a new topic joins is [`Shards::place`]: a hash of its name, the partitions
//! of a partitioned topic on consecutive shards.

use std::ops::RangeInclusive;

/// Bits of a topic id numbering topics within a shard.
pub const ID_BITS: u32 = 26;
const LOCAL_MASK: u32 = (1 << ID_BITS) - 1;
/// The most shards a node can have (the bits left above `ID_BITS`).
pub const MAX_SHARDS: u16 = 1 << (32 - ID_BITS);

/// A shard's number: 0 to the count of shards - 1.
pub type Shard = u16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shards {
    count: u16,
}

impl Default for Shards {
    fn default() -> Self {
        Shards::ONE
    }
}

impl Shards {
    /// A single node: one shard.
    pub const ONE: Shards = Shards { count: 1 };

    /// `count` shards, from 1 to [`MAX_SHARDS`].
    pub fn new(count: u16) -> Option<Shards> {
        (1..=MAX_SHARDS)
            .contains(&count)
            .then_some(Shards { count })
    }

    pub fn count(self) -> u16 {
        self.count
    }

    pub fn all(self) -> std::ops::Range<Shard> {
        0..self.count
    }

    /// The shard of topic `id`.
    pub fn of(self, id: u32) -> Shard {
        if self.count <= 1 {
            0
        } else {
            (id >> ID_BITS) as Shard
        }
    }

    /// The id of shard `s`'s topic number `n` (the node's topic counter).
    pub fn id(self, s: Shard, n: u32) -> u32 {
        if self.count <= 1 {
            n
        } else {
            (u32::from(s) << ID_BITS) | (n & LOCAL_MASK)
        }
    }

    /// The counter an id was made of (see [`Shards::id`]).
    pub fn number(self, id: u32) -> u32 {
        if self.count <= 1 {
            id
        } else {
            id & LOCAL_MASK
        }
    }

    /// The ids of shard `s`'s topics.
    pub fn ids(self, s: Shard) -> RangeInclusive<u32> {
        if self.count <= 1 {
            return 0..=u32::MAX;
        }
        let first = u32::from(s) << ID_BITS;
        first..=first | ((1 << ID_BITS) - 1)
    }

    /// The shard topic `name` belongs to: a name ending in a number, `BASE.N` (partition
    /// N of partitioned topic BASE), goes to the shard after `BASE.N-1`'s, so a topic's
    /// partitions spread over every shard; any other by its name. Worked out from the name
    /// alone, so that every node routes a publish to the right group before the topic
    /// exists anywhere.
    pub fn place_name(self, name: &str) -> Shard {
        if self.count <= 1 {
            return 0;
        }
        let partition = name.rsplit_once('.').and_then(|(base, n)| {
            let v: u32 = n.parse().ok()?;
            (v.to_string() == n).then_some((base, v))
        });
        self.place(name, partition)
    }

    /// The shard of `name`, or of partition N of `BASE` given as `Some((BASE, N))` (see
    /// [`Shards::place_name`]).
    pub fn place(self, name: &str, partition: Option<(&str, u32)>) -> Shard {
        if self.count <= 1 {
            return 0;
        }
        let (base, n) = match partition {
            Some((base, n)) => (base, n),
            None => (name, 0),
        };
        let h = fnv1a(base.as_bytes());
        ((h.wrapping_add(u64::from(n))) % u64::from(self.count)) as Shard
    }
}

/// FNV-1a: a hash every node computes the same, whatever its build (std's hasher is
/// seeded per process).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_holds_every_id() {
        let s = Shards::ONE;
        assert_eq!(s.of(0), 0);
        assert_eq!(s.of(u32::MAX), 0);
        assert!(s.ids(0).contains(&u32::MAX));
        assert_eq!(s.place("anything", Some(("anything", 5))), 0);
    }

    #[test]
    fn ids_name_their_shard() {
        let s = Shards::new(3).unwrap();
        for shard in s.all() {
            let ids = s.ids(shard);
            assert_eq!(s.of(*ids.start()), shard);
            assert_eq!(s.of(*ids.end()), shard);
        }
        assert_eq!(s.of(1 << ID_BITS), 1);
        assert_eq!(s.of((1 << ID_BITS) - 1), 0);
        assert!(Shards::new(0).is_none());
        assert!(Shards::new(MAX_SHARDS + 1).is_none());
        assert!(Shards::new(MAX_SHARDS).is_some());
    }

    #[test]
    fn partitions_spread_over_every_shard() {
        let s = Shards::new(3).unwrap();
        let placed: std::collections::BTreeSet<Shard> = (0..6)
            .map(|n| s.place(&format!("clicks.{n}"), Some(("clicks", n))))
            .collect();
        assert_eq!(placed.len(), 3);
        // The same on every node, every run.
        assert_eq!(s.place("orders.eu", None), s.place("orders.eu", None));
        let names: std::collections::BTreeSet<Shard> =
            (0..100).map(|i| s.place(&format!("t{i}"), None)).collect();
        assert_eq!(names.len(), 3);
    }
}
