//! `momctl publish`: messages from arguments or stdin, pipelined, each acknowledged only
//! once durable. Exit 0 means every message was acknowledged.
//!
//! Acks are read as they come, whatever stdin does, so `--json` prints each one at once, a
//! lost connection is noticed at once, and the counts said after it are exact: what was
//! acknowledged, what was sent without an answer (unknown), what was never sent. With
//! `--reconnect` the unknown batches are sent again on a new connection to the same broker;
//! every message then carries an id, so the broker drops what it had already stored. A
//! connection that comes back to another broker of a server list (whose dedupe window
//! never saw them) ends the run with them reported instead.

mod input;

use std::collections::VecDeque;

use mom_proto::{topic, ClientFrame, Headers, PubMsg, Publish, PublishOk, ServerFrame, Welcome};
use momctl::client::{Client, ClientError, ConnectOptions, PendingReply, EXIT_CONNECTION_LOST};
use tokio::sync::mpsc;

use super::{CmdResult, Failure, Reconnect};
use crate::cli::PublishArgs;
use input::{Ids, Input, Split, StdinReader};

/// Duplicates named one by one on stderr before they are only counted.
const DUPLICATES_SHOWN: u64 = 10;

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

pub async fn run(
    opts: &ConnectOptions,
    args: PublishArgs,
    json: bool,
    reconnect: Reconnect,
) -> CmdResult {
    let per_line = args.topic == "-";
    if per_line && (!args.msgs.is_empty() || args.whole || args.json_input) {
        return Err(Failure::new(
            2,
            "with `-` as the topic, stdin lines are `TOPIC MESSAGE`: no messages as arguments, \
             no --whole, no --json-input",
        ));
    }
    if per_line {
        // Checked line by line.
    } else {
        topic::validate_publish_topic(&args.topic).map_err(|e| {
            // A reserved name is a valid name the user may not publish to: forbidden, not usage.
            let code = if matches!(e, topic::NameError::Reserved(_)) {
                5
            } else {
                2
            };
            Failure::new(code, e.to_string())
        })?;
    }
    let headers = parse_headers(&args.headers)?;
    if (args.whole || args.json_input) && !args.msgs.is_empty() {
        return Err(Failure::new(
            2,
            "--whole and --json-input read stdin; do not give messages as arguments",
        ));
    }
    if let Some(crate::cli::IdFrom::Header(h)) = &args.id_from {
        if !args.json_input && args.msgs.len() != 1 && !args.whole {
            return Err(Failure::new(
                2,
                format!("--id-from header:{h} needs a header per message: use --json-input (or publish one message)"),
            ));
        }
    }
    let ids = Ids::new(args.msg_id.clone(), args.id_from.clone(), reconnect.enabled);
    let client = Client::connect(opts).await?;
    let max_payload = client.welcome().max_payload as usize;

    let (tx, rx) = mpsc::channel::<Input>(args.window.max(1) * 2);
    let lines = args.msgs.is_empty() && !args.whole;
    if args.msgs.is_empty() {
        let mode = if args.whole {
            Split::Whole
        } else if args.json_input {
            Split::Json
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
            key: args.key.clone(),
            ids,
            tx,
            topic_per_line: per_line,
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
            let payload: bytes::Bytes = m.clone().into_bytes().into();
            let msg_id = ids
                .id(i as u64 + 1, n == 1, &payload, &headers)
                .map_err(|e| Failure::new(1, e))?;
            batch.push(PubMsg {
                payload,
                headers: headers.clone(),
                msg_id,
                key: args.key.clone(),
            });
        }
        let _ = tx
            .send(Input::Batch {
                first: 1,
                topic: None,
                msgs: batch,
            })
            .await;
        drop(tx);
    }

    let mut p = Publishing {
        opts,
        client,
        topic: args.topic.clone(),
        // A topic per line makes requests of a message or a few: keep more of them going
        // (a million new topics: 40k topics/s with 256 in flight, 50k with 1024).
        window: if per_line {
            args.window.max(1024)
        } else {
            args.window.max(1)
        },
        reconnect,
        json,
        unit: if lines { "lines" } else { "messages" },
        in_flight: VecDeque::new(),
        tally: Tally::default(),
    };
    let failure = p.run(rx).await;
    let t = &p.tally;
    if t.duplicates > DUPLICATES_SHOWN {
        eprintln!(
            "momctl: {} messages in all were duplicates (their id was seen already): not stored again",
            t.duplicates
        );
    }
    if t.resent > 0 {
        eprintln!(
            "momctl: {} messages were sent again after reconnecting; {} of them had been stored already and were not stored twice",
            t.resent, t.already_stored
        );
    }
    if t.unrouted > 0 && !args.quiet && per_line {
        eprintln!(
            "momctl: warning: {} of {} messages reached no watcher and no queue (they are stored in their topics)",
            t.unrouted, t.acked
        );
    } else if t.unrouted > 0 && !args.quiet {
        eprintln!(
            "momctl: warning: {} of {} messages reached no watcher and no queue (they are stored in {}; replay with `momctl subscribe {} --from all`)",
            t.unrouted, t.acked, args.topic, args.topic
        );
    }
    match failure {
        None => Ok(()),
        Some(f) => Err(f),
    }
}

