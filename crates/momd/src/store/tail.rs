//! Start-up: the records past the index. A publish is acknowledged once its records and
//! the index naming them are flushed; requests and replies are acknowledged before
//! (`broker/release.rs`), and a crash of momd keeps what it wrote to the page cache. So a
//! start indexes again what was written after the index's end (the end of the newest record
//! it names, kept with it), as Kafka rebuilds its index files from its log: index entries,
//! the topics' counters and the dedupe entries of msg ids.
//!
//! Reading on from there, a record that does not read back whole is a torn write (never
//! acknowledged) only if no whole record follows it in the log: then the log is cut there.
//! If a whole record follows, the bytes between are skipped and reported; nothing there was
//! acknowledged (a request's or reply's delivery aside: those are not fsynced before), and a
//! later record of the same topic moves its seqs past them, so none is given twice.

use std::collections::HashMap;

use super::segments::{self, header_at, whole_at, HEADER_LEN};
use super::*;

/// What reading the log past the index found.
pub(super) struct Tail {
    /// Records indexed again.
    pub records: u64,
    /// Damage found among them.
    pub damage: Vec<check::Damage>,
}

impl Store {
    /// Index the records written after `after` (the index's end: segment and offset; None
    /// when the index holds no record), for the topics in `topics` (updated). `downtime`
    /// is the total downtime as the records were written (what dedupe entries are stored
    /// less). Writes the new index entries, dedupe entries and topic states to sled.
    pub(super) fn index_tail(
        &self,
        topics: &mut Vec<TopicState>,
        after: Option<(u64, u64)>,
        downtime: u64,
    ) -> Result<Tail> {
        let mut out = Tail {
            records: 0,
            damage: Vec::new(),
        };
        let files = self.segs.list()?;
        let (start_seg, start_pos) = after.unwrap_or((0, 0));
        let segs: Vec<(u64, std::path::PathBuf)> = files
            .range(start_seg..)
            .map(|(s, p)| (*s, p.clone()))
            .collect();
        // Nothing past the index (a clean stop): no need for a map of every topic.
        let past: u64 = segs
            .iter()
            .map(|(s, p)| {
                let len = std::fs::metadata(p).map_or(0, |m| m.len());
                if *s == start_seg {
                    len.saturating_sub(start_pos)
                } else {
                    len
                }
            })
            .sum();
        if past == 0 {
            return Ok(out);
        }
        let mut by_id: HashMap<u32, usize> =
            topics.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        let mut batch = sled::Batch::default();
        let mut touched: std::collections::BTreeSet<usize> = Default::default();
        let mut end: Option<(u64, u64)> = None;
        let mut created = false;
        // Bytes that do not read back, by the topic whose next seq their header names.
        let mut pending: HashMap<u32, (Loc, &str)> = HashMap::new();
        'files: for (i, (seg, path)) in segs.iter().enumerate() {
            // The first file from where the index ends: not the whole file, at every start.
            let base = if *seg == start_seg { start_pos } else { 0 };
            let buf = read_from(path, base)?;
            let mut pos = 0usize;
            while pos < buf.len() {
                let Some((topic, seq, len)) = whole_at(&buf, pos) else {
                    let next = self.next_whole_from(&segs, i, &buf, pos + 1)?;
                    let head = header_at(&buf, pos);
                    let name_of = |t: u32| by_id.get(&t).and_then(|i| topics.get(*i));
                    let (topic, seq) = head.map_or((String::new(), 0), |(t, s, _)| {
                        (name_of(t).map_or(String::new(), |t| t.name.to_string()), s)
                    });
                    let what = match head {
                        Some((_, s, _)) if !topic.is_empty() => format!("topic {topic:?} seq {s}"),
                        Some((t, s, _)) => format!("topic id {t} seq {s}"),
                        None => "its header is unreadable".to_string(),
                    };
                    match next {
                        None => {
                            // Nothing whole after it: a write torn by a crash, never
                            // acknowledged (its fdatasync never returned). Cut it off.
                            tracing::warn!(
                                topic = %topic,
                                seq,
                                segment = %self.segs.display_path(*seg),
                                offset = base + pos as u64,
                                "record torn by a crash before it was acknowledged ({what}); \
                                 dropping it"
                            );
                            self.segs.cut_at(Loc {
                                segment: *seg,
                                offset: base + pos as u64,
                                len: 0,
                            })?;
                            break 'files;
                        }
                        Some((j, p)) => {
                            // Its header still names the next seq of a topic: if a later
                            // record of that topic is found, the seqs between are named as
                            // damage by an index entry (reads say so; never given again).
                            if let Some((t, s, l)) = head {
                                if name_of(t).is_some_and(|t| t.last_seq + 1 == s) {
                                    let loc = Loc {
                                        segment: *seg,
                                        offset: base + pos as u64,
                                        len: l,
                                    };
                                    let reason = if buf.get(pos..pos + 2) == Some(&b"MR"[..]) {
                                        "checksum mismatch"
                                    } else {
                                        "its header is damaged"
                                    };
                                    pending.insert(t, (loc, reason));
                                }
                            }
                            tracing::error!(
                                segment = %self.segs.display_path(*seg),
                                offset = base + pos as u64,
                                "bytes past the index do not read back ({what}); skipped to \
                                 the next whole record (segment {}, offset {p}): nothing \
                                 there was acknowledged",
                                segs.get(j).map_or(0, |s| s.0)
                            );
                            if j != i {
                                // Go on in the file that holds it; what comes before its
                                // offset there is read past record by record.
                                continue 'files;
                            }
                            pos = p;
                            continue;
                        }
                    }
                };
                let rec_end = pos + HEADER_LEN as usize + len as usize;
                let loc = Loc {
                    segment: *seg,
                    offset: base + pos as u64,
                    len,
                };
                pos = rec_end;
                if seq == 0 {
                    // A topic created after the index's end: its state, as when created.
                    if let std::collections::hash_map::Entry::Vacant(slot) = by_id.entry(topic) {
                        let body_at = rec_end - len as usize;
                        let body = buf.get(body_at..rec_end).unwrap_or_default();
                        match rmp_serde::from_slice::<TopicState>(body) {
                            Ok(mut t) if t.id == topic => {
                                t.first_seq = 1;
                                t.last_seq = 0;
                                t.msgs = 0;
                                t.bytes = 0;
                                t.last_time = 0;
                                slot.insert(topics.len());
                                touched.insert(topics.len());
                                topics.push(t);
                                created = true;
                            }
                            _ => tracing::error!(
                                segment = %self.segs.display_path(*seg),
                                offset = loc.offset,
                                "a topic's record past the index does not decode; skipped"
                            ),
                        }
                    }
                    continue;
                }
                let Some(ti) = by_id.get(&topic).copied() else {
                    // A topic removed since: its records are dead bytes.
                    continue;
                };
                let Some(t) = topics.get_mut(ti) else {
                    continue;
                };
                if seq <= t.last_seq {
                    // Indexed before (or trimmed): not ours to index.
                    continue;
                }
                let body_at = rec_end - len as usize;
                let body = buf.get(body_at..rec_end).unwrap_or_default();
                let rec = match record::decode(body) {
                    Ok(r) => r,
                    Err(e) => {
                        // Whole, yet not a record this momd wrote.
                        tracing::error!(
                            topic = %t.name,
                            seq,
                            segment = %self.segs.display_path(*seg),
                            offset = loc.offset,
                            "a record past the index does not decode ({e}); skipped"
                        );
                        continue;
                    }
                };
                let expected = t.last_seq + 1;
                if let Some((bad, reason)) = pending.remove(&topic).filter(|_| seq > expected) {
                    let d = self.name_damage(&mut batch, t, seq - 1, bad, reason);
                    out.damage.push(d);
                }
                if seq > t.last_seq + 1 {
                    tracing::warn!(
                        topic = %t.name,
                        seqs = %format!("{}-{}", t.last_seq + 1, seq - 1),
                        "seqs missing from the log past the index; never given again"
                    );
                    t.last_seq = seq - 1;
                }
                let count = rec.len() as u64;
                let bytes: u64 = rec.msgs().map(record::RecMsg::size).sum();
                let entry = IndexEntry {
                    loc,
                    count: count as u32,
                    time: rec.time(),
                    bytes,
                };
                batch.insert(&msg_key(t.id, seq)[..], &entry.encode()[..]);
                let (s, v) = self.live().add(&loc);
                batch.insert(&live::seg_key(s)[..], v.encode());
                let mut s = seq;
                for run in &rec.runs {
                    for m in &run.msgs {
                        if let Some(id) = &m.msg_id {
                            let mut v = Vec::with_capacity(16);
                            v.extend_from_slice(&s.to_be_bytes());
                            v.extend_from_slice(&run.time.saturating_sub(downtime).to_be_bytes());
                            batch.insert(dedupe_key(t.id, id), v);
                        }
                        s += 1;
                    }
                }
                t.last_seq = t.last_seq.max((seq + count).saturating_sub(1));
                if t.msgs == 0 {
                    t.first_seq = seq;
                }
                t.msgs += count;
                t.bytes += bytes;
                t.last_time = t.last_time.max(rec.time());
                touched.insert(ti);
                end = Some(loc.end());
                out.records += 1;
            }
        }
        if out.records > 0 || created {
            for ti in touched {
                if let Some(t) = topics.get(ti) {
                    batch.insert(&topic_key(t.id)[..], encode_topic(t));
                }
            }
            if let Some(e) = end {
                batch.insert(meta_key(LOG_END), encode_pos(e));
            }
            self.db.apply_batch(batch)?;
            self.needs_index_flush();
        }
        Ok(out)
    }

    /// Name `t`'s seqs after its last one, up to `last`, as damage at `loc`: an index entry
    /// that reads report as damaged (so they are never given again), counted live in its
    /// segment file, and the topic's counters moved past them. Returns what to report.
    pub(super) fn name_damage(
        &self,
        batch: &mut sled::Batch,
        t: &mut TopicState,
        last: u64,
        loc: Loc,
        reason: &str,
    ) -> check::Damage {
        let first = t.last_seq + 1;
        let count = last.saturating_sub(t.last_seq);
        let entry = IndexEntry {
            loc,
            count: count.min(u64::from(u32::MAX)) as u32,
            time: t.last_time,
            bytes: 0,
        };
        batch.insert(&msg_key(t.id, first)[..], &entry.encode()[..]);
        let (s, v) = self.live().add(&loc);
        batch.insert(&live::seg_key(s)[..], v.encode());
        if t.msgs == 0 {
            t.first_seq = first;
        }
        t.msgs += count;
        t.last_seq = last;
        check::Damage {
            topic: t.name.to_string(),
            topic_id: t.id,
            first_seq: first,
            last_seq: last,
            records: 1,
            segment: self.segs.display_path(loc.segment),
            offset: loc.offset,
            reason: reason.to_string(),
        }
    }

    /// The next whole record: in `buf` (file `i` of `segs`) from `from`, else in the files
    /// after it. (file index, offset)
    fn next_whole_from(
        &self,
        segs: &[(u64, std::path::PathBuf)],
        i: usize,
        buf: &[u8],
        from: usize,
    ) -> Result<Option<(usize, usize)>> {
        if let Some((p, ..)) = segments::next_whole(buf, from) {
            return Ok(Some((i, p)));
        }
        for (j, (_, path)) in segs.iter().enumerate().skip(i + 1) {
            let b = std::fs::read(path)?;
            if let Some((p, ..)) = segments::next_whole(&b, 0) {
                return Ok(Some((j, p)));
            }
        }
        Ok(None)
    }
}

/// The bytes of the file at `path` from `offset` to its end.
fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut v = vec![0u8; usize::try_from(len.saturating_sub(offset)).unwrap_or(0)];
    f.read_exact_at(&mut v, offset)?;
    Ok(v)
}
