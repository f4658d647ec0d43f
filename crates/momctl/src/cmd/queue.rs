//! `momctl queue …` and `momctl unsubscribe`.

use mom_proto::{topic, Page, QueueCreate, QueueInfo};
use momctl::client::{Client, ConnectOptions};

use super::listing::{print_pages, Table, Widths};
use super::{CmdResult, Failure};
use crate::cli::QueueCmd;
use crate::output::{self, human_time};

pub async fn run(opts: &ConnectOptions, cmd: QueueCmd, json: bool) -> CmdResult {
    let patterns_ok = |ps: &[String]| {
        ps.iter().try_for_each(|p| {
            topic::validate_pattern(p).map_err(|e| Failure::new(2, e.to_string()))
        })
    };
    let name = match &cmd {
        QueueCmd::Ls { .. } => None,
        QueueCmd::Create { name, .. }
        | QueueCmd::Set { name, .. }
        | QueueCmd::Peek { name, .. }
        | QueueCmd::Redrive { name }
        | QueueCmd::Info { name }
        | QueueCmd::Rm { name, .. }
        | QueueCmd::Purge { name }
        | QueueCmd::Bind { name, .. }
        | QueueCmd::Unbind { name, .. } => Some(name),
    };
    if let Some(n) = name {
        super::queue_name_ok(n)?;
    }
    match &cmd {
        QueueCmd::Create { bind, .. } => patterns_ok(bind)?,
        QueueCmd::Bind { patterns, .. } | QueueCmd::Unbind { patterns, .. } => {
            patterns_ok(patterns)?
        }
        QueueCmd::Ls {
            pattern: Some(p), ..
        } => patterns_ok(std::slice::from_ref(p))?,
        _ => {}
    }
    let client = Client::connect(opts).await?;
    match cmd {
        QueueCmd::Create {
            name,
            bind,
            from,
            max_deliver,
            ack_wait,
        } => {
            let (from, at) = super::subscribe::parse_from(&from).map_err(|e| Failure::new(2, e))?;
            let q = client
                .queue_create(QueueCreate {
                    queue: name,
                    bindings: bind,
                    from,
                    at,
                    max_deliver,
                    ack_wait_ms: ack_wait.map(|d| d.as_millis() as u64),
                    ..QueueCreate::default()
                })
                .await?;
            print_info(&q, json)?;
        }
        QueueCmd::Ls { pattern, limit } => {
            let page = Page::first(None, None, pattern);
            let limit = limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            print_pages(&client, page, limit, |_: &QueueInfo| true, json).await?;
        }
        QueueCmd::Info { name } => print_info(&client.queue_info(&name).await?, json)?,
        QueueCmd::Rm { name, force } => {
            client.queue_delete(&name, force).await?;
            if !json {
                eprintln!("momctl: removed queue {name}");
            }
        }
        QueueCmd::Purge { name } => {
            let (q, n) = client.queue_purge(&name).await?;
            eprintln!(
                "momctl: purged {} from queue {name}",
                super::count(n, "message", "messages")
            );
            print_counted(&q, json, "purged", n)?
        }
        QueueCmd::Set {
            name,
            max_deliver,
            ack_wait,
        } => {
            if max_deliver.is_none() && ack_wait.is_none() {
                return Err(Failure::new(
                    2,
                    "nothing to set: give --max-deliver or --ack-wait",
                ));
            }
            print_info(&client.queue_set(&name, max_deliver, ack_wait).await?, json)?
        }
        QueueCmd::Peek {
            name,
            count,
            output: o,
        } => {
            let format = output::Format::from_args(json, &o)?;
            let msgs = client.queue_peek(&name, count.max(1)).await?;
            let mut out = std::io::stdout().lock();
            for m in &msgs {
                output::write_message(&mut out, m, &format)?;
            }
            std::io::Write::flush(&mut out)?;
        }
        QueueCmd::Redrive { name } => {
            let (q, n) = client.queue_redrive(&name).await?;
            eprintln!(
                "momctl: moved {} from $dlq.{name} back into queue {name}",
                super::count(n, "dead letter", "dead letters")
            );
            if json {
                print_counted(&q, json, "redriven", n)?;
            }
        }
        QueueCmd::Bind { name, patterns } => {
            print_info(&client.queue_bind(&name, patterns).await?, json)?
        }
        QueueCmd::Unbind { name, patterns } => {
            print_info(&client.queue_unbind(&name, patterns).await?, json)?
        }
    }
    Ok(())
}

