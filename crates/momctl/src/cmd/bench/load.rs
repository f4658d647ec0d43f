//! The loads of `momctl bench`: publishers, watchers, queue consumers, responders and
//! requesters, each on a connection of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use mom_proto::{Headers, NoticeKind, PubMsg, QueueCreate, StartAt, Watch};
use momctl::client::{Client, ClientError, ConnectOptions, WatchEvent};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::report::Report;
use super::{histogram, now_ns, record, share, since_stamp, stamped, ClientRun};
use crate::cli::BenchArgs;
use crate::cmd::request::{CORRELATION_ID, REPLY_TO};
use crate::cmd::Failure;

/// A receiver that gets nothing for this long gives up (exit 3).
const IDLE: Duration = Duration::from_secs(30);

/// A progress bar on stderr, only when stderr is a terminal.
#[derive(Clone)]
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(total: u64) -> Progress {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Progress(None);
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} msgs {per_sec} eta {eta}")
        {
            bar.set_style(style);
        }
        Progress(Some(bar))
    }

    fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    fn done(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

async fn connect(opts: &ConnectOptions, n: u32, role: &str) -> Result<Vec<Client>, Failure> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut o = opts.clone();
        o.name = format!("momctl bench {role} {i}");
        out.push(Client::connect(&o).await?);
    }
    Ok(out)
}

/// Wait for every task; the first failure is the run's.
async fn join<T: 'static>(mut tasks: JoinSet<Result<T, Failure>>) -> Result<Vec<T>, Failure> {
    let mut out = Vec::new();
    let mut failed = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(f)) => {
                failed.get_or_insert(f);
                tasks.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failed.get_or_insert(Failure::new(1, format!("a bench task failed: {e}")));
                tasks.abort_all();
            }
        }
    }
    match failed {
        Some(f) => Err(f),
        None => Ok(out),
    }
}

fn setup(a: &BenchArgs, pubs: &str, subs: Option<&str>, window: u32) -> String {
    let mut s = format!(
        "{} msgs × {} B, {} {pubs}{}",
        a.msgs,
        a.size,
        a.pubs,
        if a.pubs == 1 { "" } else { "s" }
    );
    if let Some(subs) = subs {
        s += &format!(", {} {subs}{}", a.subs, if a.subs == 1 { "" } else { "s" });
    }
    s += &format!(", window {window}, batch {}", a.batch);
    if let Some(n) = a.topics {
        s += &format!(", over {n} topics");
    }
    s
}

/// Publish `a.msgs` over `a.pubs` connections; returns each publisher's run (latency:
/// send → ack of each request).
async fn publishers(
    opts: &ConnectOptions,
    a: &BenchArgs,
    window: u32,
    progress: &Progress,
) -> Result<Vec<ClientRun>, Failure> {
    let clients = connect(opts, a.pubs, "pub").await?;
    let mut tasks = JoinSet::new();
    let mut first = 0u64;
    for (i, c) in (0u32..).zip(clients) {
        let n = share(a.msgs, a.pubs, i);
        let (topic, size, batch) = (Arc::<str>::from(a.topic.as_str()), a.size, a.batch);
        let progress = progress.clone();
        let coalesce = a.coalesce;
        // With --topics, this publisher's requests go to topics from its first message on.
        let spread = a.topics.filter(|n| *n > 0).map(|n| (n, first));
        first += n;
        tasks.spawn(async move {
            if coalesce {
                return coalescing_publisher(c, topic, n, size, window, progress).await;
            }
            publisher(c, topic, spread, n, size, batch, window as usize, progress)
                .await
                .map_err(Failure::from)
        });
    }
    join(tasks).await
}

#[allow(clippy::too_many_arguments)]
async fn publisher(
    c: Client,
    topic: Arc<str>,
    spread: Option<(u64, u64)>,
    n: u64,
    size: usize,
    batch: u32,
    window: usize,
    progress: Progress,
) -> Result<ClientRun, ClientError> {
    let filler = vec![b'x'; size];
    let mut latency = histogram();
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0u64;
    let start = Instant::now();
    while sent < n || !inflight.is_empty() {
        while sent < n && inflight.len() < window {
            let k = u64::from(batch).min(n - sent);
            let msgs: Vec<PubMsg> = (0..k)
                .map(|_| PubMsg {
                    payload: stamped(size, &filler),
                    headers: Headers::new(),
                    msg_id: None,
                    key: None,
                })
                .collect();
            let c = c.clone();
            let topic = match spread {
                Some((topics, first)) => Arc::from(format!("{topic}.{}", (first + sent) % topics)),
                None => topic.clone(),
            };
            inflight.push(async move {
                let t0 = Instant::now();
                c.publish(&topic, msgs).await.map(|_| (t0.elapsed(), k))
            });
            sent += k;
        }
        if let Some(r) = inflight.next().await {
            let (took, k) = r?;
            record(&mut latency, took.as_micros() as u64);
            progress.inc(k);
        }
    }
    Ok(ClientRun {
        msgs: n,
        elapsed: start.elapsed(),
        latency,
    })
}

