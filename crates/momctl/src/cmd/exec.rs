//! `momctl recv QUEUE --exec -- CMD`: a worker. Each message runs CMD with the payload on its
//! stdin; exit 0 acks it, anything else nacks it. It pulls only as many messages as it has
//! free slots, so one message is in flight per slot and a pool of workers shares the queue
//! fairly; a killed worker's message is delivered again. While a job runs its ack deadline
//! is pushed forward, so a long job is not handed to a second worker.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use mom_proto::{Message, MsgKey};
use momctl::client::{key, Client, ClientError, ConnectOptions};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CmdResult, Failure, Reconnect};
use crate::cli::RecvArgs;
use crate::output::delivery_id;

/// How a job ended.
struct Done {
    key: MsgKey,
    outcome: Outcome,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Exit 0: ack.
    Ok,
    /// Any other end: nack (a failed delivery).
    Failed,
    /// The command could not be started: the message goes back unopened and the worker
    /// stops, rather than burn every message's attempts on a typo.
    NotRun,
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
    // A command that cannot run is found before any message is taken.
    runnable(program)?;
    let queue = args.name.clone();
    let want = args.count.unwrap_or(u64::MAX);
    let deadline = args.timeout.map(|d| tokio::time::Instant::now() + d);
    let ack_wait = Duration::from_millis(client.queue_info(&queue).await?.ack_wait_ms.max(1));
    let stop = stop_on_signals()?;
    let mut reconnect = reconnect.until(deadline);
    reconnect.stop = Some(stop.clone());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut running: HashSet<MsgKey> = HashSet::new();
    // Jobs that ran while a connection was lost: their messages went back to the queue and
    // may come to this worker again; they are settled, not run twice.
    let mut in_doubt: HashMap<MsgKey, Option<Outcome>> = HashMap::new();
    // Ended while the connection was down: settled after the reconnect.
    let mut unsettled: Vec<Done> = Vec::new();
    let (mut started, mut succeeded, mut failed) = (0u64, 0u64, 0u64);
    let mut broken: Option<String> = None;
    // Pulls, not a pushing consumer: the worker asks for exactly as many messages as it has
    // free slots, so nothing waits leased in a worker that is busy or stopping.
    'connection: loop {
        for d in std::mem::take(&mut unsettled) {
            if let Err(e) = settle(&client, &queue, &d, args.nack_delay).await {
                unsettled.push(d);
                in_doubt.extend(running.iter().map(|k| (k.clone(), None)));
                client = reconnect
                    .again(opts, &client, &e, &tally(succeeded, failed))
                    .await?;
                continue 'connection;
            }
        }
        let mut pull: Option<super::Pull> = None;
        let mut extend = tokio::time::interval((ack_wait / 2).max(Duration::from_millis(10)));
        extend.reset();
        loop {
            let stopping = stop.is_cancelled() || broken.is_some();
            if (stopping || started >= want) && running.is_empty() && pull.is_none() {
                if let Some(why) = broken {
                    return Err(Failure::new(
                        1,
                        format!("{why}; {}", tally(succeeded, failed)),
                    ));
                }
                if let (Some(n), false, false) = (args.count, started >= want, stop.is_cancelled())
                {
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
                    if let Some(o) = in_doubt.get_mut(&d.key) {
                        *o = Some(d.outcome);
                    }
                    match d.outcome {
                        Outcome::Ok => succeeded += 1,
                        Outcome::Failed => failed += 1,
                        Outcome::NotRun => {
                            broken.get_or_insert_with(|| format!("cannot run {program}"));
                        }
                    }
                    if let Err(e) = settle(&client, &queue, &d, args.nack_delay).await {
                        unsettled.push(d);
                        in_doubt.extend(running.iter().map(|k| (k.clone(), None)));
                        client = reconnect.again(opts, &client, &e, &tally(succeeded, failed)).await?;
                        continue 'connection;
                    }
                }
                msgs = async { pull.as_mut().expect("guarded: pulling").await }, if pull.is_some() => {
                    pull = None;
                    let msgs = match msgs {
                        Ok(m) => m,
                        Err(e) if e.is_connection_lost() => {
                            in_doubt.extend(running.iter().map(|k| (k.clone(), None)));
                            client = reconnect.again(opts, &client, &e, &tally(succeeded, failed)).await?;
                            continue 'connection;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let mut give_back = Vec::new();
                    let mut done_before = Vec::new();
                    for m in msgs {
                        let k = key(&m);
                        if running.contains(&k) {
                            // Delivered again after a reconnect while its job still runs
                            // here: that job's end settles it.
                            continue;
                        }
                        if let Some(Some(outcome)) = in_doubt.get(&k).copied() {
                            // Its job ran here already and ended while the connection was
                            // down: settled as it ended, not run twice.
                            in_doubt.remove(&k);
                            done_before.push(Done { key: k, outcome });
                            continue;
                        }
                        if stop.is_cancelled() || broken.is_some() {
                            // Taken as the worker stops: back unopened, not counted.
                            give_back.push(k);
                            continue;
                        }
                        running.insert(k);
                        started += 1;
                        let tx = done_tx.clone();
                        let (program, cmd_args) = (program.clone(), cmd_args.to_vec());
                        tokio::spawn(async move {
                            let outcome = run_job(&program, &cmd_args, &m).await;
                            let _ = tx.send(Done { key: key(&m), outcome });
                        });
                    }
                    let res = async {
                        if !give_back.is_empty() {
                            client.release(&queue, give_back).await?;
                        }
                        for d in &done_before {
                            settle(&client, &queue, d, args.nack_delay).await?;
                        }
                        Ok::<(), ClientError>(())
                    }
                    .await;
                    match res {
                        Err(e) if e.is_connection_lost() => {
                            in_doubt.extend(running.iter().map(|k| (k.clone(), None)));
                            client = reconnect.again(opts, &client, &e, &tally(succeeded, failed)).await?;
                            continue 'connection;
                        }
                        Err(e) => eprintln!("momctl: {e}"),
                        Ok(()) => {}
                    }
                }
                _ = extend.tick(), if !running.is_empty() => {
                    let keys: Vec<MsgKey> = running.iter().cloned().collect();
                    match client.extend(&queue, keys).await {
                        Err(e) if e.is_connection_lost() => {
                            in_doubt.extend(running.iter().map(|k| (k.clone(), None)));
                            client = reconnect.again(opts, &client, &e, &tally(succeeded, failed)).await?;
                            continue 'connection;
                        }
                        Err(e) => eprintln!("momctl: warning: could not extend the ack deadline of running jobs ({e}); a job may be delivered to another worker too"),
                        Ok(()) => {}
                    }
                }
                _ = tokio::time::sleep_until(until), if deadline.is_some() && !stopping => {
                    stop.cancel();
                }
                _ = stop.cancelled(), if !stopping => {}
            }
        }
    }
}

/// Cancelled at the first SIGTERM or Ctrl-C: stop taking jobs, finish the running ones. A
/// second one ends the worker at once (its running jobs are then delivered again).
fn stop_on_signals() -> Result<CancellationToken, Failure> {
    let stop = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::new(1, format!("cannot watch for SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::new(1, format!("cannot watch for SIGINT: {e}")))?;
    let s = stop.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                eprintln!("momctl: stopping: finishing the running jobs (again to stop at once)");
                s.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    Ok(stop)
}

/// Can `program` be started? A path must be an executable file; a bare name must be one
/// in `PATH`.
fn runnable(program: &str) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        executable(std::path::Path::new(program))
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
    };
    if found {
        return Ok(());
    }
    let why = if program.contains('/') && std::path::Path::new(program).is_file() {
        "not executable (chmod +x it, or run it with `sh FILE`)"
    } else if program.contains('/') {
        "no such file"
    } else {
        "not found in PATH"
    };
    Err(Failure::new(
        2,
        format!("--exec: {program}: {why}; nothing was taken from the queue"),
    ))
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
    let res = match d.outcome {
        Outcome::Ok => client.ack(queue, vec![d.key.clone()]).await,
        Outcome::Failed => client.nack(queue, vec![d.key.clone()], nack_delay).await,
        Outcome::NotRun => client.release(queue, vec![d.key.clone()]).await,
    };
    match res {
        Err(e) if e.is_connection_lost() => Err(e),
        Err(e) => {
            eprintln!(
                "momctl: cannot {} {}:{}: {e}",
                match d.outcome {
                    Outcome::Ok => "ack",
                    Outcome::Failed => "nack",
                    Outcome::NotRun => "give back",
                },
                d.key.topic,
                d.key.seq
            );
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// Run the command for one message.
async fn run_job(program: &str, args: &[String], m: &Message) -> Outcome {
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
            eprintln!("momctl: cannot run {program} for {id}: {e}; given back, stopping");
            return Outcome::NotRun;
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
        Ok(s) if s.success() => Outcome::Ok,
        Ok(s) => {
            let how = match s.code() {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".into(),
            };
            eprintln!(
                "momctl: job {id} failed ({how}, delivery {}); nacked",
                m.delivery.unwrap_or(1)
            );
            Outcome::Failed
        }
        Err(e) => {
            eprintln!("momctl: job {id}: {e}; nacked");
            Outcome::Failed
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
