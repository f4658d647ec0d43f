//! How many live records each segment file holds: a record is live while an index entry
//! names it. Counted as records are indexed, trimmed by retention, removed with their topic
//! or moved aside by `momd repair`, and kept in sled (`G` keys) with the index writes that
//! changed them. A segment file with none left (other than the one being appended to) is
//! deleted once the index without its records is durable: after the next full flush.

use std::collections::BTreeMap;

use super::segments::{Loc, HEADER_LEN};
use super::P_SEG;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegLive {
    pub records: u64,
    pub bytes: u64,
}

impl SegLive {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.records.to_be_bytes());
        v.extend_from_slice(&self.bytes.to_be_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> Option<SegLive> {
        Some(SegLive {
            records: u64::from_be_bytes(v.get(0..8)?.try_into().ok()?),
            bytes: u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
        })
    }
}

pub fn seg_key(segment: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = P_SEG;
    k[1..9].copy_from_slice(&segment.to_be_bytes());
    k
}

pub fn segment_of_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(1..9)?.try_into().ok()?))
}

#[derive(Debug, Default)]
pub struct Live {
    segs: BTreeMap<u64, SegLive>,
}

impl Live {
    /// A record at `loc` is indexed: returns the segment's new count, to be written.
    pub fn add(&mut self, loc: &Loc) -> (u64, SegLive) {
        let s = self.segs.entry(loc.segment).or_default();
        s.records += 1;
        s.bytes += HEADER_LEN + u64::from(loc.len);
        (loc.segment, *s)
    }

    /// The record at `loc` is no longer indexed.
    pub fn sub(&mut self, loc: &Loc) -> (u64, SegLive) {
        let s = self.segs.entry(loc.segment).or_default();
        s.records = s.records.saturating_sub(1);
        s.bytes = s.bytes.saturating_sub(HEADER_LEN + u64::from(loc.len));
        (loc.segment, *s)
    }

    pub fn set(&mut self, segment: u64, v: SegLive) {
        self.segs.insert(segment, v);
    }

    pub fn get(&self, segment: u64) -> SegLive {
        self.segs.get(&segment).copied().unwrap_or_default()
    }

    /// Segments below `newest` with no live record.
    pub fn dead(&self, newest: u64) -> Vec<u64> {
        self.segs
            .range(..newest)
            .filter(|(_, s)| s.records == 0)
            .map(|(n, _)| *n)
            .collect()
    }

    pub fn forget(&mut self, segment: u64) {
        self.segs.remove(&segment);
    }
}
