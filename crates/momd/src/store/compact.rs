//! Compaction: a segment file most of whose bytes are dead (records trimmed by retention,
//! or of removed topics) has its live records copied to the end of the log, their index
//! entries pointed at the copies, and is then deleted like any segment with no live record
//! (`live.rs`), once the index without it is durable. As NATS JetStream compacts a message
//! block with less than half of it live. The copies keep their topic and seqs; a start that
//! finds a copy the index does not name skips it (`tail.rs`: its seqs are indexed already).
//!
//! The broker runs a step at a time (at most `STEP_BYTES` read), so a large segment never
//! holds up publishes. A record that does not read back is not copied: the index entry
//! naming it keeps its segment alive, and `momd repair` is what moves damage aside.

use std::os::unix::fs::FileExt;

use super::segments::{header_at, next_whole, whole_at, HEADER_LEN, SEGMENT_MAX};
use super::*;

/// Segment files smaller than this are not worth compacting.
const MIN_FILE: u64 = 1024 * 1024;
/// Bytes read per step.
const STEP_BYTES: u64 = 4 * 1024 * 1024;

/// A segment being compacted, and how far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Compacting {
    segment: u64,
    offset: u64,
}

impl Store {
    /// Do one step of compaction, choosing a segment when none is in progress. `urgent`
    /// (the disk is short of space): the segment being appended to is taken too, as soon as
    /// a megabyte of it is dead. Returns whether anything was done.
    pub fn compact_step(&self, urgent: bool) -> Result<bool> {
        let mut cur = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
        if cur.is_none() {
            let Some(seg) = self.pick(urgent) else {
                return Ok(false);
            };
            if seg == self.segs.newest() {
                self.segs.seal()?;
            }
            tracing::debug!(segment = %self.segs.display_path(seg), "compacting");
            *cur = Some(Compacting {
                segment: seg,
                offset: 0,
            });
        }
        let Some(c) = cur.as_mut() else {
            return Ok(false);
        };
        let size = self.segs.size(c.segment);
        let mut read_len = STEP_BYTES;
        let f = match std::fs::File::open(self.segs.seg_path(c.segment)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *cur = None;
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            let want = read_len.min(size.saturating_sub(c.offset));
            if want == 0 {
                *cur = None;
                return Ok(true);
            }
            let mut buf = vec![0u8; want as usize];
            f.read_exact_at(&mut buf, c.offset)?;
            let mut pos = 0usize;
            while pos < buf.len() {
                match whole_at(&buf, pos) {
                    Some((topic, seq, len)) => {
                        let body_at = pos + HEADER_LEN as usize;
                        let body = buf.get(body_at..body_at + len as usize).unwrap_or_default();
                        let loc = Loc {
                            segment: c.segment,
                            offset: c.offset + pos as u64,
                            len,
                        };
                        self.move_if_live(topic, seq, loc, body)?;
                        pos = body_at + len as usize;
                    }
                    None => {
                        // A record cut by the end of what was read: read on from it.
                        if let Some((_, _, len)) = header_at(&buf, pos) {
                            let need = HEADER_LEN + u64::from(len);
                            let at = c.offset + pos as u64;
                            if pos as u64 + need > buf.len() as u64 && at + need <= size {
                                if pos == 0 {
                                    read_len = need;
                                    break;
                                }
                                c.offset = at;
                                return Ok(true);
                            }
                        }
                        // Bytes that do not read back: not copied (see the module's doc).
                        pos = next_whole(&buf, pos + 1).map_or(buf.len(), |(p, ..)| p);
                    }
                }
            }
            if pos >= buf.len() {
                c.offset += buf.len() as u64;
                if c.offset >= size {
                    *cur = None;
                }
                return Ok(true);
            }
        }
    }

    /// The segment to compact: the one with most dead bytes among those at least
    /// `MIN_FILE` big and less than half live. The one being appended to only when it is
    /// half a segment dead, or `urgent` and a megabyte of it is.
    fn pick(&self, urgent: bool) -> Option<u64> {
        let newest = self.segs.newest();
        let files = self.segs.list().ok()?;
        let live = self.live();
        files
            .keys()
            .filter_map(|seg| {
                let size = self.segs.size(*seg);
                let l = live.get(*seg);
                let dead = size.saturating_sub(l.bytes);
                let worth = if *seg == newest {
                    dead >= SEGMENT_MAX / 2 || (urgent && dead >= MIN_FILE)
                } else {
                    size >= MIN_FILE && l.bytes * 2 < size && l.records > 0
                };
                worth.then_some((dead, *seg))
            })
            .max()
            .map(|(_, seg)| seg)
    }

