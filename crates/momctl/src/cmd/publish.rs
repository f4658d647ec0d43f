//! `momctl publish`: messages from arguments or stdin, pipelined, each acknowledged only
//! once durable. Exit 0 means every message was acknowledged.

use std::io::{BufRead, BufReader, Read};

use mom_proto::{topic, Headers, PubMsg};
use momctl::client::{Client, ClientError, ConnectOptions};
use tokio::sync::mpsc;

use super::{CmdResult, Failure};
use crate::cli::PublishArgs;

/// Payload bytes per batch from stdin, so a batch frame stays far below the frame limit.
const BATCH_BYTES: usize = 1024 * 1024;

enum Input {
    Batch(Vec<PubMsg>),
    /// Line `line` (1-based) is longer than the payload limit; nothing of it was sent.
    TooLong {
        line: u64,
    },
    Failed(std::io::Error),
}

pub fn parse_headers(raw: &[String]) -> Result<Headers, Failure> {
    let mut h = Headers::new();
    for kv in raw {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                h.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(Failure::new(
                    2,
                    format!("header {kv:?}: expected KEY=VALUE"),
                ))
            }
        }
    }
    Ok(h)
}

pub async fn run(opts: &ConnectOptions, args: PublishArgs, json: bool) -> CmdResult {
    topic::validate_publish_topic(&args.topic).map_err(|e| {
        // A reserved name is a valid name the user may not publish to: forbidden, not usage.
        let code = if matches!(e, topic::NameError::Reserved(_)) {
            5
        } else {
            2
        };
        Failure::new(code, e.to_string())
    })?;
    let headers = parse_headers(&args.headers)?;
    if args.whole && !args.msgs.is_empty() {
        return Err(Failure::new(
            2,
            "--whole reads stdin; do not give messages as arguments",
        ));
    }
    let client = Client::connect(opts).await?;
    let max_payload = client.welcome().max_payload as usize;

    let (tx, mut rx) = mpsc::channel::<Input>(args.window.max(1) * 2);
    if args.msgs.is_empty() {
        let mode = if args.whole {
            Split::Whole
        } else if args.null {
            Split::Delim(0)
        } else {
            Split::Delim(b'\n')
        };
        let reader = StdinReader {
            mode,
            max_payload,
            batch: args.batch.max(1),
            headers: headers.clone(),
            msg_id: args.msg_id.clone(),
            tx,
        };
        std::thread::spawn(move || reader.run(std::io::stdin().lock()));
    } else {
        let n = args.msgs.len();
        let mut batch = Vec::with_capacity(n);
        for (i, m) in args.msgs.iter().enumerate() {
            if m.len() > max_payload {
                return Err(Failure::new(
                    1,
                    format!(
                        "message {} is {} bytes; the broker's payload limit is {max_payload}",
                        i + 1,
                        m.len()
                    ),
                ));
            }
            batch.push(PubMsg {
                payload: m.clone().into_bytes().into(),
                headers: headers.clone(),
                msg_id: id_for(&args.msg_id, i as u64 + 1, n == 1),
            });
        }
        let _ = tx.send(Input::Batch(batch)).await;
        drop(tx);
    }

    let mut publisher = client.publisher(&args.topic, args.window);
    let mut tally = Tally {
        json,
        ..Tally::default()
    };
    let mut failure: Option<Failure> = None;
    while let Some(input) = rx.recv().await {
        match input {
            Input::Batch(msgs) => {
                tally.sent += msgs.len() as u64;
                match publisher.send(msgs).await {
                    Ok(Some((n, ok))) => tally.acked(n, &ok),
                    Ok(None) => {}
                    Err(e) => {
                        failure = Some(tally.failed(e));
                        break;
                    }
                }
            }
            Input::TooLong { line } => {
                failure = Some(Failure::new(
                    1,
                    format!("line {line} is longer than the broker's payload limit of {max_payload} bytes; it was not sent"),
                ));
                break;
            }
            Input::Failed(e) => {
                failure = Some(Failure::new(1, format!("reading stdin: {e}")));
                break;
            }
        }
    }
    // Collect the acks of everything already sent, even when stopping on an error, so the
    // count reported is exact.
    loop {
        match publisher.next_ack().await {
            Ok(Some((n, ok))) => tally.acked(n, &ok),
            Ok(None) => break,
            Err(e) => {
                if failure.is_none() {
                    failure = Some(tally.failed(e));
                }
                break;
            }
        }
    }
    if tally.unrouted > 0 && !args.quiet {
        eprintln!(
            "momctl: warning: {} of {} messages reached no watcher and no queue (they are stored in {}; replay with `momctl subscribe {} --from all`)",
            tally.unrouted, tally.acked, args.topic, args.topic
        );
    }
    match failure {
        None => Ok(()),
        Some(mut f) => {
            if tally.sent > 0 && !f.message.contains("acknowledged") {
                f.message = format!(
                    "{} ({} messages before it were acknowledged)",
                    f.message, tally.acked
                );
            }
            Err(f)
        }
    }
}

/// The msg id of the n-th message: the id itself for a single message, `ID-n` otherwise.
fn id_for(id: &Option<String>, n: u64, single: bool) -> Option<String> {
    id.as_ref().map(|id| {
        if single {
            id.clone()
        } else {
            format!("{id}-{n}")
        }
    })
}

#[derive(Default)]
struct Tally {
    /// Print each ack as a JSON line on stdout.
    json: bool,
    sent: u64,
    acked: u64,
    unrouted: u64,
}

