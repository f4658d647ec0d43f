//! What the clients saw, written down as it happens: every publish acknowledgement (topic,
//! seq, message id), every queue delivery (topic, seq, id, delivery count), every message a
//! watcher saw, and what momd reported damaged. The verdict compares it with what momd
//! holds at the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::rng::mix;

/// A message of the run, packed: the publisher (publishers 0.., then the probe) and its
/// number. The msg id on the wire is `p<P>.<N>` (`probe.<N>` for the probe).
pub type Key = u64;

const N_BITS: u32 = 40;

pub fn key(publisher: u32, n: u64) -> Key {
    (u64::from(publisher) << N_BITS) | n
}

pub fn key_parts(k: Key) -> (u32, u64) {
    ((k >> N_BITS) as u32, k & ((1 << N_BITS) - 1))
}

/// What a msg id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    /// A message of a publisher (or the probe, as publisher `probe`).
    Msg(Key),
    /// Part of a frame a client dropped halfway: must never be stored.
    Half(u64),
    /// Not one of ours.
    Other,
}

/// The wire id of a message.
pub fn id_string(publisher: u32, probe: u32, n: u64) -> String {
    if publisher == probe {
        format!("probe.{n}")
    } else {
        format!("p{publisher}.{n}")
    }
}

pub fn parse_id(s: &str, probe: u32) -> Id {
    let num = |t: &str| t.parse::<u64>().ok();
    if let Some(n) = s.strip_prefix("probe.").and_then(num) {
        return Id::Msg(key(probe, n));
    }
    if let Some(n) = s.strip_prefix("half.").and_then(num) {
        return Id::Half(n);
    }
    if let Some((p, n)) = s.strip_prefix('p').and_then(|r| r.split_once('.')) {
        if let (Ok(p), Some(n)) = (p.parse::<u32>(), num(n)) {
            if p < probe {
                return Id::Msg(key(p, n));
            }
        }
    }
    Id::Other
}

/// The payload of a message, from its id alone: the id, then 8..135 letters derived from
/// it. A payload read back is checked against this.
pub fn payload(id: &str) -> Vec<u8> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let len = 8 + (mix(h) % 128) as usize;
    let mut v = Vec::with_capacity(id.len() + 1 + len);
    v.extend_from_slice(id.as_bytes());
    v.push(b'|');
    let mut x = h;
    for _ in 0..len {
        x = mix(x.wrapping_add(0x9E37_79B9_7F4A_7C15));
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

/// One message a publisher sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    pub topic: u16,
    /// The seq of its acknowledgement (0 until acknowledged).
    pub seq: u64,
    /// The momd instance (start number) that acknowledged it.
    pub epoch: u32,
}

/// A seq whose content a client saw differ from what was seen there before, or that held
/// a message that is not one of ours.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub topic: u16,
    pub seq: u64,
    /// The id was not one of ours (else: it differed from an earlier sighting).
    pub foreign: bool,
    pub what: String,
}

/// A message as queue consumers saw it.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    pub key: Option<Key>,
    /// Its delivery counts, in the order they arrived.
    pub counts: Vec<u32>,
}

/// A range of seqs of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRange {
    pub topic: u16,
    pub first: u64,
    pub last: u64,
}

impl SeqRange {
    pub fn contains(&self, topic: u16, seq: u64) -> bool {
        self.topic == topic && (self.first..=self.last).contains(&seq)
    }
}

/// Seqs of a topic momd cut at start as a torn write (its log says so): from `from` on,
/// at the start numbered `start`.
#[derive(Debug, Clone)]
pub struct TornCut {
    pub topic: u16,
    pub from: u64,
    pub start: u32,
}

/// What the checker itself destroyed in a data file.
#[derive(Debug, Clone)]
pub struct Destroyed {
    pub range: SeqRange,
    pub truncated: bool,
    /// momd's start number after which it happened.
    pub after_start: u32,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// Per publisher (the probe last): message n → what became of it.
    pub sent: Vec<Vec<Sent>>,
    /// Queue deliveries by (topic, seq).
    pub deliveries: HashMap<(u16, u64), Delivered>,
    /// Deliveries and watched messages whose id was not one of ours or differed from an
    /// earlier sighting of the same seq.
    pub conflicts: Vec<Conflict>,
    /// What watchers saw at each (topic, seq).
    pub watched: HashMap<(u16, u64), Key>,
    /// A watcher saw a topic's seqs go backwards: (topic, seq, the seq before, what).
    pub watch_order: Vec<(u16, u64, u64, String)>,
    /// Ranges momd reported damaged (verify, its log, `$sys.events`).
    pub damaged: Vec<SeqRange>,
    pub torn: Vec<TornCut>,
    pub destroyed: Vec<Destroyed>,
    /// Half-frames a client dropped mid-frame.
    pub halves_sent: u64,
    /// Publishes momd refused (a full disk).
    pub refused: u64,
    /// Publish errors that should not happen to a well-behaved client.
    pub publish_errors: Vec<String>,
    /// The well-behaved probe waited longer than its limit for a publish or its delivery.
    pub probe_stalls: Vec<String>,
    /// Topic and queue admin acknowledged, then not what momd held after a restart.
    pub admin_lost: Vec<String>,
}

