//! Hostile clients, one case at a time, each while the workload and the probe (the
//! well-behaved client whose worst latency is reported per case) keep going. A case says
//! what it did and how momd answered; the caller measures momd's memory around it.

mod conns;
mod load;

use std::str::FromStr;
use std::time::Duration;

use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Floods of malformed frames before `hello`.
    MalformedPreHello,
    /// Floods of malformed frames after `hello`.
    MalformedPostHello,
    /// Many connections announcing a max-size frame and stalling in it.
    StalledFrames,
    /// Deeply nested MessagePack, before and after `hello`.
    NestedMsgpack,
    /// Publishes with 100,000-key header maps.
    HugeHeaders,
    /// Watches with hundreds of thousands of patterns.
    WatchPatterns,
    /// Many topics and many queues (100k and 10k; 1,000 and 100 with --small).
    ManyTopicsQueues,
    /// Many idle connections (10k; 500 with --small).
    IdleConnections,
    /// A watcher of everything that never reads.
    UnreadWatcher,
    /// Publishers of 1 MiB messages, 64 in flight each: faster than the disk.
    FastPublisher,
    /// A client that pipelines `stats` and never reads the replies.
    UnreadReplies,
}

pub const ALL_CASES: [Case; 11] = [
    Case::MalformedPreHello,
    Case::MalformedPostHello,
    Case::StalledFrames,
    Case::NestedMsgpack,
    Case::HugeHeaders,
    Case::WatchPatterns,
    Case::ManyTopicsQueues,
    Case::IdleConnections,
    Case::UnreadWatcher,
    Case::FastPublisher,
    Case::UnreadReplies,
];

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::MalformedPreHello => "malformed-pre-hello",
            Case::MalformedPostHello => "malformed-post-hello",
            Case::StalledFrames => "stalled-frames",
            Case::NestedMsgpack => "nested-msgpack",
            Case::HugeHeaders => "huge-headers",
            Case::WatchPatterns => "watch-patterns",
            Case::ManyTopicsQueues => "many-topics-queues",
            Case::IdleConnections => "idle-connections",
            Case::UnreadWatcher => "unread-watcher",
            Case::FastPublisher => "fast-publisher",
            Case::UnreadReplies => "unread-replies",
        }
    }
}

impl FromStr for Case {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ALL_CASES
            .iter()
            .copied()
            .find(|c| c.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown hostile case {s:?}; cases are {}",
                    ALL_CASES.map(Case::name).join(",")
                )
            })
    }
}

/// How big the cases are.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub small: bool,
    /// How long the hostile clients stay.
    pub time: Duration,
    /// File descriptors momcheck may open (the soft limit, raised to the hard one).
    pub fd_limit: u64,
}

impl Scale {
    /// `full` normally, `small` with --small.
    pub fn pick(&self, full: u64, small: u64) -> u64 {
        if self.small {
            small
        } else {
            full
        }
    }
}

/// What one hostile case did to momd (to one node, in a cluster).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostileReport {
    pub case: &'static str,
    pub summary: String,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
    pub secs: f64,
}

impl HostileReport {
    /// What the case did, and the memory around it, in one line.
    pub fn line(&self) -> String {
        format!(
            "{}; RSS {} -> peak {} -> {} MiB ({:.1}s)",
            self.summary,
            self.rss_before >> 20,
            self.rss_peak >> 20,
            self.rss_after >> 20,
            self.secs
        )
    }
}

/// The cases of a run in a seeded order: `--hostile-cases`, else all of them.
pub fn order(chosen: &[Case], rng: &mut Rng) -> Vec<Case> {
    let mut order = if chosen.is_empty() {
        ALL_CASES.to_vec()
    } else {
        let mut v = chosen.to_vec();
        v.dedup();
        v
    };
    rng.shuffle(&mut order);
    order
}

/// Run `case` against the momd at `addr` whose memory `rss` follows (`momd::Rss`, kept up
/// by its sampler): what it did, and the memory before, at its peak and once the client
/// is gone (waiting up to 5 s for it to come back within a quarter, or 16 MiB).
pub async fn measured(
    case: Case,
    addr: &str,
    scale: Scale,
    rng: &mut Rng,
    rss: &crate::momd::Rss,
) -> HostileReport {
    let before = rss.reset_window();
    let t0 = std::time::Instant::now();
    let limit = Duration::from_secs(600) + scale.time;
    let summary = match tokio::time::timeout(limit, run(case, addr, scale, rng)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => format!("the case could not run to its end: {e:#}"),
        Err(_) => format!("the case did not end within {limit:?}"),
    };
    let took = t0.elapsed();
    let peak = rss.window.load(std::sync::atomic::Ordering::Relaxed);
    let mut after = rss.now.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..50 {
        if after <= before + (before / 4).max(16 << 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = rss.now.load(std::sync::atomic::Ordering::Relaxed);
    }
    HostileReport {
        case: case.name(),
        summary,
        rss_before: before,
        rss_peak: peak,
        rss_after: after,
        secs: took.as_secs_f64(),
    }
}

/// Run one case against the momd at `addr`; returns what it did and how momd answered, in
/// one line.
pub async fn run(case: Case, addr: &str, scale: Scale, rng: &mut Rng) -> anyhow::Result<String> {
    let addr = addr.to_string();
    match case {
        Case::MalformedPreHello => conns::malformed(&addr, scale, false).await,
        Case::MalformedPostHello => conns::malformed(&addr, scale, true).await,
        Case::StalledFrames => conns::stalled_frames(&addr, scale).await,
        Case::NestedMsgpack => conns::nested(&addr, scale).await,
        Case::IdleConnections => conns::idle(&addr, scale).await,
        Case::UnreadWatcher => conns::unread_watcher(&addr, scale).await,
        Case::UnreadReplies => conns::unread_replies(&addr, scale).await,
        Case::HugeHeaders => load::huge_headers(&addr, scale).await,
        Case::WatchPatterns => load::watch_patterns(&addr, scale).await,
        Case::ManyTopicsQueues => load::many_topics_queues(&addr, scale, rng).await,
        Case::FastPublisher => load::fast_publisher(&addr, scale).await,
    }
}

/// Raise the soft limit of open files to the hard limit (idle connections need many, and
/// momd, started by momcheck, inherits it). Returns the soft limit now.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        r.rlim_cur
    }
}

/// Counts of server frames by kind, for the case summaries.
#[derive(Debug, Default)]
pub struct Answers {
    pub ok: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
    pub closed: u64,
}

impl Answers {
    pub fn frame(&mut self, f: &mom_proto::ServerFrame) {
        match f {
            mom_proto::ServerFrame::Error(e) => {
                *self.errors.entry(e.code.to_string()).or_default() += 1
            }
            _ => self.ok += 1,
        }
    }

    pub fn merge(&mut self, o: Answers) {
        self.ok += o.ok;
        self.closed += o.closed;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

impl std::fmt::Display for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ok", self.ok)?;
        for (k, v) in &self.errors {
            write!(f, ", {v} {k}")?;
        }
        write!(f, ", {} closed by momd", self.closed)
    }
}