impl Tally {
    fn acked(&mut self, n: usize, ok: &mom_proto::PublishOk) {
        self.acked += n as u64;
        if self.json {
            let _ = crate::output::print_json(&serde_json::json!({
                "topic": ok.topic,
                "seqs": ok.seqs,
                "duplicates": ok.duplicates,
                "watchers": ok.watchers,
                "queues": ok.queues,
            }));
        }
        if ok.watchers == 0 && ok.queues == 0 {
            self.unrouted += n as u64;
        }
    }

    fn failed(&self, e: ClientError) -> Failure {
        let code = e.exit_code();
        let msg = match &e {
            ClientError::Closed(_) => format!(
                "{e}; {} of {} messages sent were acknowledged",
                self.acked, self.sent
            ),
            _ => e.to_string(),
        };
        Failure::new(code, msg)
    }
}

#[derive(Clone, Copy)]
enum Split {
    Delim(u8),
    Whole,
}

/// Reads stdin on its own thread and hands batches to the publisher.
struct StdinReader {
    mode: Split,
    max_payload: usize,
    batch: usize,
    headers: Headers,
    msg_id: Option<String>,
    tx: mpsc::Sender<Input>,
}

impl StdinReader {
    fn run(self, stdin: impl Read) {
        let mut rd = BufReader::with_capacity(256 * 1024, stdin);
        let res = match self.mode {
            Split::Whole => self.whole(&mut rd),
            Split::Delim(d) => self.split(&mut rd, d),
        };
        if let Err(e) = res {
            let _ = self.tx.blocking_send(Input::Failed(e));
        }
    }

    /// Bytes a message takes in a frame besides its payload: headers, id, framing.
    fn overhead(&self) -> usize {
        let h: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum();
        h + self.msg_id.as_ref().map_or(0, |i| i.len() + 24) + 32
    }

    fn msg(&self, payload: Vec<u8>, n: u64, single: bool) -> PubMsg {
        PubMsg {
            payload: payload.into(),
            headers: self.headers.clone(),
            msg_id: id_for(&self.msg_id, n, single),
        }
    }

    fn whole(&self, rd: &mut impl BufRead) -> std::io::Result<()> {
        let mut all = Vec::new();
        rd.take(self.max_payload as u64 + 1).read_to_end(&mut all)?;
        if all.len() > self.max_payload {
            let _ = self.tx.blocking_send(Input::TooLong { line: 1 });
            return Ok(());
        }
        let _ = self
            .tx
            .blocking_send(Input::Batch(vec![self.msg(all, 1, true)]));
        Ok(())
    }

    fn split<R: Read>(&self, rd: &mut BufReader<R>, delim: u8) -> std::io::Result<()> {
        let mut batch: Vec<PubMsg> = Vec::new();
        let mut batch_bytes = 0;
        let mut cur: Vec<u8> = Vec::new();
        let mut n: u64 = 0;
        // With an id, the first message waits to learn whether it is the only one.
        let mut held: Option<Vec<u8>> = None;
        loop {
            let buf = match rd.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let eof = buf.is_empty();
            let mut line_done = false;
            if eof {
                if cur.is_empty() {
                    break;
                }
                line_done = true;
            } else {
                let take = match buf.iter().position(|b| *b == delim) {
                    Some(i) => {
                        line_done = true;
                        cur.extend_from_slice(&buf[..i]);
                        i + 1
                    }
                    None => {
                        cur.extend_from_slice(buf);
                        buf.len()
                    }
                };
                rd.consume(take);
            }
            if cur.len() > self.max_payload + usize::from(delim == b'\n') {
                // Flush what came before so those lines are acknowledged, then stop.
                // Line n + 1 exists, so a held first line is not the only one.
                self.emit(&mut batch, &mut batch_bytes, held.take(), n + 1);
                let _ = self.tx.blocking_send(Input::TooLong { line: n + 1 });
                return Ok(());
            }
            if line_done {
                n += 1;
                let mut line = std::mem::take(&mut cur);
                if delim == b'\n' && line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max_payload {
                    self.emit(&mut batch, &mut batch_bytes, held.take(), n);
                    let _ = self.tx.blocking_send(Input::TooLong { line: n });
                    return Ok(());
                }
                if n == 1 && self.msg_id.is_some() {
                    held = Some(line);
                } else {
                    if let Some(first) = held.take() {
                        batch.push(self.msg(first, 1, false));
                    }
                    batch_bytes += line.len() + self.overhead();
                    batch.push(self.msg(line, n, false));
                }
                // Send when the batch is full, or when stdin has nothing more buffered (the
                // next read may block: a live pipe must not wait for a full batch).
                let idle = rd.buffer().is_empty() && held.is_none();
                if batch.len() >= self.batch
                    || batch_bytes >= BATCH_BYTES
                    || (idle && !batch.is_empty())
                {
                    if self
                        .tx
                        .blocking_send(Input::Batch(std::mem::take(&mut batch)))
                        .is_err()
                    {
                        return Ok(());
                    }
                    batch_bytes = 0;
                }
            }
            if eof {
                break;
            }
        }
        self.emit(&mut batch, &mut batch_bytes, held.take(), n);
        Ok(())
    }

    /// Send what is batched; `held` is the first message, single if `n` is 1.
    fn emit(&self, batch: &mut Vec<PubMsg>, bytes: &mut usize, held: Option<Vec<u8>>, n: u64) {
        if let Some(first) = held {
            batch.insert(0, self.msg(first, 1, n == 1));
        }
        if !batch.is_empty() {
            let _ = self.tx.blocking_send(Input::Batch(std::mem::take(batch)));
        }
        *bytes = 0;
    }
}
