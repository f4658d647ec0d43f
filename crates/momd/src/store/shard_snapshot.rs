//! A snapshot of one shard of a replica's store, and installing one in place of that shard
//! alone (cluster mode with several data groups: each group's state machine is its shard
//! of the store, `core/shards.rs`, and each group snapshots and installs on its own while
//! the others go on).
//!
//! **Taking one.** The broker task makes the cut between two commands
//! ([`Store::shard_cut`]): a full flush, then the shard's keys written out — its topics'
//! states, index entries and dedupe entries (the keys of the shard's id range), its part of
//! each queue, and the metadata keys the caller names (the group's applied state), each
//! whole — and every segment file hard-linked. [`write_shard_snapshot`] then copies the
//! shard's records alone, back to back, into the snapshot's one segment file, each index
//! entry rewritten to point into it. The file is the same as a whole store's
//! (`snapshot.rs`: checksummed, refused whole if anything fails to add up), with one
//! segment file named 1.
//!
//! **Installing one.** Staged as a whole store's is ([`super::snapshot::stage_install`]:
//! checked, unpacked, fsynced), with a `SHARD` file naming the shard, then `READY`. From
//! then on [`finish_shard_install`] carries it out: the segment file moves into the log as
//! its newest (its number chosen once, in `SEGMENT`), then one sled batch removes every
//! key of the shard and writes the snapshot's — index entries pointing into the moved
//! file, the live counts and the log's indexed end following — and the index is flushed.
//! Each step can run again after a crash (the batch reads what it removes from the index
//! as it is, so running it twice gives what running it once gave); the other shards' keys
//! and records are not touched.

// Taken and installed by the data groups of a cluster spread over several shards.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::live::{seg_key, SegLive};
use super::segments::HEADER_LEN;
use super::snapshot::{bad, begin_body, end_body, read_kv, sync_dir, write_kv, Cut};
use super::*;
use crate::core::shards::Shards;

/// The name of a shard snapshot's one segment file.
const SEGMENT_NAME: &str = "00000000000000000001.seg";
/// Under the install directory: the shard being installed (`count shard`, u16 BE each),
/// and the number its segment file takes in the log.
pub(super) const SHARD: &str = "SHARD";
const SEGMENT: &str = "SEGMENT";

/// The keys with prefix `p` of shard `shard`'s topics: a range of sled keys.
fn shard_range(p: u8, shards: Shards, shard: Shard) -> (Vec<u8>, Vec<u8>) {
    let ids = shards.ids(shard);
    let mut start = vec![p];
    start.extend_from_slice(&ids.start().to_be_bytes());
    let end = match ids.end().checked_add(1) {
        Some(next) => {
            let mut e = vec![p];
            e.extend_from_slice(&next.to_be_bytes());
            e
        }
        None => vec![p + 1],
    };
    (start, end)
}

impl Store {
    /// Take the cut of a snapshot of shard `shard` into `dir` (created; must not exist),
    /// with the metadata keys `meta` (the first: the applied Raft state, given back in the
    /// cut). Run on the broker task with nothing staged, so that the cut is one moment.
    pub fn shard_cut(&self, dir: &Path, shard: Shard, meta: &[&str]) -> Result<Cut> {
        self.flush()?;
        fs::create_dir_all(dir)?;
        let mut index = BufWriter::with_capacity(1 << 20, File::create(dir.join("index"))?);
        let mut entries = 0u64;
        for p in [P_TOPIC, P_DEDUPE, P_MSG] {
            let (start, end) = shard_range(p, self.shards, shard);
            for kv in self.db.range(start..end) {
                let (k, v) = kv?;
                write_kv(&mut index, &k, &v)?;
                entries += 1;
            }
        }
        for kv in self.db.scan_prefix([P_QUEUE]) {
            let (k, v) = kv?;
            if queue_of_key(&k).map(|(_, s)| s) != Some(shard) {
                continue;
            }
            let v = self.whole(&k, v)?;
            write_kv(&mut index, &k, &v)?;
            entries += 1;
        }
        // Every named key, an absent one as empty: the install removes it.
        for name in meta {
            let v = self.get_whole(&meta_key(name))?.unwrap_or_default();
            write_kv(&mut index, &meta_key(name), &v)?;
            entries += 1;
        }
        index.flush()?;
        drop(index);
        let mut files = Vec::new();
        for (_, path) in self.segs.list()? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let len = fs::metadata(&path)?.len();
            fs::hard_link(&path, dir.join(name))?;
            files.push((name.to_string(), len));
        }
        let applied = match meta.first() {
            Some(name) => self.get_whole(&meta_key(name))?,
            None => None,
        };
        Ok(Cut {
            dir: dir.to_path_buf(),
            files,
            index_entries: entries,
            applied,
        })
    }
}

