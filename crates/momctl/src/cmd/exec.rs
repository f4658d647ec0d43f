//! `momctl recv QUEUE --exec -- CMD`: a worker. Each message runs CMD with the payload on its
//! stdin; exit 0 acks it, anything else nacks it. It pulls only as many messages as it has
//! free slots, so one message is in flight per slot and a pool of workers shares the queue
//! fairly; a killed worker's message is delivered again. While a job runs its ack deadline
//! is pushed forward, so a long job is not handed to a second worker.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use mom_proto::{Message, MsgKey};
use momctl::client::{key, Client, ClientError, ConnectOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{CmdResult, Failure, Reconnect};
use crate::cli::RecvArgs;
use crate::output::delivery_id;

/// How a job ended.
struct Done {
    key: MsgKey,
    ok: bool,
}

pub async fn run(
    opts: &ConnectOptions,
    mut client: Client,
    args: &RecvArgs,
    reconnect: Reconnect,
) -> CmdResult {
    let Some((program, cmd_args)) = args.command.split_first() else {
        return Err(Failure::new(2, "--exec needs a command after --"));
    };
    if args.concurrency == 0 {
        return Err(Failure::new(2, "--concurrency must be at least 1"));
    }
    let queue = args.name.clone();
    let want = args.count.unwrap_or(u64::MAX);
    let deadline = args.timeout.map(|d| tokio::time::Instant::now() + d);
    let ack_wait = Duration::from_millis(client.queue_info(&queue).await?.ack_wait_ms.max(1));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut running: HashSet<MsgKey> = HashSet::new();
    // Finished while the connection was down: settled after the reconnect.
    let mut unsettled: Vec<Done> = Vec::new();
    let (mut started, mut succeeded, mut failed) = (0u64, 0u64, 0u64);
    let mut stopping = false;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::new(1, format!("cannot watch for SIGTERM: {e}")))?;
    // Pulls, not a pushing consumer: the worker asks for exactly as many messages as it has
    // free slots, so nothing waits leased in a worker that is busy or stopping.
    'connection: loop {
        for d in std::mem::take(&mut unsettled) {
            if let Err(e) = settle(&client, &queue, &d, args.nack_delay).await {
                unsettled.push(d);
                client = reconnect.again(opts, &e, &tally(succeeded, failed)).await?;
                continue 'connection;
            }
        }
        let mut pull: Option<super::Pull> = None;
        let mut extend = tokio::time::interval((ack_wait / 2).max(Duration::from_millis(10)));
        extend.reset();
        loop {
            if (stopping || started >= want) && running.is_empty() && pull.is_none() {
                if let (Some(n), false) = (args.count, started >= want) {
                    return Err(Failure::new(
                        3,
                        format!(
                            "timed out with {started} of {n} jobs; {}",
                            tally(succeeded, failed)
                        ),
                    ));
                }
                return Ok(());
            }
            let free =
                args.concurrency as u64 - (running.len() as u64).min(args.concurrency as u64);
            if pull.is_none() && !stopping && started < want && free > 0 {
                let max = free.min(want - started) as u32;
                let c = client.clone();
                let q = queue.clone();
                pull = Some(Box::pin(async move { c.fetch(&q, max, PULL_WAIT).await }));
            }
            let until = deadline.unwrap_or_else(|| {
                tokio::time::Instant::now() + Duration::from_secs(3600 * 24 * 365)
            });
            tokio::select! {
                d = done_rx.recv() => {
                    let Some(d) = d else { continue };
                    running.remove(&d.key);
                    if d.ok { succeeded += 1 } else { failed += 1 }
                    if let Err(e) = settle(&client, &queue, &d, args.nack_delay).await {
                        unsettled.push(d);
                        client = reconnect.again(opts, &e, &tally(succeeded, failed)).await?;
                        continue 'connection;
                    }
                }
                msgs = async { pull.as_mut().expect("guarded: pulling").await }, if pull.is_some() => {
                    pull = None;
                    let msgs = match msgs {
                        Ok(m) => m,
                        Err(e) if e.is_connection_lost() => {
                            client = reconnect.again(opts, &e, &tally(succeeded, failed)).await?;
                            continue 'connection;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    for m in msgs {
                        let k = key(&m);
                        // Delivered again after a reconnect while its job still runs here:
                        // that job's end settles it.
                        if !running.insert(k) {
                            continue;
                        }
                        started += 1;
                        let tx = done_tx.clone();
                        let (program, cmd_args) = (program.clone(), cmd_args.to_vec());
                        tokio::spawn(async move {
                            let ok = run_job(&program, &cmd_args, &m).await;
                            let _ = tx.send(Done { key: key(&m), ok });
                        });
                    }
                }
                _ = extend.tick(), if !running.is_empty() => {
                    let keys: Vec<MsgKey> = running.iter().cloned().collect();
                    match client.extend(&queue, keys).await {
                        Err(e) if e.is_connection_lost() => {
                            client = reconnect.again(opts, &e, &tally(succeeded, failed)).await?;
                            continue 'connection;
                        }
                        Err(e) => eprintln!("momctl: warning: could not extend the ack deadline of running jobs ({e}); a job may be delivered to another worker too"),
                        Ok(()) => {}
                    }
                }
                _ = tokio::time::sleep_until(until), if deadline.is_some() && !stopping => {
                    stopping = true;
                }
                _ = tokio::signal::ctrl_c(), if !stopping => {
                    eprintln!("momctl: interrupted; finishing {} running jobs", running.len());
                    stopping = true;
                }
                _ = sigterm.recv(), if !stopping => {
                    eprintln!("momctl: terminated; finishing {} running jobs", running.len());
                    stopping = true;
                }
            }
        }
    }
}

