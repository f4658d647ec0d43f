//! The verdict: one line (or one JSON object) with the seed, the faults, the counts, momd's
//! peak memory and the well-behaved client's worst latency per fault and hostile case.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::run::{Run, FINDING_KINDS};
use crate::verdict::Counts;

fn mib(b: u64) -> u64 {
    (b + (1 << 19)) >> 20
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Worst latencies in the verdict's order: steady, the faults, then hostile cases.
fn latencies(run: &Run) -> Vec<(String, Duration)> {
    let worst = run
        .ctx
        .latencies
        .lock()
        .map(|l| l.worst.clone())
        .unwrap_or_default();
    let mut v: Vec<(String, Duration)> = worst
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "start" | "final" | "checkpoint"))
        .collect();
    let rank = |k: &str| match k {
        "steady" => 0,
        k if k.starts_with("hostile:") => 2,
        _ => 1,
    };
    v.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    v
}

/// Findings by kind, in the verdict's order.
fn finding_counts(run: &Run) -> Vec<(&'static str, usize)> {
    FINDING_KINDS
        .iter()
        .map(|k| (*k, run.findings.iter().filter(|(f, _)| f == k).count()))
        .collect()
}

pub fn failed(run: &Run, counts: Option<&Counts>) -> bool {
    counts.is_none_or(|c| c.violations() > 0) || !run.findings.is_empty()
}

/// The verdict line. `counts` is None when the run was aborted (`why`).
pub fn line(run: &Run, counts: Option<&Counts>, took: Duration, why: Option<&str>) -> String {
    let mut s = format!(
        "momcheck seed {} cycles {}",
        run.seed,
        run.fault_counts.values().sum::<u32>()
    );
    s.push_str(" faults");
    for (f, n) in &run.fault_counts {
        s.push_str(&format!(" {f}={n}"));
    }
    if run.skipped_diskfull > 0 {
        s.push_str(&format!(
            " (diskfull skipped {}x: no tmpfs)",
            run.skipped_diskfull
        ));
    }
    match counts {
        Some(c) => s.push_str(&format!(
            " acked {} lost {} duplicated {} reordered {} seq-reuse {} queue-never-delivered {} \
             delivery-count-regressions {} corrupted-served {} phantom {}",
            c.acked,
            c.lost,
            c.duplicated,
            c.reordered,
            c.seq_reuse,
            c.queue_never_delivered,
            c.delivery_count_regressions,
            c.corrupted_served,
            c.phantom
        )),
        None => s.push_str(&format!(
            " acked {} (not checked: aborted)",
            run.ctx.acked.load(Ordering::Relaxed)
        )),
    }
    for (k, n) in finding_counts(run) {
        s.push_str(&format!(" {k} {n}"));
    }
    if let Some(c) = counts {
        s.push_str(&format!(
            " damaged-reported {} torn-cut {}",
            c.damaged_reported, c.torn_cut
        ));
    }
    let peak = run.momd.rss.peak.load(Ordering::Relaxed);
    s.push_str(&format!(
        " peak-rss {}MiB (bound {}MiB)",
        mib(peak),
        mib(run.opts.max_rss)
    ));
    s.push_str(" worst-latency");
    for (k, d) in latencies(run) {
        s.push_str(&format!(" {k}={}", ms(d)));
    }
    s.push_str(&format!(" time {:.0}s", took.as_secs_f64()));
    match why {
        Some(w) => s.push_str(&format!(" ABORTED: {w}")),
        None if failed(run, counts) => s.push_str(" FAIL"),
        None => s.push_str(" PASS"),
    }
    s
}

/// The same as one JSON object.
pub fn json(run: &Run, counts: Option<&Counts>, took: Duration, why: Option<&str>) -> String {
    let lat: serde_json::Map<String, serde_json::Value> = latencies(run)
        .into_iter()
        .map(|(k, d)| (k, serde_json::json!(d.as_millis() as u64)))
        .collect();
    let findings: Vec<serde_json::Value> = run
        .findings
        .iter()
        .map(|(k, w)| serde_json::json!({"kind": k, "what": w}))
        .collect();
    let v = serde_json::json!({
        "seed": run.seed,
        "cycles": run.fault_counts.values().sum::<u32>(),
        "faults": run.fault_counts,
        "diskfull_skipped": run.skipped_diskfull,
        "counts": counts,
        "finding_counts": finding_counts(run).into_iter().collect::<BTreeMap<_, _>>(),
        "findings": findings,
        "peak_rss_bytes": run.momd.rss.peak.load(Ordering::Relaxed),
        "max_rss_bytes": run.opts.max_rss,
        "worst_latency_ms": lat,
        "hostile": run.hostile_reports,
        "recovery_ms": run.recoveries.iter().map(|d| d.as_millis() as u64).max(),
        "diskfull_resume_ms": run.resume_times.iter().map(|d| d.as_millis() as u64).max(),
        "checkpoints": run.checkpoints,
        "seconds": took.as_secs_f64(),
        "aborted": why,
        "pass": why.is_none() && !failed(run, counts),
    });
    v.to_string()
}