/// `tasks` tasks on one connection, each publishing one message at a time through the
/// client's batching producer; latency: each call to its ack.
async fn coalescing_publisher(
    c: Client,
    topic: Arc<str>,
    n: u64,
    size: usize,
    tasks: u32,
    progress: Progress,
) -> Result<ClientRun, Failure> {
    let producer = c.producer();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (producer, next, topic, progress) = (
            producer.clone(),
            next.clone(),
            topic.clone(),
            progress.clone(),
        );
        set.spawn(async move {
            let filler = vec![b'x'; size];
            let mut latency = histogram();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let msg = PubMsg {
                    payload: stamped(size, &filler),
                    headers: Headers::new(),
                    msg_id: None,
                    key: None,
                };
                let t0 = Instant::now();
                producer.publish(&topic, msg).await?;
                record(&mut latency, t0.elapsed().as_micros() as u64);
                progress.inc(1);
            }
            Ok::<_, Failure>(latency)
        });
    }
    let mut latency = histogram();
    for h in join(set).await? {
        latency
            .add(&h)
            .map_err(|e| Failure::new(1, e.to_string()))?;
    }
    Ok(ClientRun {
        msgs: n,
        elapsed: start.elapsed(),
        latency,
    })
}

pub async fn publish(opts: &ConnectOptions, a: &BenchArgs) -> Result<Report, Failure> {
    let window = a.window.unwrap_or(256);
    let progress = Progress::new(a.msgs);
    let start = Instant::now();
    let clients = publishers(opts, a, window, &progress).await?;
    progress.done();
    Ok(Report {
        kind: "pub",
        topic: a.topic.clone(),
        setup: if a.coalesce {
            setup(a, "publisher", None, window) + ", one message per call, batched by the producer"
        } else {
            setup(a, "publisher", None, window)
        },
        latency_of: "send → ack",
        size: a.size,
        clients,
        elapsed: start.elapsed(),
        publish: None,
    })
}

/// Read `want` messages from a watch; latency: publish → delivery. Counts from the first
/// message, so a watcher started before its publisher measures the flow, not the wait.
async fn watcher(
    mut w: momctl::client::WatchStream,
    want: u64,
    progress: Progress,
) -> Result<ClientRun, Failure> {
    let mut latency = histogram();
    let mut got = 0u64;
    let mut first: Option<Instant> = None;
    while got < want {
        let ev = match tokio::time::timeout(IDLE, w.next()).await {
            Ok(ev) => ev?,
            Err(_) => {
                return Err(Failure::new(
                    3,
                    format!("got {got} of {want} messages, then nothing for {IDLE:?}"),
                ))
            }
        };
        match ev {
            WatchEvent::Messages(msgs) => {
                first.get_or_insert_with(Instant::now);
                let take = msgs
                    .len()
                    .min(usize::try_from(want - got).unwrap_or(usize::MAX));
                for m in &msgs[..take] {
                    record(&mut latency, since_stamp(&m.payload));
                }
                got += take as u64;
                progress.inc(take as u64);
            }
            WatchEvent::Notice(n) if n.kind == NoticeKind::SlowConsumer => {
                return Err(Failure::new(
                    1,
                    format!(
                        "this watcher fell behind: the broker skipped {} messages for it \
                         ({got} of {want} received)",
                        n.skipped
                    ),
                ));
            }
            WatchEvent::Notice(_) => {}
        }
    }
    Ok(ClientRun {
        msgs: got,
        elapsed: first.map_or(Duration::ZERO, |t| t.elapsed()),
        latency,
    })
}

async fn watchers(
    opts: &ConnectOptions,
    a: &BenchArgs,
    from: StartAt,
    progress: &Progress,
) -> Result<JoinSet<Result<ClientRun, Failure>>, Failure> {
    let mut tasks = JoinSet::new();
    for c in connect(opts, a.subs, "sub").await? {
        let w = c.watch(vec![a.topic.clone()], from, 0).await?;
        tasks.spawn(watcher(w, a.msgs, progress.clone()));
    }
    Ok(tasks)
}

