//! Data-dir care: `momd backup`, `momd restore`, `momd info` and the format version.
//!
//! A backup must be one moment of the broker: the sled index and the segment files it
//! points into, taken together. With momd stopped, `backup` holds the directory lock and
//! copies. With momd running, `backup` asks it (SIGUSR1; the lock file names its PID) for a
//! checkpoint: the broker task — the only writer of the store — flushes, then, before it
//! takes its next command, copies the index into a new sled database and hard-links every
//! segment file, noting each file's length, under `DATA/backup.staging/`. Segment files are
//! append-only, so the first `length` bytes of each link are the checkpoint's, whatever is
//! appended or deleted later. `backup` then copies that out to the target (outside the
//! broker: under systemd momd may write only its state directory) and removes the staging.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The data dir's format, in `DATA/FORMAT`. Raise it when the layout changes, and teach
/// [`check_format`] to upgrade from the one before (or to say which command does).
/// 2: segment records of version 2 (several runs of messages in one record), which a momd
/// reading format 1 cannot read.
/// 3: one log of segment files for all topics (`log/`) instead of a directory per topic
/// (`topics/`); the store moves an old dir's records into the log as it opens
/// (`store/upgrade.rs`).
pub const FORMAT: u32 = 3;
const FORMAT_FILE: &str = "FORMAT";
/// Where a running momd puts a checkpoint, inside its data dir.
pub const STAGING: &str = "backup.staging";
const SEGMENT_LIST: &str = "SEGMENTS";
const DONE: &str = "DONE";
const FAILED: &str = "FAILED";

/// The format of `data` (0: a data dir from before formats were written; None: no store).
pub fn read_format(data: &Path) -> anyhow::Result<Option<u32>> {
    match fs::read_to_string(data.join(FORMAT_FILE)) {
        Ok(s) => {
            let v = s
                .trim()
                .strip_prefix("mom-data ")
                .and_then(|v| v.parse().ok())
                .with_context(|| {
                    format!(
                        "{}: not a mom data format line: {s:?}",
                        data.join(FORMAT_FILE).display()
                    )
                })?;
            Ok(Some(v))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(data.join("db").is_dir().then_some(0)),
        Err(e) => Err(e).with_context(|| format!("reading {}", data.join(FORMAT_FILE).display())),
    }
}

fn write_format(data: &Path) -> io::Result<()> {
    let path = data.join(FORMAT_FILE);
    let mut f = fs::File::create(&path)?;
    writeln!(f, "mom-data {FORMAT}")?;
    f.sync_all()
}

/// At start, before the store opens: refuse a newer format, upgrade an older one.
pub fn check_format(data: &Path) -> anyhow::Result<()> {
    match read_format(data)? {
        Some(v) if v > FORMAT => bail!(
            "data dir {} has format {v}, written by a newer momd; this momd {} reads format \
             {FORMAT} and older. Run the newer momd, or restore a backup made by this one",
            data.display(),
            env!("CARGO_PKG_VERSION")
        ),
        Some(FORMAT) => Ok(()),
        Some(old) => {
            // 0 → 1: the layout did not change; only the version is written down.
            // 1 → 2: old records stay as they are (version 1 records are still read); new
            // records are written as version 2.
            // 2 → 3: the store moves `topics/` into `log/` as it opens, resuming if
            // interrupted (`store/upgrade.rs`).
            tracing::info!(
                "data dir {}: upgrading format {old} to {FORMAT}",
                data.display()
            );
            write_format(data).context("writing the data format")
        }
        None => write_format(data).context("writing the data format"),
    }
}

/// Copy `from` to `to` recursively (files fsynced), skipping `skip` names at the top.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> io::Result<u64> {
    fs::create_dir_all(to)?;
    let mut bytes = 0;
    for e in fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type()?.is_dir() {
            bytes += copy_tree(&src, &dst, &[])?;
        } else {
            bytes += fs::copy(&src, &dst)?;
            fs::File::open(&dst)?.sync_all()?;
        }
    }
    Ok(bytes)
}

