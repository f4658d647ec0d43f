//! Prometheus text (`--metrics ADDR`, served by `crate::metrics`): counters kept by the
//! broker task and rendered there, so a scrape sees one consistent moment.
//!
//! Label cardinality is bounded: the first `metrics_topics` topics to carry traffic get a
//! `topic` label of their own, for as long as momd runs (a deleted one keeps its last
//! values); all others are summed under `topic="other"`. The labelled set never changes
//! once full, so every series, `other` included, only grows: a counter that fell when a
//! topic moved in or out of a "top N" would read as a reset to Prometheus.

use std::collections::HashMap;
use std::fmt::Write;

use super::Broker;

/// Cumulative traffic of one topic (or of all).
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub msgs_in: u64,
    pub bytes_in: u64,
    pub msgs_out: u64,
    pub bytes_out: u64,
}

impl Traffic {
    fn minus(self, o: Traffic) -> Traffic {
        Traffic {
            msgs_in: self.msgs_in.saturating_sub(o.msgs_in),
            bytes_in: self.bytes_in.saturating_sub(o.bytes_in),
            msgs_out: self.msgs_out.saturating_sub(o.msgs_out),
            bytes_out: self.bytes_out.saturating_sub(o.bytes_out),
        }
    }
    fn plus(self, o: Traffic) -> Traffic {
        Traffic {
            msgs_in: self.msgs_in + o.msgs_in,
            bytes_in: self.bytes_in + o.bytes_in,
            msgs_out: self.msgs_out + o.msgs_out,
            bytes_out: self.bytes_out + o.bytes_out,
        }
    }
}

/// A histogram with fixed buckets (upper bounds), as Prometheus counts them.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

const FLUSH_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// What the broker counts for the metrics.
#[derive(Debug)]
pub struct Metrics {
    /// How many topics get their own label.
    pub max_topics: usize,
    pub total: Traffic,
    /// The counts of the topics given a label (at most `max_topics`, ever): the others
    /// are counted in `total` only, so a million topics cost no map of a million entries.
    pub by_topic: HashMap<u32, Traffic>,
    /// Labels given so far, deleted topics' included (a label is never given twice).
    labels_given: usize,
    /// The labelled topics with a name: id, name, and the counts a deleted one ends with.
    labelled: Vec<(u32, String, Traffic)>,
    pub flush_seconds: Histogram,
    pub batch_size: Histogram,
    pub flush_errors: u64,
}

impl Metrics {
    pub fn new(max_topics: usize) -> Self {
        Metrics {
            max_topics,
            total: Traffic::default(),
            by_topic: HashMap::new(),
            labels_given: 0,
            labelled: Vec::new(),
            flush_seconds: Histogram::new(FLUSH_SECONDS),
            batch_size: Histogram::new(BATCH_SIZES),
            flush_errors: 0,
        }
    }

    pub fn count_in(&mut self, topic: u32, msgs: u64, bytes: u64) {
        self.total.msgs_in += msgs;
        self.total.bytes_in += bytes;
        if let Some(t) = self.labelled_traffic(topic) {
            t.msgs_in += msgs;
            t.bytes_in += bytes;
        }
    }

    pub fn count_out(&mut self, topic: u32, msgs: u64, bytes: u64) {
        self.total.msgs_out += msgs;
        self.total.bytes_out += bytes;
        if let Some(t) = self.labelled_traffic(topic) {
            t.msgs_out += msgs;
            t.bytes_out += bytes;
        }
    }

    /// The counts of a topic with a label of its own, giving it one while there are labels
    /// left (the first `max_topics` topics to carry traffic); None for the others.
    fn labelled_traffic(&mut self, topic: u32) -> Option<&mut Traffic> {
        if !self.by_topic.contains_key(&topic) {
            if self.labels_given >= self.max_topics {
                return None;
            }
            self.labels_given += 1;
        }
        Some(self.by_topic.entry(topic).or_default())
    }

