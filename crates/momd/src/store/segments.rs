//! Message records in append-only segment files, one directory per topic:
//! `topics/<topic id>/<first seq, 20 digits>.seg`. sled holds only the index that says where
//! each record is (see `mod.rs`), so the store's memory does not grow with what it holds,
//! removing a topic deletes a directory, and retention deletes whole files.
//!
//! A record on disk: a 20-byte header — `b"MR"`, version 1, a zero byte, the record's first
//! seq (u64 BE), the body length (u32 BE) and the body's CRC-32 (u32 BE) — then the body
//! (`record.rs`). Appends go to the page cache at once; [`Segments::sync`] fdatasyncs every
//! file (and directory) written since the last sync. A record is acknowledged once that and
//! the index's flush returned (`Store::flush`); a start indexes again what the index lacks
//! (`tail.rs`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const HEADER_LEN: u64 = 20;
const MAGIC: [u8; 2] = *b"MR";
const VERSION: u8 = 1;
/// A segment file is closed and a new one started past this size.
pub const SEGMENT_MAX: u64 = 64 * 1024 * 1024;
/// Segment files kept open for appending; past this, they are closed and reopened as needed.
const MAX_OPEN: usize = 256;

/// Where a record is: the segment (named by its first seq), the offset of the record's
/// header, and the length of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

struct Active {
    segment: u64,
    file: Arc<File>,
    len: u64,
}

#[derive(Default)]
struct Dirty {
    files: HashMap<(u32, u64), Arc<File>>,
    dirs: Vec<PathBuf>,
}

pub struct Segments {
    root: PathBuf,
    active: Mutex<HashMap<u32, Active>>,
    dirty: Mutex<Dirty>,
    /// One sync at a time: a sync that finds a file taken by another one still running
    /// must not return before that one has synced it.
    sync_lock: Mutex<()>,
    /// Topics whose newest segment file must not be appended to (its end is damaged):
    /// their next record starts a new one.
    sealed: Mutex<std::collections::HashSet<u32>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding these locks leaves plain data behind; go on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Segments {
    pub fn open(root: &Path) -> io::Result<Segments> {
        fs::create_dir_all(root)?;
        Ok(Segments {
            root: root.to_path_buf(),
            active: Mutex::new(HashMap::new()),
            dirty: Mutex::new(Dirty::default()),
            sync_lock: Mutex::new(()),
            sealed: Mutex::new(Default::default()),
        })
    }

    /// Start the topic's next record in a new segment file.
    pub fn seal(&self, topic: u32) {
        lock(&self.active).remove(&topic);
        lock(&self.sealed).insert(topic);
    }

    fn topic_dir(&self, topic: u32) -> PathBuf {
        self.root.join(topic.to_string())
    }

    fn seg_path(&self, topic: u32, segment: u64) -> PathBuf {
        self.topic_dir(topic).join(format!("{segment:020}.seg"))
    }

    /// A segment file's path as a user finds it under the data dir.
    pub fn display_path(&self, topic: u32, segment: u64) -> String {
        format!("topics/{topic}/{segment:020}.seg")
    }

    /// The segment files of a topic, by first seq.
    pub fn list(&self, topic: u32) -> io::Result<BTreeMap<u64, PathBuf>> {
        let mut out = BTreeMap::new();
        let rd = match fs::read_dir(self.topic_dir(topic)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                continue;
            };
            if let Ok(seq) = stem.parse::<u64>() {
                out.insert(seq, e.path());
            }
        }
        Ok(out)
    }

