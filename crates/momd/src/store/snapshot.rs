//! A snapshot of a replica's store, and installing one in its place (cluster mode: the data
//! group's state machine is the store, `cluster/snapshot.rs`).
//!
//! **Taking one.** The broker task, the store's only writer, makes a cut between two
//! commands ([`Store::snapshot_cut`]): a full flush, then the index (sled's default tree:
//! topics, index entries, dedupe, queues, live counts, the applied Raft state) written out
//! to a file, and every segment file hard-linked with its length noted. Segment files are
//! append-only and their records immutable, so the first `length` bytes of each link are the
//! cut's whatever is appended, compacted or deleted later. The cut costs the task one flush
//! and one pass over the index, not over the messages; [`write_snapshot`] copies the
//! segment files into the snapshot file outside it.
//!
//! **The file.** `MOMDATA1` (8) ‖ CRC32 of the body (4, BE) ‖ body length (8, BE) ‖ body.
//! Body: header length (u32) ‖ header (the caller's bytes: the Raft snapshot meta) ‖ index
//! entries (u64) ‖ files (u32) ‖ per file: name length (u16), name, length (u64) ‖ the index
//! entries as key length (u32), key, value length (u32), value ‖ each file's bytes in order.
//! All integers big-endian. A file that fails its checksum, or whose parts do not add up,
//! is refused and never installed: it comes from a peer, or from a disk that may lie.
//!
//! **Installing one.** In two halves. [`stage_install`] checks the file and unpacks it under
//! `DATA/snapshot/install/` (the index entries, the segment files), fsyncs all of it, and
//! last writes `READY`: until then the store is untouched and a crash leaves it as it was.
//! From `READY` on the install is decided, and [`finish_install`] carries it out: the log
//! directory swapped for the unpacked one (two renames), the index emptied and filled from
//! the snapshot, the queue journal and heads file (which speak of the old store) removed,
//! and `install/` deleted. Every step can run again, so a crash anywhere in it is finished
//! at the next start ([`resume_install`]) before the store opens. What belongs to this node
//! and not to the replicated state (its server id, client ids, alive time, downtime) is
//! kept, and so are the users, which live in other trees of the same database.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::*;

/// Snapshots live in `DATA/snapshot/`.
pub const DIR: &str = "snapshot";
const MAGIC: &[u8; 8] = b"MOMDATA1";
const HEAD_LEN: u64 = 20;
const INSTALL: &str = "install";
const READY: &str = "READY";
/// This node's own metadata, never taken from another's snapshot.
const LOCAL_META: [&str; 4] = ["server_id", "next_client_id", "alive", "downtime"];
/// Bounds on what a snapshot may claim, checked before anything is allocated for it.
const MAX_HEADER: u32 = 16 << 20;
const MAX_KV: u32 = 256 << 20;
const MAX_FILES: u32 = 1 << 20;

pub(super) fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

