//! The comparison of what clients were told with what momd holds: lost, duplicated,
//! reordered, seq reuse, never delivered by the queue, delivery counts that went back.

use std::collections::{HashMap, HashSet};

use crate::ledger::{key, Key, Ledger, SeqRange};
use crate::readback::Readback;

/// How many examples of each kind of violation are kept for the details.
const EXAMPLES: usize = 8;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    /// Acknowledged publishes checked.
    pub acked: u64,
    /// Sent, never acknowledged (a publisher gave up at the end).
    pub unacked: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub seq_reuse: u64,
    pub queue_never_delivered: u64,
    pub delivery_count_regressions: u64,
    /// Acked messages the checker damaged and momd reported as damaged.
    pub damaged_reported: u64,
    /// Acked messages the checker truncated at a log's end, which momd cut as a torn write
    /// (docs/protocol.md 3.9: it cannot tell them from one) and said so in its log.
    pub torn_cut: u64,
    /// A message read back whose payload is not what was published.
    pub corrupted_served: u64,
    /// Stored messages never published (half frames, ids not ours).
    pub phantom: u64,
}

impl Counts {
    pub fn violations(&self) -> u64 {
        self.lost
            + self.duplicated
            + self.reordered
            + self.seq_reuse
            + self.queue_never_delivered
            + self.delivery_count_regressions
            + self.corrupted_served
            + self.phantom
    }
}

/// The examples behind the counts, by kind.
#[derive(Debug, Default)]
pub struct Details {
    pub by_kind: Vec<(&'static str, Vec<String>)>,
}

impl Details {
    pub fn add(&mut self, kind: &'static str, what: String) {
        let i = match self.by_kind.iter().position(|(k, _)| *k == kind) {
            Some(i) => i,
            None => {
                self.by_kind.push((kind, Vec::new()));
                self.by_kind.len() - 1
            }
        };
        if self.by_kind[i].1.len() < EXAMPLES {
            self.by_kind[i].1.push(what);
        }
    }
}

impl Details {
    /// Take `other`'s examples, each prefixed with `prefix` (which node they are about).
    pub fn merge(&mut self, other: Details, prefix: &str) {
        for (kind, examples) in other.by_kind {
            for e in examples {
                self.add(kind, format!("{prefix}{e}"));
            }
        }
    }
}

impl Counts {
    /// Add the counts of the checks of another copy (a cluster's other nodes).
    pub fn add(&mut self, o: &Counts) {
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.seq_reuse += o.seq_reuse;
        self.queue_never_delivered += o.queue_never_delivered;
        self.delivery_count_regressions += o.delivery_count_regressions;
        self.damaged_reported += o.damaged_reported;
        self.torn_cut += o.torn_cut;
        self.corrupted_served += o.corrupted_served;
        self.phantom += o.phantom;
    }
}

/// What to check besides the acknowledged publishes.
pub struct Scope {
    /// The queue (only once it was drained, at the end).
    pub queue: bool,
    /// What watchers and consumers saw (at the end; a checkpoint reads back while they go
    /// on).
    pub observations: bool,
    /// What clients noted as they went (a watcher's seqs going back, a seq seen holding
    /// two messages): about no copy in particular, so checked once when several copies are.
    pub sightings: bool,
}

fn in_any(rs: &[SeqRange], t: u16, s: u64) -> bool {
    rs.iter().any(|r| r.contains(t, s))
}

pub fn check(l: &Ledger, rb: &Readback, topics: &[String], scope: Scope) -> (Counts, Details) {
    let mut c = Counts::default();
    let mut d = Details::default();
    let name = |t: u16| topics.get(t as usize).map_or("?", String::as_str);
    let probe_topic = topics.len() as u16 - 1;
    let probe = l.sent.len() as u32 - 1;
    let kn = |k: Key| {
        let (p, n) = crate::ledger::key_parts(k);
        crate::ledger::id_string(p, probe, n)
    };

    // Where each id is stored, per topic.
    let mut pos: Vec<HashMap<Key, Vec<u64>>> = vec![HashMap::new(); rb.topics.len()];
    for (t, stored) in rb.topics.iter().enumerate() {
        for (seq, st) in stored {
            if let Some(k) = st.key {
                pos[t].entry(k).or_default().push(*seq);
            }
        }
    }
    for (t, ids) in pos.iter_mut().enumerate() {
        for (k, seqs) in ids.iter_mut() {
            seqs.sort_unstable();
            if seqs.len() > 1 {
                c.duplicated += seqs.len() as u64 - 1;
                d.add(
                    "duplicated",
                    format!("{} holds {} at seqs {seqs:?}", name(t as u16), kn(*k)),
                );
            }
        }
    }
    for (t, stored) in rb.topics.iter().enumerate() {
        for (seq, st) in stored {
            // At a checkpoint, messages sent after the ledger was copied are not in it.
            let known = st.key.is_some_and(|k| {
                let (p, n) = crate::ledger::key_parts(k);
                l.sent
                    .get(p as usize)
                    .is_some_and(|v| (n as usize) < v.len() || !scope.observations)
            });
            if st.half || !known {
                c.phantom += 1;
                d.add(
                    "phantom",
                    format!(
                        "{}:{seq} holds {}",
                        name(t as u16),
                        if st.half {
                            "a message whose frame its client dropped halfway"
                        } else {
                            "a message never published"
                        }
                    ),
                );
            }
        }
    }

    // Damage momd reported, where the checker did damage; torn cuts where it truncated.
    let mut reported: Vec<SeqRange> = l.damaged.clone();
    reported.extend(rb.damage_events.iter().cloned());
    let destroyed: Vec<SeqRange> = l.destroyed.iter().map(|x| x.range.clone()).collect();
    let truncated = |t: u16, s: u64, epoch: u32| {
        l.destroyed
            .iter()
            .any(|x| x.truncated && x.range.contains(t, s) && epoch <= x.after_start)
    };
    let torn = |t: u16, s: u64, epoch: u32| {
        l.torn
            .iter()
            .any(|tc| tc.topic == t && s >= tc.from && epoch < tc.start)
    };
    // An acked message that is gone, for a reason the fault explains.
    let excused = |t: u16, s: u64, epoch: u32| -> Option<&'static str> {
        if torn(t, s, epoch) && truncated(t, s, epoch) {
            Some("torn")
        } else if in_any(&reported, t, s) && in_any(&destroyed, t, s) {
            Some("damaged")
        } else {
            None
        }
    };

