//! `momctl request` and `momctl reply`: request-reply over topics. A request carries a
//! `reply-to` topic of its own (under `$inbox`) and a `correlation-id`; a replier answers on
//! that topic with the same `correlation-id`.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

use mom_proto::{topic, Headers, StartAt, Watch};
use momctl::client::{message, Client, ConnectOptions, WatchEvent};
use tokio::io::AsyncWriteExt;

use super::publish::parse_headers;
use super::{is_broken_pipe, CmdResult, Failure, Reconnect};
use crate::output::{self, Format};

pub const REPLY_TO: &str = "reply-to";
pub const CORRELATION_ID: &str = "correlation-id";

/// The group repliers share requests in (NATS calls it a queue group).
const REPLY_GROUP: &str = "momctl-reply";

#[allow(clippy::too_many_arguments)]
pub async fn request(
    opts: &ConnectOptions,
    topic_name: String,
    msg: Option<String>,
    timeout: Duration,
    headers: Vec<String>,
    replies: u32,
    json: bool,
) -> CmdResult {
    topic::validate_publish_topic(&topic_name).map_err(|e| Failure::new(2, e.to_string()))?;
    if replies == 0 {
        return Err(Failure::new(2, "--replies must be at least 1"));
    }
    let mut headers: Headers = parse_headers(&headers)?;
    let payload = match msg {
        Some(m) => m.into_bytes(),
        None => {
            let mut v = Vec::new();
            std::io::stdin().read_to_end(&mut v)?;
            v
        }
    };
    let client = Client::connect(opts).await?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let correlation = format!("{}-{nonce:x}", client.welcome().client_id);
    let inbox = format!("$inbox.{}.{nonce:x}", client.welcome().client_id);
    // Watch the inbox before asking, so the reply cannot come too early.
    let mut inbox_watch = client.watch(vec![inbox.clone()], StartAt::New, 0).await?;
    headers.insert(REPLY_TO.into(), inbox);
    headers.insert(CORRELATION_ID.into(), correlation.clone());
    let ack = client
        .publish(&topic_name, vec![message(payload, headers, None)])
        .await?;
    if ack.watchers == 0 && ack.queues == 0 {
        return Err(Failure::new(
            6,
            format!("no responders: nothing watches or queues {topic_name}"),
        ));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let format = if json { Format::Json } else { Format::Lines };
    let mut got = 0;
    let mut failed: Option<String> = None;
    while got < replies {
        let ev = match tokio::time::timeout_at(deadline, inbox_watch.next()).await {
            Ok(ev) => ev?,
            Err(_) => {
                let msg = if replies == 1 {
                    format!("no reply on {topic_name} within {timeout:?}")
                } else {
                    format!("{got} of {replies} replies on {topic_name} within {timeout:?}")
                };
                return Err(Failure::new(3, msg));
            }
        };
        let WatchEvent::Messages(msgs) = ev else {
            continue;
        };
        for m in msgs {
            if m.headers.get(CORRELATION_ID) != Some(&correlation) || got >= replies {
                continue;
            }
            got += 1;
            // A replier that reports a failure (a non-zero status) fails the request too,
            // after its output is shown.
            if let Some(s) = m.headers.get("status").filter(|s| s.as_str() != "0") {
                failed = Some(s.clone());
            }
            let mut out = std::io::stdout().lock();
            let res = match format {
                Format::Json => output::write_message(&mut out, &m, &format),
                _ => out.write_all(&m.payload).and_then(|_| {
                    if m.payload.ends_with(b"\n") {
                        Ok(())
                    } else {
                        out.write_all(b"\n")
                    }
                }),
            }
            .and_then(|_| out.flush());
            match res {
                Err(e) if is_broken_pipe(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
                Ok(()) => {}
            }
        }
    }
    match failed {
        Some(status) => Err(Failure::new(
            1,
            format!("the replier on {topic_name} failed (status {status})"),
        )),
        None => Ok(()),
    }
}

pub async fn reply(
    opts: &ConnectOptions,
    pattern: String,
    all: bool,
    command: Vec<String>,
    reconnect: Reconnect,
) -> CmdResult {
    topic::validate_pattern(&pattern).map_err(|e| Failure::new(2, e.to_string()))?;
    let Some((program, args)) = command.split_first() else {
        return Err(Failure::new(2, "reply needs a command after --"));
    };
    let mut client = Client::connect(opts).await?;
    eprintln!(
        "momctl: answering requests on {pattern} with `{}`{}",
        command.join(" "),
        if all {
            ""
        } else {
            " (sharing them with other repliers)"
        }
    );
    let mut answered = 0u64;
    'connection: loop {
        // Replies go out on a connection of their own: this one's reader must never wait
        // behind a request nobody has read yet while a reply waits for its ack.
        let (requests, publisher) = match async {
            let w = client
                .watch_with(Watch {
                    patterns: vec![pattern.clone()],
                    group: (!all).then(|| REPLY_GROUP.to_string()),
                    ..Watch::default()
                })
                .await?;
            // To the node the requests come from, while it serves.
            let mut o = opts.starting_at(client.server());
            o.name = format!("{} (replies)", o.name);
            let p = Client::connect(&o).await?;
            Ok::<_, momctl::client::ClientError>((w, p))
        }
        .await
        {
            Ok(x) => x,
            Err(e) if e.is_connection_lost() || e.is_connect_failure() => {
                client = reconnect
                    .again(opts, &client, &e, &format!("{answered} requests answered"))
                    .await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut requests = requests;
        loop {
            let msgs = match requests.next().await {
                Ok(WatchEvent::Messages(m)) => m,
                Ok(WatchEvent::Notice(_)) => continue,
                Err(e) if e.is_connection_lost() => {
                    client = reconnect
                        .again(opts, &client, &e, &format!("{answered} requests answered"))
                        .await?;
                    continue 'connection;
                }
                Err(e) => return Err(e.into()),
            };
            for m in msgs {
                let (status, output) = run_command(program, args, &m.payload).await;
                let Some(to) = m.headers.get(REPLY_TO) else {
                    // Not a request: the command ran, nobody waits for its output.
                    continue;
                };
                let mut headers = Headers::new();
                if let Some(c) = m.headers.get(CORRELATION_ID) {
                    headers.insert(CORRELATION_ID.into(), c.clone());
                }
                headers.insert("status".into(), status.to_string());
                match publisher
                    .publish(to, vec![message(output, headers, None)])
                    .await
                {
                    Ok(_) => answered += 1,
                    Err(e) => eprintln!("momctl: cannot reply to {to}: {e}"),
                }
            }
        }
    }
}

/// Run the command with `input` on stdin; (exit status, stdout). A command that cannot be
/// started answers status 127 with the reason.
async fn run_command(program: &str, args: &[String], input: &[u8]) -> (i32, Vec<u8>) {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("momctl: cannot run {program}: {e}");
            return (127, format!("cannot run {program}: {e}").into_bytes());
        }
    };
    // Feed stdin while stdout is read: a command that echoes a big request (`cat`) must
    // not block on a full pipe. A command that does not read its stdin is fine.
    let feed = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        })
    });
    let out = child.wait_with_output().await;
    if let Some(f) = feed {
        f.abort();
    }
    match out {
        Ok(out) => (out.status.code().unwrap_or(-1), out.stdout),
        Err(e) => (127, format!("{program} failed: {e}").into_bytes()),
    }
}
