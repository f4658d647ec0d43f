//! mom through its own client library, the way `momctl bench` drives it: one connection
//! per publisher, watcher or consumer; one message per publish request; watches for
//! subscribers; a queue with competing consumers that ack; request/reply over a reply-to
//! topic answered by a responder group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use mom_proto::{Headers, NoticeKind, PubMsg, QueueCreate, StartAt, Watch};
use momctl::client::{Client, ConnectOptions, WatchEvent, WatchStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::load::{
    histogram, join, merge, pipelined, record, share, stamped, ClientRun, Load, Outcome, Receiving,
    Workload, IDLE,
};

/// The topic W9 fills and restarts with.
const W9_TOPIC: &str = "cmp.w9";
/// Header names of momctl's request/reply (momctl request, momctl bench request).
const REPLY_TO: &str = "reply-to";
const CORRELATION_ID: &str = "correlation-id";

pub async fn connect(addr: &str, name: &str) -> Result<Client> {
    Client::connect(&ConnectOptions::new(addr, name))
        .await
        .with_context(|| format!("connecting to momd at {addr}"))
}

async fn clients(addr: &str, n: u32, role: &str) -> Result<Vec<Client>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(connect(addr, &format!("mom-compare {role} {i}")).await?);
    }
    Ok(out)
}

pub async fn run(l: &Load) -> Result<Outcome> {
    let topic = format!("cmp.{}", l.tag);
    match l.workload {
        Workload::W1 | Workload::W2 | Workload::W6 => {
            let start = Instant::now();
            let runs = publishers(l, &topic).await?;
            Ok(merge(runs, start.elapsed(), "send → ack"))
        }
        Workload::W3 | Workload::W4 => {
            let mut tasks = JoinSet::new();
            for c in clients(&l.addr, l.subs, "watcher").await? {
                let w = c.watch(vec![topic.clone()], StartAt::New, 0).await?;
                tasks.spawn(watcher(c, w, l.msgs));
            }
            let start = Instant::now();
            publishers(l, &topic).await?;
            let runs = join(tasks).await?;
            Ok(merge(runs, start.elapsed(), "publish → delivery"))
        }
        Workload::W5 => queue(l, &topic).await,
        Workload::W7 => request(l, &topic).await,
    }
}

async fn publishers(l: &Load, topic: &str) -> Result<Vec<ClientRun>> {
    let mut tasks = JoinSet::new();
    for (i, c) in (0u32..).zip(clients(&l.addr, l.pubs, "publisher").await?) {
        let n = share(l.msgs, l.pubs, i);
        let (topic, size, window, producer) = (topic.to_string(), l.size, l.window, l.producer);
        tasks.spawn(async move {
            if producer {
                return coalescing(c, topic, n, size, window).await;
            }
            // What `momctl bench pub` does: one message per publish request, `window` in
            // flight.
            let topic: Arc<str> = topic.into();
            pipelined(n, size, window, |payload| {
                let (c, topic) = (c.clone(), topic.clone());
                let msg = PubMsg {
                    payload,
                    headers: Headers::new(),
                    msg_id: None,
                };
                async move {
                    c.publish(&topic, vec![msg]).await?;
                    Ok(())
                }
            })
            .await
        });
    }
    join(tasks).await
}

/// `tasks` tasks sharing one connection's batching producer, each publishing one message
/// at a time (`momctl bench pub --coalesce`).
async fn coalescing(
    c: Client,
    topic: String,
    n: u64,
    size: usize,
    tasks: usize,
) -> Result<ClientRun> {
    let producer = c.producer();
    let next = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (producer, next, topic) = (producer.clone(), next.clone(), topic.clone());
        set.spawn(async move {
            let mut latency = histogram();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let msg = PubMsg {
                    payload: stamped(size),
                    headers: Headers::new(),
                    msg_id: None,
                };
                let t0 = Instant::now();
                producer.publish(&topic, msg).await?;
                record(&mut latency, t0.elapsed().as_micros() as u64);
            }
            Ok(ClientRun { msgs: 0, latency })
        });
    }
    let out = merge(join(set).await?, Duration::ZERO, "");
    Ok(ClientRun {
        msgs: n,
        latency: out.latency,
    })
}

