//! `momctl stats`: what the broker holds, once or refreshed every second.

use std::io::IsTerminal;
use std::time::Duration;

use mom_proto::Stats;
use momctl::client::{Client, ConnectOptions};

use super::CmdResult;
use crate::output::{self, human_bytes, human_time};

pub async fn run(opts: &ConnectOptions, watch: bool, json: bool) -> CmdResult {
    let client = Client::connect(opts).await?;
    let tty = std::io::stdout().is_terminal();
    loop {
        let s = client.stats().await?;
        if json {
            output::print_json(&s)?;
        } else {
            if watch && tty {
                // Clear the screen and home the cursor.
                outln!("\x1b[2J\x1b[H");
            }
            print_stats(&s, &opts.addr)?;
        }
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_stats(s: &Stats, addr: &str) -> CmdResult {
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
    outln!();
    super::topic::print_table(&s.topics)?;
    if !s.queues.is_empty() {
        outln!();
        super::queue::print_table(&s.queues)?;
    }
    outln!();
    // Names are as long as their commands (`momctl recv jobs`): the column fits them.
    let nw = s
        .clients
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let uw = s
        .clients
        .iter()
        .map(|c| c.user.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!(
        "{:>6}  {:<nw$}  {:<uw$}  {:<21}  {:<20}  {:>10}  {:>10}",
        "CLIENT",
        "NAME",
        "USER",
        "ADDRESS",
        "SINCE",
        "IN",
        "OUT"
    );
    for c in &s.clients {
        outln!(
            "{:>6}  {:<nw$}  {:<uw$}  {:<21}  {:<20}  {:>10}  {:>10}",
            c.client_id,
            c.name,
            c.user,
            c.addr,
            human_time(c.since),
            c.msgs_in,
            c.msgs_out
        );
    }
    Ok(())
}