pub(super) fn is_local(key: &[u8]) -> bool {
    LOCAL_META.iter().any(|n| key == meta_key(n).as_slice())
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A segment file's name as a snapshot may carry it: digits and `.seg`, nothing that could
/// name another path.
fn valid_segment_name(name: &str) -> bool {
    name.strip_suffix(".seg").is_some_and(|stem| {
        !stem.is_empty() && stem.len() <= 20 && stem.bytes().all(|b| b.is_ascii_digit())
    })
}

/// What the broker task took for a snapshot: the index written out, the segment files
/// linked, under `dir`.
#[derive(Debug)]
pub struct Cut {
    pub dir: PathBuf,
    /// Segment file names with their lengths at the cut.
    pub files: Vec<(String, u64)>,
    pub index_entries: u64,
    /// The value of the metadata key asked for (the applied Raft state), at the cut.
    pub applied: Option<Vec<u8>>,
}

pub(super) fn write_kv(w: &mut impl Write, k: &[u8], v: &[u8]) -> io::Result<()> {
    let kl = u32::try_from(k.len()).map_err(|_| bad("index key too long"))?;
    let vl = u32::try_from(v.len()).map_err(|_| bad("index value too long"))?;
    w.write_all(&kl.to_be_bytes())?;
    w.write_all(k)?;
    w.write_all(&vl.to_be_bytes())?;
    w.write_all(v)
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_bytes(r: &mut impl Read, len: u32, max: u32, what: &str) -> io::Result<Vec<u8>> {
    if len > max {
        return Err(bad(format!(
            "{what} of {len} bytes is over the {max}-byte bound"
        )));
    }
    let mut v = vec![0u8; len as usize];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// One index entry of a snapshot or an unpacked index file; None at its end.
pub(super) fn read_kv(r: &mut impl Read) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut b = [0u8; 4];
    match r.read_exact(&mut b) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let k = read_bytes(r, u32::from_be_bytes(b), MAX_KV, "an index key")?;
    let vl = read_u32(r)?;
    let v = read_bytes(r, vl, MAX_KV, "an index value")?;
    Ok(Some((k, v)))
}

impl Store {
    /// Take the cut of a snapshot into `dir` (created; must not exist): see the module
    /// doc. Run on the broker task with nothing staged, so that the cut is one moment.
    pub fn snapshot_cut(&self, dir: &Path, applied_key: &str) -> Result<Cut> {
        self.flush()?;
        fs::create_dir_all(dir)?;
        let mut index = BufWriter::with_capacity(1 << 20, File::create(dir.join("index"))?);
        let mut entries = 0u64;
        for kv in self.db.iter() {
            let (k, v) = kv?;
            if is_local(&k) {
                continue;
            }
            write_kv(&mut index, &k, &v)?;
            entries += 1;
        }
        index.flush()?;
        drop(index);
        let mut files = Vec::new();
        for (_, path) in self.segs.list()? {
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let len = fs::metadata(&path)?.len();
            fs::hard_link(&path, dir.join(&name))?;
            files.push((name, len));
        }
        Ok(Cut {
            dir: dir.to_path_buf(),
            files,
            index_entries: entries,
            applied: self.get_whole(&meta_key(applied_key))?,
        })
    }

    /// Finish an install decided on (`READY`) with this store's index database; see
    /// [`finish_install`].
    #[cfg(test)]
    pub fn finish_install(&self) -> io::Result<bool> {
        finish_install(&self.db, &self.log, &self.dir)
    }

    /// What an install decided on (`READY`) needs of this store, to be carried out on
    /// another thread: nothing may use this store meanwhile, nor afterwards.
    pub fn install_job(&self) -> InstallJob {
        InstallJob {
            db: self.db.clone(),
            log: self.log.clone(),
            dir: self.dir.clone(),
            index_room: self.index_room,
            replica: self.replica,
            shards: self.shards,
        }
    }
}

/// An install of a snapshot into a store's files and index, then the store opened again
/// over them and loaded ([`Store::install_job`]).
pub struct InstallJob {
    db: sled::Db,
    log: Arc<File>,
    dir: PathBuf,
    index_room: u64,
    replica: bool,
    shards: crate::core::shards::Shards,
}

/// The store an install made, what it holds, and how long the files and index took and
/// then the load.
pub type Installed = (Store, Loaded, std::time::Duration, std::time::Duration);

impl InstallJob {
    /// [`finish_install`], then the new store opened and loaded at time `now`.
    pub fn run(self, now: u64, dedupe_window_ms: u64) -> std::result::Result<Installed, String> {
        let t0 = std::time::Instant::now();
        finish_install(&self.db, &self.log, &self.dir)
            .map_err(|e| format!("installing the snapshot in the store: {e}"))?;
        let t1 = std::time::Instant::now();
        let mut store = Store::assemble(self.db, self.log, &self.dir)
            .map_err(|e| format!("reopening the store after the install: {e}"))?;
        store.index_room = self.index_room;
        store.replica = self.replica;
        store.shards = self.shards;
        let loaded = store
            .load(now, dedupe_window_ms)
            .map_err(|e| format!("loading the installed store: {e}"))?;
        Ok((store, loaded, t1 - t0, t1.elapsed()))
    }
}

/// A writer that counts and checksums what goes through it.
pub(super) struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A snapshot file being written, its body summed as it goes.
pub(super) type Body = Summing<BufWriter<File>>;

/// Starts the snapshot file `out`: room for its head, then the body's beginning — `header`,
/// the number of index entries, the segment files' names and lengths.
pub(super) fn begin_body(
    out: &Path,
    header: &[u8],
    entries: u64,
    files: &[(String, u64)],
) -> io::Result<Body> {
    let mut file = File::create(out)?;
    file.write_all(&[0u8; HEAD_LEN as usize])?;
    let mut w = Summing {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    let hl = u32::try_from(header.len()).map_err(|_| bad("snapshot header too long"))?;
    w.write_all(&hl.to_be_bytes())?;
    w.write_all(header)?;
    w.write_all(&entries.to_be_bytes())?;
    let n = u32::try_from(files.len()).map_err(|_| bad("too many segment files"))?;
    w.write_all(&n.to_be_bytes())?;
    for (name, len) in files {
        let nl = u16::try_from(name.len()).map_err(|_| bad("segment name too long"))?;
        w.write_all(&nl.to_be_bytes())?;
        w.write_all(name.as_bytes())?;
        w.write_all(&len.to_be_bytes())?;
    }
    Ok(w)
}

/// Ends a snapshot file: its head (magic, CRC and length of the body) in the room left
/// for it, the file fsynced. Returns its size.
pub(super) fn end_body(mut w: Body) -> io::Result<u64> {
    w.flush()?;
    let (crc, len) = (w.crc.finalize(), w.len);
    let mut file = w.inner.into_inner().map_err(|e| e.into_error())?;
    let mut head = Vec::with_capacity(HEAD_LEN as usize);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&crc.to_be_bytes());
    head.extend_from_slice(&len.to_be_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&head)?;
    file.sync_all()?;
    Ok(HEAD_LEN + len)
}

/// Write the snapshot of `cut` with `header` to `out` (fsynced), and return its size.
pub fn write_snapshot(cut: &Cut, header: &[u8], out: &Path) -> io::Result<u64> {
    let mut w = begin_body(out, header, cut.index_entries, &cut.files)?;
    io::copy(&mut File::open(cut.dir.join("index"))?, &mut w)?;
    for (name, len) in &cut.files {
        let copied = io::copy(&mut File::open(cut.dir.join(name))?.take(*len), &mut w)?;
        if copied != *len {
            return Err(bad(format!(
                "segment file {name} is shorter ({copied} bytes) than at the cut ({len})"
            )));
        }
    }
    end_body(w)
}

/// What a snapshot's body starts with.
#[derive(Debug)]
pub struct Parsed {
    pub header: Vec<u8>,
    pub index_entries: u64,
    pub files: Vec<(String, u64)>,
}

/// The caller's header of a snapshot file, read without checking the whole file (for a
/// file this node wrote and checked).
pub fn read_header(file: &mut File) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(0))?;
    let mut r = BufReader::new(&*file);
    let mut head = [0u8; HEAD_LEN as usize];
    r.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Err(bad("not a mom data snapshot (bad magic)"));
    }
    let hl = read_u32(&mut r)?;
    read_bytes(&mut r, hl, MAX_HEADER, "a snapshot header")
}