    /// Append a record whose first message has seq `first_seq`. Written to the page cache;
    /// durable after the next [`Segments::sync`].
    pub fn append(&self, topic: u32, first_seq: u64, body: &[u8]) -> io::Result<Loc> {
        let len = u32::try_from(body.len()).map_err(|_| bad("record over 4 GiB"))?;
        let mut active = lock(&self.active);
        let need_new = match active.get(&topic) {
            None => true,
            Some(a) => a.len >= SEGMENT_MAX,
        };
        if need_new {
            let sealed = lock(&self.sealed).remove(&topic);
            let reopened = if active.contains_key(&topic) || sealed {
                None
            } else {
                self.reopen_last(topic)?
            };
            let a = match reopened {
                Some(a) => a,
                None => {
                    let dir = self.topic_dir(topic);
                    let new_dir = !dir.exists();
                    fs::create_dir_all(&dir)?;
                    let file = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .read(true)
                        .open(self.seg_path(topic, first_seq))?;
                    let mut d = lock(&self.dirty);
                    d.dirs.push(dir);
                    if new_dir {
                        d.dirs.push(self.root.clone());
                    }
                    Active {
                        segment: first_seq,
                        len: file.metadata()?.len(),
                        file: Arc::new(file),
                    }
                }
            };
            if active.len() >= MAX_OPEN {
                // Many topics written: close the others' files; they reopen when written.
                active.clear();
            }
            active.insert(topic, a);
        }
        let a = active
            .get_mut(&topic)
            .expect("an active segment was just put in place");
        let mut buf = Vec::with_capacity(HEADER_LEN as usize + body.len());
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        buf.push(0);
        buf.extend_from_slice(&first_seq.to_be_bytes());
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        buf.extend_from_slice(body);
        let offset = a.len;
        if let Err(e) = (&*a.file).write_all(&buf) {
            // A full disk can leave part of the record behind: cut it off, so the next
            // record starts where its index entry will say.
            let _ = a.file.set_len(offset);
            return Err(e);
        }
        a.len += buf.len() as u64;
        lock(&self.dirty)
            .files
            .insert((topic, a.segment), a.file.clone());
        Ok(Loc {
            segment: a.segment,
            offset,
            len,
        })
    }

    /// After a restart, go on appending to the newest segment of the topic if it has room.
    fn reopen_last(&self, topic: u32) -> io::Result<Option<Active>> {
        let list = self.list(topic)?;
        let Some((&segment, path)) = list.iter().next_back() else {
            return Ok(None);
        };
        let file = OpenOptions::new().append(true).read(true).open(path)?;
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

    /// A reader that keeps the last segment file open across reads.
    pub fn reader(&self, topic: u32) -> Reader<'_> {
        Reader {
            segs: self,
            topic,
            open: None,
        }
    }

    /// fdatasync every file and directory written since the last sync.
    pub fn sync(&self) -> io::Result<()> {
        let _one = lock(&self.sync_lock);
        let d = std::mem::take(&mut *lock(&self.dirty));
        let res = (|| {
            for f in d.files.values() {
                f.sync_data()?;
            }
            for dir in &d.dirs {
                if let Ok(f) = File::open(dir) {
                    f.sync_all()?;
                }
            }
            Ok(())
        })();
        if res.is_err() {
            // Not synced: the next flush must try these again.
            let mut cur = lock(&self.dirty);
            cur.files.extend(d.files);
            cur.dirs.extend(d.dirs);
        }
        res
    }

    /// Delete the segment files all of whose records are below `seq`. The newest segment
    /// always stays: appends go on in it.
    pub fn remove_below(&self, topic: u32, seq: u64) -> io::Result<()> {
        let list: Vec<u64> = self.list(topic)?.keys().copied().collect();
        for pair in list.windows(2) {
            // A segment's records end where the next segment begins.
            if let [this, next] = pair {
                if *next <= seq {
                    lock(&self.dirty).files.remove(&(topic, *this));
                    fs::remove_file(self.seg_path(topic, *this))?;
                }
            }
        }
        Ok(())
    }

