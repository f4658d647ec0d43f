//! The journal: topic and queue states on their way to the index. A queue's state changes
//! with every delivery and ack, and a delivery may leave only once the state that counts it
//! is durable (docs/protocol.md §3.9); a new topic must be durable with its first records.
//! Waiting for the index (sled) for that costs a full flush each time; instead, each new
//! state is appended to a journal file that is fdatasynced with the segment files, in the
//! same flush as the publishes beside it, in the order the broker made them (a queue state
//! naming a dead letter topic comes after that topic). The index gets the states with its
//! next full flush (`overlay.rs`), after which the journal files written before that flush
//! began are deleted. At start, the journal files left are read in order over what the
//! index holds (`recover.rs`), before anything else.
//!
//! Files: `queues/<generation, 20 digits>.journal`, a new generation at each full flush.
//! A frame: body length (u32 BE), CRC-32 of the body (u32 BE), body: a tag byte (1 a
//! queue's state, 2 a queue removed, 3 a topic's state), then the state as the index keeps
//! it (MessagePack), or the removed queue's name. Reading stops at the first frame that does not read back whole: a torn
//! append, never acknowledged (what waited for it waited for the fdatasync).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub enum Entry {
    /// A queue's state (a `QueueRecord`, encoded as the index keeps it).
    Put(Vec<u8>),
    /// A queue was deleted (its part in the shard given: written as the name, then for a
    /// shard past the first a 0xFF byte and the shard, u16 BE).
    Remove(String, crate::core::shards::Shard),
    /// A topic was created, or its limits changed (a `TopicState`, encoded as the index
    /// keeps it; its counters come from the segment files and the index, not from here).
    Topic(Vec<u8>),
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let (tag, bytes) = match self {
            Entry::Put(b) => (1u8, b.as_slice()),
            Entry::Remove(n, _) => (2, n.as_bytes()),
            Entry::Topic(b) => (3, b.as_slice()),
        };
        let mut v = Vec::with_capacity(4 + bytes.len());
        v.push(tag);
        v.extend_from_slice(bytes);
        if let Entry::Remove(_, shard @ 1..) = self {
            v.push(0xFF);
            v.extend_from_slice(&shard.to_be_bytes());
        }
        v
    }

    fn decode(b: &[u8]) -> Option<Entry> {
        let (tag, rest) = b.split_first()?;
        match tag {
            1 => Some(Entry::Put(rest.to_vec())),
            2 => {
                let (name, shard) = match rest.iter().position(|b| *b == 0xFF) {
                    None => (rest, 0),
                    Some(i) => (
                        &rest[..i],
                        u16::from_be_bytes(rest.get(i + 1..)?.try_into().ok()?),
                    ),
                };
                Some(Entry::Remove(String::from_utf8(name.to_vec()).ok()?, shard))
            }
            3 => Some(Entry::Topic(rest.to_vec())),
            _ => None,
        }
    }
}

