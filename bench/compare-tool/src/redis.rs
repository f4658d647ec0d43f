//! Redis streams: `XADD` with `appendfsync always` for publishes (each awaiting its reply,
//! many in flight on one multiplexed connection), `XREAD BLOCK` per subscriber, and a
//! consumer group read with `XREADGROUP` and acked with `XACK` for competing consumers.
//!
//! With `appendfsync always` Redis writes and fsyncs the append-only file before it sends
//! the replies of an event-loop turn: a reply means fsynced (group commit per turn).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use redis::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::load::{
    join, merge, pipelined, share, ClientRun, Load, Outcome, Receiving, Workload, IDLE,
};

const GROUP: &str = "work";

pub async fn connect(addr: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to redis-server at {addr}"))
}

fn payload(v: &Value) -> &[u8] {
    match v {
        Value::BulkString(b) => b,
        _ => &[],
    }
}

pub async fn run(l: &Load) -> Result<Outcome> {
    let key = l.tag.clone();
    let mut admin = connect(&l.addr).await?;
    let out = match l.workload {
        Workload::W1 | Workload::W2 | Workload::W6 => {
            let start = Instant::now();
            let runs = publishers(l, &key).await?;
            Ok(merge(runs, start.elapsed(), "send → reply"))
        }
        Workload::W3 | Workload::W4 => {
            let mut tasks = JoinSet::new();
            for _ in 0..l.subs {
                let mut con = connect(&l.addr).await?;
                let (key, want) = (key.clone(), l.msgs);
                tasks.spawn(async move {
                    let mut r = Receiving::new(want);
                    // The key is new: reading from 0 misses nothing.
                    let mut last = "0-0".to_string();
                    let mut idle = Instant::now();
                    while !r.done() {
                        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                            .arg("COUNT")
                            .arg(1000)
                            .arg("BLOCK")
                            .arg(500)
                            .arg("STREAMS")
                            .arg(&key)
                            .arg(&last)
                            .query_async(&mut con)
                            .await?;
                        let ids = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
                        let before = r.got;
                        for id in ids {
                            r.take(id.map.get("d").map_or(&[][..], payload));
                            last = id.id;
                        }
                        if r.got > before {
                            idle = Instant::now();
                        } else if idle.elapsed() > IDLE {
                            return Err(r.stalled());
                        }
                    }
                    Ok(r.finish())
                });
            }
            let start = Instant::now();
            publishers(l, &key).await?;
            let runs = join(tasks).await?;
            Ok(merge(runs, start.elapsed(), "publish → delivery"))
        }
        Workload::W5 => queue(l, &key).await,
        Workload::W7 => bail!("W7: Redis has no request/reply"),
    };
    let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query_async(&mut admin).await;
    out
}

async fn publishers(l: &Load, key: &str) -> Result<Vec<ClientRun>> {
    let mut tasks = JoinSet::new();
    for i in 0..l.pubs {
        let con = connect(&l.addr).await?;
        let n = share(l.msgs, l.pubs, i);
        let (key, size, window) = (key.to_string(), l.size, l.window);
        tasks.spawn(async move {
            pipelined(n, size, window, |p| {
                let (mut con, key) = (con.clone(), key.clone());
                async move {
                    let _id: String = redis::cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("d")
                        .arg(&p[..])
                        .query_async(&mut con)
                        .await?;
                    Ok(())
                }
            })
            .await
        });
    }
    join(tasks).await
}

/// A consumer group read by `subs` consumers, each reading up to 256 at a time and acking
/// what it read with one `XACK` (pipelined with its next read).
async fn queue(l: &Load, key: &str) -> Result<Outcome> {
    let mut admin = connect(&l.addr).await?;
    let _: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut admin)
        .await?;
    let total = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for i in 0..l.subs {
        let con = connect(&l.addr).await?;
        let (key, total, done, want, count) = (
            key.to_string(),
            total.clone(),
            done.clone(),
            l.msgs,
            l.window,
        );
        tasks.spawn(async move {
            let mut r = Receiving::new(u64::MAX);
            let mut acks = FuturesUnordered::new();
            let mut idle = Instant::now();
            while !done.is_cancelled() {
                let mut c = con.clone();
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(format!("c{i}"))
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(200)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(">");
                let read = cmd.query_async::<Option<StreamReadReply>>(&mut c);
                let reply = tokio::select! {
                    reply = read => reply?,
                    _ = done.cancelled() => break,
                };
                let ids: Vec<_> = reply
                    .into_iter()
                    .flat_map(|r| r.keys)
                    .flat_map(|k| k.ids)
                    .collect();
                if ids.is_empty() {
                    if idle.elapsed() > IDLE {
                        return Err(anyhow!(
                            "consumers got {} of {want}, then nothing for {IDLE:?}",
                            total.load(Ordering::Relaxed)
                        ));
                    }
                    continue;
                }
                idle = Instant::now();
                for id in &ids {
                    r.take(id.map.get("d").map_or(&[][..], payload));
                }
                let n = ids.len() as u64;
                let mut ack = redis::cmd("XACK");
                ack.arg(&key).arg(GROUP);
                for id in &ids {
                    ack.arg(&id.id);
                }
                let mut c = con.clone();
                // Sent by a task of its own, so the next read need not wait for it.
                acks.push(tokio::spawn(
                    async move { ack.query_async::<i64>(&mut c).await },
                ));
                if total.fetch_add(n, Ordering::Relaxed) + n >= want {
                    done.cancel();
                }
            }
            while let Some(a) = acks.next().await {
                a??;
            }
            Ok(r.finish())
        });
    }
    let start = Instant::now();
    publishers(l, key).await?;
    let runs = join(tasks).await?;
    Ok(merge(
        runs,
        start.elapsed(),
        "publish → delivery (consumer acks)",
    ))
}