pub async fn subscribe(opts: &ConnectOptions, a: &BenchArgs) -> Result<Report, Failure> {
    let from = if a.from_start {
        StartAt::All
    } else {
        StartAt::New
    };
    let progress = Progress::new(a.msgs * u64::from(a.subs));
    let start = Instant::now();
    let clients = join(watchers(opts, a, from, &progress).await?).await?;
    progress.done();
    // From the first message any watcher got.
    let elapsed = clients
        .iter()
        .map(|c| c.elapsed)
        .max()
        .unwrap_or_else(|| start.elapsed());
    Ok(Report {
        kind: "sub",
        topic: a.topic.clone(),
        setup: format!(
            "{} msgs each, {} watcher{}, {}",
            a.msgs,
            a.subs,
            if a.subs == 1 { "" } else { "s" },
            if a.from_start {
                "from the first stored"
            } else {
                "new messages"
            }
        ),
        latency_of: if a.from_start {
            "publish → delivery, time stored included"
        } else {
            "publish → delivery"
        },
        size: a.size,
        clients,
        elapsed,
        publish: None,
    })
}

pub async fn pubsub(opts: &ConnectOptions, a: &BenchArgs) -> Result<Report, Failure> {
    let window = a.window.unwrap_or(256);
    let progress = Progress::new(a.msgs * u64::from(a.subs));
    let receivers = watchers(opts, a, StartAt::New, &progress).await?;
    let start = Instant::now();
    let sent = publishers(opts, a, window, &Progress(None)).await?;
    let published = start.elapsed();
    let clients = join(receivers).await?;
    progress.done();
    Ok(Report {
        kind: "pubsub",
        topic: a.topic.clone(),
        setup: setup(a, "publisher", Some("watcher"), window),
        latency_of: "publish → delivery",
        size: a.size,
        clients,
        elapsed: start.elapsed(),
        publish: Some((sent.iter().map(|c| c.msgs).sum(), published)),
    })
}

/// A consumer that acks what it gets until the consumers together got `want`.
async fn consumer(
    c: Client,
    queue: String,
    credit: u32,
    total: Arc<AtomicU64>,
    want: u64,
    done: CancellationToken,
    progress: Progress,
) -> Result<ClientRun, Failure> {
    let mut stream = c.consume(&queue, credit).await?;
    let mut latency = histogram();
    let mut got = 0u64;
    // Acks go out as deliveries come, without waiting for the one before (each is
    // answered once durable); the credit bounds what is unacked.
    let mut acks = FuturesUnordered::new();
    let start = Instant::now();
    loop {
        let msgs = tokio::select! {
            m = tokio::time::timeout(IDLE, stream.next()) => match m {
                Ok(m) => m?,
                Err(_) => return Err(Failure::new(
                    3,
                    format!("the consumers got {} of {want} messages, then nothing for {IDLE:?}",
                            total.load(Ordering::Relaxed)),
                )),
            },
            Some(r) = acks.next(), if !acks.is_empty() => {
                r?;
                continue;
            }
            _ = done.cancelled() => break,
        };
        for m in &msgs {
            record(&mut latency, since_stamp(&m.payload));
        }
        let (c, queue, keys) = (c.clone(), queue.clone(), momctl::client::keys(&msgs));
        acks.push(async move { c.ack(&queue, keys).await });
        got += msgs.len() as u64;
        progress.inc(msgs.len() as u64);
        if total.fetch_add(msgs.len() as u64, Ordering::Relaxed) + msgs.len() as u64 >= want {
            done.cancel();
            break;
        }
    }
    while let Some(r) = acks.next().await {
        r?;
    }
    let _ = stream.cancel(true).await;
    Ok(ClientRun {
        msgs: got,
        elapsed: start.elapsed(),
        latency,
    })
}

pub async fn queue(opts: &ConnectOptions, a: &BenchArgs) -> Result<Report, Failure> {
    let window = a.window.unwrap_or(256);
    let admin = Client::connect(opts).await?;
    let queue = format!("bench-{}-{:x}", admin.welcome().client_id, now_ns());
    admin
        .queue_create(QueueCreate {
            queue: queue.clone(),
            bindings: vec![a.topic.clone()],
            ..QueueCreate::default()
        })
        .await?;
    let progress = Progress::new(a.msgs);
    let total = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for c in connect(opts, a.subs, "consumer").await? {
        tasks.spawn(consumer(
            c,
            queue.clone(),
            window.min(4096),
            total.clone(),
            a.msgs,
            done.clone(),
            progress.clone(),
        ));
    }
    let start = Instant::now();
    let run = async {
        let sent = publishers(opts, a, window, &Progress(None)).await?;
        let published = start.elapsed();
        let clients = join(tasks).await?;
        Ok::<_, Failure>((sent, published, clients))
    }
    .await;
    let removed = admin.queue_delete(&queue, true).await;
    let (sent, published, clients) = run?;
    removed?;
    progress.done();
    Ok(Report {
        kind: "queue",
        topic: a.topic.clone(),
        setup: setup(a, "publisher", Some("consumer"), window),
        latency_of: "publish → delivery",
        size: a.size,
        clients,
        elapsed: start.elapsed(),
        publish: Some((sent.iter().map(|c| c.msgs).sum(), published)),
    })
}

