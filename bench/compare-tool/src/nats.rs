//! NATS: JetStream on a file-storage stream for publishes (each awaits its PubAck), an
//! ordered consumer per subscriber, a durable pull consumer shared by the competing
//! consumers (explicit ack), and core NATS request/reply.
//!
//! A PubAck means the message is in the stream's file, written to the OS but not fsynced
//! (nats-server fsyncs every `sync_interval`, 2 minutes by default).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use tokio::task::JoinSet;

use crate::load::{
    histogram, join, merge, pipelined, record, share, stamped, ClientRun, Load, Outcome, Receiving,
    Workload, IDLE,
};

const W9_STREAM: &str = "CMPW9";
const W9_SUBJECT: &str = "cmp.w9";

async fn connect(addr: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connect(addr)
        .await
        .with_context(|| format!("connecting to nats-server at {addr}"))
}

/// A file-storage stream of one subject; refuses to go on with any other storage.
async fn file_stream(js: &jetstream::Context, name: &str, subject: &str) -> Result<stream::Stream> {
    let mut s = js
        .get_or_create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("creating stream {name}: {e}"))?;
    let info = s.info().await.map_err(|e| anyhow!("stream info: {e}"))?;
    if info.config.storage != stream::StorageType::File {
        bail!("stream {name} is not on file storage");
    }
    Ok(s)
}