/// A batch sent and not yet acknowledged.
struct InFlight {
    /// Number of its first message (1-based: the stdin line or the argument).
    first: u64,
    ids: Vec<Option<String>>,
    /// Kept to send again after a reconnect.
    msgs: Option<Vec<PubMsg>>,
    reply: PendingReply,
    /// Sent again after a reconnect: its duplicates were stored before the connection went.
    resent: bool,
    /// Handed to a connection, this one or one before: a broker may have stored it. (A
    /// batch whose connection was gone before it could be sent was seen by none.)
    seen: bool,
    /// Its topic, when not the command's (`momctl publish -`).
    topic: Option<String>,
}

#[derive(Default)]
struct Tally {
    /// Messages handed to the connection (the last one's number).
    sent_upto: u64,
    acked: u64,
    duplicates: u64,
    unrouted: u64,
    resent: u64,
    already_stored: u64,
}

struct Publishing<'a> {
    opts: &'a ConnectOptions,
    client: Client,
    topic: String,
    window: usize,
    reconnect: Reconnect,
    json: bool,
    unit: &'static str,
    in_flight: VecDeque<InFlight>,
    tally: Tally,
}

impl Publishing<'_> {
    /// Send what comes in and collect acks until the input ends and every ack came; the
    /// failure that stopped it, if any.
    async fn run(&mut self, mut rx: mpsc::Receiver<Input>) -> Option<Failure> {
        let mut input_done = false;
        loop {
            if input_done && self.in_flight.is_empty() {
                return None;
            }
            let room = self.in_flight.len() < self.window && !input_done;
            let busy = !self.in_flight.is_empty();
            let client = self.client.clone();
            tokio::select! {
                biased;
                res = async { self.in_flight.front_mut().expect("guarded: in flight").reply.wait().await }, if busy => {
                    let Some(b) = self.in_flight.pop_front() else { continue };
                    match res {
                        Ok(ServerFrame::PublishOk(ok)) => self.acked(&b, &ok),
                        Ok(other) => {
                            return Some(self.stop(&b, ClientError::Protocol(format!("unexpected reply {other:?}"))).await)
                        }
                        Err(e) if e.is_connection_lost() => {
                            self.in_flight.push_front(b);
                            if let Err(f) = self.reconnect_and_resend(&e).await {
                                return Some(f);
                            }
                        }
                        Err(e) => return Some(self.stop(&b, e).await),
                    }
                }
                input = rx.recv(), if room => match input {
                    None => input_done = true,
                    Some(Input::Batch { first, topic, msgs }) => {
                        if let Err(e) = self.send(first, topic, msgs, false).await {
                            if let Err(f) = self.reconnect_and_resend(&e).await {
                                return Some(f);
                            }
                        }
                    }
                    Some(Input::Stop { message }) => {
                        let f = self.finish_in_flight(Failure::new(1, message)).await;
                        return Some(f);
                    }
                },
                // Nothing in flight and stdin quiet: a lost connection is still noticed now.
                _ = client.closed(), if !busy && !input_done => {
                    let e = client.closed_error();
                    if let Err(f) = self.reconnect_and_resend(&e).await {
                        return Some(f);
                    }
                }
            }
        }
    }

    async fn send(
        &mut self,
        first: u64,
        own_topic: Option<String>,
        msgs: Vec<PubMsg>,
        resent: bool,
    ) -> Result<(), ClientError> {
        let n = msgs.len() as u64;
        let ids: Vec<Option<String>> = msgs.iter().map(|m| m.msg_id.clone()).collect();
        let keep = self.reconnect.enabled.then(|| msgs.clone());
        let topic = own_topic.clone().unwrap_or_else(|| self.topic.clone());
        let sent = self
            .client
            .send(|id| {
                ClientFrame::Publish(Publish {
                    id,
                    topic,
                    msgs,
                    no_ack: false,
                })
            })
            .await;
        match sent {
            Ok(reply) => {
                self.tally.sent_upto = self.tally.sent_upto.max(first + n - 1);
                self.in_flight.push_back(InFlight {
                    first,
                    ids,
                    msgs: keep,
                    reply,
                    resent,
                    seen: true,
                    topic: own_topic,
                });
                Ok(())
            }
            Err(e) => {
                // Not sent: kept as unknown so a reconnect sends it; without one it counts
                // as sent without an answer, which is what the user must assume anyway.
                self.tally.sent_upto = self.tally.sent_upto.max(first + n - 1);
                self.in_flight.push_back(InFlight {
                    first,
                    ids,
                    msgs: keep,
                    reply: PendingReply::closed(&self.client),
                    resent,
                    // A resend was seen by the broker it was first sent to.
                    seen: resent,
                    topic: own_topic,
                });
                Err(e)
            }
        }
    }

    fn acked(&mut self, b: &InFlight, ok: &PublishOk) {
        let n = ok.seqs.len() as u64;
        self.tally.acked += n;
        let dups: std::collections::BTreeSet<u32> = ok.duplicate_indexes.iter().copied().collect();
        if b.resent {
            self.tally.resent += n;
            self.tally.already_stored += ok.duplicates;
        } else {
            for i in &dups {
                self.tally.duplicates += 1;
                if self.tally.duplicates <= DUPLICATES_SHOWN {
                    let i = *i as usize;
                    let id = b.ids.get(i).cloned().flatten().unwrap_or_default();
                    let seq = ok.seqs.get(i).copied().unwrap_or(0);
                    let what = if self.unit == "lines" {
                        "line"
                    } else {
                        "message"
                    };
                    eprintln!(
                        "momctl: {what} {} is a duplicate (id {id:?} is seq {seq} already): not stored again",
                        b.first + i as u64
                    );
                }
            }
        }
        if self.json {
            let mut out = std::io::stdout().lock();
            for (i, seq) in ok.seqs.iter().enumerate() {
                let mut v = serde_json::json!({
                    "topic": ok.topic,
                    "seq": seq,
                    "duplicate": dups.contains(&(i as u32)),
                    "line": b.first + i as u64,
                    "watchers": ok.watchers,
                    "queues": ok.queues,
                });
                // A partitioned topic's seqs are its partitions'.
                if let Some(p) = ok.partitions.get(i) {
                    v["partition"] = (*p).into();
                }
                if write_json_line(&mut out, &v).is_err() {
                    break;
                }
            }
        }
        if ok.watchers == 0 && ok.queues == 0 {
            self.tally.unrouted += n - ok.duplicates.min(n);
        }
    }

    /// After a refused batch: collect the acks of what is still in flight, so the count said
    /// is exact, and explain.
    async fn stop(&mut self, b: &InFlight, e: ClientError) -> Failure {
        let last = b.first + b.ids.len().max(1) as u64 - 1;
        let msg = format!("{} {}-{}: {e}", self.unit, b.first, last);
        self.finish_in_flight(Failure::new(e.exit_code(), msg))
            .await
    }

    async fn finish_in_flight(&mut self, mut f: Failure) -> Failure {
        while let Some(mut b) = self.in_flight.pop_front() {
            match b.reply.wait().await {
                Ok(ServerFrame::PublishOk(ok)) => self.acked(&b, &ok),
                Ok(_) | Err(_) => {
                    self.in_flight.push_front(b);
                    let unknown = self.unknown_range();
                    f.message = format!("{}; {}", f.message, unknown);
                    self.in_flight.clear();
                    break;
                }
            }
        }
        f.message = format!("{} ({} messages acknowledged)", f.message, self.tally.acked);
        f
    }

    /// "N sent without an answer (a-b)": what is in flight now.
    fn unknown_range(&self) -> String {
        let n: u64 = self
            .in_flight
            .iter()
            .map(|b| b.msgs.as_ref().map_or(b.ids.len(), Vec::len) as u64)
            .sum();
        match (self.in_flight.front(), self.tally.sent_upto) {
            (Some(b), upto) if n > 0 => format!(
                "{n} {} sent without an answer ({}-{upto}): they may or may not be stored",
                self.unit, b.first
            ),
            _ => "nothing is waiting for an answer".into(),
        }
    }

    /// The connection is gone: reconnect and send again what had no answer, or fail with
    /// exact counts.
    async fn reconnect_and_resend(&mut self, lost: &ClientError) -> Result<(), Failure> {
        let what = format!(
            "{} of {} {} acknowledged; {}; nothing after {} {} was sent",
            self.tally.acked,
            self.tally.sent_upto,
            self.unit,
            self.unknown_range(),
            if self.unit == "lines" {
                "line"
            } else {
                "message"
            },
            self.tally.sent_upto
        );
        let client = self
            .reconnect
            .again(self.opts, &self.client, lost, &what)
            .await?;
        let seen = self.in_flight.iter().any(|b| b.seen);
        if seen && !same_store(self.client.welcome(), client.welcome()) {
            // Another broker cannot tell which of them the lost one stored: sending them
            // there could store a message twice, so they are reported, not sent.
            return Err(Failure::new(
                EXIT_CONNECTION_LOST,
                format!(
                    "{lost}; {what}; they are not sent again: the connection came back to {} \
                     (server id {}), not the broker they were sent to ({}, server id {}), and \
                     only that one can tell which of them it stored",
                    client.server(),
                    client.welcome().server_id,
                    self.client.server(),
                    self.client.welcome().server_id
                ),
            ));
        }
        self.client = client;
        let again: Vec<InFlight> = self.in_flight.drain(..).collect();
        for b in again {
            let msgs = b.msgs.unwrap_or_default();
            if msgs.is_empty() {
                continue;
            }
            // Never seen by a broker, it is sent for the first time.
            if let Err(e) = self.send(b.first, b.topic, msgs, b.seen).await {
                return Box::pin(self.reconnect_and_resend(&e)).await;
            }
        }
        Ok(())
    }
}

/// Do two connections lead to one store, whose dedupe window saw what was sent on the
/// first? The same broker keeps its server id across restarts. (The nodes of one cluster
/// will share their messages and dedupe window; until the welcome says which cluster a node
/// belongs to, only the same broker is known to.)
/// Could `now` tell which messages `before` stored? The same broker can; so can another
/// node of the same cluster (they hold the same messages and dedupe window).
fn same_store(before: &Welcome, now: &Welcome) -> bool {
    before.server_id == now.server_id
        || (!before.cluster_id.is_empty() && before.cluster_id == now.cluster_id)
}

fn write_json_line(out: &mut impl std::io::Write, v: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, v).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}