    let delivered: HashSet<Key> = l.deliveries.values().filter_map(|x| x.key).collect();
    let mut flagged: HashSet<(u16, u64)> = HashSet::new();
    for (p, sent) in l.sent.iter().enumerate() {
        let mut last_seq: HashMap<u16, (u64, u64)> = HashMap::new();
        for (n, s) in sent.iter().enumerate() {
            if s.seq == 0 {
                c.unacked += 1;
                continue;
            }
            c.acked += 1;
            let k = key(p as u32, n as u64);
            let (t, seq) = (s.topic, s.seq);
            let here = rb.topics.get(t as usize).and_then(|m| m.get(&seq));
            let why = excused(t, seq, s.epoch);
            if why.is_none() {
                if let Some((prev_n, prev_seq)) = last_seq.get(&t) {
                    if *prev_seq > seq {
                        c.reordered += 1;
                        d.add(
                            "reordered",
                            format!(
                                "{}: {} acked as seq {seq}, after {} as seq {prev_seq}",
                                name(t),
                                kn(k),
                                kn(key(p as u32, *prev_n))
                            ),
                        );
                    }
                }
                last_seq.insert(t, (n as u64, seq));
            }
            if here.is_some_and(|h| h.key == Some(k)) {
                if here.is_some_and(|h| !h.payload_ok) {
                    c.corrupted_served += 1;
                    d.add(
                        "corrupted-served",
                        format!(
                            "{}:{seq} ({}) reads back with another payload",
                            name(t),
                            kn(k)
                        ),
                    );
                }
            } else {
                flagged.insert((t, seq));
                match why {
                    Some("torn") => c.torn_cut += 1,
                    Some(_) => c.damaged_reported += 1,
                    None => {
                        if let Some(h) = here {
                            c.seq_reuse += 1;
                            d.add(
                                "seq-reuse",
                                format!(
                                    "{}:{seq} was acked for {} (momd start {}), now holds {}",
                                    name(t),
                                    kn(k),
                                    s.epoch,
                                    h.key.map_or("a foreign message".into(), &kn)
                                ),
                            );
                        } else if let Some(at) = pos[t as usize].get(&k) {
                            c.seq_reuse += 1;
                            d.add(
                                "seq-reuse",
                                format!(
                                    "{} was acked as {}:{seq}, is stored at seq {at:?}",
                                    kn(k),
                                    name(t)
                                ),
                            );
                        } else {
                            c.lost += 1;
                            let note = if in_any(&reported, t, seq) {
                                " (momd reports it damaged, but momcheck never damaged it)"
                            } else if in_any(&destroyed, t, seq) {
                                " (momcheck damaged it; momd did not report it)"
                            } else if torn(t, seq, s.epoch) {
                                " (momd cut it as a torn write)"
                            } else {
                                ""
                            };
                            d.add(
                                "lost",
                                format!(
                                    "{} acked as {}:{seq} by momd start {}, not readable{note}",
                                    kn(k),
                                    name(t),
                                    s.epoch
                                ),
                            );
                        }
                    }
                }
            }
            if scope.queue
                && t != probe_topic
                && why.is_none()
                && !delivered.contains(&k)
                && !rb.dead_lettered.contains(&(t, seq))
            {
                c.queue_never_delivered += 1;
                d.add(
                    "queue-never-delivered",
                    format!(
                        "{} ({}:{seq}) was never delivered nor dead-lettered",
                        kn(k),
                        name(t)
                    ),
                );
            }
        }
    }

