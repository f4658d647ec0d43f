//! The markdown table of a run: one row per broker and workload, with mom's ratio to each,
//! then what each broker's acknowledgement means and the machine's limits.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

const WORKLOADS: [(&str, &str); 10] = [
    ("W1", "1 publisher, 256 in flight, one message per request"),
    ("W2", "16 publishers, 256 in flight each"),
    ("W3", "publish → 1 subscriber, end to end"),
    ("W4", "fan-out 1 → 8 subscribers (deliveries/s)"),
    ("W5", "queue, 1 publisher → 4 competing consumers that ack"),
    ("W6", "sequential publish (1 in flight)"),
    ("W7", "sequential request → reply"),
    ("W8", "`seq 1 N` piped into `momctl publish TOPIC`"),
    ("W9", "restart with N stored (time to ready, RSS after)"),
    ("W10", "RSS with idle connections"),
];

const BROKERS: [&str; 5] = ["mom", "nats", "rabbitmq", "redis", "mqtt"];

const ACKS: [(&str, &str); 5] = [
    ("mom", "momd `--fsync always`: a publish ack means the message is in the log's segment file and fsynced (group commit; the index follows within a quarter second and is rebuilt from the log at start); a queue ack is on disk before its reply."),
    ("nats", "NATS JetStream 2.9, file-storage stream, PubAck: the message is written to the stream's file (to the OS), **not fsynced** (fsync every `sync_interval`, 2 min by default). W3/W4 read with ordered consumers; W5 is a durable pull consumer with explicit acks; W7 is a core NATS request (not stored)."),
    ("rabbitmq", "RabbitMQ 3.10, durable classic queue, persistent messages, publisher confirms: a confirm means written and fsynced to the queue's store. W3/W4: fanout exchange, one durable queue per subscriber, auto-ack; W5: one durable queue, prefetch 256, manual ack."),
    ("redis", "Redis 7.0 `XADD`, `appendonly yes`, `appendfsync always`: a reply means the append-only file was fsynced (once per event-loop turn). W3/W4: `XREAD BLOCK`; W5: consumer group, `XREADGROUP` + `XACK`."),
    ("mqtt", "Mosquitto 2.0, MQTT 3.1.1 QoS 1, `persistence true`: a PUBACK means the message is in the broker's memory; persistence is a snapshot at `autosave_interval` and at shutdown, not per message. W5 is a shared subscription (`$share/…`)."),
];

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_f64()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The row's name: the broker, and for mom's variants what differs.
fn name(v: &Value) -> String {
    let mut n = s(v, "broker").to_string();
    let mut extra = Vec::new();
    if v.get("producer").and_then(Value::as_bool) == Some(true) {
        extra.push("producer".to_string());
    }
    if !s(v, "label").is_empty() {
        extra.push(s(v, "label").to_string());
    }
    if !extra.is_empty() {
        n += &format!(" ({})", extra.join(", "));
    }
    n
}

fn num(x: f64) -> String {
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn us(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(u) if u >= 10_000.0 => format!("{:.0} ms", u / 1000.0),
        Some(u) if u >= 1000.0 => format!("{:.1} ms", u / 1000.0),
        Some(u) => format!("{u:.0} µs"),
    }
}

fn mb(x: Option<f64>) -> String {
    x.map_or("—".into(), |m| format!("{m:.0} MB"))
}

/// The figure a row is compared by, and whether more is better.
fn figure(v: &Value) -> Option<(f64, bool)> {
    match s(v, "workload") {
        "W9" => f(v, &["restart_s"]).map(|x| (x, false)),
        "W10" => f(v, &["rss_mb"]).map(|x| (x, false)),
        _ => f(v, &["msgs_per_sec"]).map(|x| (x, true)),
    }
}

fn result(v: &Value) -> String {
    if let Some(why) = v.get("skipped").and_then(Value::as_str) {
        return format!("— ({why})");
    }
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return format!("failed: {e}");
    }
    match s(v, "workload") {
        "W9" => format!(
            "restart {:.2} s with {} stored",
            f(v, &["restart_s"]).unwrap_or(0.0),
            num(f(v, &["stored"]).unwrap_or(0.0))
        ),
        "W10" => format!("{} idle connections", num(f(v, &["conns"]).unwrap_or(0.0))),
        _ => num(f(v, &["msgs_per_sec"]).unwrap_or(0.0)),
    }
}

