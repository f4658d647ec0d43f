//! Upgrading a data dir of format 2 or older, which kept a directory of segment files per
//! topic (`topics/<topic id>/<first seq>.seg`, records with a 20-byte header: `MR`, version
//! 1, 0, first seq, body length, CRC-32 of the body). Each topic's records are copied into
//! the log in seq order and its index entries pointed at the copies, then its directory is
//! deleted: a topic at a time, each made durable before its directory goes, so a start
//! interrupted midway goes on where it stopped (copies made before the interruption are
//! dead bytes in the log, never indexed). A record that does not read back whole is not
//! copied: its index entry then names a segment that does not exist, so reads and `momd
//! verify` go on reporting it as damaged.

use std::os::unix::fs::FileExt;

use super::*;

const OLD_HEADER_LEN: u64 = 20;

/// An old record's body, if it reads back whole at `loc` of `file` with seq `first`.
fn read_old(file: &std::fs::File, first: u64, loc: Loc) -> Option<Vec<u8>> {
    let mut h = [0u8; OLD_HEADER_LEN as usize];
    file.read_exact_at(&mut h, loc.offset).ok()?;
    let seq = u64::from_be_bytes(h.get(4..12)?.try_into().ok()?);
    let len = u32::from_be_bytes(h.get(12..16)?.try_into().ok()?);
    let crc = u32::from_be_bytes(h.get(16..20)?.try_into().ok()?);
    if h[..2] != *b"MR" || h[2] != 1 || seq != first || len != loc.len {
        return None;
    }
    let mut body = vec![0u8; len as usize];
    file.read_exact_at(&mut body, loc.offset + OLD_HEADER_LEN)
        .ok()?;
    (crc32fast::hash(&body) == crc).then_some(body)
}

impl Store {
    /// Move the records of an old data dir's `topics/` into the log (see the module's doc).
    pub(super) fn upgrade_topic_dirs(&self) -> Result<()> {
        let old = self.dir.join("topics");
        if !old.is_dir() {
            return Ok(());
        }
        let mut ids: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(&old)?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
            .collect();
        ids.sort();
        tracing::info!(
            topics = ids.len(),
            "upgrading the data dir: moving each topic's segment files into one log"
        );
        for (id, dir) in ids {
            let mut batch = sled::Batch::default();
            let mut open: Option<(u64, std::fs::File)> = None;
            let mut end = None;
            let mut moved = 0u64;
            let mut damaged = 0u64;
            for kv in self.db.scan_prefix(prefix(P_MSG, id)) {
                let (k, v) = kv?;
                let (Some(first), Some(mut e)) = (seq_of_key(&k), IndexEntry::decode(&v)) else {
                    continue;
                };
                if open.as_ref().map(|(s, _)| *s) != Some(e.loc.segment) {
                    let path = dir.join(format!("{:020}.seg", e.loc.segment));
                    open = std::fs::File::open(path).ok().map(|f| (e.loc.segment, f));
                }
                let body = open.as_ref().and_then(|(_, f)| read_old(f, first, e.loc));
                match body {
                    Some(body) => {
                        e.loc = self.segs.append(id, first, &body)?;
                        let (seg, live) = self.live().add(&e.loc);
                        batch.insert(&live::seg_key(seg)[..], live.encode());
                        end = Some(e.loc.end());
                        moved += 1;
                    }
                    None => {
                        // Segment 0 never exists: reads of it report the damage.
                        e.loc.segment = 0;
                        damaged += 1;
                    }
                }
                batch.insert(k, &e.encode()[..]);
            }
            if let Some(end) = end {
                batch.insert(meta_key(LOG_END), encode_pos(end));
            }
            self.segs.sync()?;
            self.db.apply_batch(batch)?;
            self.db.flush()?;
            self.log.sync_data()?;
            std::fs::remove_dir_all(&dir)?;
            if damaged > 0 {
                tracing::error!(
                    topic_id = id,
                    records = damaged,
                    "records that did not read back whole were left behind as damage"
                );
            }
            tracing::debug!(topic_id = id, records = moved, "topic moved into the log");
        }
        std::fs::remove_dir(&old)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, open_store, publish, read_all};
    use super::*;

