//! The entries of one group's Raft log, in append-only segment files of its own directory
//! (`DATA/raft/log/<group>/`), named by the index of their first entry.
//!
//! A record: payload length (u32 BE) ‖ CRC32 of index and payload (u32 BE) ‖ index (u64
//! BE) ‖ payload (the entry, MessagePack). The offsets of a segment's records are kept in
//! memory, so an entry is one positioned read.
//!
//! On disk the segments always hold one run of indexes with no gap: a truncation deletes
//! the segments after its point (newest first) before it cuts the one holding it, a purge
//! deletes whole segments oldest first, and an append past the end (after a snapshot was
//! installed) deletes every older segment before it starts a new one. A crash anywhere in
//! these leaves a run.
//!
//! Opening checks every record. A record torn by a crash (its bytes run past the end of
//! the last segment, or it is the last record there and fails its checksum, or the rest of
//! the file is zeros) was never reported stored: it is cut off. Anything else that does
//! not read back (a bad record with records after it, a bad record in an older segment, a
//! gap between segments) is damage, and the log refuses to open rather than forget
//! entries it reported stored.
//!
//! Appends are written here and made durable by the node's flusher (`flusher.rs`), which
//! fdatasyncs the files written since its last sync before it reports them stored.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes before a record's payload.
const HEAD: u64 = 16;
/// The largest payload a record may claim (a bound for damaged lengths).
const MAX_PAYLOAD: u64 = 1 << 30;
const SUFFIX: &str = ".log";