fn ratio(mom: Option<(f64, bool)>, it: Option<(f64, bool)>) -> Option<f64> {
    match (mom, it) {
        (Some((m, _)), Some((o, _))) if o > 0.0 => Some(m / o),
        _ => None,
    }
}

pub fn print(files: &[PathBuf]) -> Result<()> {
    let mut rows: Vec<Value> = Vec::new();
    let mut limits = None;
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: not JSON: {line}", file.display()))?;
            if v.get("limits").is_some() {
                limits = Some(v);
            } else {
                rows.push(v);
            }
        }
    }
    println!("| workload | broker | msgs/s | p50 | p99 | peak RSS of the broker | mom ÷ it |");
    println!("|---|---|---|---|---|---|---|");
    for (w, what) in WORKLOADS {
        let of_w: Vec<&Value> = rows.iter().filter(|v| s(v, "workload") == w).collect();
        if of_w.is_empty() {
            continue;
        }
        let plain_mom = |v: &&&Value| {
            s(v, "broker") == "mom" && s(v, "label").is_empty() && v.get("error").is_none()
        };
        let mom = of_w
            .iter()
            .find(|v| plain_mom(v) && v.get("producer").and_then(Value::as_bool) != Some(true))
            .and_then(|v| figure(v));
        let producer = of_w
            .iter()
            .find(|v| plain_mom(v) && v.get("producer").and_then(Value::as_bool) == Some(true))
            .and_then(|v| figure(v));
        let mut first = true;
        for b in BROKERS {
            for v in of_w.iter().filter(|v| s(v, "broker") == b) {
                let label = if first {
                    format!("{w}: {what}")
                } else {
                    String::new()
                };
                first = false;
                let it = figure(v);
                let r = if b == "mom" {
                    "—".to_string()
                } else {
                    match (ratio(mom, it), ratio(producer, it)) {
                        (Some(m), Some(p)) => format!("{m:.2}× (producer {p:.2}×)"),
                        (Some(m), None) => format!("{m:.2}×"),
                        _ => "—".to_string(),
                    }
                };
                let rss = match w {
                    "W9" | "W10" => f(v, &["rss_mb"]),
                    _ => f(v, &["rss_peak_mb"]),
                };
                println!(
                    "| {label} | {} | {} | {} | {} | {} | {r} |",
                    name(v),
                    result(v),
                    us(f(v, &["latency_us", "p50"])),
                    us(f(v, &["latency_us", "p99"])),
                    mb(rss),
                );
            }
        }
    }
    println!();
    println!(
        "mom ÷ it: mom's msgs/s over the broker's (W1–W8: above 1, mom is faster); W9 and W10 \
         compare restart time and RSS (below 1, mom is quicker or smaller). Latency: W1, W2, \
         W6 send → ack; W3–W5 publish → delivery (from the send time in each payload); W7 \
         request → reply. Peak RSS: VmHWM of the broker process over the run."
    );
    println!();
    let present: Vec<&str> = BROKERS
        .into_iter()
        .filter(|b| rows.iter().any(|v| s(v, "broker") == *b))
        .collect();
    for (b, ack) in ACKS {
        if present.contains(&b) {
            println!("- **{b}**: {ack}");
        }
    }
    if let Some(l) = limits {
        println!();
        println!(
            "Machine limits (same tool, same run): one fdatasync of a 128-byte record: {} per \
             second ({} each); loopback TCP, 128-byte length-prefixed frames into a sink: {} \
             msgs/s.",
            num(f(&l, &["limits", "fdatasync_per_sec"]).unwrap_or(0.0)),
            us(f(&l, &["limits", "fdatasync_us"])),
            num(f(&l, &["limits", "loopback_frames_per_sec"]).unwrap_or(0.0)),
        );
    }
    Ok(())
}
