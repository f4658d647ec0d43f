//! The acknowledged heads: how far each topic's log was acknowledged past the index's
//! durable end, so that an ack waits for one fdatasync of the log, not for the index too.
//!
//! A publish is acknowledged once its records are fdatasynced (`Store::sync_records`); the
//! index catches up every quarter second beside the acks, and a start indexes again what
//! was written past its end (`tail.rs`), as Kafka rebuilds its index files from its log.
//! What the log alone cannot say is how far it reached: a log cut short past the index's
//! end (a disk that lost its tail) reads like a write torn by a crash, which was never
//! acknowledged. So every flush also writes, into the small file `heads`, each topic's
//! last seq written since the index's last durable flush, sends it to the device, and only
//! then syncs the log: the log's fdatasync flushes the device's cache for both.
//! At start, a topic whose log past the index ends before the head written here lost
//! acknowledged records: they are reported as damage and their seqs never given again.
//!
//! The file holds two slots used in turn, each with a generation and a checksum: a slot
//! torn by a crash is refused and the other one read, which names everything acknowledged
//! before the flush that was writing. A slot holds [`CAPACITY`] topics; with more written
//! since the index's flush, the next flush is a full one (the index too), as before.
//!
//! Slot layout (big-endian): `MOMH` (4), version (1), 3 zero bytes, generation (u64),
//! count (u32), CRC32 of generation, count and entries (u32), then `count` entries of
//! topic id (u32) and last seq (u64).

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Topics a slot holds.
pub const CAPACITY: usize = 4096;
const MAGIC: &[u8; 4] = b"MOMH";
const VERSION: u8 = 1;
const HEAD: usize = 24;
const ENTRY: usize = 12;
/// Bytes of one slot (the file holds two).
const SLOT: usize = 64 * 1024;
const _: () = assert!(HEAD + CAPACITY * ENTRY <= SLOT);

pub const FILE: &str = "heads";

/// The topics written past the index's durable end, and the file naming them.
pub struct Heads {
    file: std::sync::Arc<std::fs::File>,
    /// topic id → (last seq written, the write's number).
    written: HashMap<u32, (u64, u64)>,
    /// Writes (calls to `note_write`) so far.
    writes: u64,
    /// Generation of the slot written last.
    generation: u64,
    buf: Vec<u8>,
}

impl Heads {
    /// Open (or create, zero-filled and synced) the file in `dir`, and read what its
    /// newest whole slot names: (topic id, last acknowledged seq).
    pub fn open(dir: &Path) -> std::io::Result<(Heads, Vec<(u32, u64)>)> {
        let path = dir.join(FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let len = file.metadata()?.len();
        let mut claims = Vec::new();
        let mut generation = 0;
        if len < (2 * SLOT) as u64 {
            // Written once with zeros, so that later writes overwrite blocks already
            // allocated: an fdatasync then has no file metadata to write.
            file.write_all_at(&vec![0u8; 2 * SLOT - len as usize], len)?;
            file.sync_all()?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let mut best: Option<(u64, Vec<(u32, u64)>)> = None;
        for slot in 0..2 {
            let mut b = vec![0u8; SLOT];
            file.read_exact_at(&mut b, (slot * SLOT) as u64)?;
            if let Some((g, entries)) = decode(&b) {
                if best.as_ref().is_none_or(|(bg, _)| g > *bg) {
                    best = Some((g, entries));
                }
            }
        }
        if let Some((g, entries)) = best {
            generation = g;
            claims = entries;
        }
        Ok((
            Heads {
                file: std::sync::Arc::new(file),
                written: HashMap::new(),
                writes: 0,
                generation,
                buf: Vec::with_capacity(SLOT),
            },
            claims,
        ))
    }

    /// Note records of `topic` written up to `last_seq` (after the write succeeded).
    pub fn note_write(&mut self, topic: u32, last_seq: u64) {
        self.writes += 1;
        let w = self.writes;
        let e = self.written.entry(topic).or_insert((last_seq, w));
        e.0 = e.0.max(last_seq);
        e.1 = w;
    }

    /// Topics named now.
    pub fn len(&self) -> usize {
        self.written.len()
    }

    /// A point to give [`Heads::indexed`] once the index's writes taken now are durable.
    pub fn mark(&self) -> u64 {
        self.writes
    }

    /// The index's writes taken at `mark` are durable: forget the topics not written since.
    pub fn indexed(&mut self, mark: u64) {
        self.written.retain(|_, (_, w)| *w > mark);
    }

    /// Write the next slot with every topic named now, to the page cache; the range it
    /// took, for [`to_device`]. None (nothing written) when they do not fit: the index must
    /// be flushed instead.
    pub fn write(&mut self) -> std::io::Result<Option<(u64, u64)>> {
        if self.written.len() > CAPACITY {
            return Ok(None);
        }
        self.generation += 1;
        let mut entries: Vec<(u32, u64)> =
            self.written.iter().map(|(t, (s, _))| (*t, *s)).collect();
        entries.sort_unstable();
        encode(self.generation, &entries, &mut self.buf);
        let at = (self.generation % 2) * SLOT as u64;
        self.file.write_all_at(&self.buf, at)?;
        Ok(Some((at, self.buf.len() as u64)))
    }

    /// The file, to sync without holding the lock.
    pub fn file(&self) -> std::sync::Arc<std::fs::File> {
        self.file.clone()
    }
}

/// Write `len` bytes at `at` of `file` to the device and wait until it has them, without
/// asking it to flush its cache: the fdatasync of the segment files that follows asks that
/// once for both (a second fdatasync beside it cost a second cache flush, which the device
/// does one at a time). The slot's blocks were allocated and synced when the file was
/// made, so no file metadata goes with it.
pub fn to_device(file: &std::fs::File, at: u64, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), at as i64, len as i64, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn encode(generation: u64, entries: &[(u32, u64)], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(MAGIC);
    buf.push(VERSION);
    buf.extend_from_slice(&[0, 0, 0]);
    buf.extend_from_slice(&generation.to_be_bytes());
    buf.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]);
    for (t, s) in entries {
        buf.extend_from_slice(&t.to_be_bytes());
        buf.extend_from_slice(&s.to_be_bytes());
    }
    let crc = crc(buf);
    buf[20..24].copy_from_slice(&crc.to_be_bytes());
}