/// `momctl unsubscribe NAME [PATTERN...]`.
pub async fn unsubscribe(
    opts: &ConnectOptions,
    name: String,
    patterns: Vec<String>,
    json: bool,
) -> CmdResult {
    super::queue_name_ok(&name)?;
    for p in &patterns {
        topic::validate_pattern(p).map_err(|e| Failure::new(2, e.to_string()))?;
    }
    let client = Client::connect(opts).await?;
    let q = client.queue_unbind(&name, patterns).await?;
    if json {
        output::print_json(&q)?;
    }
    Ok(())
}

/// The queue, and in `--json` how many messages the request moved or dropped.
fn print_counted(q: &QueueInfo, json: bool, what: &str, n: u64) -> CmdResult {
    if !json {
        return print_info(q, json);
    }
    let mut v = serde_json::to_value(q).map_err(|e| Failure::new(1, e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.insert(what.to_string(), n.into());
    }
    output::print_json(&v)?;
    Ok(())
}

fn print_info(q: &QueueInfo, json: bool) -> CmdResult {
    if json {
        output::print_json(q)?;
        return Ok(());
    }
    outln!("queue:         {}", q.name);
    outln!("owner:         {}", q.owner);
    outln!("created:       {}", human_time(q.created));
    outln!("bindings:      {}", q.bindings.join(" "));
    outln!("consumers:     {}", q.consumers);
    outln!("ready:         {}", q.ready);
    outln!("unacked:       {}", q.unacked);
    outln!("lag:           {}", q.lag);
    outln!(
        "rate:          {:.1} msgs/s in, {:.1} msgs/s out",
        q.in_rate,
        q.out_rate
    );
    outln!("delivered:     {}", q.delivered);
    outln!("acked:         {}", q.acked);
    outln!("redelivered:   {}", q.redelivered);
    outln!("dead-lettered: {} (in $dlq.{})", q.dead_lettered, q.name);
    outln!("dropped:       {}", q.dropped);
    outln!("max deliver:   {}", q.max_deliver);
    outln!(
        "ack wait:      {}",
        humantime::format_duration(std::time::Duration::from_millis(q.ack_wait_ms))
    );
    Ok(())
}

impl Table for QueueInfo {
    const NAMES: (&'static str, &'static str) = ("queue", "queues");

    fn widths(rows: &[Self]) -> Widths {
        let w = rows.iter().map(|q| q.name.len()).max().unwrap_or(5);
        Widths([w.max(5), 0])
    }

    fn header(w: Widths) -> CmdResult {
        let [w, _] = w.0;
        outln!(
            "{:<w$}  {:>9}  {:>8}  {:>9}  {:>11}  {:>5}  {:>7}  BINDINGS",
            "QUEUE",
            "READY",
            "UNACKED",
            "CONSUMERS",
            "REDELIVERED",
            "DLQ",
            "DROPPED"
        );
        Ok(())
    }

    fn row(&self, w: Widths) -> CmdResult {
        let [w, _] = w.0;
        // A listing may leave some bindings out (a queue bound to very many patterns).
        let more = match self.omitted {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        outln!(
            "{:<w$}  {:>9}  {:>8}  {:>9}  {:>11}  {:>5}  {:>7}  {}{more}",
            self.name,
            self.ready,
            self.unacked,
            self.consumers,
            self.redelivered,
            self.dead_lettered,
            self.dropped,
            self.bindings.join(" ")
        );
        Ok(())
    }
}
