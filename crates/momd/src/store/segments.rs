//! Message records of every topic in one append-only log: `log/<segment number, 20
//! digits>.seg`, numbered from 1, a new file past `SEGMENT_MAX`. A topic costs no file of
//! its own, and a flush is one fdatasync of the file being written whatever the number of
//! topics it touched (as NATS JetStream keeps every subject of a stream in one set of
//! message blocks). sled holds the index that says where each record is (`mod.rs`) and how
//! many live records each segment holds; a segment none of whose records is live any more
//! is deleted (`retention.rs`).
//!
//! A record on disk: a 24-byte header — `b"MR"`, version 2, a zero byte, the topic id (u32
//! BE), the record's first seq (u64 BE), the body length (u32 BE) and a CRC-32 (u32 BE) of
//! the topic id, seq and length and the body — then the body (`record.rs`). A record of
//! seq 0 holds no messages but a topic's state, written before the first records of a new
//! topic: a start that reads it past the index knows the topic (`tail.rs`). Appends go to
//! the page cache at once; [`Segments::sync`] fdatasyncs the files written since the last
//! sync (and the directory when a file was created). A record is acknowledged once that and
//! the index's flush returned (`Store::flush`); a start indexes again what the index lacks
//! (`tail.rs`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const HEADER_LEN: u64 = 24;
const MAGIC: [u8; 2] = *b"MR";
const VERSION: u8 = 2;
/// A segment file is closed and a new one started past this size.
pub const SEGMENT_MAX: u64 = 64 * 1024 * 1024;
/// The log's directory under the data dir.
pub const DIR: &str = "log";

/// Where a record is: the segment (by number), the offset of the record's header, and the
/// length of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

impl Loc {
    /// The position right after the record.
    pub fn end(&self) -> (u64, u64) {
        (self.segment, self.offset + HEADER_LEN + u64::from(self.len))
    }
}

struct Active {
    segment: u64,
    file: Arc<File>,
    len: u64,
}

#[derive(Default)]
struct Dirty {
    files: HashMap<u64, Arc<File>>,
    dir: bool,
}

pub struct Segments {
    root: PathBuf,
    /// The segment appends go to (None until the first append after opening or sealing).
    active: Mutex<Option<Active>>,
    /// The number of the newest segment file there is (0: none yet).
    newest: Mutex<u64>,
    dirty: Mutex<Dirty>,
    /// One sync at a time: a sync that finds a file taken by another one still running
    /// must not return before that one has synced it.
    sync_lock: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding these locks leaves plain data behind; go on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The CRC of a record: its topic, seq and length (header bytes 4..20), then its body.
fn crc_of(head: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(body);
    h.finalize()
}

/// A record's header.
pub fn header(topic: u32, first_seq: u64, body: &[u8]) -> io::Result<[u8; HEADER_LEN as usize]> {
    let len = u32::try_from(body.len()).map_err(|_| bad("record over 4 GiB"))?;
    let mut h = [0u8; HEADER_LEN as usize];
    h[..2].copy_from_slice(&MAGIC);
    h[2] = VERSION;
    h[4..8].copy_from_slice(&topic.to_be_bytes());
    h[8..16].copy_from_slice(&first_seq.to_be_bytes());
    h[16..20].copy_from_slice(&len.to_be_bytes());
    let crc = crc_of(&h[4..20], body);
    h[20..24].copy_from_slice(&crc.to_be_bytes());
    Ok(h)
}

/// A header's fields: (topic, first seq, body length, crc), if its magic and version are
/// right.
fn parse_header(h: &[u8]) -> Option<(u32, u64, u32, u32)> {
    let h = h.get(..HEADER_LEN as usize)?;
    if h[..2] != MAGIC || h[2] != VERSION || h[3] != 0 {
        return None;
    }
    Some((
        u32::from_be_bytes(h[4..8].try_into().ok()?),
        u64::from_be_bytes(h[8..16].try_into().ok()?),
        u32::from_be_bytes(h[16..20].try_into().ok()?),
        u32::from_be_bytes(h[20..24].try_into().ok()?),
    ))
}

impl Segments {
    pub fn open(root: &Path) -> io::Result<Segments> {
        fs::create_dir_all(root)?;
        let s = Segments {
            root: root.to_path_buf(),
            active: Mutex::new(None),
            newest: Mutex::new(0),
            dirty: Mutex::new(Dirty::default()),
            sync_lock: Mutex::new(()),
        };
        let newest = s.list()?.keys().next_back().copied().unwrap_or(0);
        *lock(&s.newest) = newest;
        Ok(s)
    }

