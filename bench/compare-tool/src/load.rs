//! What the workloads are, and what every broker's client shares: stamped payloads, a
//! pipelined publisher, latency histograms, the broker's RSS and the JSON line.
//!
//! Each payload starts with its send time (ns since the epoch, 8 bytes big-endian), as in
//! `momctl bench`, so a receiver on the same machine measures publish → delivery.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Broker {
    Mom,
    Nats,
    Rabbitmq,
    Redis,
    Mqtt,
}

impl Broker {
    pub fn name(self) -> &'static str {
        match self {
            Broker::Mom => "mom",
            Broker::Nats => "nats",
            Broker::Rabbitmq => "rabbitmq",
            Broker::Redis => "redis",
            Broker::Mqtt => "mqtt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Workload {
    /// One message per request, 1 publisher, 256 in flight.
    W1,
    /// One message per request, 16 publishers, 256 in flight each.
    W2,
    /// Publish → 1 subscriber, end to end.
    W3,
    /// Fan-out: 1 publisher → 8 subscribers, each gets every message.
    W4,
    /// Queue: 1 publisher → 4 competing consumers that ack.
    W5,
    /// Sequential publish (1 in flight): the latency of one acknowledged publish.
    W6,
    /// Sequential request → reply.
    W7,
}

/// One run's settings.
pub struct Load {
    pub broker: Broker,
    pub addr: String,
    pub workload: Workload,
    pub msgs: u64,
    pub size: usize,
    pub pubs: u32,
    pub subs: u32,
    pub window: usize,
    pub producer: bool,
    /// Names this run's topic, stream, queue or key, so runs never share state.
    pub tag: String,
}

impl Load {
    pub fn new(
        broker: Broker,
        addr: String,
        workload: Workload,
        msgs: u64,
        size: usize,
        producer: bool,
    ) -> Load {
        let (pubs, subs, window) = match workload {
            Workload::W1 => (1, 0, 256),
            Workload::W2 => (16, 0, 256),
            Workload::W3 => (1, 1, 256),
            Workload::W4 => (1, 8, 256),
            Workload::W5 => (1, 4, 256),
            Workload::W6 => (1, 0, 1),
            Workload::W7 => (1, 1, 1),
        };
        let tag = format!(
            "cmp{}{:x}",
            format!("{workload:?}").to_lowercase(),
            now_ns()
        );
        Load {
            broker,
            addr,
            workload,
            msgs,
            size,
            pubs,
            subs,
            window,
            producer,
            tag,
        }
    }
}

pub fn host_port(addr: &str) -> Result<(String, u16)> {
    let (h, p) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{addr}: want host:port"))?;
    Ok((h.to_string(), p.parse()?))
}

/// What a run measured: messages counted (acked publishes, or deliveries), over what
/// time, and their latencies.
pub struct Outcome {
    pub msgs: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
    /// What the latency is of ("send → ack", "publish → delivery", "request → reply").
    pub latency_of: &'static str,
}

impl Outcome {
    pub fn json(&self, load: &Load, label: &str, rss: Option<Rss>) -> serde_json::Value {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let q = |p: f64| self.latency.value_at_quantile(p);
        json!({
            "broker": load.broker.name(),
            "label": label,
            "workload": format!("{:?}", load.workload),
            "producer": load.producer,
            "msgs": self.msgs,
            "size": load.size,
            "pubs": load.pubs,
            "subs": load.subs,
            "window": load.window,
            "seconds": secs,
            "msgs_per_sec": self.msgs as f64 / secs,
            "latency_of": self.latency_of,
            "latency_us": {"p50": q(0.5), "p99": q(0.99), "max": self.latency.max()},
            "rss_peak_mb": rss.as_ref().map(|r| r.peak_mb),
            "rss_peak_note": rss.map(|r| r.note),
        })
    }
}

/// One client's part of a run.
pub struct ClientRun {
    pub msgs: u64,
    pub latency: Histogram<u64>,
}

/// Merge the clients' runs; `elapsed` is the whole run's wall time.
pub fn merge(runs: Vec<ClientRun>, elapsed: Duration, latency_of: &'static str) -> Outcome {
    let mut latency = histogram();
    let mut msgs = 0;
    for r in runs {
        msgs += r.msgs;
        for v in r.latency.iter_recorded() {
            latency.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
    Outcome {
        msgs,
        elapsed,
        latency,
        latency_of,
    }
}

/// Bytes of the send time at the start of each payload.
pub const STAMP: usize = 8;

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A payload of `size` bytes starting with the send time.
pub fn stamped(size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u64(now_ns());
    b.put_bytes(b'x', size.saturating_sub(STAMP));
    b.freeze()
}

/// Microseconds since the send time a payload carries (0 if it carries none).
pub fn since_stamp(payload: &[u8]) -> u64 {
    let Some(stamp) = payload.get(..STAMP) else {
        return 0;
    };
    let mut t = [0u8; STAMP];
    t.copy_from_slice(stamp);
    now_ns().saturating_sub(u64::from_be_bytes(t)) / 1000
}

/// 1 µs to 10 minutes at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.max(1));
}

/// `n` shared among `parts`: the count of part `i`.
pub fn share(n: u64, parts: u32, i: u32) -> u64 {
    let parts = u64::from(parts.max(1));
    n / parts + u64::from(u64::from(i) < n % parts)
}

/// A receiver that gets nothing for this long gives up.
pub const IDLE: Duration = Duration::from_secs(30);

/// Publish `n` stamped payloads with up to `window` in flight, each through `send`, whose
/// future resolves when the broker acknowledged that one message. Latency: send → ack.
pub async fn pipelined<F, Fut>(n: u64, size: usize, window: usize, mut send: F) -> Result<ClientRun>
where
    F: FnMut(Bytes) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut latency = histogram();
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0u64;
    while sent < n || !inflight.is_empty() {
        while sent < n && inflight.len() < window.max(1) {
            let fut = send(stamped(size));
            let t0 = Instant::now();
            inflight.push(async move { fut.await.map(|()| t0.elapsed()) });
            sent += 1;
        }
        if let Some(r) = inflight.next().await {
            record(&mut latency, r?.as_micros() as u64);
        }
    }
    Ok(ClientRun { msgs: n, latency })
}

/// Wait for every task; the first failure is the run's.
pub async fn join<T: 'static>(mut tasks: tokio::task::JoinSet<Result<T>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                tasks.abort_all();
                return Err(e);
            }
            Err(e) => {
                tasks.abort_all();
                return Err(anyhow!("a task failed: {e}"));
            }
        }
    }
    Ok(out)
}