/// Write the snapshot of a shard's `cut` with `header` to `out` (fsynced), and return its
/// size: the shard's records alone, copied out of the cut's segment files.
pub fn write_shard_snapshot(cut: &Cut, header: &[u8], out: &Path) -> io::Result<u64> {
    // Where each record goes in the snapshot's segment file, in index order.
    let mut records: Vec<Loc> = Vec::new();
    let mut total = 0u64;
    {
        let mut r = BufReader::with_capacity(1 << 20, File::open(cut.dir.join("index"))?);
        while let Some((k, v)) = read_kv(&mut r)? {
            if k.first() == Some(&P_MSG) {
                let e = IndexEntry::decode(&v)
                    .ok_or_else(|| bad("an index entry that does not read"))?;
                records.push(e.loc);
                total += HEADER_LEN + u64::from(e.loc.len);
            }
        }
    }
    let files = [(SEGMENT_NAME.to_string(), total)];
    let mut w = begin_body(out, header, cut.index_entries, &files)?;
    let mut r = BufReader::with_capacity(1 << 20, File::open(cut.dir.join("index"))?);
    let mut offset = 0u64;
    while let Some((k, v)) = read_kv(&mut r)? {
        if k.first() == Some(&P_MSG) {
            let mut e =
                IndexEntry::decode(&v).ok_or_else(|| bad("an index entry that does not read"))?;
            e.loc = Loc {
                segment: 1,
                offset,
                len: e.loc.len,
            };
            offset += HEADER_LEN + u64::from(e.loc.len);
            write_kv(&mut w, &k, &e.encode())?;
        } else {
            write_kv(&mut w, &k, &v)?;
        }
    }
    let mut open: BTreeMap<u64, File> = BTreeMap::new();
    let mut buf = Vec::new();
    for loc in records {
        let f = match open.entry(loc.segment) {
            std::collections::btree_map::Entry::Occupied(f) => f.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let name = format!("{:020}.seg", loc.segment);
                slot.insert(File::open(cut.dir.join(name))?)
            }
        };
        buf.resize((HEADER_LEN + u64::from(loc.len)) as usize, 0);
        f.read_exact_at(&mut buf, loc.offset)?;
        w.write_all(&buf)?;
    }
    end_body(w)
}

/// The `SHARD` file's content: the shards, and the one being installed.
pub(super) fn shard_file(shards: Shards, shard: Shard) -> [u8; 4] {
    let mut v = [0u8; 4];
    v[..2].copy_from_slice(&shards.count().to_be_bytes());
    v[2..].copy_from_slice(&shard.to_be_bytes());
    v
}

fn read_shard_file(v: &[u8]) -> io::Result<(Shards, Shard)> {
    let (Some(count), Some(shard)) = (v.get(..2), v.get(2..4)) else {
        return Err(bad("the SHARD file of a snapshot install is cut short"));
    };
    let count = u16::from_be_bytes([count[0], count[1]]);
    let shard = u16::from_be_bytes([shard[0], shard[1]]);
    match Shards::new(count) {
        Some(s) if shard < count => Ok((s, shard)),
        _ => Err(bad(format!(
            "the SHARD file names shard {shard} of {count}"
        ))),
    }
}

