//! `momctl recv` and `momctl subscribe --durable`: messages of a queue to stdout. Each is
//! acknowledged once it was written — and when stdout is a pipe, once the reader took it
//! out of the pipe (see `pipe.rs`) — so a closed pipe or a dead worker leaves it to be
//! delivered again, and `--prefetch` bounds what one pipe holds.
//!
//! Across a reconnect nothing is printed twice: a message already written is recognised
//! when the queue delivers it again, and acknowledged instead of printed.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::time::Duration;

use mom_proto::{topic, Ack, ClientFrame, MsgKey, QueueCreate, StartAt};
use momctl::client::{key, Client, ClientError, ConnectOptions, PendingReply};

use super::pipe::Pipe;
use super::{is_broken_pipe, CmdResult, Failure, Reconnect};
use crate::cli::RecvArgs;
use crate::output::{self, Format};

/// Unacked messages a following consumer may hold when stdout is not a pipe.
const CREDIT: u32 = 1024;
/// How often to look whether the pipe's reader took what was written.
const PIPE_POLL: Duration = Duration::from_millis(1);
/// How often an idle `recv` looks whether its pipe's reader went away (`| head -5`).
const READER_CHECK: Duration = Duration::from_millis(100);
/// Quick looks at the pipe right after a write: a reader that keeps up takes a message in
/// microseconds, long before the next timer tick.
const SPIN: usize = 200;
/// Most messages taken from a consumer at once (one write, one ack).
const DRAIN: usize = 4096;
/// Acks sent and not yet answered before `recv` waits for the oldest.
const ACKS_IN_FLIGHT: usize = 32;

/// What to do with a queue's messages.
pub struct Receive {
    pub queue: String,
    pub count: Option<u64>,
    pub timeout: Option<Duration>,
    pub follow: bool,
    pub ack: bool,
    pub prefetch: u32,
    pub format: Format,
    pub reconnect: Reconnect,
}