/// Copy the first `len` bytes of `from` to `to`.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> io::Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    let src = fs::File::open(from)?;
    let mut dst = fs::File::create(to)?;
    io::copy(&mut io::Read::take(src, len), &mut dst)?;
    dst.sync_all()
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let rd = match fs::read_dir(dir.join(rel)) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let r = rel.join(e.file_name());
        if e.file_type()?.is_dir() {
            files_under(dir, &r, out)?;
        } else {
            out.push(r);
        }
    }
    Ok(())
}

/// The broker's half (called on its task, after a flush, with nothing else running on the
/// store): the index copied, the segment files linked, under `data/backup.staging`.
pub fn checkpoint(db: &sled::Db, data: &Path) -> anyhow::Result<()> {
    let staging = data.join(STAGING);
    if staging.exists() {
        fs::remove_dir_all(&staging).context("removing an old backup.staging")?;
    }
    fs::create_dir_all(&staging)?;
    let copy = sled::Config::new()
        .path(staging.join("db"))
        .open()
        .context("creating the index copy")?;
    copy.import(db.export());
    copy.flush().context("flushing the index copy")?;
    drop(copy);
    let mut segs = Vec::new();
    files_under(data, Path::new(crate::store::segments::DIR), &mut segs)?;
    files_under(data, Path::new("damaged"), &mut segs)?;
    let mut list = String::new();
    for rel in segs {
        let src = data.join(&rel);
        let len = fs::metadata(&src)?.len();
        let dst = staging.join("files").join(&rel);
        if let Some(dir) = dst.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::hard_link(&src, &dst).with_context(|| format!("linking {}", src.display()))?;
        list.push_str(&format!("{len} {}\n", rel.display()));
    }
    fs::write(staging.join(SEGMENT_LIST), list)?;
    fs::write(staging.join(DONE), b"")?;
    Ok(())
}

/// A failed checkpoint, told to the waiting `momd backup`.
pub fn checkpoint_failed(data: &Path, why: &str) {
    let _ = fs::create_dir_all(data.join(STAGING));
    let _ = fs::write(data.join(STAGING).join(FAILED), why);
}

