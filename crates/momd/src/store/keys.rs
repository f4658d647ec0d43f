//! The index's keys (a prefix byte, then the topic id or a name) and what an index entry
//! holds: see the module doc of `store` for the layout.

use super::segments::Loc;
use crate::core::shards::Shard;

/// An index entry: where a record is, and enough about it for retention and replay by time
/// without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub loc: Loc,
    pub count: u32,
    pub time: u64,
    /// Payload and header bytes of its messages.
    pub bytes: u64,
}

impl IndexEntry {
    pub(super) const LEN: usize = 40;

    pub(super) fn encode(&self) -> [u8; Self::LEN] {
        let mut v = [0u8; Self::LEN];
        v[0..8].copy_from_slice(&self.loc.segment.to_be_bytes());
        v[8..16].copy_from_slice(&self.loc.offset.to_be_bytes());
        v[16..20].copy_from_slice(&self.loc.len.to_be_bytes());
        v[20..24].copy_from_slice(&self.count.to_be_bytes());
        v[24..32].copy_from_slice(&self.time.to_be_bytes());
        v[32..40].copy_from_slice(&self.bytes.to_be_bytes());
        v
    }

    pub(super) fn decode(v: &[u8]) -> Option<IndexEntry> {
        let u64_at = |i: usize| Some(u64::from_be_bytes(v.get(i..i + 8)?.try_into().ok()?));
        let u32_at = |i: usize| Some(u32::from_be_bytes(v.get(i..i + 4)?.try_into().ok()?));
        Some(IndexEntry {
            loc: Loc {
                segment: u64_at(0)?,
                offset: u64_at(8)?,
                len: u32_at(16)?,
            },
            count: u32_at(20)?,
            time: u64_at(24)?,
            bytes: u64_at(32)?,
        })
    }
}

pub(super) const P_MSG: u8 = b'M';
pub(super) const P_TOPIC: u8 = b'T';
pub(super) const P_DEDUPE: u8 = b'D';
pub(super) const P_META: u8 = b'S';
pub(super) const P_QUEUE: u8 = b'Q';
pub(super) const P_SEG: u8 = b'G';

/// The key of shard `shard`'s part of queue `name`: `Q` name, and for a shard past the
/// first a 0xFF byte (never in a name, which is UTF-8) and the shard (u16 BE).
pub(super) fn queue_key(name: &str, shard: Shard) -> Vec<u8> {
    let mut k = vec![P_QUEUE];
    k.extend_from_slice(name.as_bytes());
    if shard > 0 {
        k.push(0xFF);
        k.extend_from_slice(&shard.to_be_bytes());
    }
    k
}

/// The queue name and shard a `Q` key names (see [`queue_key`]).
pub(super) fn queue_of_key(k: &[u8]) -> Option<(&[u8], Shard)> {
    let rest = k.strip_prefix(&[P_QUEUE])?;
    match rest.iter().position(|b| *b == 0xFF) {
        None => Some((rest, 0)),
        Some(i) => {
            let shard = rest.get(i + 1..)?;
            Some((&rest[..i], u16::from_be_bytes(shard.try_into().ok()?)))
        }
    }
}

pub(super) fn msg_key(topic: u32, seq: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = P_MSG;
    k[1..5].copy_from_slice(&topic.to_be_bytes());
    k[5..13].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn topic_key(topic: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = P_TOPIC;
    k[1..5].copy_from_slice(&topic.to_be_bytes());
    k
}

pub(super) fn prefix(p: u8, topic: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = p;
    k[1..5].copy_from_slice(&topic.to_be_bytes());
    k
}

pub(super) fn dedupe_key(topic: u32, msg_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + msg_id.len());
    k.extend_from_slice(&prefix(P_DEDUPE, topic));
    k.extend_from_slice(msg_id.as_bytes());
    k
}

pub(super) fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![P_META];
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn seq_of_key(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(5..13)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}