    /// Start a new segment file now: the next record goes there, and the one before can be
    /// deleted once none of its records is live.
    pub fn seal(&self) -> io::Result<()> {
        let mut active = lock(&self.active);
        *active = Some(self.create_next()?);
        Ok(())
    }

    /// Create the segment file after the newest one.
    fn create_next(&self) -> io::Result<Active> {
        let mut newest = lock(&self.newest);
        let segment = *newest + 1;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(self.seg_path(segment))?;
        *newest = segment;
        lock(&self.dirty).dir = true;
        Ok(Active {
            segment,
            len: file.metadata()?.len(),
            file: Arc::new(file),
        })
    }

    pub fn seg_path(&self, segment: u64) -> PathBuf {
        self.root.join(format!("{segment:020}.seg"))
    }

    /// A segment file's path as a user finds it under the data dir.
    pub fn display_path(&self, segment: u64) -> String {
        format!("{DIR}/{segment:020}.seg")
    }

    /// The segment files, by number.
    pub fn list(&self) -> io::Result<BTreeMap<u64, PathBuf>> {
        let mut out = BTreeMap::new();
        for e in fs::read_dir(&self.root)? {
            let e = e?;
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            if let Ok(n) = stem.parse::<u64>() {
                out.insert(n, e.path());
            }
        }
        Ok(out)
    }

    /// The number of the segment appends go to now (0 when there is none).
    pub fn newest(&self) -> u64 {
        *lock(&self.newest)
    }

    /// The size of a segment file (0 if it is gone).
    pub fn size(&self, segment: u64) -> u64 {
        fs::metadata(self.seg_path(segment)).map_or(0, |m| m.len())
    }

    /// Append a record of `topic` whose first message has seq `first_seq`. Written to the
    /// page cache; durable after the next [`Segments::sync`].
    pub fn append(&self, topic: u32, first_seq: u64, body: &[u8]) -> io::Result<Loc> {
        let head = header(topic, first_seq, body)?;
        let mut active = lock(&self.active);
        let need_new = active.as_ref().is_none_or(|a| a.len >= SEGMENT_MAX);
        if need_new {
            let reopened = if active.is_some() {
                None
            } else {
                self.reopen_last()?
            };
            let a = match reopened {
                Some(a) => a,
                None => self.create_next()?,
            };
            *active = Some(a);
        }
        let Some(a) = active.as_mut() else {
            return Err(io::Error::other("no segment file to append to"));
        };
        let mut buf = Vec::with_capacity(HEADER_LEN as usize + body.len());
        buf.extend_from_slice(&head);
        buf.extend_from_slice(body);
        let offset = a.len;
        if let Err(e) = (&*a.file).write_all(&buf) {
            // A full disk can leave part of the record behind: cut it off, so the next
            // record starts where its index entry will say.
            let _ = a.file.set_len(offset);
            return Err(e);
        }
        a.len += buf.len() as u64;
        lock(&self.dirty).files.insert(a.segment, a.file.clone());
        Ok(Loc {
            segment: a.segment,
            offset,
            len: body.len() as u32,
        })
    }

    /// After a restart, go on appending to the newest segment if it has room.
    fn reopen_last(&self) -> io::Result<Option<Active>> {
        let segment = self.newest();
        if segment == 0 {
            return Ok(None);
        }
        let file = match OpenOptions::new()
            .append(true)
            .read(true)
            .open(self.seg_path(segment))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len >= SEGMENT_MAX {
            return Ok(None);
        }
        Ok(Some(Active {
            segment,
            file: Arc::new(file),
            len,
        }))
    }

