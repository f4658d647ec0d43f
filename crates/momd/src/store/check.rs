//! Checking records against their index, and what is done with the damaged ones.
//!
//! The rule (DESIGN.md, Storage): only a torn end of the log — records that never reached
//! the disk whole, at the end of the newest segment, so never acknowledged — may be cut
//! (`tail.rs`). Any other damage is kept where it is, reported (at start, on reads,
//! by `momd verify`), and its seqs are never given again; `momd repair` moves it aside into
//! `damaged/` in the data dir.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::record::{self, Record};
use super::segments::{Bad, Reader};
use super::{
    be_u64, encode_topic, prefix, seq_of_key, topic_key, IndexEntry, Result, Store, P_DEDUPE,
    P_MSG, P_TOPIC,
};
use crate::core::TopicState;

/// A damaged range of a topic: consecutive records of one segment file that do not read
/// back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub topic: String,
    pub topic_id: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    /// The segment file, relative to the data dir (`topics/<id>/<first seq>.seg`).
    pub segment: String,
    /// Offset of the first damaged record's header in it.
    pub offset: u64,
    /// Why the first record of the range does not read back.
    pub reason: String,
}

impl Damage {
    pub fn messages(&self) -> u64 {
        self.last_seq
            .saturating_sub(self.first_seq)
            .saturating_add(1)
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seqs = if self.first_seq == self.last_seq {
            format!("seq {}", self.first_seq)
        } else {
            format!("seqs {}-{}", self.first_seq, self.last_seq)
        };
        let n = self.messages();
        write!(
            f,
            "topic {:?} {seqs} ({n} message{}, {} record{}) in {} at offset {}: {}",
            self.topic,
            if n == 1 { "" } else { "s" },
            self.records,
            if self.records == 1 { "" } else { "s" },
            self.segment,
            self.offset,
            self.reason
        )
    }
}

/// A record the index names that does not read back.
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub key: sled::IVec,
    /// The record's first seq and index entry, when the index entry itself is readable.
    pub entry: Option<(u64, IndexEntry)>,
    pub bad: Bad,
}

/// What a full check of the store found.
#[derive(Debug, Default)]
pub struct Checked {
    pub topics: u64,
    pub records: u64,
    pub messages: u64,
    /// Bytes of records read (headers and bodies).
    pub bytes: u64,
    /// Segment files holding the records checked.
    pub segments: std::collections::BTreeSet<u64>,
    pub damage: Vec<Damage>,
}

impl Checked {
    pub fn damaged_messages(&self) -> u64 {
        self.damage.iter().map(Damage::messages).sum()
    }
}

/// Read a record and check all of it: its header and checksum against the index, its
/// body, each message's checksum, and its message count.
pub(super) fn check_record(
    reader: &mut Reader<'_>,
    topic: u32,
    first: u64,
    e: &IndexEntry,
) -> std::result::Result<Record, Bad> {
    let body = reader.check(topic, first, e.loc)?;
    let rec = record::decode(&body)
        .map_err(|err| Bad::Damaged(format!("its body does not decode: {err}")))?;
    if rec.len() as u64 != u64::from(e.count) {
        return Err(Bad::Damaged(format!(
            "it holds {} messages, its index entry says {}",
            rec.len(),
            e.count
        )));
    }
    if let Some(i) = rec.msgs().position(|m| !m.checksum_ok()) {
        return Err(Bad::Damaged(format!(
            "checksum mismatch in the message of seq {}",
            first + i as u64
        )));
    }
    Ok(rec)
}

/// Group bad records (in seq order) into ranges: consecutive records of one segment.
pub fn ranges(store: &Store, t: &TopicState, bad: &[BadRecord]) -> Vec<Damage> {
    let mut out: Vec<Damage> = Vec::new();
    for b in bad {
        let (first, last, segment, offset) = match b.entry {
            Some((first, e)) => (
                first,
                first + u64::from(e.count.max(1)) - 1,
                store.segs.display_path(e.loc.segment),
                e.loc.offset,
            ),
            None => {
                let first = seq_of_key(&b.key).unwrap_or(0);
                (first, first, "(index)".to_string(), 0)
            }
        };
        if let Some(prev) = out.last_mut() {
            if prev.segment == segment && prev.last_seq.checked_add(1) == Some(first) {
                prev.last_seq = last;
                prev.records += 1;
                continue;
            }
        }
        out.push(Damage {
            topic: t.name.to_string(),
            topic_id: t.id,
            first_seq: first,
            last_seq: last,
            records: 1,
            segment,
            offset,
            reason: b.bad.reason().to_string(),
        });
    }
    out
}