    /// Copy the record at `loc` to the end of the log if the index still names it there.
    fn move_if_live(&self, topic: u32, seq: u64, loc: Loc, body: &[u8]) -> Result<()> {
        let Some((first, e)) = self.entry_at_or_below(topic, seq)? else {
            return Ok(());
        };
        if first != seq || e.loc != loc {
            return Ok(());
        }
        let new = self.segs.append(topic, seq, body)?;
        self.index_unsynced.store(true, Ordering::Relaxed);
        let mut o = self.overlay();
        o.put(
            msg_key(topic, seq).to_vec(),
            IndexEntry { loc: new, ..e }.encode().to_vec(),
        );
        let mut live = self.live();
        let (s, v) = live.sub(&loc);
        o.put(live::seg_key(s).to_vec(), v.encode());
        let (s, v) = live.add(&new);
        o.put(live::seg_key(s).to_vec(), v.encode());
        o.put(meta_key(LOG_END), encode_pos(new.end()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, publish, read_all};

    #[test]
    fn a_mostly_dead_segment_is_copied_forward_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let big = "b".repeat(64 * 1024);
        {
            let (store, mut core) = open(dir.path());
            publish(&mut core, &store, "a", &["1"], true, 1_000);
            for _ in 0..40 {
                publish(&mut core, &store, "gone", &[big.as_str()], false, 1_000);
            }
            publish(&mut core, &store, "a", &["2"], true, 1_000);
            let gone = core.topics.get("gone").unwrap().id;
            store.flush().unwrap();
            store.remove_topic(gone).unwrap();
            core.remove_topic("gone").unwrap();
            // Not urgent: the segment being written stays until half a segment is dead.
            assert!(!store.compact_step(false).unwrap());
            while store.compact_step(true).unwrap() {}
            assert_eq!(store.segs.list().unwrap().len(), 2);
            // Moved, not yet deleted: reads find the copies.
            assert_eq!(
                read_all(&store, &core, "a"),
                vec![(1, "1".into()), (2, "2".into())]
            );
            store.flush().unwrap();
            let files = store.segs.list().unwrap();
            assert_eq!(files.keys().copied().collect::<Vec<_>>(), vec![2]);
            let size = std::fs::metadata(&files[&2]).unwrap().len();
            assert!(size < 4096, "{size}");
            publish(&mut core, &store, "a", &["3"], true, 1_000);
            store.flush().unwrap();
        }
        // A start finds the copies indexed (and skips nothing it should index).
        let (store, mut core) = open(dir.path());
        assert_eq!(
            read_all(&store, &core, "a"),
            vec![(1, "1".into()), (2, "2".into()), (3, "3".into())]
        );
        // A retry of an acknowledged message is still known as one.
        assert_eq!(
            publish(&mut core, &store, "a", &["2"], true, 1_500),
            vec![2]
        );
    }

    #[test]
    fn a_crash_after_copying_before_the_index_flush_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let big = "b".repeat(64 * 1024);
        {
            let (store, mut core) = open(dir.path());
            publish(&mut core, &store, "a", &["1", "2"], true, 1_000);
            for _ in 0..40 {
                publish(&mut core, &store, "gone", &[big.as_str()], false, 1_000);
            }
            let gone = core.topics.get("gone").unwrap().id;
            store.flush().unwrap();
            store.remove_topic(gone).unwrap();
            while store.compact_step(true).unwrap() {}
            // The copies are synced, the index naming them is not.
            store.sync_records().unwrap();
        }
        let (store, core) = open(dir.path());
        assert_eq!(
            read_all(&store, &core, "a"),
            vec![(1, "1".into()), (2, "2".into())]
        );
        let t = core.topics.get("a").unwrap();
        assert_eq!((t.last_seq, t.msgs), (2, 2));
        assert!(store.check_all().unwrap().damage.is_empty());
    }
}