async fn watcher(_c: Client, mut w: WatchStream, want: u64) -> Result<ClientRun> {
    let mut r = Receiving::new(want);
    while !r.done() {
        let ev = tokio::time::timeout(IDLE, w.next())
            .await
            .map_err(|_| r.stalled())??;
        match ev {
            WatchEvent::Messages(msgs) => {
                for m in &msgs {
                    if !r.done() {
                        r.take(&m.payload);
                    }
                }
            }
            WatchEvent::Notice(n) if n.kind == NoticeKind::SlowConsumer => {
                bail!(
                    "a watcher fell behind: the broker skipped {} for it",
                    n.skipped
                )
            }
            WatchEvent::Notice(_) => {}
        }
    }
    Ok(r.finish())
}

/// A durable queue bound to the topic, `subs` consumers with a credit of `window` that ack
/// each delivery as it comes (the acks pipelined, as `momctl bench queue` does).
async fn queue(l: &Load, topic: &str) -> Result<Outcome> {
    let admin = connect(&l.addr, "mom-compare admin").await?;
    let queue = l.tag.clone();
    admin
        .queue_create(QueueCreate {
            queue: queue.clone(),
            bindings: vec![topic.to_string()],
            ..QueueCreate::default()
        })
        .await?;
    let total = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for c in clients(&l.addr, l.subs, "consumer").await? {
        let (queue, total, done) = (queue.clone(), total.clone(), done.clone());
        let (credit, want) = (l.window as u32, l.msgs);
        tasks.spawn(async move {
            let mut stream = c.consume(&queue, credit).await?;
            let mut r = Receiving::new(u64::MAX);
            let mut acks = FuturesUnordered::new();
            loop {
                let msgs = tokio::select! {
                    m = tokio::time::timeout(IDLE, stream.next()) => match m {
                        Ok(m) => m?,
                        Err(_) => bail!("consumers got {} of {want}, then nothing for {IDLE:?}",
                                        total.load(Ordering::Relaxed)),
                    },
                    Some(a) = acks.next(), if !acks.is_empty() => { a?; continue; }
                    _ = done.cancelled() => break,
                };
                for m in &msgs {
                    r.take(&m.payload);
                }
                let (c, queue, keys) = (c.clone(), queue.clone(), momctl::client::keys(&msgs));
                acks.push(async move { c.ack(&queue, keys).await });
                let n = msgs.len() as u64;
                if total.fetch_add(n, Ordering::Relaxed) + n >= want {
                    done.cancel();
                    break;
                }
            }
            while let Some(a) = acks.next().await {
                a?;
            }
            let _ = stream.cancel(true).await;
            Ok(r.finish())
        });
    }
    let start = Instant::now();
    let result = async {
        publishers(l, topic).await?;
        join(tasks).await
    }
    .await;
    let elapsed = start.elapsed();
    let removed = admin.queue_delete(&queue, true).await;
    let runs = result?;
    removed?;
    Ok(merge(runs, elapsed, "publish → delivery (consumer acks)"))
}

