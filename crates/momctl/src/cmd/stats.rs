//! `momctl stats`: what the broker holds, once or refreshed every second. The totals come
//! in one reply; topics, queues and clients a page at a time, followed to the end (or to
//! `--limit`).

use std::io::IsTerminal;
use std::time::Duration;

use mom_proto::Stats;
use momctl::client::{Client, ConnectOptions};

use super::listing::print_table;
use super::CmdResult;
use crate::output::{self, human_bytes};

pub async fn run(
    opts: &ConnectOptions,
    watch: bool,
    limit: Option<usize>,
    json: bool,
) -> CmdResult {
    let client = Client::connect(opts).await?;
    let tty = std::io::stdout().is_terminal();
    loop {
        let s = client.stats_limited(limit).await?;
        if json {
            output::print_json(&s)?;
        } else {
            if watch && tty {
                // Clear the screen and home the cursor.
                outln!("\x1b[2J\x1b[H");
            }
            print_stats(&s, client.server(), limit != Some(0))?;
        }
        cut_short(&s, limit);
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Say on stderr which sections `--limit` cut short (not when it asked for the totals only).
fn cut_short(s: &Stats, limit: Option<usize>) {
    let Some(n) = limit.filter(|n| *n > 0) else {
        return;
    };
    let t = &s.totals;
    let cut: Vec<String> = [
        (s.topics_next.is_some(), t.topics, "topics"),
        (s.queues_next.is_some(), t.queues, "queues"),
        (s.clients_next.is_some(), t.connections, "clients"),
    ]
    .iter()
    .filter(|(more, ..)| *more)
    .map(|(_, total, what)| format!("{n} of {total} {what}"))
    .collect();
    if !cut.is_empty() {
        eprintln!(
            "momctl: showing the first {}; a larger --limit shows more, none shows all",
            cut.join(", ")
        );
    }
}

fn print_stats(s: &Stats, addr: &str, sections: bool) -> CmdResult {
    let t = &s.totals;
    outln!(
        "momd {} at {addr} (server id {}), up {}, fsync {}",
        s.server_version,
        s.server_id,
        humantime::format_duration(Duration::from_secs(s.uptime_ms / 1000)),
        s.fsync
    );
    outln!(
        "{} topics, {} messages, {} stored; {} on disk; memory {}",
        t.topics,
        t.messages,
        human_bytes(t.bytes),
        human_bytes(s.disk_bytes),
        human_bytes(s.rss_bytes)
    );
    outln!(
        "since start: {} published, {} delivered, {} duplicates, {} skipped for slow consumers",
        t.published,
        t.delivered,
        t.duplicates,
        t.slow_consumer_skipped
    );
    outln!(
        "now: {:.1} msgs/s in, {:.1} msgs/s out, {} connections, {} watches",
        t.in_rate,
        t.out_rate,
        t.connections,
        t.watches
    );
    if s.disk_full {
        outln!(
            "disk full: {} free under the data dir; publishes are refused until there is room \
             (reads and acks go on)",
            human_bytes(s.disk_free_bytes)
        );
    }
    if t.damaged > 0 {
        // Name the first few topics it is in (those of the topics shown).
        const NAMED: usize = 5;
        let damaged: Vec<String> = s
            .topics
            .iter()
            .filter(|t| t.damaged > 0)
            .map(|t| format!("{} {}", t.name, t.damaged))
            .collect();
        let which = match damaged.len() {
            0 => String::new(),
            n if n <= NAMED => format!(" ({})", damaged.join(", ")),
            n => format!(
                " ({}, and {} more topics)",
                damaged[..NAMED].join(", "),
                n - NAMED
            ),
        };
        outln!(
            "damaged on disk: {}{which}; `momd verify` lists them, `momd repair` moves them aside",
            super::count(t.damaged, "message", "messages")
        );
    }
    if !sections {
        return Ok(());
    }
    outln!();
    print_table(&s.topics)?;
    if !s.queues.is_empty() {
        outln!();
        print_table(&s.queues)?;
    }
    outln!();
    print_table(&s.clients)
}