impl Store {
    /// The topics' stored states, read without changing anything.
    pub fn topic_states(&self) -> Result<Vec<TopicState>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([P_TOPIC]) {
            let (k, v) = kv?;
            out.push(rmp_serde::from_slice(&v).map_err(|e| super::corrupt(&k, e))?);
        }
        Ok(out)
    }

    /// Check every record of `t` the index names (from the one holding its first seq on).
    /// Adds what it read to `sum`; returns the records that do not read back, in seq order.
    pub fn check_topic(&self, t: &TopicState, sum: &mut Checked) -> Result<Vec<BadRecord>> {
        let mut bad = Vec::new();
        let mut reader = self.segs.reader();
        for kv in self.db.scan_prefix(prefix(P_MSG, t.id)) {
            let (k, v) = kv?;
            let Some((first, e)) = seq_of_key(&k).zip(IndexEntry::decode(&v)) else {
                bad.push(BadRecord {
                    key: k,
                    entry: None,
                    bad: Bad::Damaged("its index entry does not decode".into()),
                });
                continue;
            };
            if first + u64::from(e.count) <= t.first_seq {
                // Below what retention kept: not served, about to be removed.
                continue;
            }
            sum.segments.insert(e.loc.segment);
            match check_record(&mut reader, t.id, first, &e) {
                Ok(_) => {
                    sum.records += 1;
                    sum.messages += u64::from(e.count);
                    sum.bytes += super::segments::HEADER_LEN + u64::from(e.loc.len);
                }
                Err(b) => bad.push(BadRecord {
                    key: k,
                    entry: Some((first, e)),
                    bad: b,
                }),
            }
        }
        sum.topics += 1;
        Ok(bad)
    }

    /// Check every topic: what `momd verify` prints.
    pub fn check_all(&self) -> Result<Checked> {
        let mut sum = Checked::default();
        for t in self.topic_states()? {
            let bad = self.check_topic(&t, &mut sum)?;
            sum.damage.extend(ranges(self, &t, &bad));
        }
        Ok(sum)
    }

    /// Move every damaged record aside: its bytes (as far as the file holds them) into
    /// `<data>/damaged/<topic id>-<first seq>.rec` with a line in `damaged/NOTES`, then its
    /// index entry out. Intact records keep their seqs; the topic's last seq stays, so no
    /// seq is given twice. Returns the ranges moved.
    pub fn repair(&self, sum: &mut Checked) -> Result<Vec<Damage>> {
        let aside = self.dir.join("damaged");
        let mut moved = Vec::new();
        for mut t in self.topic_states()? {
            let bad = self.check_topic(&t, sum)?;
            if bad.is_empty() {
                continue;
            }
            fs::create_dir_all(&aside)?;
            let mut notes = OpenOptions::new()
                .create(true)
                .append(true)
                .open(aside.join("NOTES"))?;
            let reader = self.segs.reader();
            let mut batch = sled::Batch::default();
            let mut gone: Vec<(u64, u64)> = Vec::new();
            for b in &bad {
                let Some((first, e)) = b.entry else {
                    writeln!(
                        notes,
                        "topic {:?} (id {}): index key {:02x?} removed: {}",
                        t.name, t.id, b.key, b.bad
                    )?;
                    batch.remove(b.key.clone());
                    continue;
                };
                let next = first + u64::from(e.count);
                let file = unused_path(&aside, &format!("{}-{first}", t.id));
                let copied = match reader.raw(e.loc) {
                    Ok(bytes) => {
                        let mut f = File::create(&file)?;
                        f.write_all(&bytes)?;
                        f.sync_all()?;
                        format!("{} bytes copied to damaged/{}", bytes.len(), name_of(&file))
                    }
                    Err(err) => format!("nothing copied ({err})"),
                };
                let (seg, live) = self.live().sub(&e.loc);
                batch.insert(&super::live::seg_key(seg)[..], live.encode());
                writeln!(
                    notes,
                    "topic {:?} (id {}) seqs {first}-{} ({} messages) from {} offset {} \
                     length {}: {}; {copied}",
                    t.name,
                    t.id,
                    next - 1,
                    e.count,
                    self.segs.display_path(e.loc.segment),
                    e.loc.offset,
                    super::segments::HEADER_LEN + u64::from(e.loc.len),
                    b.bad
                )?;
                batch.remove(b.key.clone());
                let served_from = first.max(t.first_seq);
                let served_to = next.min(t.last_seq.saturating_add(1));
                t.msgs = t.msgs.saturating_sub(served_to.saturating_sub(served_from));
                t.bytes = t.bytes.saturating_sub(e.bytes);
                gone.push((first, next));
            }
            notes.sync_all()?;
            if let Ok(d) = File::open(&aside) {
                d.sync_all()?;
            }
            // A retry of a message that is gone must be stored again, not called a duplicate.
            for kv in self.db.scan_prefix(prefix(P_DEDUPE, t.id)) {
                let (k, v) = kv?;
                if be_u64(&v).is_none_or(|seq| gone.iter().any(|(a, b)| (*a..*b).contains(&seq))) {
                    batch.remove(k);
                }
            }
            // The first seq moves past damage at the head; the last seq never goes back.
            let removed = |seq: u64| gone.iter().any(|(a, _)| *a == seq);
            let mut new_first = None;
            for kv in self.db.scan_prefix(prefix(P_MSG, t.id)) {
                let (k, v) = kv?;
                let (Some(first), Some(e)) = (seq_of_key(&k), IndexEntry::decode(&v)) else {
                    continue;
                };
                if removed(first) || first + u64::from(e.count) <= t.first_seq {
                    continue;
                }
                new_first = Some(first.max(t.first_seq));
                break;
            }
            match new_first {
                Some(f) => t.first_seq = f,
                None => {
                    t.first_seq = t.last_seq.saturating_add(1);
                    t.msgs = 0;
                    t.bytes = 0;
                }
            }
            batch.insert(&topic_key(t.id)[..], encode_topic(&t));
            self.db.apply_batch(batch)?;
            self.db.flush()?;
            moved.extend(ranges(self, &t, &bad));
        }
        Ok(moved)
    }
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `<dir>/<stem>.rec`, or `<stem>.<n>.rec` when a repair before already used the name.
fn unused_path(dir: &Path, stem: &str) -> PathBuf {
    let mut p = dir.join(format!("{stem}.rec"));
    let mut n = 1;
    while p.exists() {
        p = dir.join(format!("{stem}.{n}.rec"));
        n += 1;
    }
    p
}