fn crc(slot: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(slot.get(8..20).unwrap_or_default());
    h.update(slot.get(HEAD..).unwrap_or_default());
    h.finalize()
}

/// A whole slot: (generation, entries); None for zeros, a torn write or damage.
fn decode(b: &[u8]) -> Option<(u64, Vec<(u32, u64)>)> {
    if b.get(0..4)? != MAGIC || *b.get(4)? != VERSION {
        return None;
    }
    let be64 = |at: usize| Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let be32 = |at: usize| Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let generation = be64(8)?;
    let count = be32(16)? as usize;
    if count > CAPACITY {
        return None;
    }
    let end = HEAD + count * ENTRY;
    let slot = b.get(..end)?;
    if crc(slot) != be32(20)? {
        return None;
    }
    let entries = (0..count)
        .map(|i| {
            let at = HEAD + i * ENTRY;
            Some((be32(at)?, be64(at + 4)?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((generation, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_whole_slot_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut h, claims) = Heads::open(dir.path()).unwrap();
            assert!(claims.is_empty());
            h.note_write(3, 10);
            h.note_write(1, 4);
            assert!(h.write().unwrap().is_some());
            h.note_write(3, 12);
            assert!(h.write().unwrap().is_some());
        }
        let (_, claims) = Heads::open(dir.path()).unwrap();
        assert_eq!(claims, vec![(1, 4), (3, 12)]);
    }

    #[test]
    fn a_torn_slot_leaves_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let at;
        {
            let (mut h, _) = Heads::open(dir.path()).unwrap();
            h.note_write(7, 1);
            assert!(h.write().unwrap().is_some());
            h.note_write(7, 2);
            assert!(h.write().unwrap().is_some());
            at = (h.generation % 2) * SLOT as u64;
        }
        // The newest slot's last entry byte flipped: its checksum fails.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join(FILE))
            .unwrap();
        let mut b = [0u8; 1];
        let pos = at + (HEAD + ENTRY - 1) as u64;
        f.read_exact_at(&mut b, pos).unwrap();
        f.write_all_at(&[b[0] ^ 1], pos).unwrap();
        let (h, claims) = Heads::open(dir.path()).unwrap();
        assert_eq!(claims, vec![(7, 1)]);
        // The next slot written goes after the one read.
        assert_eq!(h.generation, 1);
    }

    #[test]
    fn indexed_topics_are_forgotten_unless_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut h, _) = Heads::open(dir.path()).unwrap();
        h.note_write(1, 5);
        h.note_write(2, 5);
        let mark = h.mark();
        h.note_write(2, 6);
        h.indexed(mark);
        assert_eq!(h.len(), 1);
        for t in 0..=CAPACITY as u32 {
            h.note_write(t + 10, 1);
        }
        assert!(
            h.write().unwrap().is_none(),
            "more topics than a slot holds"
        );
    }

    #[test]
    fn garbage_is_no_slot() {
        assert!(decode(&[0u8; 64]).is_none());
        assert!(decode(b"MOMH").is_none());
        let mut buf = Vec::new();
        encode(9, &[(1, 2)], &mut buf);
        assert_eq!(decode(&buf), Some((9, vec![(1, 2)])));
        buf[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(&buf).is_none());
    }
}