/// Answer every request the watch `w` gets (shared with the other responders) with its
/// own payload, until `done`.
async fn responder(
    c: Client,
    mut w: momctl::client::WatchStream,
    done: CancellationToken,
) -> Result<(), Failure> {
    let mut replies = FuturesUnordered::new();
    loop {
        tokio::select! {
            ev = w.next() => {
                let WatchEvent::Messages(msgs) = ev? else { continue };
                for m in msgs {
                    let (Some(to), Some(corr)) =
                        (m.headers.get(REPLY_TO), m.headers.get(CORRELATION_ID)) else {
                        continue;
                    };
                    let headers: Headers = [(CORRELATION_ID.to_string(), corr.clone())].into();
                    let (c, to) = (c.clone(), to.clone());
                    let reply = PubMsg { payload: m.payload, headers, msg_id: None, key: None };
                    replies.push(async move { c.publish(&to, vec![reply]).await });
                }
            }
            Some(r) = replies.next(), if !replies.is_empty() => { r?; }
            _ = done.cancelled() => return Ok(()),
        }
    }
}

/// Send `n` requests, `window` at a time, each awaiting its reply.
async fn requester(
    c: Client,
    topic: String,
    n: u64,
    size: usize,
    window: usize,
    progress: Progress,
) -> Result<ClientRun, Failure> {
    let me = c.welcome().client_id;
    let inbox = format!("$inbox.{me}.bench{:x}", now_ns());
    let mut replies = c.watch(vec![inbox.clone()], StartAt::New, 0).await?;
    let filler = vec![b'x'; size];
    let mut latency = histogram();
    let mut waiting: HashMap<String, Instant> = HashMap::new();
    let mut publishes = FuturesUnordered::new();
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    while got < n {
        while sent < n && waiting.len() < window {
            let corr = sent.to_string();
            let headers: Headers = [
                (REPLY_TO.to_string(), inbox.clone()),
                (CORRELATION_ID.to_string(), corr.clone()),
            ]
            .into();
            let msg = PubMsg {
                payload: stamped(size, &filler),
                headers,
                msg_id: None,
                key: None,
            };
            waiting.insert(corr, Instant::now());
            let (c, topic) = (c.clone(), topic.clone());
            publishes.push(async move { c.publish(&topic, vec![msg]).await });
            sent += 1;
        }
        tokio::select! {
            ev = tokio::time::timeout(IDLE, replies.next()) => {
                let Ok(ev) = ev else {
                    return Err(Failure::new(3, format!(
                        "{got} of {n} replies, then none for {IDLE:?} (is anything answering {topic}?)"
                    )));
                };
                let WatchEvent::Messages(msgs) = ev? else { continue };
                for m in msgs {
                    let t0 = m.headers.get(CORRELATION_ID).and_then(|c| waiting.remove(c));
                    if let Some(t0) = t0 {
                        record(&mut latency, t0.elapsed().as_micros() as u64);
                        got += 1;
                        progress.inc(1);
                    }
                }
            }
            Some(r) = publishes.next(), if !publishes.is_empty() => {
                let ok = r?;
                if ok.watchers == 0 && ok.queues == 0 {
                    return Err(Failure::new(6, format!("no responders: nothing watches {topic}")));
                }
            }
        }
    }
    Ok(ClientRun {
        msgs: got,
        elapsed: start.elapsed(),
        latency,
    })
}

pub async fn request(opts: &ConnectOptions, a: &BenchArgs) -> Result<Report, Failure> {
    let window = a.window.unwrap_or(1);
    let done = CancellationToken::new();
    let mut responders = JoinSet::new();
    for c in connect(opts, a.subs, "responder").await? {
        // In place (watch_ok) before the first request goes out.
        let w = c
            .watch_with(Watch {
                patterns: vec![a.topic.clone()],
                group: Some("momctl-bench".into()),
                ..Watch::default()
            })
            .await?;
        responders.spawn(responder(c, w, done.clone()));
    }
    let progress = Progress::new(a.msgs);
    let mut tasks = JoinSet::new();
    for (i, c) in (0u32..).zip(connect(opts, a.pubs, "requester").await?) {
        let n = share(a.msgs, a.pubs, i);
        tasks.spawn(requester(
            c,
            a.topic.clone(),
            n,
            a.size,
            window as usize,
            progress.clone(),
        ));
    }
    let start = Instant::now();
    let clients = join(tasks).await;
    let elapsed = start.elapsed();
    done.cancel();
    let answered = join(responders).await;
    progress.done();
    let clients = clients?;
    answered?;
    Ok(Report {
        kind: "request",
        topic: a.topic.clone(),
        setup: setup(a, "requester", Some("responder"), window),
        latency_of: "request → reply",
        size: a.size,
        clients,
        elapsed,
        publish: None,
    })
}