pub(super) struct Journal {
    dir: PathBuf,
    generation: u64,
    file: Option<Arc<File>>,
    /// Files appended to since the last sync.
    dirty: Vec<Arc<File>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Journal {
    /// The journal in `dir`, going on after the generations already there.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        let next = files(dir)?.last().map_or(1, |(g, _)| g + 1);
        Ok(Journal {
            dir: dir.to_path_buf(),
            generation: next,
            file: None,
            dirty: Vec::new(),
        })
    }

    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let body = entry.encode();
        let len = u32::try_from(body.len()).map_err(io::Error::other)?;
        let file = match &self.file {
            Some(f) => f.clone(),
            None => {
                let new_dir = !self.dir.exists();
                fs::create_dir_all(&self.dir)?;
                let f = Arc::new(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.dir.join(format!("{:020}.journal", self.generation)))?,
                );
                // The new file's name must be durable with its first frame.
                File::open(&self.dir)?.sync_all()?;
                if new_dir {
                    if let Some(parent) = self.dir.parent() {
                        File::open(parent)?.sync_all()?;
                    }
                }
                self.file = Some(f.clone());
                f
            }
        };
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        frame.extend_from_slice(&body);
        let end = file.metadata()?.len();
        if let Err(e) = (&*file).write_all(&frame) {
            // A full disk can leave part of the frame behind: cut it off, or the frames
            // after it would not be read at start.
            let _ = file.set_len(end);
            return Err(e);
        }
        if !self.dirty.iter().any(|d| Arc::ptr_eq(d, &file)) {
            self.dirty.push(file);
        }
        Ok(())
    }

    /// The files to fdatasync for what was appended so far.
    pub fn take_dirty(&mut self) -> Vec<Arc<File>> {
        std::mem::take(&mut self.dirty)
    }

    /// Put back files whose sync failed.
    pub fn put_back(&mut self, files: Vec<Arc<File>>) {
        for f in files {
            if !self.dirty.iter().any(|d| Arc::ptr_eq(d, &f)) {
                self.dirty.push(f);
            }
        }
    }

    /// A full flush begins: appends go to a new file from now on. Returns the generation
    /// whose files (and older) the flush makes redundant once done
    /// ([`Journal::remove_upto`]), or None when nothing was appended since the last one.
    pub fn rotate(&mut self) -> Option<u64> {
        // Nothing appended since the last rotation: nothing to close.
        self.file.take()?;
        let done = self.generation;
        self.generation += 1;
        Some(done)
    }

    /// Delete the files of generations up to `generation` (their states are in the index).
    pub fn remove_upto(&self, generation: u64) -> io::Result<()> {
        for (g, path) in files(&self.dir)? {
            if g <= generation {
                fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

/// fdatasync journal files, one sync at a time (see `Segments::sync`).
/// fdatasync the journal files written since the last sync; whether there was any.
pub(super) fn sync(journal: &Mutex<Journal>, sync_lock: &Mutex<()>) -> io::Result<bool> {
    let _one = lock(sync_lock);
    let files = lock(journal).take_dirty();
    for (i, f) in files.iter().enumerate() {
        if let Err(e) = f.sync_data() {
            lock(journal).put_back(files[i..].to_vec());
            return Err(e);
        }
    }
    Ok(!files.is_empty())
}

/// The journal files in `dir`, oldest generation first.
fn files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        let name = e.file_name();
        if let Some(g) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".journal"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((g, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Every entry of the journal files in `dir`, in the order written; each file is read up
/// to its first frame that does not read back whole (a torn append).
pub(super) fn replay(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (_, path) in files(dir)? {
        let bytes = fs::read(&path)?;
        let mut pos = 0usize;
        while let Some(h) = bytes.get(pos..pos + 8) {
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            let Some(body) = bytes.get(pos + 8..pos + 8 + len) else {
                break;
            };
            if crc32fast::hash(body) != crc {
                break;
            }
            let Some(entry) = Entry::decode(body) else {
                break;
            };
            out.push(entry);
            pos += 8 + len;
        }
        if pos < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                offset = pos,
                "queue journal ends in a torn append (never acknowledged); ignored"
            );
        }
    }
    Ok(out)
}

/// Delete every journal file (at start, once their states are in the index).
pub(super) fn remove_all(dir: &Path) -> io::Result<()> {
    for (_, path) in files(dir)? {
        fs::remove_file(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::queues::{Queue, QueueDef};

    fn record(name: &str, cursor: u64) -> Vec<u8> {
        let mut q = Queue::new(QueueDef {
            name: name.into(),
            owner: "u".into(),
            created: 0,
            bindings: vec![">".into()],
            max_deliver: 3,
            ack_wait_ms: 1000,
        });
        q.cursors.insert(1, cursor);
        rmp_serde::to_vec(&q.record()).unwrap()
    }

    fn names(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Put(b) => {
                    let q: crate::core::queues::QueueRecord = rmp_serde::from_slice(b).unwrap();
                    format!("put {} {:?}", q.def.name, q.cursors.get(&1))
                }
                Entry::Remove(n, s) => format!("rm {n} {s}"),
                Entry::Topic(_) => "topic".to_string(),
            })
            .collect()
    }

    #[test]
    fn entries_come_back_in_order_across_generations_and_a_torn_append_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("queues");
        let mut j = Journal::open(&jdir).unwrap();
        j.append(&Entry::Put(record("a", 1))).unwrap();
        let first = j.rotate().unwrap();
        j.append(&Entry::Put(record("a", 2))).unwrap();
        j.append(&Entry::Remove("b".into(), 0)).unwrap();
        j.append(&Entry::Remove("c".into(), 2)).unwrap();
        let lock = Mutex::new(j);
        sync(&lock, &Mutex::new(())).unwrap();
        // A crash in the middle of the next append leaves part of a frame.
        let newest = files(&jdir).unwrap().last().unwrap().1.clone();
        let mut f = OpenOptions::new().append(true).open(&newest).unwrap();
        f.write_all(&[0, 0, 0, 40, 1, 2]).unwrap();
        assert_eq!(
            names(&replay(&jdir).unwrap()),
            ["put a Some(1)", "put a Some(2)", "rm b 0", "rm c 2"]
        );
        // Once a full flush has put the first generation in the index, it goes.
        lock.lock().unwrap().remove_upto(first).unwrap();
        assert_eq!(
            names(&replay(&jdir).unwrap()),
            ["put a Some(2)", "rm b 0", "rm c 2"]
        );
        // A new journal on the same dir goes on after the generations there.
        let mut again = Journal::open(&jdir).unwrap();
        again.append(&Entry::Put(record("c", 9))).unwrap();
        assert_eq!(
            names(&replay(&jdir).unwrap()),
            ["put a Some(2)", "rm b 0", "rm c 2", "put c Some(9)"]
        );
        remove_all(&jdir).unwrap();
        assert!(replay(&jdir).unwrap().is_empty());
    }
}