    /// A reader that keeps the last segment file it read open.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            segs: self,
            open: None,
        }
    }

    /// fdatasync every file written since the last sync, and the directory if a file was
    /// created or deleted; whether there was any.
    pub fn sync(&self) -> io::Result<bool> {
        let _one = lock(&self.sync_lock);
        let d = std::mem::take(&mut *lock(&self.dirty));
        let res = (|| {
            for f in d.files.values() {
                f.sync_data()?;
            }
            if d.dir {
                File::open(&self.root)?.sync_all()?;
            }
            Ok(!d.files.is_empty() || d.dir)
        })();
        if res.is_err() {
            // Not synced: the next flush must try these again.
            let mut cur = lock(&self.dirty);
            cur.files.extend(d.files);
            cur.dir |= d.dir;
        }
        res
    }

    /// Delete a segment file (none of its records is live). The one being appended to
    /// stays.
    pub fn remove(&self, segment: u64) -> io::Result<bool> {
        if lock(&self.active)
            .as_ref()
            .is_some_and(|a| a.segment == segment)
            || segment >= self.newest()
        {
            return Ok(false);
        }
        lock(&self.dirty).files.remove(&segment);
        match fs::remove_file(self.seg_path(segment)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        lock(&self.dirty).dir = true;
        Ok(true)
    }

    /// Undo appends that failed to be indexed: the log ends again at `at` (the first record
    /// of the failed write), and segment files begun after it are removed.
    pub fn cut_at(&self, at: Loc) -> io::Result<()> {
        *lock(&self.active) = None;
        for (seg, path) in self.list()? {
            if seg == at.segment {
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(at.offset)?;
                f.sync_all()?;
            } else if seg > at.segment {
                lock(&self.dirty).files.remove(&seg);
                fs::remove_file(&path)?;
            }
        }
        let mut newest = lock(&self.newest);
        *newest = (*newest).min(at.segment);
        lock(&self.dirty).dir = true;
        Ok(())
    }
}

/// The record starting at `pos` of a segment file's bytes, if it is whole there (header,
/// length and checksum all right): its topic, first seq and body length.
pub fn whole_at(buf: &[u8], pos: usize) -> Option<(u32, u64, u32)> {
    let (topic, seq, len, crc) = parse_header(buf.get(pos..)?)?;
    let start = pos + HEADER_LEN as usize;
    let body = buf.get(start..start.checked_add(len as usize)?)?;
    let head = buf.get(pos + 4..pos + 20)?;
    (crc_of(head, body) == crc).then_some((topic, seq, len))
}

/// The header fields at `pos` (topic, first seq, length), if its magic and version are
/// right, whether or not the record is whole.
pub fn header_at(buf: &[u8], pos: usize) -> Option<(u32, u64, u32)> {
    parse_header(buf.get(pos..)?).map(|(t, s, l, _)| (t, s, l))
}

/// The next whole record at or after `from` in `buf`: its offset, topic, seq and body
/// length. Finds records by their header's magic bytes.
pub fn next_whole(buf: &[u8], from: usize) -> Option<(usize, u32, u64, u32)> {
    let mut pos = from;
    while pos < buf.len() {
        let i = buf
            .get(pos..)?
            .windows(4)
            .position(|w| w == [MAGIC[0], MAGIC[1], VERSION, 0])?;
        pos += i;
        if let Some((topic, seq, len)) = whole_at(buf, pos) {
            return Some((pos, topic, seq, len));
        }
        pos += 1;
    }
    None
}

/// Why a record does not read back whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// Not all of it reached the disk: the file ends inside it, or it reads as zeros where
    /// it was never written. What a crash or power cut leaves of a write that was never
    /// acknowledged — but only at the end of the log (see `tail.rs`).
    Incomplete(String),
    /// It is all there but wrong (a flipped bit, an overwritten header, an I/O error):
    /// damage, never to be cut silently.
    Damaged(String),
}

