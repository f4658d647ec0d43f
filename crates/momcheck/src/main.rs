//! momcheck: runs momd under a workload whose every acknowledgement and delivery is written
//! down, injects faults (kill -9, pauses, a full disk, damaged data files, clock jumps,
//! hostile clients), then reads everything back and counts what was lost, duplicated,
//! reordered or given a reused seq. Start at `run.rs` (the run), `faults.rs` (the faults)
//! and `verdict.rs` (the judgement); `cluster/` is the same against three nodes of a
//! cluster (`--cluster`).

mod background;
mod cluster;
mod corrupt;
mod disk;
mod faults;
mod hostile;
mod ledger;
mod momd;
mod opts;
mod raw;
mod readback;
mod report;
mod rng;
mod run;
mod verdict;
mod workload;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use clap::{CommandFactory, Parser};
use tokio_util::sync::CancellationToken;

use crate::opts::Opts;
use crate::rng::Rng;
use crate::run::{print_details, Run};

/// momcheck itself could not run (not a finding about momd).
const EXIT_CANNOT_RUN: u8 = 3;

fn main() -> ExitCode {
    let opts = Opts::parse();
    if let Err(e) = opts.validate() {
        Opts::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit();
    }
    let seed = opts.seed.unwrap_or_else(Rng::random_seed);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("momcheck: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_CANNOT_RUN);
        }
    };
    let run = async {
        if opts.cluster {
            cluster::check(opts, seed).await
        } else {
            check(opts, seed).await
        }
    };
    match rt.block_on(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("momcheck: {e:#}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

async fn check(opts: Opts, seed: u64) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let json = opts.json;
    let keep = opts.keep;
    let faults: Vec<&str> = opts.fault_list().iter().map(|f| f.name()).collect();
    eprintln!(
        "momcheck: seed {seed}: {} cycles of {} (re-run: --seed {seed})",
        opts.cycles,
        faults.join(",")
    );
    let mut run = Run::setup(opts, seed).await?;
    eprintln!(
        "momcheck: work dir (data, momd logs) {}",
        run.work_dir().display()
    );
    let interrupted = CancellationToken::new();
    let on_signal = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("momcheck: interrupted; finishing the current cycle, then checking");
            on_signal.cancel();
        }
    });
    let result = run.run(interrupted).await;
    run.shutdown().await;
    let peak = run.momd.rss.peak.load(Ordering::Relaxed);
    if peak > run.opts.max_rss {
        run.finding(
            "rss-over",
            format!(
                "momd's peak RSS {} MiB is over the bound of {} MiB",
                peak >> 20,
                run.opts.max_rss >> 20
            ),
        );
    }
    let took = started.elapsed();
    let (counts, why) = match &result {
        Ok((c, d)) => {
            print_details(d);
            (Some(c), None)
        }
        Err(e) => {
            eprintln!("momcheck: the run stopped: {e:#}");
            (None, Some(format!("{e:#}").replace('\n', " ")))
        }
    };
    for h in &run.hostile_reports {
        eprintln!("momcheck: hostile {}: {}", h.case, h.line());
    }
    let failed = why.is_some() || report::failed(&run, counts);
    if json {
        println!("{}", report::json(&run, counts, took, why.as_deref()));
    } else {
        println!("{}", report::line(&run, counts, took, why.as_deref()));
    }
    if failed && (keep || why.is_some()) {
        if let Some(copy) = run.keep_data() {
            eprintln!("momcheck: data dir copied to {}", copy.display());
        }
        run.work.disable_cleanup(true);
        eprintln!("momcheck: kept {}", run.work_dir().display());
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
