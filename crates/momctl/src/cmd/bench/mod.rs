//! `momctl bench`: publish, subscribe, queue and request/reply loads against a running
//! broker, in the spirit of `nats bench`. Each message's payload starts with the time it
//! was sent (ns since the epoch, 8 bytes big-endian), so a receiver in another process on
//! the same machine measures publish → delivery latency. Latencies go into an
//! hdrhistogram (µs); the report gives msgs/s, MB/s, the spread over clients and
//! p50/p90/p99/p99.9/max.

mod load;
mod report;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use momctl::client::ConnectOptions;

use super::{CmdResult, Failure};
use crate::cli::{BenchArgs, BenchCmd};

/// What one client did: messages handled, in how long, and their latencies.
pub struct ClientRun {
    pub msgs: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

pub async fn run(opts: &ConnectOptions, cmd: BenchCmd, json: bool) -> CmdResult {
    let (kind, args) = match cmd {
        BenchCmd::Pub(a) => ("pub", a),
        BenchCmd::Sub(a) => ("sub", a),
        BenchCmd::Pubsub(a) => ("pubsub", a),
        BenchCmd::Queue(a) => ("queue", a),
        BenchCmd::Request(a) => ("request", a),
    };
    check(kind, &args)?;
    let baseline = match &args.baseline {
        Some(list) => {
            let mut b = opts.clone();
            b.servers = momctl::client::parse_servers(list).map_err(|e| Failure::new(2, e))?;
            let report = one_run(kind, &b, &args).await?;
            Some((list.clone(), report))
        }
        None => None,
    };
    let report = one_run(kind, opts, &args).await?;
    match baseline {
        Some((against, b)) => report.print_against(&b, &against, &opts.servers.join(","), json)?,
        None => report.print(json)?,
    }
    Ok(())
}

/// The load `kind` against the servers of `opts`.
async fn one_run(
    kind: &str,
    opts: &ConnectOptions,
    args: &BenchArgs,
) -> Result<report::Report, Failure> {
    match kind {
        "pub" => load::publish(opts, args).await,
        "sub" => load::subscribe(opts, args).await,
        "pubsub" => load::pubsub(opts, args).await,
        "queue" => load::queue(opts, args).await,
        _ => load::request(opts, args).await,
    }
}

fn check(kind: &str, a: &BenchArgs) -> Result<(), Failure> {
    mom_proto::topic::validate_publish_topic(&a.topic)
        .map_err(|e| Failure::new(2, e.to_string()))?;
    let usage = |m: &str| Err(Failure::new(2, m.to_string()));
    if a.msgs == 0 {
        return usage("--msgs must be at least 1");
    }
    if a.size < STAMP {
        return usage("--size must be at least 8: each payload starts with its send time");
    }
    if a.pubs == 0 || a.subs == 0 {
        return usage("--pubs and --subs must be at least 1");
    }
    if a.batch == 0 || a.window == Some(0) {
        return usage("--batch and --window must be at least 1");
    }
    if a.from_start && kind != "sub" {
        return usage("--from-start is for `bench sub` only");
    }
    if a.topics.is_some() && (kind != "pub" || a.coalesce) {
        return usage("--topics is for `bench pub` (without --coalesce)");
    }
    if a.coalesce && (kind != "pub" || a.batch != 1) {
        return usage("--coalesce is for `bench pub`, with one message per call (no --batch)");
    }
    if a.baseline.is_some() && kind == "sub" {
        return usage(
            "--baseline runs the load twice: not for `bench sub`, which reads what another runs",
        );
    }
    Ok(())
}

/// Bytes of the send time at the start of each payload.
const STAMP: usize = 8;

/// Nanoseconds since the epoch.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A payload of `size` bytes starting with the send time.
fn stamped(size: usize, filler: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u64(now_ns());
    b.extend_from_slice(&filler[..size - STAMP]);
    b.freeze()
}

/// Microseconds since the send time a payload carries (0 if it carries none).
fn since_stamp(payload: &[u8]) -> u64 {
    let Some(stamp) = payload.get(..STAMP) else {
        return 0;
    };
    let mut t = [0u8; STAMP];
    t.copy_from_slice(stamp);
    now_ns().saturating_sub(u64::from_be_bytes(t)) / 1000
}

/// A latency histogram of 1 µs to 10 minutes at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.max(1));
}

/// `n` shared among `parts`: the count of part `i`.
fn share(n: u64, parts: u32, i: u32) -> u64 {
    let parts = u64::from(parts);
    n / parts + u64::from(u64::from(i) < n % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (n, p) in [(10, 3), (1, 4), (100_000, 7), (5, 5)] {
            let total: u64 = (0..p).map(|i| share(n, p, i)).sum();
            assert_eq!(total, n);
        }
    }

    #[test]
    fn a_stamp_reads_back_as_a_small_latency() {
        let p = stamped(128, &[b'x'; 128]);
        assert_eq!(p.len(), 128);
        assert!(since_stamp(&p) < 5_000_000);
        assert_eq!(since_stamp(b"short"), 0);
    }
}