fn damaged(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn crc(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_be_bytes());
    h.update(payload);
    h.finalize()
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Where each record starts: record `first + i` at `offsets[i]`.
    offsets: Vec<u64>,
    /// Where the next record goes.
    len: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// One group's log files.
pub(crate) struct LogFiles {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// A segment takes no new record once it holds this many bytes.
    segment_bytes: u64,
}

/// What reading one record found.
enum Read {
    Record(Vec<u8>, u64),
    /// Its bytes run past the end of the file, or what remains is zeros.
    Torn,
    Bad(String),
}

fn read_record(file: &File, at: u64, file_len: u64, want: u64) -> io::Result<Read> {
    if at + HEAD > file_len {
        return Ok(Read::Torn);
    }
    let mut head = [0u8; HEAD as usize];
    file.read_exact_at(&mut head, at)?;
    let [l0, l1, l2, l3, c0, c1, c2, c3, i0, i1, i2, i3, i4, i5, i6, i7] = head;
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as u64;
    let sum = u32::from_be_bytes([c0, c1, c2, c3]);
    let index = u64::from_be_bytes([i0, i1, i2, i3, i4, i5, i6, i7]);
    if head == [0u8; HEAD as usize] && zeros_from(file, at, file_len)? {
        return Ok(Read::Torn);
    }
    if len > MAX_PAYLOAD {
        return Ok(Read::Bad(format!("a record claims {len} bytes")));
    }
    if at + HEAD + len > file_len {
        return Ok(Read::Torn);
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, at + HEAD)?;
    if index != want {
        return Ok(Read::Bad(format!(
            "record of index {index} where {want} belongs"
        )));
    }
    if crc(index, &payload) != sum {
        return Ok(Read::Bad(format!(
            "record of index {index} fails its checksum"
        )));
    }
    Ok(Read::Record(payload, at + HEAD + len))
}

/// Whether the file holds only zero bytes from `at` on.
fn zeros_from(file: &File, mut at: u64, file_len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    while at < file_len {
        let n = ((file_len - at) as usize).min(buf.len());
        let chunk = &mut buf[..n];
        file.read_exact_at(chunk, at)?;
        if chunk.iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

fn name_of(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

impl LogFiles {
    /// Opens (creating it if need be) the log in `dir`, checking every record.
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> io::Result<LogFiles> {
        fs::create_dir_all(dir)?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(dir)? {
            let path = e?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(first) = name.strip_suffix(SUFFIX).and_then(|n| n.parse().ok()) {
                found.push((first, path));
            }
        }
        found.sort();
        let mut segments: Vec<Segment> = Vec::new();
        let count = found.len();
        for (k, (first, path)) in found.into_iter().enumerate() {
            let last = k + 1 == count;
            let seg = Self::scan(first, path, last)?;
            if seg.offsets.is_empty() {
                // Created, and nothing stored in it before a crash.
                if last {
                    fs::remove_file(&seg.path)?;
                    sync_dir(dir)?;
                    break;
                }
                return Err(damaged(format!(
                    "the Raft log segment {} holds no record",
                    seg.path.display()
                )));
            }
            if let Some(prev) = segments.last() {
                if prev.end() != first {
                    return Err(damaged(format!(
                        "the Raft log in {} has a gap: {} ends before {} and {} starts at {first}",
                        dir.display(),
                        name_of(prev.first),
                        prev.end(),
                        seg.path.display()
                    )));
                }
            }
            segments.push(seg);
        }
        Ok(LogFiles {
            dir: dir.to_path_buf(),
            segments,
            segment_bytes,
        })
    }

    fn scan(first: u64, path: PathBuf, last: bool) -> io::Result<Segment> {
        let file = open_rw(&path, false)?;
        let file_len = file.metadata()?.len();
        let mut offsets = Vec::new();
        let mut at = 0;
        while at < file_len {
            let want = first + offsets.len() as u64;
            match read_record(&file, at, file_len, want)? {
                Read::Record(_, next) => {
                    offsets.push(at);
                    at = next;
                }
                Read::Torn if last => break,
                Read::Bad(why) if last && record_end(&file, at, file_len)? == Some(file_len) => {
                    tracing::warn!(
                        "the Raft log's last record in {} is torn ({why}): cut off",
                        path.display()
                    );
                    break;
                }
                Read::Torn => {
                    return Err(damaged(format!(
                        "the Raft log segment {} is cut short at byte {at}",
                        path.display()
                    )))
                }
                Read::Bad(why) => {
                    return Err(damaged(format!(
                        "the Raft log segment {} is damaged at byte {at}: {why}",
                        path.display()
                    )))
                }
            }
        }
        if at < file_len {
            tracing::warn!(
                "cutting {} bytes never reported stored off the Raft log's end in {}",
                file_len - at,
                path.display()
            );
            file.set_len(at)?;
            file.sync_all()?;
        }
        Ok(Segment {
            first,
            path,
            file: Arc::new(file),
            offsets,
            len: at,
        })
    }

    /// The index after the last entry, if the log holds any.
    pub(crate) fn end(&self) -> Option<u64> {
        self.segments.last().map(Segment::end)
    }

    /// The index of the last entry, if the log holds any.
    pub(crate) fn last(&self) -> Option<u64> {
        self.end()?.checked_sub(1).filter(|_| self.count() > 0)
    }

    /// The first index from which the records up to `end` (included) take at most
    /// `max_bytes` of the files (`end + 1` if `end`'s alone takes more); `None` if the
    /// files do not hold `end`.
    pub(crate) fn first_within(&self, end: u64, max_bytes: u64) -> Option<u64> {
        let k = self
            .segments
            .partition_point(|s| s.first <= end)
            .checked_sub(1)?;
        let seg = self.segments.get(k)?;
        let i = usize::try_from(end.checked_sub(seg.first)?).ok()?;
        let past_end = match seg.offsets.get(i + 1) {
            Some(&o) => o,
            None if i < seg.offsets.len() => seg.len,
            None => return None,
        };
        let mut first = end + 1;
        // Bytes of the records of the later segments, up to `end`.
        let mut later = 0u64;
        for (n, s) in self.segments.get(..=k)?.iter().rev().enumerate() {
            let (upto, tail) = if n == 0 {
                (i + 1, past_end)
            } else {
                (s.offsets.len(), s.len)
            };
            let Some(room) = max_bytes.checked_sub(later) else {
                break;
            };
            // The first record of this segment from which the rest fits in `room`.
            let want = tail.saturating_sub(room);
            let held = s.offsets.get(..upto)?;
            let j = held.partition_point(|&o| o < want);
            if j < upto {
                first = s.first + j as u64;
            }
            if j > 0 {
                break;
            }
            later += tail - held.first().copied().unwrap_or(tail);
        }
        Some(first)
    }

    /// How many entries the files hold.
    pub(crate) fn count(&self) -> usize {
        self.segments.iter().map(|s| s.offsets.len()).sum()
    }

    /// The payload of entry `index`, if the files hold it.
    pub(crate) fn read(&self, index: u64) -> io::Result<Option<Vec<u8>>> {
        let k = self.segments.partition_point(|s| s.first <= index);
        let Some(seg) = k.checked_sub(1).and_then(|k| self.segments.get(k)) else {
            return Ok(None);
        };
        let Some(&at) = index
            .checked_sub(seg.first)
            .and_then(|i| seg.offsets.get(i as usize))
        else {
            return Ok(None);
        };
        let file_len = seg.len;
        match read_record(&seg.file, at, file_len, index)? {
            Read::Record(payload, _) => Ok(Some(payload)),
            Read::Torn => Err(damaged(format!(
                "entry {index} runs past the end of {}",
                seg.path.display()
            ))),
            Read::Bad(why) => Err(damaged(format!(
                "entry {index} in {} does not read back: {why}",
                seg.path.display()
            ))),
        }
    }

    /// Writes entries (index, payload), in order, after the last one; the files written
    /// are pushed to `dirty` for the flusher. An entry past the end (the log was purged up
    /// to a snapshot past it) first deletes every older segment.
    pub(crate) fn append(
        &mut self,
        entries: &[(u64, Vec<u8>)],
        dirty: &mut Vec<Arc<File>>,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut pending: Vec<u64> = Vec::new();
        // The index after the last entry, those in `buf` included.
        let mut next = self.end();
        for (index, payload) in entries {
            let index = *index;
            match next {
                Some(end) if index < end => {
                    return Err(io::Error::other(format!(
                        "entry {index} appended where the log holds up to {}",
                        end - 1
                    )))
                }
                Some(end) if index > end => {
                    self.write_out(&mut buf, &mut pending, dirty)?;
                    self.drop_all()?;
                }
                _ => {}
            }
            let full = self.segments.last().is_none_or(|s| {
                let held = s.len + buf.len() as u64;
                held > 0 && held >= self.segment_bytes
            });
            if full {
                self.write_out(&mut buf, &mut pending, dirty)?;
                self.start_segment(index)?;
            }
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|l| (*l as u64) <= MAX_PAYLOAD)
                .ok_or_else(|| io::Error::other("a Raft log entry over 1 GiB"))?;
            let at = self.segments.last().map_or(0, |s| s.len) + buf.len() as u64;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&crc(index, payload).to_be_bytes());
            buf.extend_from_slice(&index.to_be_bytes());
            buf.extend_from_slice(payload);
            pending.push(at);
            next = Some(index + 1);
        }
        self.write_out(&mut buf, &mut pending, dirty)
    }

    /// Writes `buf` (the records at `pending`) at the end of the last segment.
    fn write_out(
        &mut self,
        buf: &mut Vec<u8>,
        pending: &mut Vec<u64>,
        dirty: &mut Vec<Arc<File>>,
    ) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let seg = self
            .segments
            .last_mut()
            .ok_or_else(|| io::Error::other("no segment to write to"))?;
        seg.file.write_all_at(buf, seg.len)?;
        seg.len += buf.len() as u64;
        seg.offsets.append(pending);
        if !dirty.iter().any(|f| Arc::ptr_eq(f, &seg.file)) {
            dirty.push(seg.file.clone());
        }
        buf.clear();
        Ok(())
    }

    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        let path = self.dir.join(name_of(first));
        let file = open_rw(&path, true)?;
        file.set_len(0)?;
        // The new name is durable before any record in it is reported stored.
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            len: 0,
        });
        Ok(())
    }

    /// Deletes every segment, oldest first.
    fn drop_all(&mut self) -> io::Result<()> {
        for seg in self.segments.drain(..) {
            fs::remove_file(&seg.path)?;
        }
        sync_dir(&self.dir)
    }

    /// Removes the entries from `index` on, durably, before it returns.
    pub(crate) fn truncate_from(&mut self, index: u64) -> io::Result<()> {
        // Whole segments at or after the point, newest first.
        let mut removed = false;
        while let Some(seg) = self.segments.last() {
            if seg.first < index {
                break;
            }
            fs::remove_file(&seg.path)?;
            self.segments.pop();
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        let Some(seg) = self.segments.last_mut() else {
            return Ok(());
        };
        let keep = (index - seg.first) as usize;
        if keep < seg.offsets.len() {
            let at = seg.offsets[keep];
            seg.file.set_len(at)?;
            seg.file.sync_data()?;
            seg.offsets.truncate(keep);
            seg.len = at;
        }
        Ok(())
    }

    /// Deletes the segments every entry of which is at or below `upto`, oldest first, and
    /// returns how many entries they held. The last segment stays (appends go on in it).
    pub(crate) fn remove_below(&mut self, upto: u64) -> io::Result<usize> {
        let n = self
            .segments
            .iter()
            .take_while(|s| s.end() <= upto.saturating_add(1))
            .count()
            .min(self.segments.len().saturating_sub(1));
        if n == 0 {
            return Ok(0);
        }
        let mut entries = 0;
        for seg in self.segments.drain(..n) {
            fs::remove_file(&seg.path)?;
            entries += seg.offsets.len();
        }
        sync_dir(&self.dir)?;
        Ok(entries)
    }
}

/// Where the record at `at` would end, if its length can be read.
fn record_end(file: &File, at: u64, file_len: u64) -> io::Result<Option<u64>> {
    if at + HEAD > file_len {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    file.read_exact_at(&mut len, at)?;
    Ok(Some(at + HEAD + u32::from_be_bytes(len) as u64))
}

#[cfg(test)]
#[path = "log_files_tests.rs"]
mod tests;