    /// Turn a data dir into the format 2 layout: each topic's records in
    /// `topics/<id>/<first seq>.seg` with the old 20-byte header, the index pointing there,
    /// no log. Returns the old files' paths by topic id.
    fn to_old_layout(dir: &Path) -> std::collections::BTreeMap<u32, std::path::PathBuf> {
        let store = open_store(dir);
        let mut files = std::collections::BTreeMap::new();
        let mut reader = store.segs.reader();
        let mut batch = sled::Batch::default();
        let entries: Vec<(sled::IVec, sled::IVec)> = store
            .db
            .scan_prefix([P_MSG])
            .map(|kv| kv.unwrap())
            .collect();
        for (k, v) in entries {
            let topic = u32::from_be_bytes(k[1..5].try_into().unwrap());
            let first = seq_of_key(&k).unwrap();
            let mut e = IndexEntry::decode(&v).unwrap();
            let body = reader.read(topic, first, e.loc).unwrap();
            let tdir = dir.join("topics").join(topic.to_string());
            std::fs::create_dir_all(&tdir).unwrap();
            let path = files
                .entry(topic)
                .or_insert_with(|| tdir.join(format!("{first:020}.seg")))
                .clone();
            let segment: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            let offset = f.metadata().unwrap().len();
            let mut rec = b"MR\x01\x00".to_vec();
            rec.extend_from_slice(&first.to_be_bytes());
            rec.extend_from_slice(&(body.len() as u32).to_be_bytes());
            rec.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
            rec.extend_from_slice(&body);
            std::io::Write::write_all(&mut f, &rec).unwrap();
            e.loc = Loc {
                segment,
                offset,
                len: body.len() as u32,
            };
            batch.insert(k, &e.encode()[..]);
        }
        for kv in store.db.scan_prefix([P_SEG]) {
            batch.remove(kv.unwrap().0);
        }
        batch.remove(meta_key(LOG_END));
        store.db.apply_batch(batch).unwrap();
        store.db.flush().unwrap();
        drop(store);
        std::fs::remove_dir_all(dir.join(segments::DIR)).unwrap();
        files
    }

    #[test]
    fn an_old_data_dir_is_moved_into_the_log_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, mut core) = open(dir.path());
            publish(&mut core, &store, "a", &["1", "2"], true, 1_000);
            publish(&mut core, &store, "b", &["x"], false, 1_000);
            publish(&mut core, &store, "a", &["3"], true, 1_000);
            store.flush().unwrap();
        }
        let old = to_old_layout(dir.path());
        // A flipped byte in b's record: it must stay damage, not be made whole.
        let b_file = old.values().nth(1).unwrap().clone();
        let mut bytes = std::fs::read(&b_file).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x10;
        std::fs::write(&b_file, bytes).unwrap();

        let (store, mut core) = open(dir.path());
        assert!(!dir.path().join("topics").exists());
        assert_eq!(
            read_all(&store, &core, "a"),
            vec![(1, "1".into()), (2, "2".into()), (3, "3".into())]
        );
        let b = core.topics.get("b").unwrap().clone();
        let r = store.read(b.id, "b", 1, 1, usize::MAX).unwrap();
        assert_eq!((r.batches.len(), r.corrupt), (0, 1));
        assert_eq!(store.check_all().unwrap().damage.len(), 1);
        // A retry is still known as one, and new records follow in the log.
        assert_eq!(
            publish(&mut core, &store, "a", &["2"], true, 1_500),
            vec![2]
        );
        assert_eq!(
            publish(&mut core, &store, "a", &["4"], true, 1_500),
            vec![4]
        );
        store.flush().unwrap();
        drop(store);
        let (store, core) = open(dir.path());
        assert_eq!(read_all(&store, &core, "a").len(), 4);
        assert_eq!(store.segs.list().unwrap().len(), 1);
    }

    #[test]
    fn an_upgrade_cut_short_goes_on_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, mut core) = open(dir.path());
            publish(&mut core, &store, "a", &["1", "2"], false, 1_000);
            publish(&mut core, &store, "b", &["x"], false, 1_000);
            store.flush().unwrap();
        }
        let old = to_old_layout(dir.path());
        // As if the first start had copied a's records into the log and died before its
        // index pointed at them: copies sit in the log, unindexed.
        let a = *old.keys().next().unwrap();
        {
            let segs = Segments::open(&dir.path().join(segments::DIR)).unwrap();
            let bytes = std::fs::read(&old[&a]).unwrap();
            let len = u32::from_be_bytes(bytes[12..16].try_into().unwrap()) as usize;
            segs.append(a, 1, &bytes[20..20 + len]).unwrap();
            segs.sync().unwrap();
        }
        let (store, core) = open(dir.path());
        assert_eq!(
            read_all(&store, &core, "a"),
            vec![(1, "1".into()), (2, "2".into())]
        );
        assert_eq!(read_all(&store, &core, "b"), vec![(1, "x".into())]);
        let t = core.topics.get("a").unwrap();
        assert_eq!((t.last_seq, t.msgs), (2, 2));
    }
}