pub async fn run(
    opts: &ConnectOptions,
    args: RecvArgs,
    json: bool,
    reconnect: Reconnect,
) -> CmdResult {
    super::queue_name_ok(&args.name)?;
    for p in &args.bind {
        topic::validate_pattern(p).map_err(|e| Failure::new(2, e.to_string()))?;
    }
    if args.prefetch == 0 {
        return Err(Failure::new(2, "--prefetch must be at least 1"));
    }
    let format = Format::from_args(json, &args.output)?;
    let shows_id = match &format {
        Format::Json => true,
        Format::Template(p) => p.contains(&crate::output::Piece::DeliveryId),
        _ => false,
    };
    if args.no_ack && !shows_id {
        return Err(Failure::new(
            2,
            "--no-ack needs --json or a --format with %D: the delivery ids are what `momctl ack` settles (to look without taking, use `momctl queue peek`)",
        ));
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
    if args.exec {
        return super::exec::run(opts, client, &args, reconnect).await;
    }
    let r = Receive {
        queue: args.name,
        count: if args.follow {
            None
        } else {
            Some(args.count.unwrap_or(1))
        },
        timeout: args.timeout,
        follow: args.follow,
        ack: !args.no_ack,
        prefetch: args.prefetch,
        format,
        reconnect,
    };
    receive(opts, client, r).await
}

/// `subscribe --durable NAME PATTERN...`: bind (creating the queue), then stream with acks.
#[allow(clippy::too_many_arguments)]
pub async fn durable(
    opts: &ConnectOptions,
    name: String,
    patterns: Vec<String>,
    (from, at): (StartAt, u64),
    count: Option<u64>,
    timeout: Option<Duration>,
    format: Format,
    reconnect: Reconnect,
) -> CmdResult {
    let client = Client::connect(opts).await?;
    client
        .queue_create(QueueCreate {
            queue: name.clone(),
            bindings: patterns,
            from,
            at,
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
        prefetch: 1,
        format,
        reconnect,
    };
    receive(opts, client, r).await
}

/// Messages written to stdout whose reader has not taken them yet.
struct Written {
    pipe: Option<Pipe>,
    /// Bytes written to stdout so far.
    bytes: u64,
    /// Written, not yet taken by the reader: key and the byte count at its end.
    unread: VecDeque<(MsgKey, u64)>,
    /// Taken by the reader; their ack has not reached the broker.
    to_ack: Vec<MsgKey>,
    /// Everything written and not yet acknowledged (so a redelivery is not printed again).
    seen: HashSet<MsgKey>,
}

impl Written {
    /// An ack's answer came: its messages are settled (a refusal is only reported). A lost
    /// connection gives them back to `to_ack` for after the reconnect, and is returned.
    fn ack_answered(
        &mut self,
        keys: Vec<MsgKey>,
        res: Result<mom_proto::ServerFrame, ClientError>,
    ) -> Result<(), ClientError> {
        match res {
            Err(e) if e.is_connection_lost() => {
                self.to_ack.extend(keys);
                return Err(e);
            }
            Err(e) => eprintln!("momctl: warning: {e}"),
            Ok(_) => {}
        }
        for k in keys {
            self.seen.remove(&k);
        }
        Ok(())
    }

    /// Move what the reader took from `unread` to `to_ack`. False when the reader is gone.
    fn taken(&mut self) -> bool {
        match &self.pipe {
            None => {
                self.to_ack.extend(self.unread.drain(..).map(|(k, _)| k));
                true
            }
            Some(p) => {
                let Some(left) = p.unread() else {
                    return !p.reader_gone();
                };
                let read_upto = self.bytes.saturating_sub(left as u64);
                while self
                    .unread
                    .front()
                    .is_some_and(|(_, end)| *end <= read_upto)
                {
                    if let Some((k, _)) = self.unread.pop_front() {
                        self.to_ack.push(k);
                    }
                }
                !(self.unread.front().is_some() && p.reader_gone())
            }
        }
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub async fn receive(opts: &ConnectOptions, mut client: Client, r: Receive) -> CmdResult {
    let deadline = r.timeout.map(|d| tokio::time::Instant::now() + d);
    let reconnect = r.reconnect.clone().until(deadline);
    let want = r.count.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let pipe = Pipe::stdout();
    let credit = match (&pipe, r.follow) {
        (Some(_), _) => r.prefetch,
        (None, true) => CREDIT,
        (None, false) => r.prefetch.max(256),
    };
    let mut w = Written {
        pipe,
        bytes: 0,
        unread: VecDeque::new(),
        to_ack: Vec::new(),
        seen: HashSet::new(),
    };
    let mut got: u64 = 0;
    let ack_wait = match client.queue_info(&r.queue).await {
        Ok(q) => Duration::from_millis(q.ack_wait_ms.max(1)),
        Err(e) => return Err(e.into()),
    };
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
    // Acks sent and not yet answered: reading goes on meanwhile, so one durable ack per
    // batch does not pace the stream.
    let mut acking: VecDeque<(Vec<MsgKey>, PendingReply)> = VecDeque::new();
    'connection: loop {
        // Acks whose answer the lost connection took with it are sent again (acking twice
        // is harmless).
        for (keys, _) in acking.drain(..) {
            w.to_ack.extend(keys);
        }
        // Taken before the connection went: their acks go first.
        if let Err(e) = settle(&client, &r, &mut w).await {
            client = reconnect.again(opts, &client, &e, &said(got)).await?;
            continue;
        }
        let mut consumer = if r.follow && r.ack {
            match client.consume(&r.queue, credit).await {
                Ok(c) => Some(c),
                Err(e) if e.is_connection_lost() => {
                    client = reconnect.again(opts, &client, &e, &said(got)).await?;
                    continue;
                }
                Err(e) => return Err(fail(e, got)),
            }
        } else {
            None
        };
        // A pull in flight is kept across turns of the loop: dropping it would leave what
        // the broker hands it leased to nobody.
        let mut pull: Option<super::Pull> = None;
        let mut poll = tokio::time::interval(PIPE_POLL);
        let mut reader_check = tokio::time::interval(READER_CHECK);
        let mut extend = tokio::time::interval((ack_wait / 2).max(Duration::from_millis(10)));
        extend.reset();
        loop {
            if got >= want && w.unread.is_empty() && w.to_ack.is_empty() && acking.is_empty() {
                flush_quietly(&mut out)?;
                return Ok(());
            }
            let waiting_reader = !w.unread.is_empty();
            // Take more only while the pipe holds fewer than --prefetch unread messages.
            let room = got < want && (w.pipe.is_none() || w.unread.len() < r.prefetch as usize);
            let left = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            if left.is_some_and(|l| l.is_zero()) && room {
                flush_quietly(&mut out)?;
                return timed_out(got);
            }
            if consumer.is_none() && room && pull.is_none() {
                let max = (want - got).min(256) as u32;
                let wait = left.unwrap_or(Duration::from_secs(3600));
                let (c, q, detached) = (client.clone(), r.queue.clone(), !r.ack);
                pull = Some(Box::pin(async move {
                    c.fetch_with(&q, max, wait, detached).await
                }));
            }
            let until = deadline.unwrap_or_else(|| {
                tokio::time::Instant::now() + Duration::from_secs(3600 * 24 * 365)
            });
            let batch = tokio::select! {
                _ = tokio::time::sleep_until(until), if room && deadline.is_some() && pull.is_none() => {
                    flush_quietly(&mut out)?;
                    return timed_out(got);
                }
                _ = poll.tick(), if waiting_reader => None,
                _ = reader_check.tick(), if !waiting_reader && w.pipe.is_some() => {
                    if w.pipe.as_ref().is_some_and(Pipe::reader_gone) {
                        give_back(&client, &r, &mut w, consumer.take()).await;
                        return flush_quietly(&mut out);
                    }
                    None
                }
                res = async { acking.front_mut().expect("guarded: acking").1.wait().await }, if !acking.is_empty() => {
                    let Some((keys, _)) = acking.pop_front() else { continue };
                    if let Err(e) = w.ack_answered(keys, res) {
                        client = reconnect.again(opts, &client, &e, &said(got)).await?;
                        continue 'connection;
                    }
                    None
                }
                _ = extend.tick(), if waiting_reader && r.ack => {
                    let keys: Vec<MsgKey> = w.unread.iter().map(|(k, _)| k.clone()).collect();
                    if let Err(e) = client.extend(&r.queue, keys).await {
                        if e.is_connection_lost() {
                            client = reconnect.again(opts, &client, &e, &said(got)).await?;
                            continue 'connection;
                        }
                    }
                    None
                }
                msgs = async {
                    let c = consumer.as_mut().expect("guarded: consuming");
                    let mut msgs = c.next().await?;
                    // Take what else has come in one go: one write, one ack.
                    while msgs.len() < DRAIN {
                        match c.try_next() {
                            Some(more) => msgs.extend(more?),
                            None => break,
                        }
                    }
                    Ok(msgs)
                }, if room && consumer.is_some() => Some(msgs),
                msgs = async { pull.as_mut().expect("guarded: pulling").await }, if pull.is_some() => {
                    pull = None;
                    Some(msgs)
                }
                else => None,
            };
            if let Some(msgs) = batch {
                let msgs = match msgs {
                    Ok(m) => m,
                    Err(e) if e.is_connection_lost() => {
                        client = reconnect.again(opts, &client, &e, &said(got)).await?;
                        continue 'connection;
                    }
                    Err(e) => return Err(fail(e, got)),
                };
                let mut fresh = Vec::with_capacity(msgs.len());
                for m in msgs {
                    let k = key(&m);
                    if w.seen.contains(&k) {
                        // Delivered again after a reconnect: written already. Still in the
                        // pipe, it is acked once taken; taken already, it is acked now.
                        if !w.unread.iter().any(|(u, _)| *u == k) && !w.to_ack.contains(&k) {
                            w.to_ack.push(k);
                        }
                        continue;
                    }
                    fresh.push(m);
                }
                fresh.truncate((want - got).min(fresh.len() as u64) as usize);
                let mut cw = CountingWriter {
                    inner: &mut out,
                    n: w.bytes,
                };
                for m in &fresh {
                    let res = output::write_message(&mut cw, m, &r.format).and_then(|_| cw.flush());
                    match res {
                        Ok(()) => {
                            let k = key(m);
                            if r.ack {
                                w.seen.insert(k.clone());
                                w.unread.push_back((k, cw.n));
                            }
                            got += 1;
                        }
                        // stdout closed: what was not written or not read goes back unopened.
                        Err(e) if is_broken_pipe(&e) => {
                            if r.ack {
                                let rest: Vec<MsgKey> = fresh
                                    .iter()
                                    .map(key)
                                    .filter(|k| !w.seen.contains(k))
                                    .collect();
                                w.unread.extend(rest.into_iter().map(|k| (k, u64::MAX)));
                                give_back(&client, &r, &mut w, consumer.take()).await;
                            }
                            return Ok(());
                        }
                        Err(e) => return Err(Failure::new(1, format!("writing stdout: {e}"))),
                    }
                }
                w.bytes = cw.n;
                if let Some(p) = &w.pipe {
                    for _ in 0..SPIN {
                        if p.unread().is_none_or(|n| n == 0) {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                }
            }
            if !w.taken() {
                // The reader is gone: what it did not read goes back unopened.
                give_back(&client, &r, &mut w, consumer.take()).await;
                return Ok(());
            }
            if !w.to_ack.is_empty() {
                if !r.ack {
                    w.to_ack.clear();
                } else {
                    if acking.len() >= ACKS_IN_FLIGHT {
                        let Some((keys, mut reply)) = acking.pop_front() else {
                            continue;
                        };
                        let res = reply.wait().await;
                        if let Err(e) = w.ack_answered(keys, res) {
                            client = reconnect.again(opts, &client, &e, &said(got)).await?;
                            continue 'connection;
                        }
                    }
                    let keys = std::mem::take(&mut w.to_ack);
                    let (q, ks) = (r.queue.clone(), keys.clone());
                    match client
                        .send(|id| {
                            ClientFrame::Ack(Ack {
                                id,
                                queue: q,
                                msgs: ks,
                            })
                        })
                        .await
                    {
                        Ok(reply) => acking.push_back((keys, reply)),
                        Err(e) => {
                            w.to_ack.extend(keys);
                            client = reconnect.again(opts, &client, &e, &said(got)).await?;
                            continue 'connection;
                        }
                    }
                }
            }
        }
    }
}

/// Give back, unopened, what was written to a reader that went away before reading it: it
/// is delivered again and the attempt does not count. What the reader took is acked first.
/// A consumer is cancelled (else the broker would push it more at once); a pull's
/// deliveries are released one by one.
async fn give_back(
    client: &Client,
    r: &Receive,
    w: &mut Written,
    consumer: Option<momctl::client::ConsumerStream>,
) {
    if !r.ack {
        return;
    }
    // What the reader took out of the pipe before it closed it was read: acked, not given
    // back (the pipe still says how much is left in it).
    w.taken();
    let keys: Vec<MsgKey> = w.unread.drain(..).map(|(k, _)| k).collect();
    // Best effort throughout: if this fails, closing the connection gives them back anyway
    // (as failed deliveries).
    if !w.to_ack.is_empty() {
        let _ = client.ack(&r.queue, std::mem::take(&mut w.to_ack)).await;
    }
    match consumer {
        Some(c) => {
            let _ = c.cancel(true).await;
        }
        None if !keys.is_empty() => {
            let _ = client.release(&r.queue, keys).await;
        }
        None => {}
    }
}

/// Ack what the reader took; a lost connection keeps them for after the reconnect.
async fn settle(client: &Client, r: &Receive, w: &mut Written) -> Result<(), ClientError> {
    if w.to_ack.is_empty() || !r.ack {
        w.to_ack.clear();
        return Ok(());
    }
    let keys = w.to_ack.clone();
    match client.ack(&r.queue, keys).await {
        Ok(()) => {
            for k in w.to_ack.drain(..) {
                w.seen.remove(&k);
            }
            Ok(())
        }
        Err(e) if e.is_connection_lost() => Err(e),
        Err(e) => {
            w.to_ack.clear();
            eprintln!("momctl: cannot ack: {e}");
            Ok(())
        }
    }
}

fn said(got: u64) -> String {
    format!("{} received", super::count(got, "message", "messages"))
}

fn fail(e: ClientError, got: u64) -> Failure {
    if got == 0 {
        return e.into();
    }
    Failure::new(e.exit_code(), format!("{e} (after {got} messages)"))
}

fn flush_quietly(out: &mut impl Write) -> CmdResult {
    match out.flush() {
        Ok(()) => Ok(()),
        Err(e) if is_broken_pipe(&e) => Ok(()),
        Err(e) => Err(Failure::new(1, format!("writing stdout: {e}"))),
    }
}
