//! `momd verify` and `momd repair`: offline checks of a data dir. Both take the data dir's
//! lock, so they refuse to run beside a momd using it. Reports go to stdout (they are the
//! command's data); exit codes: 0 clean (or repaired), 1 damage found, 2 usage, 3 the
//! check could not run.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::lock;
use crate::store::check::Checked;
use crate::store::Store;

/// The check could not run (data dir in use, missing, unreadable).
pub const EXIT_CANNOT_CHECK: u8 = 3;

fn open(data: &Path, what: &str) -> anyhow::Result<(lock::DirLock, Store)> {
    if !data.join("db").is_dir() {
        bail!(
            "{} holds no momd data (no db/ directory); pass the --data of the momd to check",
            data.display()
        );
    }
    let lock = lock::lock(data).with_context(|| format!("{what} works only on a stopped momd"))?;
    let store = Store::open(data, 64 << 20)
        .with_context(|| format!("opening the store in {}", data.display()))?;
    Ok((lock, store))
}

fn summary(sum: &Checked, secs: f64) -> String {
    format!(
        "checked {} topic{}, {} record{} in {} segment file{}, {} intact message{} ({:.1} MB) in {secs:.1}s",
        sum.topics,
        plural(sum.topics),
        sum.records,
        plural(sum.records),
        sum.segments.len(),
        plural(sum.segments.len() as u64),
        sum.messages,
        plural(sum.messages),
        sum.bytes as f64 / 1e6,
    )
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

pub fn verify(data: &Path) -> ExitCode {
    let run = || -> anyhow::Result<bool> {
        let (_lock, store) = open(data, "verify")?;
        let t0 = Instant::now();
        let sum = store.check_all().context("checking the store")?;
        for d in &sum.damage {
            println!("damaged: {d}");
        }
        let s = summary(&sum, t0.elapsed().as_secs_f64());
        if sum.damage.is_empty() {
            println!("{s}: no damage");
        } else {
            let n = sum.damage.len();
            println!(
                "{s}: {n} damaged range{} ({} message{}); `momd repair --data {}` moves them aside",
                plural(n as u64),
                sum.damaged_messages(),
                plural(sum.damaged_messages()),
                data.display()
            );
        }
        Ok(sum.damage.is_empty())
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("momd verify: {e:#}");
            ExitCode::from(EXIT_CANNOT_CHECK)
        }
    }
}

pub fn repair(data: &Path) -> ExitCode {
    let run = || -> anyhow::Result<()> {
        let (_lock, store) = open(data, "repair")?;
        let t0 = Instant::now();
        let mut sum = Checked::default();
        let moved = store.repair(&mut sum).context("repairing the store")?;
        for d in &moved {
            println!("moved aside: {d}");
        }
        let s = summary(&sum, t0.elapsed().as_secs_f64());
        if moved.is_empty() {
            println!("{s}: no damage, nothing to repair");
        } else {
            let n: u64 = moved.iter().map(|d| d.messages()).sum();
            println!(
                "{s}: {} damaged range{} ({n} message{}) moved to {}; their seqs stay unused",
                moved.len(),
                plural(moved.len() as u64),
                plural(n),
                data.join("damaged").display()
            );
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("momd repair: {e:#}");
            ExitCode::from(EXIT_CANNOT_CHECK)
        }
    }
}