impl Bad {
    pub fn reason(&self) -> &str {
        match self {
            Bad::Incomplete(r) | Bad::Damaged(r) => r,
        }
    }
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Bytes at the end of a body that, all zero, mark it as never written: a valid body ends
/// with its last message's CRC, never with a run of zeros this long.
const ZERO_TAIL: usize = 512;

fn check_at(file: &File, topic: u32, first_seq: u64, loc: Loc) -> Result<Vec<u8>, Bad> {
    let io_err = |e: io::Error| Bad::Damaged(format!("read error: {e}"));
    let end = loc
        .offset
        .saturating_add(HEADER_LEN)
        .saturating_add(u64::from(loc.len));
    let file_len = file.metadata().map_err(io_err)?.len();
    if file_len < end {
        return Err(Bad::Incomplete(format!(
            "the file ends at byte {file_len}, inside the record (bytes {}..{end})",
            loc.offset
        )));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, loc.offset).map_err(io_err)?;
    if h.iter().all(|b| *b == 0) {
        return Err(Bad::Incomplete(
            "its header reads as zeros (never written)".into(),
        ));
    }
    let fields = parse_header(&h);
    let Some((_, _, _, crc)) =
        fields.filter(|(t, s, l, _)| (*t, *s, *l) == (topic, first_seq, loc.len))
    else {
        let seen = match fields {
            Some((t, s, l, _)) => format!("topic id {t}, seq {s}, length {l}"),
            None => "not a record header".into(),
        };
        return Err(Bad::Damaged(format!(
            "its header does not match the index (header: {seen}; index: topic id {topic}, \
             seq {first_seq}, length {})",
            loc.len
        )));
    };
    let mut body = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut body, loc.offset + HEADER_LEN)
        .map_err(io_err)?;
    if crc_of(&h[4..20], &body) != crc {
        let tail = body
            .get(body.len().saturating_sub(ZERO_TAIL)..)
            .unwrap_or_default();
        if !tail.is_empty() && tail.iter().all(|b| *b == 0) {
            return Err(Bad::Incomplete(format!(
                "checksum mismatch; its last {} bytes read as zeros (never written)",
                tail.len()
            )));
        }
        return Err(Bad::Damaged("checksum mismatch".into()));
    }
    Ok(body)
}

/// Reads records, keeping one segment file open.
pub struct Reader<'a> {
    segs: &'a Segments,
    open: Option<(u64, File)>,
}

impl Reader<'_> {
    pub fn read(&mut self, topic: u32, first_seq: u64, loc: Loc) -> io::Result<Vec<u8>> {
        self.check(topic, first_seq, loc).map_err(|b| {
            bad(format!(
                "record of seq {first_seq} at offset {} of {}: {b}",
                loc.offset,
                self.segs.display_path(loc.segment)
            ))
        })
    }

    /// Read a record, saying why when it does not read back whole.
    pub fn check(&mut self, topic: u32, first_seq: u64, loc: Loc) -> Result<Vec<u8>, Bad> {
        if self.open.as_ref().map(|(s, _)| *s) != Some(loc.segment) {
            self.open = None;
            match File::open(self.segs.seg_path(loc.segment)) {
                Ok(f) => self.open = Some((loc.segment, f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Bad::Incomplete("its segment file is missing".into()))
                }
                Err(e) => return Err(Bad::Damaged(format!("cannot open its segment file: {e}"))),
            }
        }
        let Some((_, f)) = self.open.as_ref() else {
            return Err(Bad::Damaged("its segment file is not open".into()));
        };
        check_at(f, topic, first_seq, loc)
    }

    /// The bytes a record takes in its segment file, as far as the file holds them.
    pub fn raw(&self, loc: Loc) -> io::Result<Vec<u8>> {
        let f = File::open(self.segs.seg_path(loc.segment))?;
        let file_len = f.metadata()?.len();
        let end = loc
            .offset
            .saturating_add(HEADER_LEN)
            .saturating_add(u64::from(loc.len))
            .min(file_len);
        let mut v = vec![0u8; end.saturating_sub(loc.offset) as usize];
        f.read_exact_at(&mut v, loc.offset)?;
        Ok(v)
    }
}
