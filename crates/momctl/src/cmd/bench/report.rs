//! What a bench run prints: a few human lines, or with `--json` one object on the last line.

use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

use super::{histogram, ClientRun};

pub struct Report {
    pub kind: &'static str,
    pub topic: String,
    /// What the run was: `100000 msgs × 128 B, 4 publishers, window 256, batch 1`.
    pub setup: String,
    /// What the latency measures: `send → ack`.
    pub latency_of: &'static str,
    pub size: usize,
    /// The clients whose messages are counted (publishers for pub, receivers otherwise).
    pub clients: Vec<ClientRun>,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// For loads with both sides: the publishers' own rate.
    pub publish: Option<(u64, Duration)>,
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

/// What a run's report is made of.
struct Figures {
    total: u64,
    per_sec: f64,
    mb: f64,
    h: Histogram<u64>,
    /// Per client msgs/s: min, avg, max.
    per_client: (f64, f64, f64),
}

impl Report {
    fn figures(&self) -> Figures {
        let total = self.total();
        let per_sec = rate(total, self.elapsed);
        Figures {
            total,
            per_sec,
            mb: per_sec * self.size as f64 / 1e6,
            h: self.latency(),
            per_client: self.per_client(),
        }
    }

    fn total(&self) -> u64 {
        self.clients.iter().map(|c| c.msgs).sum()
    }

    fn latency(&self) -> Histogram<u64> {
        let mut all = histogram();
        for c in &self.clients {
            // Same bounds everywhere: adding cannot fail; saturate if it ever did.
            if all.add(&c.latency).is_err() {
                for v in c.latency.iter_recorded() {
                    all.saturating_record_n(v.value_iterated_to(), v.count_at_value());
                }
            }
        }
        all
    }

    fn per_client(&self) -> (f64, f64, f64) {
        let rates: Vec<f64> = self
            .clients
            .iter()
            .map(|c| rate(c.msgs, c.elapsed))
            .collect();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        let avg = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        (if min.is_finite() { min } else { 0.0 }, avg, max)
    }

    /// The run as one JSON object.
    fn json(&self) -> serde_json::Value {
        let Figures {
            total,
            per_sec,
            mb,
            h,
            per_client: (min, avg, max),
        } = self.figures();
        let q = |p: f64| h.value_at_quantile(p);
        let mut v = json!({
            "kind": self.kind,
            "topic": self.topic,
            "setup": self.setup,
            "msgs": total,
            "size": self.size,
            "seconds": self.elapsed.as_secs_f64(),
            "msgs_per_sec": per_sec.round(),
            "mb_per_sec": (mb * 100.0).round() / 100.0,
            "latency_of": self.latency_of,
            "latency_us": {
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
                "max": h.max(), "mean": h.mean().round(),
            },
            "clients": self.clients.len(),
            "per_client_msgs_per_sec": {
                "min": min.round(), "avg": avg.round(), "max": max.round(),
            },
        });
        if let Some((n, d)) = self.publish {
            v["publish"] = json!({"msgs": n, "seconds": d.as_secs_f64(),
                                  "msgs_per_sec": rate(n, d).round()});
        }
        v
    }

    /// The run as a few lines for people; `indent` before each.
    fn human(&self, out: &mut impl Write, indent: &str) -> std::io::Result<()> {
        let Figures {
            total,
            per_sec,
            mb,
            h,
            per_client: (min, avg, max),
        } = self.figures();
        let q = |p: f64| h.value_at_quantile(p);
        writeln!(out, "{indent}{} {}: {}", self.kind, self.topic, self.setup)?;
        if let Some((n, d)) = self.publish {
            writeln!(
                out,
                "{indent}  published {n} msgs in {:.2} s: {:.0} msgs/s",
                d.as_secs_f64(),
                rate(n, d)
            )?;
        }
        writeln!(
            out,
            "{indent}  {total} msgs in {:.2} s: {per_sec:.0} msgs/s, {mb:.2} MB/s",
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            out,
            "{indent}  latency ({}): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.latency_of,
            ms(q(0.5)),
            ms(q(0.9)),
            ms(q(0.99)),
            ms(q(0.999)),
            ms(h.max())
        )?;
        if self.clients.len() > 1 {
            writeln!(
                out,
                "{indent}  per client ({}): min {min:.0}  avg {avg:.0}  max {max:.0} msgs/s",
                self.clients.len()
            )?;
        }
        Ok(())
    }

    pub fn print(&self, json: bool) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            return writeln!(out, "{}", self.json());
        }
        self.human(&mut out, "")
    }

    /// This run and the same load against `baseline` (run first, on `against`), and how
    /// they compare: with `--json`, this run's object with the baseline's in `baseline`
    /// and the ratios.
    pub fn print_against(
        &self,
        baseline: &Report,
        against: &str,
        here: &str,
        json: bool,
    ) -> std::io::Result<()> {
        let ours = rate(self.total(), self.elapsed);
        let theirs = rate(baseline.total(), baseline.elapsed);
        let ratio = ours / theirs.max(1e-9);
        let p50 = |r: &Report| r.latency().value_at_quantile(0.5) as f64;
        let latency_ratio = p50(self) / p50(baseline).max(1.0);
        let mut out = std::io::stdout().lock();
        if json {
            let mut v = self.json();
            v["server"] = json!(here);
            v["baseline"] = baseline.json();
            v["baseline"]["server"] = json!(against);
            v["ratio"] = json!((ratio * 100.0).round() / 100.0);
            v["p50_latency_ratio"] = json!((latency_ratio * 100.0).round() / 100.0);
            return writeln!(out, "{v}");
        }
        writeln!(out, "baseline, {against}:")?;
        baseline.human(&mut out, "  ")?;
        writeln!(out, "{here}:")?;
        self.human(&mut out, "  ")?;
        writeln!(
            out,
            "{ratio:.2}× the baseline's msgs/s ({ours:.0} against {theirs:.0}); \
             median latency {latency_ratio:.2}× the baseline's"
        )
    }
}
