//! The verdict of a cluster run: one line (or one JSON object) with the seed, the faults,
//! the counts over every node's copy, the worst failover and the publishers' worst waits.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{ClusterRun, Outcome, FINDING_KINDS};

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The publishers' worst wait for a `publish_ok` (from the first send of a batch, re-sends
/// included), by the fault it began under; steady first.
fn latencies(run: &ClusterRun) -> Vec<(String, Duration)> {
    let worst = run
        .ctx
        .latencies
        .lock()
        .map(|l| l.worst.clone())
        .unwrap_or_default();
    let mut v: Vec<(String, Duration)> = worst
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "start" | "final"))
        .collect();
    v.sort_by(|a, b| (a.0 != "steady", &a.0).cmp(&(b.0 != "steady", &b.0)));
    v
}

/// The longest failover under each fault that took the leader out.
fn failovers(run: &ClusterRun) -> BTreeMap<&'static str, Duration> {
    let mut m: BTreeMap<&'static str, Duration> = BTreeMap::new();
    for (f, d) in &run.failovers {
        let w = m.entry(f).or_default();
        *w = (*w).max(*d);
    }
    m
}

fn finding_counts(run: &ClusterRun) -> Vec<(&'static str, usize)> {
    FINDING_KINDS
        .iter()
        .map(|k| (*k, run.findings.iter().filter(|(f, _)| f == k).count()))
        .collect()
}

pub fn failed(run: &ClusterRun, outcome: Option<&Outcome>) -> bool {
    outcome.is_none_or(|o| o.violations() > 0) || !run.findings.is_empty()
}

/// The verdict line. `outcome` is None when the run was aborted (`why`).
pub fn line(
    run: &ClusterRun,
    outcome: Option<&Outcome>,
    took: Duration,
    why: Option<&str>,
) -> String {
    let mut s = format!(
        "momcheck cluster nodes 3 seed {} cycles {} faults",
        run.seed,
        run.fault_counts.values().sum::<u32>()
    );
    for (f, n) in &run.fault_counts {
        s.push_str(&format!(" {f}={n}"));
    }
    if run.skipped_diskfull > 0 {
        s.push_str(&format!(
            " (diskfull skipped {}x: no tmpfs)",
            run.skipped_diskfull
        ));
    }
    match outcome {
        Some(o) => {
            let c = &o.counts;
            s.push_str(&format!(
                " acked {} lost {} duplicated {} reordered {} diverged {} seq-reuse {} \
                 queue-never-delivered {} delivery-count-regressions {} corrupted-served {} \
                 phantom {}",
                c.acked,
                c.lost,
                c.duplicated,
                c.reordered,
                o.diverged,
                c.seq_reuse,
                c.queue_never_delivered,
                c.delivery_count_regressions,
                c.corrupted_served,
                c.phantom
            ));
        }
        None => s.push_str(&format!(
            " acked {} (not checked: aborted)",
            run.ctx.acked.load(Ordering::Relaxed)
        )),
    }
    for (k, n) in finding_counts(run) {
        s.push_str(&format!(" {k} {n}"));
    }
    s.push_str(&format!(" joins-checked {}", run.joins_checked));
    let peak = run
        .rss_peaks()
        .into_iter()
        .map(|(_, p)| p)
        .max()
        .unwrap_or(0);
    s.push_str(&format!(
        " peak-rss {}MiB (bound {}MiB)",
        peak >> 20,
        run.opts.max_rss >> 20
    ));
    s.push_str(" worst-failover");
    let fo = failovers(run);
    if fo.is_empty() {
        s.push_str(" none");
    }
    for (f, d) in fo {
        s.push_str(&format!(" {f}={}", ms(d)));
    }
    s.push_str(" worst-publish");
    for (k, d) in latencies(run) {
        s.push_str(&format!(" {k}={}", ms(d)));
    }
    s.push_str(&format!(" time {:.0}s", took.as_secs_f64()));
    match why {
        Some(w) => s.push_str(&format!(" ABORTED: {w}")),
        None if failed(run, outcome) => s.push_str(" FAIL"),
        None => s.push_str(" PASS"),
    }
    s
}

/// The same as one JSON object.
pub fn json(
    run: &ClusterRun,
    outcome: Option<&Outcome>,
    took: Duration,
    why: Option<&str>,
) -> String {
    let lat: serde_json::Map<String, serde_json::Value> = latencies(run)
        .into_iter()
        .map(|(k, d)| (k, serde_json::json!(d.as_millis() as u64)))
        .collect();
    let fo: serde_json::Map<String, serde_json::Value> = failovers(run)
        .into_iter()
        .map(|(k, d)| (k.to_string(), serde_json::json!(d.as_millis() as u64)))
        .collect();
    let findings: Vec<serde_json::Value> = run
        .findings
        .iter()
        .map(|(k, w)| serde_json::json!({"kind": k, "what": w}))
        .collect();
    let v = serde_json::json!({
        "mode": "cluster",
        "nodes": 3,
        "seed": run.seed,
        "cycles": run.fault_counts.values().sum::<u32>(),
        "faults": run.fault_counts,
        "diskfull_skipped": run.skipped_diskfull,
        "counts": outcome.map(|o| &o.counts),
        "diverged": outcome.map(|o| o.diverged),
        "finding_counts": finding_counts(run).into_iter().collect::<BTreeMap<_, _>>(),
        "findings": findings,
        "joins_checked": run.joins_checked,
        "peak_rss_bytes": run.rss_peaks().into_iter().collect::<BTreeMap<_, _>>(),
        "max_rss_bytes": run.opts.max_rss,
        "hostile": run.hostile_reports,
        "worst_failover_ms": fo,
        "worst_publish_ms": lat,
        "seconds": took.as_secs_f64(),
        "aborted": why,
        "pass": why.is_none() && !failed(run, outcome),
    });
    v.to_string()
}