impl Ledger {
    pub fn new(publishers: u32) -> Ledger {
        Ledger {
            sent: vec![Vec::new(); publishers as usize + 1],
            ..Ledger::default()
        }
    }

    pub fn add_damage(&mut self, r: SeqRange) {
        if !self.damaged.contains(&r) {
            self.damaged.push(r);
        }
    }
}

/// The well-behaved client's worst latencies, by what was going on.
#[derive(Debug, Default)]
pub struct Latencies {
    pub worst: HashMap<String, Duration>,
}

/// What every task shares: the ledger, where momd is, which instance of it runs, what
/// phase the run is in.
pub struct Shared {
    pub ledger: Mutex<Ledger>,
    pub topics: Vec<String>,
    pub probe: u32,
    /// Where clients connect: one address, or a cluster's nodes as `a,b,c`.
    pub addr: crate::momd::Addr,
    /// A cluster: publishers move on to the next node after a lost connection or an
    /// `unavailable` answer, and their publish times are the latencies reported.
    pub cluster: bool,
    /// momd's start number, for acks.
    pub epoch: AtomicU32,
    /// Every phase the run went through (`steady`, `kill9`, `hostile:<case>`), the current
    /// one last, for latencies.
    pub phases: Mutex<Vec<String>>,
    pub latencies: Mutex<Latencies>,
    /// Published messages acknowledged so far (all publishers).
    pub acked: AtomicU64,
    /// The admin task works without pauses (a kill -9 is about to come).
    pub admin_burst: AtomicBool,
}

pub type Ctx = Arc<Shared>;

impl Shared {
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn addr(&self) -> String {
        crate::momd::addr_of(&self.addr)
    }

    /// The servers to connect to, the list turned to start at its `turn`th (modulo its
    /// length): clients of a cluster spread over its nodes and fail over in turn.
    pub fn servers(&self, turn: usize) -> Vec<String> {
        let all = self.addr();
        let mut v: Vec<String> = all.split(',').map(str::to_string).collect();
        let n = v.len().max(1);
        v.rotate_left(turn % n);
        v
    }

    /// The current phase.
    pub fn phase(&self) -> String {
        self.phases
            .lock()
            .ok()
            .and_then(|p| p.last().cloned())
            .unwrap_or_default()
    }

    /// Where the run is in its phases, for [`Shared::latency`].
    pub fn phase_mark(&self) -> usize {
        self.phases
            .lock()
            .map(|p| p.len().saturating_sub(1))
            .unwrap_or(0)
    }

    pub fn set_phase(&self, p: &str) {
        if let Ok(mut g) = self.phases.lock() {
            if g.last().is_none_or(|l| l != p) {
                g.push(p.to_string());
            }
        }
    }

    /// Index of a topic of the run (the probe's last).
    pub fn topic_index(&self, name: &str) -> Option<u16> {
        self.topics.iter().position(|t| t == name).map(|i| i as u16)
    }

    /// Which partition of the workload's partitioned topic topic `t` is, if it is one.
    pub fn partition_of(&self, t: u16) -> Option<u16> {
        let name = self.topics.get(usize::from(t))?;
        let rest = name.strip_prefix(crate::workload::PARTITIONED)?;
        rest.strip_prefix('.')?.parse().ok()
    }

    /// Note a latency of the well-behaved client, which started at phase `mark`: under the
    /// first fault it spanned (the one that made it), else under `steady`.
    pub fn latency(&self, mark: usize, d: Duration) {
        let phase = match self.phases.lock() {
            Ok(p) => p
                .get(mark..)
                .unwrap_or_default()
                .iter()
                .find(|p| *p != "steady")
                .or(p.last())
                .cloned()
                .unwrap_or_default(),
            Err(_) => return,
        };
        let Ok(mut l) = self.latencies.lock() else {
            return;
        };
        let w = l.worst.entry(phase).or_default();
        *w = (*w).max(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let probe = 4;
        assert_eq!(
            parse_id(&id_string(2, probe, 77), probe),
            Id::Msg(key(2, 77))
        );
        assert_eq!(parse_id(&id_string(4, probe, 5), probe), Id::Msg(key(4, 5)));
        assert_eq!(parse_id("half.9", probe), Id::Half(9));
        assert_eq!(parse_id("p9.1", probe), Id::Other);
        assert_eq!(parse_id("x", probe), Id::Other);
        assert_eq!(key_parts(key(3, 12345)), (3, 12345));
        assert_eq!(payload("p1.2"), payload("p1.2"));
        assert_ne!(payload("p1.2"), payload("p1.3"));
    }
}
