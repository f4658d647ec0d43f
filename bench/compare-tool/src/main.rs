//! mom-compare: the client side of `bench/compare`. It runs one workload against one
//! broker (momd, NATS JetStream, RabbitMQ, Redis or Mosquitto) and prints one JSON line of
//! what it measured; `bench/compare` starts the brokers, runs it per broker and workload,
//! and renders the lines with `mom-compare table`.
//!
//! Start reading at `load.rs` (what the workloads are), then one broker's module.

mod idle;
mod limits;
mod load;
mod mom;
mod mqtt;
mod nats;
mod rabbit;
mod redis;
mod table;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use load::{Broker, Load, Workload};

#[derive(Parser)]
#[command(about = "One workload against one broker, as one JSON line (see bench/compare)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a workload (W1-W7) and print its JSON line.
    Run {
        #[arg(long)]
        broker: Broker,
        /// host:port of the broker.
        #[arg(long)]
        addr: String,
        #[arg(long)]
        workload: Workload,
        /// Messages (per watcher for W3/W4).
        #[arg(long, default_value_t = 200_000)]
        msgs: u64,
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// The broker's PID: its peak RSS during the run is reported.
        #[arg(long)]
        pid: Option<u32>,
        /// A label for the row (for example "taskset -c 0").
        #[arg(long, default_value = "")]
        label: String,
        /// mom only: publish through the batching producer (one message per call).
        #[arg(long)]
        producer: bool,
    },
    /// Store `msgs` messages quickly (for W9's restart).
    Fill {
        #[arg(long)]
        broker: Broker,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        msgs: u64,
        #[arg(long, default_value_t = 128)]
        size: usize,
    },
    /// Wait until the broker answers and holds `msgs` messages in W9's topic or stream;
    /// exits 1 after `timeout` seconds.
    Ready {
        #[arg(long)]
        broker: Broker,
        #[arg(long)]
        addr: String,
        #[arg(long)]
        msgs: u64,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// W10: open `conns` connections, leave them idle, report the broker's RSS.
    Idle {
        #[arg(long)]
        broker: Broker,
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 10_000)]
        conns: u32,
        #[arg(long)]
        pid: u32,
    },
    /// The machine's limits: fdatasyncs/s of one small record in DIR, and loopback framed
    /// msgs/s.
    Limits {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
    },
    /// Render the JSON lines of FILES as a markdown table.
    Table { files: Vec<PathBuf> },
    /// Print N free TCP ports of 127.0.0.1, one a line.
    FreePorts {
        #[arg(default_value_t = 1)]
        n: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run {
                broker,
                addr,
                workload,
                msgs,
                size,
                pid,
                label,
                producer,
            } => {
                if size < load::STAMP {
                    bail!("--size must be at least {}", load::STAMP);
                }
                if producer && broker != Broker::Mom {
                    bail!("--producer is for mom only");
                }
                let load = Load::new(broker, addr, workload, msgs, size, producer);
                let peak = pid.map(load::PeakRss::start);
                let out = match broker {
                    Broker::Mom => mom::run(&load).await,
                    Broker::Nats => nats::run(&load).await,
                    Broker::Rabbitmq => rabbit::run(&load).await,
                    Broker::Redis => redis::run(&load).await,
                    Broker::Mqtt => mqtt::run(&load).await,
                }?;
                let rss = peak.map(|p| p.finish());
                println!("{}", out.json(&load, &label, rss));
                Ok(())
            }
            Cmd::Fill {
                broker,
                addr,
                msgs,
                size,
            } => match broker {
                Broker::Mom => mom::fill(&addr, msgs, size).await,
                Broker::Nats => nats::fill(&addr, msgs, size).await,
                _ => bail!("fill is for mom and nats"),
            },
            Cmd::Ready {
                broker,
                addr,
                msgs,
                timeout,
            } => {
                let wait = async {
                    match broker {
                        Broker::Mom => mom::ready(&addr, msgs).await,
                        Broker::Nats => nats::ready(&addr, msgs).await,
                        _ => bail!("ready is for mom and nats"),
                    }
                };
                match tokio::time::timeout(std::time::Duration::from_secs(timeout), wait).await {
                    Ok(r) => r,
                    Err(_) => bail!("not ready with {msgs} messages within {timeout} s"),
                }
            }
            Cmd::Idle {
                broker,
                addr,
                conns,
                pid,
            } => idle::run(broker, &addr, conns, pid).await,
            Cmd::Limits { dir, secs } => limits::run(&dir, secs).await,
            Cmd::Table { files } => table::print(&files),
            Cmd::FreePorts { n } => {
                // Hold every listener until all are chosen, so the ports differ.
                let held: Vec<std::net::TcpListener> = (0..n)
                    .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
                    .collect::<std::io::Result<_>>()?;
                for l in &held {
                    println!("{}", l.local_addr()?.port());
                }
                Ok(())
            }
        }
    })
}
