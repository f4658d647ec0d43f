//! `momctl recv` and `momctl subscribe --durable`: messages of a queue to stdout, each acked
//! only after it was written and flushed, so a closed pipe leaves it to be delivered again.

use std::io::Write;
use std::time::Duration;

use mom_proto::{topic, Message, MsgKey, QueueCreate, StartAt};
use momctl::client::{Client, ClientError, ConnectOptions};

use super::{is_broken_pipe, CmdResult, Failure};
use crate::cli::RecvArgs;
use crate::output::{self, Format};

/// Unacked messages a following consumer may hold.
const CREDIT: u32 = 1024;

/// What to do with a queue's messages.
pub struct Receive {
    pub queue: String,
    pub count: Option<u64>,
    pub timeout: Option<Duration>,
    pub follow: bool,
    pub ack: bool,
    pub format: Format,
}

pub async fn run(opts: &ConnectOptions, args: RecvArgs, json: bool) -> CmdResult {
    super::queue_name_ok(&args.name)?;
    for p in &args.bind {
        topic::validate_pattern(p).map_err(|e| Failure::new(2, e.to_string()))?;
    }
    let client = Client::connect(opts).await?;
    if !args.bind.is_empty() {
        client
            .queue_create(QueueCreate {
                queue: args.name.clone(),
                bindings: args.bind.clone(),
                exist_ok: true,
                ..QueueCreate::default()
            })
            .await?;
    }
    let r = Receive {
        queue: args.name,
        count: if args.follow { None } else { Some(args.count) },
        timeout: args.timeout,
        follow: args.follow,
        ack: !args.no_ack,
        format: format(json, args.null),
    };
    receive(&client, r).await
}

pub fn format(json: bool, null: bool) -> Format {
    if json {
        Format::Json
    } else if null {
        Format::Null
    } else {
        Format::Lines
    }
}

/// `subscribe --durable NAME PATTERN...`: bind (creating the queue), then stream with acks.
pub async fn durable(
    opts: &ConnectOptions,
    name: String,
    patterns: Vec<String>,
    count: Option<u64>,
    timeout: Option<Duration>,
    format: Format,
) -> CmdResult {
    let client = Client::connect(opts).await?;
    client
        .queue_create(QueueCreate {
            queue: name.clone(),
            bindings: patterns,
            from: StartAt::New,
            exist_ok: true,
            ..QueueCreate::default()
        })
        .await?;
    let r = Receive {
        queue: name,
        count,
        timeout,
        follow: count.is_none(),
        ack: true,
        format,
    };
    receive(&client, r).await
}

pub async fn receive(client: &Client, r: Receive) -> CmdResult {
    let deadline = r.timeout.map(|d| tokio::time::Instant::now() + d);
    let want = r.count.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut got: u64 = 0;
    let timed_out = |got: u64| -> CmdResult {
        match r.count {
            Some(n) if got < n => Err(Failure::new(
                3,
                format!(
                    "timed out after {:?} with {got} of {n} messages",
                    r.timeout.unwrap_or_default()
                ),
            )),
            _ => Ok(()),
        }
    };
    // Following: a pushing consumer with credit. A bounded count: pulls of at most what is
    // still wanted, so nothing beyond N is ever delivered to this command.
    if r.follow {
        let mut consumer = client
            .consume(&r.queue, CREDIT.min(want.min(u64::from(u32::MAX)) as u32))
            .await?;
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, consumer.next()).await {
                    Ok(n) => n,
                    Err(_) => return timed_out(got),
                },
                None => consumer.next().await,
            };
            let mut msgs = next.map_err(|e| fail(e, got))?;
            msgs.truncate((want - got).min(msgs.len() as u64) as usize);
            if !write_all(&mut out, &msgs, r.format)? {
                return Ok(());
            }
            got += msgs.len() as u64;
            if r.ack {
                consumer.ack(&msgs).await.map_err(|e| fail(e, got))?;
            }
            if got >= want {
                return Ok(());
            }
        }
    }
    while got < want {
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return timed_out(got);
                }
                left
            }
            // No deadline: wait as long as it takes, one long pull after another.
            None => Duration::from_secs(3600),
        };
        let max = (want - got).min(256) as u32;
        let msgs = client
            .fetch(&r.queue, max, wait)
            .await
            .map_err(|e| fail(e, got))?;
        if msgs.is_empty() {
            continue;
        }
        if !write_all(&mut out, &msgs, r.format)? {
            return Ok(());
        }
        got += msgs.len() as u64;
        if r.ack {
            client
                .ack(&r.queue, keys(&msgs))
                .await
                .map_err(|e| fail(e, got))?;
        }
    }
    Ok(())
}

fn keys(msgs: &[Message]) -> Vec<MsgKey> {
    msgs.iter()
        .map(|m| MsgKey {
            topic: m.topic.clone(),
            seq: m.seq,
        })
        .collect()
}

fn fail(e: ClientError, got: u64) -> Failure {
    if got == 0 {
        return e.into();
    }
    Failure::new(e.exit_code(), format!("{e} (after {got} messages)"))
}

/// Write and flush; false when stdout was closed (nothing of this batch is acked then).
fn write_all(out: &mut impl Write, msgs: &[Message], format: Format) -> Result<bool, Failure> {
    let res = msgs
        .iter()
        .try_for_each(|m| output::write_message(out, m, format))
        .and_then(|_| out.flush());
    match res {
        Ok(()) => Ok(true),
        Err(e) if is_broken_pipe(&e) => Ok(false),
        Err(e) => Err(Failure::new(1, format!("writing stdout: {e}"))),
    }
}