/// `momd backup DIR`.
pub fn backup(data: &Path, dir: &Path) -> ExitCode {
    match backup_inner(data, dir) {
        Ok(how) => {
            eprintln!(
                "momd: backup of {} in {} ({how})",
                data.display(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("momd: backup failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn empty_or_missing(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    Ok(())
}

fn backup_inner(data: &Path, dir: &Path) -> anyhow::Result<&'static str> {
    if read_format(data)?.is_none() {
        bail!("{} holds no mom data", data.display());
    }
    empty_or_missing(dir)?;
    match crate::lock::lock(data) {
        Ok(_lock) => {
            // Stopped: nothing writes while we hold the lock.
            copy_tree(
                data,
                dir,
                &["momd.lock", STAGING, crate::disk::RESERVE_FILE],
            )?;
            write_format(dir)?;
            Ok("momd was stopped: copied under the data dir lock")
        }
        Err(_) => {
            let pid = fs::read_to_string(data.join("momd.lock"))?
                .trim()
                .parse::<i32>()
                .context("the lock file names no PID")?;
            let staging = data.join(STAGING);
            if staging.exists() {
                fs::remove_dir_all(&staging)?;
            }
            // SAFETY: kill has no memory preconditions.
            if unsafe { libc::kill(pid, libc::SIGUSR1) } != 0 {
                bail!(
                    "cannot signal momd (PID {pid}) for a checkpoint: {}",
                    io::Error::last_os_error()
                );
            }
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                if let Ok(why) = fs::read_to_string(staging.join(FAILED)) {
                    let _ = fs::remove_dir_all(&staging);
                    bail!("momd could not make a checkpoint: {why}");
                }
                if staging.join(DONE).exists() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("momd (PID {pid}) made no checkpoint in 10 minutes");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let res = copy_out(&staging, dir);
            let _ = fs::remove_dir_all(&staging);
            res?;
            Ok("momd was running: a checkpoint taken by the broker")
        }
    }
}

fn copy_out(staging: &Path, dir: &Path) -> anyhow::Result<()> {
    copy_tree(&staging.join("db"), &dir.join("db"), &[])?;
    let list = fs::read_to_string(staging.join(SEGMENT_LIST))?;
    for line in list.lines() {
        let (len, rel) = line
            .split_once(' ')
            .with_context(|| format!("bad line in the segment list: {line:?}"))?;
        let len: u64 = len.parse().context("segment length")?;
        copy_prefix(&staging.join("files").join(rel), &dir.join(rel), len)?;
    }
    fs::create_dir_all(dir.join(crate::store::segments::DIR))?;
    write_format(dir)?;
    Ok(())
}

/// `momd restore DIR --data NEW`.
pub fn restore(dir: &Path, data: &Path) -> ExitCode {
    let res = (|| -> anyhow::Result<()> {
        match read_format(dir)? {
            None => bail!("{} is not a mom backup (no db/ in it)", dir.display()),
            Some(v) if v > FORMAT => bail!(
                "{} has format {v}, newer than this momd's {FORMAT}: restore it with a newer momd",
                dir.display()
            ),
            Some(_) => {}
        }
        empty_or_missing(data)?;
        copy_tree(dir, data, &[])?;
        Ok(())
    })();
    match res {
        Ok(()) => {
            eprintln!(
                "momd: restored {} into {}; start it with `momd --data {}`",
                dir.display(),
                data.display(),
                data.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("momd: restore failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `momd info`: what the data dir holds, without starting the broker.
pub fn info(data: &Path) -> ExitCode {
    match info_inner(data) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("momd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn info_inner(data: &Path) -> anyhow::Result<()> {
    let format =
        read_format(data)?.with_context(|| format!("{} holds no mom data", data.display()))?;
    let mut disk = 0u64;
    let mut files = Vec::new();
    files_under(data, Path::new(""), &mut files)?;
    // The reserve is room kept free, not data (as in `stats`).
    files.retain(|f| f != Path::new(crate::disk::RESERVE_FILE) && f != Path::new("momd.lock"));
    for f in &files {
        disk += fs::metadata(data.join(f)).map(|m| m.len()).unwrap_or(0);
    }
    println!("data dir:  {}", data.display());
    println!("format:    {format} (this momd: {FORMAT})");
    println!("disk:      {disk} bytes in {} files", files.len());
    let _lock = match crate::lock::lock(data) {
        Ok(l) => l,
        Err(_) => {
            let pid = fs::read_to_string(data.join("momd.lock")).unwrap_or_default();
            println!(
                "state:     in use by momd PID {}; ask it: momctl stats",
                pid.trim()
            );
            return Ok(());
        }
    };
    let store = crate::store::Store::open(data, 16 << 20).context("opening the store")?;
    let loaded = store
        .load(crate::broker::now_ms(), 0)
        .context("reading the store")?;
    let messages: u64 = loaded.topics.iter().map(|t| t.msgs).sum();
    let bytes: u64 = loaded.topics.iter().map(|t| t.bytes).sum();
    println!("state:     stopped");
    println!("server id: {}", loaded.server_id);
    println!("topics:    {}", loaded.topics.len());
    println!("messages:  {messages} ({bytes} bytes)");
    println!("queues:    {}", loaded.queues.len());
    let mut topics = loaded.topics;
    topics.sort_by(|a, b| b.msgs.cmp(&a.msgs).then_with(|| a.name.cmp(&b.name)));
    for t in topics.iter().take(20) {
        println!(
            "  topic {:<32} {:>10} msgs  seq {}..{}",
            t.name, t.msgs, t.first_seq, t.last_seq
        );
    }
    if topics.len() > 20 {
        println!("  … {} more topics", topics.len() - 20);
    }
    for q in loaded.queues.iter().take(20) {
        println!(
            "  queue {:<32} {:>10} outstanding  bindings {}",
            q.def.name,
            q.outstanding.len(),
            q.def.bindings.join(" ")
        );
    }
    Ok(())
}