/// Check a snapshot file whole (magic, length, checksum) and read what its body starts
/// with. Leaves the file positioned at its index entries.
pub fn verify(file: &mut File) -> io::Result<Parsed> {
    file.seek(SeekFrom::Start(0))?;
    let size = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, &*file);
    let mut head = [0u8; HEAD_LEN as usize];
    r.read_exact(&mut head)
        .map_err(|_| bad("not a mom data snapshot (too short)"))?;
    if &head[..8] != MAGIC {
        return Err(bad("not a mom data snapshot (bad magic)"));
    }
    let want = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let mut lb = [0u8; 8];
    lb.copy_from_slice(&head[12..20]);
    let len = u64::from_be_bytes(lb);
    if len != size - HEAD_LEN {
        return Err(bad(format!(
            "snapshot is {} bytes, its header says {}: the snapshot is corrupt or cut short",
            size - HEAD_LEN,
            len
        )));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
    }
    if crc.finalize() != want {
        return Err(bad("snapshot checksum mismatch: the snapshot is corrupt"));
    }
    drop(r);
    file.seek(SeekFrom::Start(HEAD_LEN))?;
    let mut r = BufReader::new(&*file);
    let hl = read_u32(&mut r)?;
    let header = read_bytes(&mut r, hl, MAX_HEADER, "a snapshot header")?;
    let index_entries = read_u64(&mut r)?;
    let n = read_u32(&mut r)?;
    if n > MAX_FILES {
        return Err(bad(format!("a snapshot of {n} segment files is refused")));
    }
    let mut files = Vec::new();
    let mut total = 0u64;
    for _ in 0..n {
        let nl = read_u16(&mut r)?;
        let name = String::from_utf8(read_bytes(&mut r, u32::from(nl), 64, "a file name")?)
            .map_err(|_| bad("a segment file name is not UTF-8"))?;
        if !valid_segment_name(&name) {
            return Err(bad(format!("{name:?} is not a segment file name")));
        }
        let l = read_u64(&mut r)?;
        total = total.saturating_add(l);
        files.push((name, l));
    }
    if total > len {
        return Err(bad("the snapshot's files add up to more than it holds"));
    }
    // Positioned just past what was read: the reader's buffer is dropped.
    let pos = HEAD_LEN + 4 + u64::from(hl) + 8 + 4;
    let names: u64 = files.iter().map(|(n, _)| 2 + n.len() as u64 + 8).sum();
    drop(r);
    file.seek(SeekFrom::Start(pos + names))?;
    Ok(Parsed {
        header,
        index_entries,
        files,
    })
}

