//! Start-up: the records past the index. A publish is acknowledged once its records and
//! the index naming them are flushed; requests and replies are acknowledged before
//! (`broker/release.rs`), and a crash of momd keeps what it wrote to the page cache. So a
//! start indexes again what was written after the newest record the index knows, as Kafka
//! rebuilds its index files from its log: index entries, the topic's counters and the
//! dedupe entries of msg ids.
//!
//! Reading on from there, a record that does not read back whole is a torn write (never
//! acknowledged) only if no whole record follows it in the topic's log: then the log is
//! cut there. If a whole record follows, the bytes between were acknowledged and damaged
//! later: they are kept, named by an index entry that reads as damaged, reported, and
//! their seqs are never given again (as for damage the index names, `recover.rs`).

use super::segments::{self, whole_at, HEADER_LEN};
use super::*;

/// What reading the log past the index found.
pub(super) struct Tail {
    /// Records indexed again.
    pub records: u64,
    /// Damage found among them.
    pub damage: Vec<check::Damage>,
}

impl Store {
    /// Index the records of `t` written after `after` (the newest record the index knows:
    /// its first seq and where it is; None when the index holds none of the topic's
    /// records). `downtime` is the total downtime as the records were written (what
    /// dedupe entries are stored less). Updates `t`; writes the new index entries, dedupe
    /// entries and `t` to sled.
    pub(super) fn index_tail(
        &self,
        t: &mut TopicState,
        after: Option<Loc>,
        downtime: u64,
    ) -> Result<Tail> {
        let mut out = Tail {
            records: 0,
            damage: Vec::new(),
        };
        let files = self.segs.list(t.id)?;
        let mut expected = t.last_seq + 1;
        // Where to start: right after the newest indexed record, or (none indexed) in the
        // newest file that can hold `expected` (older ones hold only trimmed records).
        let (start_seg, mut pos) = match after {
            Some(l) => (
                l.segment,
                (l.offset + HEADER_LEN + u64::from(l.len)) as usize,
            ),
            None => match files.range(..=expected).next_back().or(files.iter().next()) {
                Some((s, _)) => (*s, 0),
                None => return Ok(out),
            },
        };
        let segs: Vec<(u64, std::path::PathBuf)> = files
            .range(start_seg..)
            .map(|(s, p)| (*s, p.clone()))
            .collect();
        let mut batch = sled::Batch::default();
        let mut i = 0;
        // Bytes of the file being read, from `base` on (the first file from where the
        // index ends: not the whole file, at every start); `pos` is within them.
        let mut base = pos;
        pos = 0;
        let mut buf = match segs.first() {
            Some((_, p)) => read_from(p, base)?,
            None => return Ok(out),
        };
        while let Some(seg) = segs.get(i).map(|(s, _)| *s) {
            if pos >= buf.len() {
                i += 1;
                pos = 0;
                base = 0;
                match segs.get(i) {
                    Some((_, p)) => buf = std::fs::read(p)?,
                    None => break,
                }
                continue;
            }
            match whole_at(&buf, pos) {
                Some((seq, len)) if seq < expected => {
                    // Trimmed before, or older than the index's end: not ours to index.
                    pos += HEADER_LEN as usize + len as usize;
                }
                Some((seq, len)) => {
                    let body_at = pos + HEADER_LEN as usize;
                    let body = buf.get(body_at..body_at + len as usize).unwrap_or_default();
                    let rec = match record::decode(body) {
                        Ok(r) => r,
                        Err(e) => {
                            // Whole, yet not a record this momd wrote: damage.
                            let next = self.next_whole_from(&segs, i, &buf, pos + 1, expected)?;
                            self.tail_damage(
                                t,
                                &mut out,
                                &mut batch,
                                (seg, base + pos, len),
                                expected,
                                next,
                                &format!("its body does not decode: {e}"),
                            );
                            match next {
                                Some((j, p, s, _)) => {
                                    expected = s;
                                    jump_to(&segs, (&mut i, &mut base, &mut pos, &mut buf), j, p)?;
                                    continue;
                                }
                                None => break,
                            }
                        }
                    };
                    if seq > expected {
                        tracing::warn!(
                            topic = %t.name,
                            seqs = %format!("{expected}-{}", seq - 1),
                            "seqs missing from the log past the index; never given again"
                        );
                        t.last_seq = seq - 1;
                    }
                    let count = rec.len() as u64;
                    let bytes: u64 = rec.msgs().map(record::RecMsg::size).sum();
                    let entry = IndexEntry {
                        loc: Loc {
                            segment: seg,
                            offset: (base + pos) as u64,
                            len,
                        },
                        count: count as u32,
                        time: rec.time(),
                        bytes,
                    };
                    batch.insert(&msg_key(t.id, seq)[..], &entry.encode()[..]);
                    let mut s = seq;
                    for run in &rec.runs {
                        for m in &run.msgs {
                            if let Some(id) = &m.msg_id {
                                let mut v = Vec::with_capacity(16);
                                v.extend_from_slice(&s.to_be_bytes());
                                v.extend_from_slice(
                                    &run.time.saturating_sub(downtime).to_be_bytes(),
                                );
                                batch.insert(dedupe_key(t.id, id), v);
                            }
                            s += 1;
                        }
                    }
                    t.last_seq = t.last_seq.max(seq + count - 1);
                    if t.msgs == 0 {
                        t.first_seq = seq;
                    }
                    t.msgs += count;
                    t.bytes += bytes;
                    t.last_time = t.last_time.max(rec.time());
                    expected = seq + count;
                    out.records += 1;
                    pos = body_at + len as usize;
                }
                None => {
                    let next = self.next_whole_from(&segs, i, &buf, pos + 1, expected)?;
                    let Some((j, p, s, _)) = next else {
                        // Nothing whole after it: a write torn by a crash, never
                        // acknowledged (its fdatasync never returned). Cut it off.
                        tracing::warn!(
                            topic = %t.name,
                            seq = expected,
                            segment = %self.segs.display_path(t.id, seg),
                            offset = base + pos,
                            "record torn by a crash before it was acknowledged; dropping it"
                        );
                        self.segs.cut_at(
                            t.id,
                            Loc {
                                segment: seg,
                                offset: (base + pos) as u64,
                                len: 0,
                            },
                        )?;
                        break;
                    };
                    let header_len = buf
                        .get(pos + 12..pos + 16)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u32::from_be_bytes);
                    let reason = if buf.get(pos..pos + 2) == Some(&b"MR"[..]) {
                        "checksum mismatch"
                    } else {
                        "its header is damaged"
                    };
                    self.tail_damage(
                        t,
                        &mut out,
                        &mut batch,
                        (seg, base + pos, header_len),
                        expected,
                        next,
                        reason,
                    );
                    expected = s;
                    jump_to(&segs, (&mut i, &mut base, &mut pos, &mut buf), j, p)?;
                }
            }
        }
        if out.records > 0 || !out.damage.is_empty() {
            batch.insert(&topic_key(t.id)[..], encode_topic(t));
            self.db.apply_batch(batch)?;
            self.needs_index_flush();
        }
        Ok(out)
    }

    /// The next whole record with a seq of at least `min_seq`: in `buf` (file `i` of
    /// `segs`) from `from`, else in the files after it. (file index, offset, seq, length)
    fn next_whole_from(
        &self,
        segs: &[(u64, std::path::PathBuf)],
        i: usize,
        buf: &[u8],
        from: usize,
        min_seq: u64,
    ) -> Result<Option<(usize, usize, u64, u32)>> {
        if let Some((p, s, l)) = segments::next_whole(buf, from, min_seq) {
            return Ok(Some((i, p, s, l)));
        }
        for (j, (_, path)) in segs.iter().enumerate().skip(i + 1) {
            let b = std::fs::read(path)?;
            if let Some((p, s, l)) = segments::next_whole(&b, 0, min_seq) {
                return Ok(Some((j, p, s, l)));
            }
        }
        Ok(None)
    }

    /// Bytes at (segment, offset) that do not read back, followed by a whole record
    /// (`next`): the seqs from `expected` up to that record's are damaged. Named by an
    /// index entry (reads of it fail and say so), counted, and reported.
    #[allow(clippy::too_many_arguments)]
    fn tail_damage(
        &self,
        t: &mut TopicState,
        out: &mut Tail,
        batch: &mut sled::Batch,
        (seg, pos, len): (u64, usize, u32),
        expected: u64,
        next: Option<(usize, usize, u64, u32)>,
        reason: &str,
    ) {
        let Some((_, _, next_seq, _)) = next else {
            return;
        };
        if next_seq <= expected {
            return;
        }
        let count = next_seq - expected;
        let entry = IndexEntry {
            loc: Loc {
                segment: seg,
                offset: pos as u64,
                len,
            },
            count: count.min(u64::from(u32::MAX)) as u32,
            time: t.last_time,
            bytes: 0,
        };
        batch.insert(&msg_key(t.id, expected)[..], &entry.encode()[..]);
        if t.msgs == 0 {
            t.first_seq = expected;
        }
        t.msgs += count;
        t.last_seq = t.last_seq.max(next_seq - 1);
        out.damage.push(check::Damage {
            topic: t.name.clone(),
            topic_id: t.id,
            first_seq: expected,
            last_seq: next_seq - 1,
            records: 1,
            segment: self.segs.display_path(t.id, seg),
            offset: pos as u64,
            reason: reason.to_string(),
        });
    }
}

/// Go on reading at offset `p` of file `j` of `segs` (the whole record found after bytes
/// that do not read back): the reading position is (file index, base, pos, bytes).
fn jump_to(
    segs: &[(u64, std::path::PathBuf)],
    (i, base, pos, buf): (&mut usize, &mut usize, &mut usize, &mut Vec<u8>),
    j: usize,
    p: usize,
) -> std::io::Result<()> {
    if j != *i {
        *i = j;
        *base = 0;
        if let Some((_, path)) = segs.get(j) {
            *buf = std::fs::read(path)?;
        }
    }
    *pos = p;
    Ok(())
}

/// The bytes of the file at `path` from `offset` to its end.
fn read_from(path: &std::path::Path, offset: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let len = usize::try_from(f.metadata()?.len()).unwrap_or(usize::MAX);
    let mut v = vec![0u8; len.saturating_sub(offset)];
    f.read_exact_at(&mut v, offset as u64)?;
    Ok(v)
}