    /// Delete a topic's files.
    pub fn remove_topic(&self, topic: u32) -> io::Result<()> {
        lock(&self.active).remove(&topic);
        lock(&self.dirty).files.retain(|(t, _), _| *t != topic);
        match fs::remove_dir_all(self.topic_dir(topic)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Undo appends that failed to be indexed: the topic's log ends again at `at` (the
    /// first record of the failed write), and segment files begun after it are removed.
    pub fn cut_at(&self, topic: u32, at: Loc) -> io::Result<()> {
        lock(&self.active).remove(&topic);
        for (seg, path) in self.list(topic)? {
            if seg == at.segment {
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(at.offset)?;
                f.sync_all()?;
            } else if seg > at.segment {
                lock(&self.dirty).files.remove(&(topic, seg));
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

/// The record starting at `pos` of a segment file's bytes, if it is whole there (header,
/// length and checksum all right): its first seq and body length.
pub fn whole_at(buf: &[u8], pos: usize) -> Option<(u64, u32)> {
    let h = buf.get(pos..pos + HEADER_LEN as usize)?;
    if h[..2] != MAGIC || h[2] != VERSION || h[3] != 0 {
        return None;
    }
    let seq = u64::from_be_bytes(h[4..12].try_into().ok()?);
    let len = u32::from_be_bytes(h[12..16].try_into().ok()?);
    let crc = u32::from_be_bytes(h[16..20].try_into().ok()?);
    let start = pos + HEADER_LEN as usize;
    let body = buf.get(start..start.checked_add(len as usize)?)?;
    (crc32fast::hash(body) == crc).then_some((seq, len))
}

/// The next whole record at or after `from` in `buf` whose seq is at least `min_seq`: its
/// offset, seq and body length. Finds records by their header's magic bytes.
pub fn next_whole(buf: &[u8], from: usize, min_seq: u64) -> Option<(usize, u64, u32)> {
    let mut pos = from;
    while pos < buf.len() {
        let i = buf
            .get(pos..)?
            .windows(4)
            .position(|w| w == [MAGIC[0], MAGIC[1], VERSION, 0])?;
        pos += i;
        if let Some((seq, len)) = whole_at(buf, pos) {
            if seq >= min_seq {
                return Some((pos, seq, len));
            }
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
    /// acknowledged — but only when it is the end of a topic's log (see `recover_tail`).
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

fn check_at(file: &File, first_seq: u64, loc: Loc) -> Result<Vec<u8>, Bad> {
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
    let seq = u64::from_be_bytes([h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]]);
    let len = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    let crc = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
    if h[..2] != MAGIC || h[2] != VERSION || seq != first_seq || len != loc.len {
        return Err(Bad::Damaged(format!(
            "its header does not match the index (header: seq {seq}, length {len}; \
             index: seq {first_seq}, length {})",
            loc.len
        )));
    }
    let mut body = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut body, loc.offset + HEADER_LEN)
        .map_err(io_err)?;
    if crc32fast::hash(&body) != crc {
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

/// Reads records of one topic, keeping one segment file open.
pub struct Reader<'a> {
    segs: &'a Segments,
    topic: u32,
    open: Option<(u64, File)>,
}

impl Reader<'_> {
    pub fn read(&mut self, first_seq: u64, loc: Loc) -> io::Result<Vec<u8>> {
        self.check(first_seq, loc).map_err(|b| {
            bad(format!(
                "record of seq {first_seq} at offset {} of {}: {b}",
                loc.offset,
                self.segs.display_path(self.topic, loc.segment)
            ))
        })
    }

    /// Read a record, saying why when it does not read back whole.
    pub fn check(&mut self, first_seq: u64, loc: Loc) -> Result<Vec<u8>, Bad> {
        if self.open.as_ref().map(|(s, _)| *s) != Some(loc.segment) {
            self.open = None;
            match File::open(self.segs.seg_path(self.topic, loc.segment)) {
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
        check_at(f, first_seq, loc)
    }

    /// The bytes a record takes in its segment file, as far as the file holds them.
    pub fn raw(&self, loc: Loc) -> io::Result<Vec<u8>> {
        let f = File::open(self.segs.seg_path(self.topic, loc.segment))?;
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