fn write_synced(dir: &Path, name: &str, v: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(v)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Carry out the install of a shard snapshot staged in `inst` (with `READY`) into the
/// index database `db` (whose log file is `log`) and the log of `data`. See the module
/// doc; the caller removes `READY` and `inst` after.
pub(super) fn finish_shard_install(
    db: &sled::Db,
    log: &File,
    data: &Path,
    inst: &Path,
) -> io::Result<()> {
    let (shards, shard) = read_shard_file(&fs::read(inst.join(SHARD))?)?;
    let log_dir = data.join(segments::DIR);
    fs::create_dir_all(&log_dir)?;
    // The number its segment file takes in the log: past every one there, chosen once.
    let seg_no = match fs::read(inst.join(SEGMENT)) {
        Ok(v) => be_u64(&v).ok_or_else(|| bad("the SEGMENT file is cut short"))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut newest = 0u64;
            for e in fs::read_dir(&log_dir)? {
                let name = e?.file_name();
                let n = name.to_str().and_then(|n| n.strip_suffix(".seg"));
                if let Some(n) = n.and_then(|n| n.parse::<u64>().ok()) {
                    newest = newest.max(n);
                }
            }
            let n = newest + 1;
            write_synced(inst, SEGMENT, &n.to_be_bytes())?;
            n
        }
        Err(e) => return Err(e),
    };
    let unpacked = inst.join(segments::DIR).join(SEGMENT_NAME);
    let placed = log_dir.join(format!("{seg_no:020}.seg"));
    if unpacked.exists() {
        fs::rename(&unpacked, &placed)?;
        sync_dir(&log_dir)?;
        sync_dir(&inst.join(segments::DIR))?;
    }
    let placed_len = match fs::metadata(&placed) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let mut batch = sled::Batch::default();
    // Live counts of the segments touched, from the index as it is.
    let mut live: BTreeMap<u64, SegLive> = BTreeMap::new();
    let mut count = |seg: u64, delta: i64, len: u32| -> io::Result<()> {
        let v = match live.entry(seg) {
            std::collections::btree_map::Entry::Occupied(v) => v.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let had = db.get(seg_key(seg)).map_err(io::Error::other)?;
                slot.insert(had.and_then(|v| SegLive::decode(&v)).unwrap_or_default())
            }
        };
        let bytes = HEADER_LEN + u64::from(len);
        if delta > 0 {
            v.records += 1;
            v.bytes += bytes;
        } else {
            v.records = v.records.saturating_sub(1);
            v.bytes = v.bytes.saturating_sub(bytes);
        }
        Ok(())
    };
    // Everything of the shard goes.
    for p in [P_TOPIC, P_DEDUPE, P_MSG] {
        let (start, end) = shard_range(p, shards, shard);
        for kv in db.range(start..end) {
            let (k, v) = kv.map_err(io::Error::other)?;
            if p == P_MSG {
                if let Some(e) = IndexEntry::decode(&v) {
                    count(e.loc.segment, -1, e.loc.len)?;
                }
            }
            batch.remove(k);
        }
    }
    for kv in db.scan_prefix([P_QUEUE]) {
        let (k, _) = kv.map_err(io::Error::other)?;
        if queue_of_key(&k).map(|(_, s)| s) == Some(shard) {
            big::stage(db, &mut batch, &k, None).map_err(io::Error::other)?;
        }
    }
    // And the snapshot's comes in.
    let mut next_topic = db
        .get(meta_key("next_topic_id"))
        .map_err(io::Error::other)?
        .and_then(|v| be_u64(&v))
        .unwrap_or(1);
    let mut r = BufReader::with_capacity(1 << 20, File::open(inst.join("index"))?);
    while let Some((k, v)) = read_kv(&mut r)? {
        let topic = k
            .get(1..5)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let in_shard = |t: Option<u32>| t.is_some_and(|t| shards.of(t) == shard);
        match k.first() {
            Some(&P_MSG) if in_shard(topic) => {
                let mut e = IndexEntry::decode(&v).ok_or_else(|| bad("a snapshot index entry"))?;
                if e.loc.segment != 1
                    || e.loc.offset + HEADER_LEN + u64::from(e.loc.len) > placed_len
                {
                    return Err(bad("a snapshot index entry points past its segment file"));
                }
                e.loc.segment = seg_no;
                count(seg_no, 1, e.loc.len)?;
                batch.insert(k, e.encode().to_vec());
            }
            Some(&P_TOPIC) if in_shard(topic) => {
                if let Some(t) = topic {
                    next_topic = next_topic.max(u64::from(shards.number(t)) + 1);
                }
                batch.insert(k, v);
            }
            Some(&P_DEDUPE) if in_shard(topic) => batch.insert(k, v),
            Some(&P_QUEUE) if queue_of_key(&k).map(|(_, s)| s) == Some(shard) => {
                big::stage(db, &mut batch, &k, Some(&v)).map_err(io::Error::other)?;
            }
            Some(&P_META) if !super::snapshot::is_local(&k) => {
                let v = (!v.is_empty()).then_some(v.as_slice());
                big::stage(db, &mut batch, &k, v).map_err(io::Error::other)?;
            }
            _ => {
                return Err(bad(format!(
                    "a shard snapshot holds key {k:02x?}, not its shard's"
                )))
            }
        }
    }
    for (seg, v) in live {
        batch.insert(&seg_key(seg)[..], v.encode());
    }
    batch.insert(meta_key("next_topic_id"), &next_topic.to_be_bytes()[..]);
    // The moved file is the log's newest, indexed whole.
    let end = db
        .get(meta_key(LOG_END))
        .map_err(io::Error::other)?
        .and_then(|v| decode_pos(&v));
    if end.is_none_or(|(s, _)| s <= seg_no) {
        batch.insert(meta_key(LOG_END), encode_pos((seg_no, placed_len)));
    }
    db.apply_batch(batch).map_err(io::Error::other)?;
    db.flush().map_err(io::Error::other)?;
    log.sync_data()?;
    Ok(())
}

#[cfg(test)]
#[path = "shard_snapshot_tests.rs"]
mod tests;