/// Counts deliveries of a receiver and their publish → delivery latency; the clock starts
/// at the first delivery.
pub struct Receiving {
    pub want: u64,
    pub got: u64,
    first: Option<Instant>,
    latency: Histogram<u64>,
}

impl Receiving {
    pub fn new(want: u64) -> Receiving {
        Receiving {
            want,
            got: 0,
            first: None,
            latency: histogram(),
        }
    }

    pub fn take(&mut self, payload: &[u8]) {
        self.first.get_or_insert_with(Instant::now);
        record(&mut self.latency, since_stamp(payload));
        self.got += 1;
    }

    pub fn done(&self) -> bool {
        self.got >= self.want
    }

    pub fn stalled(&self) -> anyhow::Error {
        anyhow!(
            "got {} of {} messages, then nothing for {IDLE:?}",
            self.got,
            self.want
        )
    }

    pub fn finish(self) -> ClientRun {
        ClientRun {
            msgs: self.got,
            latency: self.latency,
        }
    }
}

/// The broker's peak RSS over a run: VmHWM is reset at the start (`clear_refs` 5) where
/// the kernel allows it, so the peak is this run's, not the broker's lifetime's.
pub struct PeakRss {
    pid: u32,
    reset: bool,
}

pub struct Rss {
    pub peak_mb: f64,
    pub note: &'static str,
}

impl PeakRss {
    pub fn start(pid: u32) -> PeakRss {
        let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        PeakRss { pid, reset }
    }

    pub fn finish(self) -> Rss {
        Rss {
            peak_mb: status_kb(self.pid, "VmHWM").unwrap_or(0) as f64 / 1024.0,
            note: if self.reset {
                "VmHWM of this run"
            } else {
                "VmHWM since the broker started"
            },
        }
    }
}

/// A field of /proc/PID/status in kB.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
