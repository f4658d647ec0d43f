//! RabbitMQ over AMQP 0-9-1: durable queues, persistent messages (delivery mode 2) and
//! publisher confirms, each publish awaiting its own confirm.
//!
//! A confirm of a persistent message routed to a durable queue means the message was
//! written and fsynced to the queue's message store.
//!
//! Subscribers (W3, W4): a durable fanout exchange with one durable queue per subscriber,
//! so the publish is as durable as in W1; subscribers consume with automatic ack, as a
//! mom watch has none. Competing consumers (W5): one durable queue, prefetch 256, each
//! delivery acked by the consumer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::load::{
    join, merge, pipelined, share, ClientRun, Load, Outcome, Receiving, Workload, IDLE,
};

pub async fn connect(addr: &str) -> Result<Connection> {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(&format!("amqp://guest:guest@{addr}/%2f"), props)
        .await
        .with_context(|| format!("connecting to RabbitMQ at {addr}"))
}

async fn channel(addr: &str) -> Result<(Connection, Channel)> {
    let conn = connect(addr).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

async fn durable_queue(ch: &Channel, name: &str) -> Result<()> {
    ch.queue_declare(
        name,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

pub async fn run(l: &Load) -> Result<Outcome> {
    let (_admin_conn, admin) = channel(&l.addr).await?;
    match l.workload {
        Workload::W1 | Workload::W2 | Workload::W6 => {
            durable_queue(&admin, &l.tag).await?;
            let start = Instant::now();
            let runs = publishers(l, "", &l.tag).await;
            let elapsed = start.elapsed();
            admin
                .queue_delete(&l.tag, QueueDeleteOptions::default())
                .await?;
            Ok(merge(runs?, elapsed, "send → confirm"))
        }
        Workload::W3 | Workload::W4 => {
            let exchange = format!("{}.x", l.tag);
            admin
                .exchange_declare(
                    &exchange,
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let mut queues = Vec::new();
            let mut tasks = JoinSet::new();
            for i in 0..l.subs {
                let q = format!("{}.{i}", l.tag);
                durable_queue(&admin, &q).await?;
                admin
                    .queue_bind(
                        &q,
                        &exchange,
                        "",
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                let (conn, ch) = channel(&l.addr).await?;
                let mut consumer = ch
                    .basic_consume(
                        &q,
                        "",
                        BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                queues.push(q);
                let want = l.msgs;
                tasks.spawn(async move {
                    let _keep = (conn, ch);
                    let mut r = Receiving::new(want);
                    while !r.done() {
                        let d = tokio::time::timeout(IDLE, consumer.next())
                            .await
                            .map_err(|_| r.stalled())?
                            .ok_or_else(|| anyhow!("the consumer ended"))??;
                        r.take(&d.data);
                    }
                    Ok(r.finish())
                });
            }
            let start = Instant::now();
            let result = async {
                publishers(l, &exchange, "").await?;
                join(tasks).await
            }
            .await;
            let elapsed = start.elapsed();
            for q in &queues {
                let _ = admin.queue_delete(q, QueueDeleteOptions::default()).await;
            }
            let _ = admin
                .exchange_delete(&exchange, ExchangeDeleteOptions::default())
                .await;
            Ok(merge(result?, elapsed, "publish → delivery"))
        }
        Workload::W5 => {
            durable_queue(&admin, &l.tag).await?;
            let result = queue(l).await;
            let _ = admin
                .queue_delete(&l.tag, QueueDeleteOptions::default())
                .await;
            result
        }
        Workload::W7 => bail!("W7: RabbitMQ is not measured for request/reply here"),
    }
}

async fn publishers(l: &Load, exchange: &str, routing_key: &str) -> Result<Vec<ClientRun>> {
    let mut tasks = JoinSet::new();
    for i in 0..l.pubs {
        let (conn, ch) = channel(&l.addr).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let n = share(l.msgs, l.pubs, i);
        let (exchange, key, size, window) = (
            exchange.to_string(),
            routing_key.to_string(),
            l.size,
            l.window,
        );
        tasks.spawn(async move {
            let _conn = conn;
            pipelined(n, size, window, |payload| {
                let (ch, exchange, key) = (ch.clone(), exchange.clone(), key.clone());
                async move {
                    let confirm = ch
                        .basic_publish(
                            &exchange,
                            &key,
                            BasicPublishOptions::default(),
                            &payload,
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await?
                        .await?;
                    match confirm {
                        Confirmation::Ack(_) => Ok(()),
                        other => Err(anyhow!("publish not confirmed: {other:?}")),
                    }
                }
            })
            .await
        });
    }
    join(tasks).await
}

async fn queue(l: &Load) -> Result<Outcome> {
    let total = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for _ in 0..l.subs {
        let (conn, ch) = channel(&l.addr).await?;
        ch.basic_qos(l.window as u16, BasicQosOptions::default())
            .await?;
        let mut consumer = ch
            .basic_consume(
                &l.tag,
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (total, done, want) = (total.clone(), done.clone(), l.msgs);
        tasks.spawn(async move {
            let _keep = (conn, ch);
            let mut r = Receiving::new(u64::MAX);
            loop {
                let d = tokio::select! {
                    d = tokio::time::timeout(IDLE, consumer.next()) => d
                        .map_err(|_| anyhow!("consumers got {} of {want}, then nothing for {IDLE:?}",
                                             total.load(Ordering::Relaxed)))?
                        .ok_or_else(|| anyhow!("the consumer ended"))??,
                    _ = done.cancelled() => break,
                };
                r.take(&d.data);
                d.acker.ack(BasicAckOptions::default()).await?;
                if total.fetch_add(1, Ordering::Relaxed) + 1 >= want {
                    done.cancel();
                    break;
                }
            }
            Ok(r.finish())
        });
    }
    let start = Instant::now();
    publishers(l, "", &l.tag).await?;
    let runs = join(tasks).await?;
    Ok(merge(
        runs,
        start.elapsed(),
        "publish → delivery (consumer acks)",
    ))
}