/// How long one pull waits for a message: short, so a stopping worker is not held by it.
const PULL_WAIT: Duration = Duration::from_secs(1);

fn tally(ok: u64, failed: u64) -> String {
    format!("{ok} jobs succeeded, {failed} failed")
}

async fn settle(
    client: &Client,
    queue: &str,
    d: &Done,
    nack_delay: Duration,
) -> Result<(), ClientError> {
    let res = if d.ok {
        client.ack(queue, vec![d.key.clone()]).await
    } else {
        client.nack(queue, vec![d.key.clone()], nack_delay).await
    };
    match res {
        Err(e) if e.is_connection_lost() => Err(e),
        Err(e) => {
            eprintln!(
                "momctl: cannot {} {}:{}: {e}",
                if d.ok { "ack" } else { "nack" },
                d.key.topic,
                d.key.seq
            );
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Run the command for one message; true when it exited 0.
async fn run_job(program: &str, args: &[String], m: &Message) -> bool {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .env("MOM_TOPIC", &m.topic)
        .env("MOM_SEQ", m.seq.to_string())
        .env("MOM_DELIVERY", m.delivery.unwrap_or(1).to_string())
        .env("MOM_DELIVERY_ID", delivery_id(m))
        .env("MOM_TIME", m.time.to_string())
        .env("MOM_MSG_ID", m.msg_id.as_deref().unwrap_or(""));
    for (k, v) in &m.headers {
        cmd.env(header_var(k), v);
    }
    let id = delivery_id(m);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("momctl: cannot run {program} for {id}: {e}; nacked");
            return false;
        }
    };
    // Feed stdin while the command runs; one that does not read it is fine.
    if let Some(mut stdin) = child.stdin.take() {
        let payload = m.payload.clone();
        tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
    }
    match child.wait().await {
        Ok(s) if s.success() => true,
        Ok(s) => {
            let how = match s.code() {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".into(),
            };
            eprintln!(
                "momctl: job {id} failed ({how}, delivery {}); nacked",
                m.delivery.unwrap_or(1)
            );
            false
        }
        Err(e) => {
            eprintln!("momctl: job {id}: {e}; nacked");
            false
        }
    }
}

/// `MOM_H_` and the header name in upper case, other characters than letters and digits as
/// `_`: `trace-id` → `MOM_H_TRACE_ID`.
fn header_var(name: &str) -> String {
    let mut v = String::from("MOM_H_");
    v.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_vars() {
        assert_eq!(super::header_var("trace-id"), "MOM_H_TRACE_ID");
        assert_eq!(super::header_var("a.b"), "MOM_H_A_B");
    }
}