    // What watchers and consumers saw at a seq must still be there.
    let seen_excused = |t: u16, s: u64| {
        (in_any(&reported, t, s) && in_any(&destroyed, t, s))
            || l.torn.iter().any(|tc| tc.topic == t && s >= tc.from)
    };
    let mut seen: Vec<(u16, u64, Key, &str)> = Vec::new();
    if scope.observations {
        seen.extend(
            l.watched
                .iter()
                .map(|((t, s), k)| (*t, *s, *k, "a watcher")),
        );
        for ((t, s), dl) in &l.deliveries {
            if let Some(k) = dl.key {
                seen.push((*t, *s, k, "a consumer"));
            }
        }
    }
    for (t, s, k, who) in seen {
        if flagged.contains(&(t, s)) || seen_excused(t, s) {
            continue;
        }
        let here = rb.topics.get(t as usize).and_then(|m| m.get(&s));
        if here.is_some_and(|h| h.key == Some(k)) {
            continue;
        }
        flagged.insert((t, s));
        if here.is_some() || pos[t as usize].contains_key(&k) {
            c.seq_reuse += 1;
            d.add(
                "seq-reuse",
                format!(
                    "{who} got {} as {}:{s}; that seq now holds another",
                    kn(k),
                    name(t)
                ),
            );
        } else {
            c.lost += 1;
            d.add(
                "lost",
                format!(
                    "{who} got {} as {}:{s}; it is no longer readable",
                    kn(k),
                    name(t)
                ),
            );
        }
    }
    if scope.sightings {
        for x in &l.conflicts {
            if seen_excused(x.topic, x.seq) {
                continue;
            }
            if x.foreign {
                c.phantom += 1;
                d.add("phantom", x.what.clone());
            } else {
                c.seq_reuse += 1;
                d.add("seq-reuse", x.what.clone());
            }
        }
        for (t, seq, prev, what) in &l.watch_order {
            // After a torn cut from seq F, new messages are given F, F+1, … again.
            let reused = l
                .torn
                .iter()
                .any(|tc| tc.topic == *t && *seq >= tc.from && *prev >= tc.from);
            if !reused {
                c.reordered += 1;
                d.add("reordered", what.clone());
            }
        }
    }
    if scope.queue {
        for ((t, s), dl) in &l.deliveries {
            let mut counts = dl.counts.clone();
            counts.sort_unstable();
            let repeats = counts.windows(2).filter(|w| w[0] == w[1]).count() as u64;
            let zeros = counts.iter().filter(|c| **c == 0).count() as u64;
            if repeats + zeros > 0 {
                c.delivery_count_regressions += repeats + zeros;
                d.add(
                    "delivery-count-regressions",
                    format!(
                        "{}:{s} was delivered with counts {:?} (in arrival order)",
                        name(*t),
                        dl.counts
                    ),
                );
            }
        }
    }
    (c, d)
}