fn install_dir(data: &Path) -> PathBuf {
    data.join(DIR).join(INSTALL)
}

/// Check the snapshot in `file` and unpack it under `DATA/snapshot/install/`, fsynced,
/// ending with `READY`: from then on [`finish_install`] carries it out, at the latest at
/// the next start. Returns the snapshot's header. A snapshot that fails a check is refused
/// and nothing of the store changes.
/// `check` looks at the header first: an error from it refuses the snapshot.
/// `shard`: the snapshot is of that shard alone, installed in its place
/// (`shard_snapshot.rs`); None: of the whole store.
pub fn stage_install(
    file: &mut File,
    data: &Path,
    shard: Option<(crate::core::shards::Shards, crate::core::shards::Shard)>,
    check: impl FnOnce(&[u8]) -> io::Result<()>,
) -> io::Result<Vec<u8>> {
    let parsed = verify(file)?;
    check(&parsed.header)?;
    let inst = install_dir(data);
    if inst.exists() {
        fs::remove_dir_all(&inst)?;
    }
    fs::create_dir_all(inst.join(segments::DIR))?;
    let mut r = BufReader::with_capacity(1 << 20, &*file);
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(inst.join("index"))?);
        for _ in 0..parsed.index_entries {
            let (k, v) = read_kv(&mut r)?.ok_or_else(|| bad("snapshot index cut short"))?;
            write_kv(&mut out, &k, &v)?;
        }
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
    }
    for (name, len) in &parsed.files {
        let path = inst.join(segments::DIR).join(name);
        let mut out = File::create(&path)?;
        let copied = io::copy(&mut (&mut r).take(*len), &mut out)?;
        if copied != *len {
            return Err(bad(format!("snapshot cut short in segment file {name}")));
        }
        out.sync_all()?;
    }
    sync_dir(&inst.join(segments::DIR))?;
    if let Some((shards, s)) = shard {
        let mut f = File::create(inst.join(super::shard_snapshot::SHARD))?;
        f.write_all(&super::shard_snapshot::shard_file(shards, s))?;
        f.sync_all()?;
    }
    sync_dir(&inst)?;
    File::create(inst.join(READY))?.sync_all()?;
    sync_dir(&inst)?;
    Ok(parsed.header)
}