    /// A topic is gone: a labelled one keeps its counts; the others' stay in `other`.
    /// A topic that no scrape showed gives its label back (a reply inbox lives a moment).
    pub fn forget(&mut self, topic: u32) {
        if let Some(t) = self.by_topic.remove(&topic) {
            match self.labelled.iter_mut().find(|l| l.0 == topic) {
                Some(l) => l.2 = t,
                None => self.labels_given -= 1,
            }
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Broker {
    /// The broker's part of the metrics text (the process's own are added by the server).
    pub(super) fn render_metrics(&mut self) -> String {
        let mut out = String::with_capacity(8192);
        // Name the topics given a label since the last scrape (ids are given in order).
        let m = &mut self.metrics;
        if m.labelled.len() < m.by_topic.len() {
            let mut new: Vec<u32> = m
                .by_topic
                .keys()
                .filter(|id| !m.labelled.iter().any(|l| l.0 == **id))
                .copied()
                .collect();
            new.sort_unstable();
            for id in new {
                if let Some(t) = self.core.topics.by_id(id) {
                    m.labelled
                        .push((id, t.name.to_string(), Traffic::default()));
                }
            }
        }
        let m = &self.metrics;
        let mut rows: Vec<(String, Traffic)> = Vec::new();
        let mut labelled_sum = Traffic::default();
        for (id, name, last) in &m.labelled {
            let t = m.by_topic.get(id).copied().unwrap_or(*last);
            labelled_sum = labelled_sum.plus(t);
            rows.push((esc(name), t));
        }
        rows.push(("other".into(), m.total.minus(labelled_sum)));
        type Field = fn(&Traffic) -> u64;
        let series: [(&str, &str, Field); 4] = [
            (
                "mom_messages_in_total",
                "Messages published and stored, per topic.",
                |t| t.msgs_in,
            ),
            (
                "mom_bytes_in_total",
                "Payload bytes published and stored, per topic.",
                |t| t.bytes_in,
            ),
            (
                "mom_messages_out_total",
                "Messages delivered to watches and queue consumers, per topic.",
                |t| t.msgs_out,
            ),
            (
                "mom_bytes_out_total",
                "Payload bytes delivered, per topic.",
                |t| t.bytes_out,
            ),
        ];
        for (name, help, f) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (topic, t) in &rows {
                let _ = writeln!(out, "{name}{{topic=\"{topic}\"}} {}", f(t));
            }
        }

        // Queues: gauges and counters for the queues with the most lag (at most as many as
        // labelled topics); the gauges of the rest summed under queue="other".
        let mut infos: Vec<_> = self.queues.values().map(|q| self.queue_info(q)).collect();
        infos.sort_by(|a, b| b.lag.cmp(&a.lag).then_with(|| a.name.cmp(&b.name)));
        let keep = infos.len().min(m.max_topics);
        let (shown, rest) = infos.split_at(keep);
        type QField = fn(&mom_proto::QueueInfo) -> u64;
        let gauges: [(&str, &str, QField); 4] = [
            (
                "mom_queue_ready",
                "Messages waiting to be delivered.",
                |q| q.ready,
            ),
            (
                "mom_queue_unacked",
                "Messages delivered and not yet acknowledged.",
                |q| q.unacked,
            ),
            (
                "mom_queue_lag",
                "Messages not yet acknowledged (ready + unacked).",
                |q| q.lag,
            ),
            ("mom_queue_consumers", "Consumers attached.", |q| {
                q.consumers
            }),
        ];
        for (name, help, f) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for q in shown {
                let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", esc(&q.name), f(q));
            }
            if !rest.is_empty() {
                let sum: u64 = rest.iter().map(f).sum();
                let _ = writeln!(out, "{name}{{queue=\"other\"}} {sum}");
            }
        }
        let counters: [(&str, &str, QField); 2] = [
            (
                "mom_queue_redelivered_total",
                "Deliveries that were redeliveries.",
                |q| q.redelivered,
            ),
            (
                "mom_queue_dead_lettered_total",
                "Messages moved to the dead-letter topic.",
                |q| q.dead_lettered,
            ),
        ];
        for (name, help, f) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for q in shown {
                let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", esc(&q.name), f(q));
            }
        }

        let (messages, bytes) = self.core.topics.stored();
        let gauges: [(&str, &str, u64); 6] = [
            (
                "mom_connections",
                "Client connections (past hello).",
                self.sessions.len() as u64,
            ),
            ("mom_watches", "Live watches.", self.watches.len() as u64),
            ("mom_topics", "Topics.", self.core.topics.len() as u64),
            ("mom_queues", "Queues.", self.queues.len() as u64),
            (
                "mom_stored_messages",
                "Messages stored in all topics.",
                messages,
            ),
            (
                "mom_stored_bytes",
                "Bytes of messages stored in all topics.",
                bytes,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let disk = self.disk_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP mom_disk_bytes Bytes of the data dir (measured every few seconds).\n\
             # TYPE mom_disk_bytes gauge\nmom_disk_bytes {disk}"
        );
        let _ = writeln!(
            out,
            "# HELP mom_flush_errors_total Flushes that failed.\n\
             # TYPE mom_flush_errors_total counter\nmom_flush_errors_total {}",
            m.flush_errors
        );
        m.flush_seconds.render(
            &mut out,
            "mom_flush_seconds",
            "Time of one flush of the store to disk (segment fdatasync, then sled's log).",
        );
        m.batch_size.render(
            &mut out,
            "mom_group_commit_batch_size",
            "Requests made durable by one flush (group commit).",
        );
        out
    }
}