pub async fn run(l: &Load) -> Result<Outcome> {
    let subject = format!("cmp.{}", l.tag);
    let name = l.tag.to_uppercase();
    let admin = jetstream::new(connect(&l.addr).await?);
    if l.workload != Workload::W7 {
        file_stream(&admin, &name, &subject).await?;
    }
    let out = match l.workload {
        Workload::W1 | Workload::W2 | Workload::W6 => {
            let start = Instant::now();
            let runs = publishers(l, &subject).await?;
            Ok(merge(runs, start.elapsed(), "send → PubAck"))
        }
        Workload::W3 | Workload::W4 => {
            let mut tasks = JoinSet::new();
            for _ in 0..l.subs {
                let js = jetstream::new(connect(&l.addr).await?);
                let s = js.get_stream(&name).await.map_err(|e| anyhow!("{e}"))?;
                let c = s
                    .create_consumer(consumer::pull::OrderedConfig {
                        deliver_policy: consumer::DeliverPolicy::New,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| anyhow!("ordered consumer: {e}"))?;
                let mut msgs = c.messages().await.map_err(|e| anyhow!("{e}"))?;
                let want = l.msgs;
                tasks.spawn(async move {
                    let _js = js;
                    let mut r = Receiving::new(want);
                    while !r.done() {
                        let m = tokio::time::timeout(IDLE, msgs.next())
                            .await
                            .map_err(|_| r.stalled())?
                            .ok_or_else(|| anyhow!("the ordered consumer ended"))?
                            .map_err(|e| anyhow!("{e}"))?;
                        r.take(&m.payload);
                    }
                    Ok(r.finish())
                });
            }
            let start = Instant::now();
            publishers(l, &subject).await?;
            let runs = join(tasks).await?;
            Ok(merge(runs, start.elapsed(), "publish → delivery"))
        }
        Workload::W5 => queue(l, &name, &subject).await,
        Workload::W7 => request(l, &subject).await,
    };
    if l.workload != Workload::W7 {
        let _ = admin.delete_stream(&name).await;
    }
    out
}

async fn publishers(l: &Load, subject: &str) -> Result<Vec<ClientRun>> {
    let mut tasks = JoinSet::new();
    for i in 0..l.pubs {
        let js = jetstream::new(connect(&l.addr).await?);
        let n = share(l.msgs, l.pubs, i);
        let (subject, size, window) = (subject.to_string(), l.size, l.window);
        tasks.spawn(async move {
            pipelined(n, size, window, |payload| {
                let (js, subject) = (js.clone(), subject.clone());
                async move {
                    let ack = js.publish(subject, payload).await?;
                    ack.await?;
                    Ok(())
                }
            })
            .await
        });
    }
    join(tasks).await
}

/// One durable pull consumer with explicit acks, shared by `subs` workers (each on its
/// own connection); each message is acked as it is taken.
async fn queue(l: &Load, name: &str, subject: &str) -> Result<Outcome> {
    let js = jetstream::new(connect(&l.addr).await?);
    let s = js.get_stream(name).await.map_err(|e| anyhow!("{e}"))?;
    s.create_consumer(consumer::pull::Config {
        durable_name: Some("work".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        max_ack_pending: 100_000,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow!("durable consumer: {e}"))?;
    let total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = tokio_util::sync::CancellationToken::new();
    let mut tasks = JoinSet::new();
    for _ in 0..l.subs {
        let js = jetstream::new(connect(&l.addr).await?);
        let s = js.get_stream(name).await.map_err(|e| anyhow!("{e}"))?;
        let c: consumer::PullConsumer = s.get_consumer("work").await.map_err(|e| anyhow!("{e}"))?;
        let mut msgs = c
            .stream()
            .max_messages_per_batch(l.window)
            .messages()
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let (total, done, want) = (total.clone(), done.clone(), l.msgs);
        tasks.spawn(async move {
            let _js = js;
            let mut r = Receiving::new(u64::MAX);
            loop {
                let m = tokio::select! {
                    m = tokio::time::timeout(IDLE, msgs.next()) => m
                        .map_err(|_| anyhow!("consumers got {} of {want}, then nothing for {IDLE:?}",
                                             total.load(std::sync::atomic::Ordering::Relaxed)))?
                        .ok_or_else(|| anyhow!("the consumer ended"))?
                        .map_err(|e| anyhow!("{e}"))?,
                    _ = done.cancelled() => break,
                };
                r.take(&m.payload);
                m.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
                if total.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= want {
                    done.cancel();
                    break;
                }
            }
            Ok(r.finish())
        });
    }
    let start = Instant::now();
    publishers(l, subject).await?;
    let runs = join(tasks).await?;
    Ok(merge(
        runs,
        start.elapsed(),
        "publish → delivery (consumer acks)",
    ))
}

/// Core NATS request/reply: a responder echoes each request to its reply subject.
async fn request(l: &Load, subject: &str) -> Result<Outcome> {
    let responder = connect(&l.addr).await?;
    let mut sub = responder.subscribe(subject.to_string()).await?;
    responder.flush().await?;
    let answering = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                responder.publish(reply, m.payload).await?;
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    let c = connect(&l.addr).await?;
    let mut latency = histogram();
    let start = Instant::now();
    for _ in 0..l.msgs {
        let t0 = Instant::now();
        tokio::time::timeout(IDLE, c.request(subject.to_string(), stamped(l.size)))
            .await
            .map_err(|_| anyhow!("no reply within {IDLE:?}"))?
            .map_err(|e| anyhow!("request: {e}"))?;
        record(&mut latency, t0.elapsed().as_micros() as u64);
    }
    let elapsed = start.elapsed();
    answering.abort();
    Ok(Outcome {
        msgs: l.msgs,
        elapsed,
        latency,
        latency_of: "request → reply (core NATS)",
    })
}

/// Store `msgs` messages in W9's stream, 4,096 PubAcks awaited at a time.
pub async fn fill(addr: &str, msgs: u64, size: usize) -> Result<()> {
    let js = jetstream::new(connect(addr).await?);
    file_stream(&js, W9_STREAM, W9_SUBJECT).await?;
    pipelined(msgs, size, 4096, |payload| {
        let js = js.clone();
        async move {
            js.publish(W9_SUBJECT, payload).await?.await?;
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// Wait until nats-server answers and W9's stream holds `msgs` messages.
pub async fn ready(addr: &str, msgs: u64) -> Result<()> {
    loop {
        if let Ok(c) = async_nats::ConnectOptions::new().connect(addr).await {
            let js = jetstream::new(c);
            loop {
                if let Ok(mut s) = js.get_stream(W9_STREAM).await {
                    if let Ok(info) = s.info().await {
                        if info.state.messages == msgs {
                            return Ok(());
                        }
                        bail!(
                            "{W9_STREAM} holds {} messages, not {msgs}",
                            info.state.messages
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