/// Carry out an install decided on (`READY` under `DATA/snapshot/install/`) into the index
/// database `db` (whose log file is `log`) and the files of `data`. Returns whether there
/// was one. The store must not be in use meanwhile; reopen it after ([`Store::reopen`]).
/// An unfinished staging (no `READY`) is removed: the store stays as it was.
pub fn finish_install(db: &sled::Db, log: &File, data: &Path) -> io::Result<bool> {
    let inst = install_dir(data);
    if !inst.join(READY).exists() {
        if inst.exists() {
            fs::remove_dir_all(&inst)?;
        }
        return Ok(false);
    }
    if inst.join(super::shard_snapshot::SHARD).exists() {
        super::shard_snapshot::finish_shard_install(db, log, data, &inst)?;
        end_install(data, &inst)?;
        return Ok(true);
    }
    // This node's own metadata, saved once: a crash after the index was emptied must not
    // lose it.
    let local_path = inst.join("local");
    let local: Vec<(Vec<u8>, Vec<u8>)> = if local_path.exists() {
        let mut r = BufReader::new(File::open(&local_path)?);
        let mut out = Vec::new();
        while let Some(kv) = read_kv(&mut r)? {
            out.push(kv);
        }
        out
    } else {
        let mut out = Vec::new();
        for n in LOCAL_META {
            if let Some(v) = db.get(meta_key(n)).map_err(io::Error::other)? {
                out.push((meta_key(n), v.to_vec()));
            }
        }
        let tmp = inst.join("local.tmp");
        let mut w = BufWriter::new(File::create(&tmp)?);
        for (k, v) in &out {
            write_kv(&mut w, k, v)?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, &local_path)?;
        sync_dir(&inst)?;
        out
    };
    // The segment files: the unpacked directory takes the log's place.
    let log_dir = data.join(segments::DIR);
    let old = data.join("log.old");
    let new = inst.join(segments::DIR);
    if old.exists() {
        fs::remove_dir_all(&old)?;
    }
    if new.exists() {
        if log_dir.exists() {
            fs::rename(&log_dir, &old)?;
        }
        fs::rename(&new, &log_dir)?;
        sync_dir(data)?;
        sync_dir(&inst)?;
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
    }
    // The index: emptied, then filled from the snapshot (the users' trees are not touched).
    db.clear().map_err(io::Error::other)?;
    let mut r = BufReader::with_capacity(1 << 20, File::open(inst.join("index"))?);
    let mut batch = sled::Batch::default();
    let mut n = 0usize;
    while let Some((k, v)) = read_kv(&mut r)? {
        if is_local(&k) {
            continue;
        }
        batch.insert(k, v);
        n += 1;
        if n.is_multiple_of(4096) {
            db.apply_batch(std::mem::take(&mut batch))
                .map_err(io::Error::other)?;
        }
    }
    for (k, v) in local {
        batch.insert(k, v);
    }
    db.apply_batch(batch).map_err(io::Error::other)?;
    db.flush().map_err(io::Error::other)?;
    log.sync_data()?;
    end_install(data, &inst)?;
    Ok(true)
}

/// The end of an install: the queue journal and the heads file, which speak of the store
/// before it (flushed whole before the install was staged), removed; then the staging.
fn end_install(data: &Path, inst: &Path) -> io::Result<()> {
    let journal = data.join("queues");
    if journal.exists() {
        for e in fs::read_dir(&journal)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "journal") {
                fs::remove_file(p)?;
            }
        }
        sync_dir(&journal)?;
    }
    match fs::remove_file(data.join(heads::FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    sync_dir(data)?;
    fs::remove_file(inst.join(READY))?;
    sync_dir(inst)?;
    fs::remove_dir_all(inst)?;
    Ok(())
}

/// At start, before the store opens: finish an install a crash interrupted (or remove an
/// unfinished staging). Opens the index database for it and closes it again.
pub fn resume_install(data: &Path) -> Result<bool> {
    let inst = install_dir(data);
    if !inst.exists() {
        return Ok(false);
    }
    if !inst.join(READY).exists() {
        fs::remove_dir_all(&inst)?;
        return Ok(false);
    }
    let db = sled::Config::new()
        .path(data.join("db"))
        .flush_every_ms(None)
        .open()?;
    let log = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(data.join("db").join("db"))?;
    let done = finish_install(&db, &log, data)?;
    drop(db);
    Ok(done)
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