/// What `momctl bench request` does: a responder in a watch group echoes each request to
/// its reply-to topic; the requester watches its inbox and sends one request at a time.
async fn request(l: &Load, topic: &str) -> Result<Outcome> {
    let responder = connect(&l.addr, "mom-compare responder").await?;
    let mut w = responder
        .watch_with(Watch {
            patterns: vec![topic.to_string()],
            group: Some("mom-compare".into()),
            ..Watch::default()
        })
        .await?;
    let done = CancellationToken::new();
    let stop = done.clone();
    let answering = tokio::spawn(async move {
        let mut replies = FuturesUnordered::new();
        loop {
            tokio::select! {
                ev = w.next() => {
                    let WatchEvent::Messages(msgs) = ev? else { continue };
                    for m in msgs {
                        let (Some(to), Some(corr)) =
                            (m.headers.get(REPLY_TO), m.headers.get(CORRELATION_ID)) else { continue };
                        let headers: Headers = [(CORRELATION_ID.to_string(), corr.clone())].into();
                        let (c, to) = (responder.clone(), to.clone());
                        let reply = PubMsg { payload: m.payload, headers, msg_id: None };
                        replies.push(async move { c.publish(&to, vec![reply]).await });
                    }
                }
                Some(r) = replies.next(), if !replies.is_empty() => { r?; }
                _ = stop.cancelled() => return Ok::<_, anyhow::Error>(()),
            }
        }
    });
    let c = connect(&l.addr, "mom-compare requester").await?;
    let inbox = format!("$inbox.{}.{}", c.welcome().client_id, l.tag);
    let mut replies = c.watch(vec![inbox.clone()], StartAt::New, 0).await?;
    let mut latency = histogram();
    let mut waiting: HashMap<String, Instant> = HashMap::new();
    let mut got = 0u64;
    let start = Instant::now();
    for i in 0..l.msgs {
        let corr = i.to_string();
        let headers: Headers = [
            (REPLY_TO.to_string(), inbox.clone()),
            (CORRELATION_ID.to_string(), corr.clone()),
        ]
        .into();
        let msg = PubMsg {
            payload: stamped(l.size),
            headers,
            msg_id: None,
        };
        waiting.insert(corr, Instant::now());
        let publish = c.publish(topic, vec![msg]);
        tokio::pin!(publish);
        let mut published = false;
        while got <= i {
            tokio::select! {
                ev = tokio::time::timeout(IDLE, replies.next()) => {
                    let ev = ev.map_err(|_| anyhow!("{got} replies, then none for {IDLE:?}"))??;
                    let WatchEvent::Messages(msgs) = ev else { continue };
                    for m in msgs {
                        if let Some(t0) = m.headers.get(CORRELATION_ID).and_then(|c| waiting.remove(c)) {
                            record(&mut latency, t0.elapsed().as_micros() as u64);
                            got += 1;
                        }
                    }
                }
                ok = &mut publish, if !published => {
                    let ok = ok?;
                    published = true;
                    if ok.watchers == 0 && ok.queues == 0 {
                        bail!("no responder watches {topic}");
                    }
                }
            }
        }
    }
    let elapsed = start.elapsed();
    done.cancel();
    answering.await??;
    Ok(Outcome {
        msgs: got,
        elapsed,
        latency,
        latency_of: "request → reply",
    })
}

/// Store `msgs` messages in W9's topic, in batches of 1,000 with 16 batches in flight.
pub async fn fill(addr: &str, msgs: u64, size: usize) -> Result<()> {
    let c = connect(addr, "mom-compare fill").await?;
    let mut p = c.publisher(W9_TOPIC, 16);
    let mut sent = 0u64;
    while sent < msgs {
        let k = (msgs - sent).min(1000);
        let batch = (0..k)
            .map(|_| PubMsg {
                payload: stamped(size),
                headers: Headers::new(),
                msg_id: None,
            })
            .collect();
        p.send(batch).await?;
        sent += k;
    }
    while p.next_ack().await?.is_some() {}
    Ok(())
}

/// Wait until momd answers and W9's topic holds `msgs`.
pub async fn ready(addr: &str, msgs: u64) -> Result<()> {
    loop {
        if let Ok(c) = Client::connect(&ConnectOptions::new(addr, "mom-compare ready")).await {
            let info = c.topic_info(W9_TOPIC).await?;
            if info.messages != msgs {
                bail!("{W9_TOPIC} holds {} messages, not {msgs}", info.messages);
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
