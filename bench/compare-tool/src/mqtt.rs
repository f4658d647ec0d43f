//! MQTT 3.1.1 against Mosquitto: QoS 1 publishes, each awaiting its PUBACK; QoS 1
//! subscriptions (the client PUBACKs each delivery); a shared subscription
//! (`$share/GROUP/TOPIC`) for competing consumers.
//!
//! A PUBACK means Mosquitto holds the message in memory; `persistence true` writes its
//! in-memory state to disk at `autosave_interval` and at shutdown, not per message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::load::{
    join, merge, now_ns, pipelined, share, ClientRun, Load, Outcome, Receiving, Workload, IDLE,
};

/// Waiters for PUBACKs, oldest first: Mosquitto acknowledges one connection's QoS 1
/// publishes in the order they came.
type Acks = Arc<Mutex<VecDeque<oneshot::Sender<()>>>>;

pub fn options(addr: &str, id: &str, inflight: u16) -> Result<MqttOptions> {
    let (host, port) = crate::load::host_port(addr)?;
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true)
        .set_inflight(inflight.max(1))
        .set_max_packet_size(1 << 20, 1 << 20);
    Ok(o)
}

/// Drive a connection's event loop: hand PUBACKs to their waiters, deliveries to `deliver`,
/// and say when the subscription is acknowledged.
fn drive(
    mut el: EventLoop,
    acks: Acks,
    deliver: Option<mpsc::UnboundedSender<Bytes>>,
    mut subscribed: Option<oneshot::Sender<()>>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    let w = acks.lock().expect("lock poisoned").pop_front();
                    if let Some(w) = w {
                        let _ = w.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(d) = &deliver {
                        let _ = d.send(p.payload);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Wake every waiter: its publish will not be acknowledged.
                    acks.lock().expect("lock poisoned").clear();
                    return Err(anyhow!("mqtt connection: {e}"));
                }
            }
        }
    })
}

fn client_id(role: &str, i: u32) -> String {
    format!("cmp-{role}-{i}-{:x}", now_ns())
}

pub async fn run(l: &Load) -> Result<Outcome> {
    let topic = format!("cmp/{}", l.tag);
    match l.workload {
        Workload::W1 | Workload::W2 | Workload::W6 => {
            let start = Instant::now();
            let runs = publishers(l, &topic).await?;
            Ok(merge(runs, start.elapsed(), "send → PUBACK"))
        }
        Workload::W3 | Workload::W4 | Workload::W5 => {
            let shared = l.workload == Workload::W5;
            let filter = if shared {
                format!("$share/cmp/{topic}")
            } else {
                topic.clone()
            };
            let total = Arc::new(AtomicU64::new(0));
            let done = tokio_util::sync::CancellationToken::new();
            let mut tasks = JoinSet::new();
            let mut loops = Vec::new();
            for i in 0..l.subs {
                let (client, el) =
                    AsyncClient::new(options(&l.addr, &client_id("sub", i), 256)?, 4096);
                let (tx, mut rx) = mpsc::unbounded_channel();
                let (sub_tx, sub_rx) = oneshot::channel();
                loops.push(drive(el, Acks::default(), Some(tx), Some(sub_tx)));
                client.subscribe(filter.clone(), QoS::AtLeastOnce).await?;
                tokio::time::timeout(IDLE, sub_rx)
                    .await
                    .map_err(|_| anyhow!("no SUBACK within {IDLE:?}"))??;
                let (total, done, want) = (total.clone(), done.clone(), l.msgs);
                tasks.spawn(async move {
                    let _client = client;
                    // Competing consumers count together; subscribers each count theirs.
                    let mut r = Receiving::new(if shared { u64::MAX } else { want });
                    while !r.done() {
                        let p = tokio::select! {
                            p = tokio::time::timeout(IDLE, rx.recv()) => p
                                .map_err(|_| anyhow!("got {} of {want} ({} in all), then nothing for {IDLE:?}",
                                                     r.got, total.load(Ordering::Relaxed)))?
                                .ok_or_else(|| anyhow!("the connection ended"))?,
                            _ = done.cancelled() => break,
                        };
                        r.take(&p);
                        if total.fetch_add(1, Ordering::Relaxed) + 1 >= want && shared {
                            done.cancel();
                        }
                    }
                    Ok(r.finish())
                });
            }
            let start = Instant::now();
            let result = async {
                publishers(l, &topic).await?;
                join(tasks).await
            }
            .await;
            let elapsed = start.elapsed();
            for h in loops {
                h.abort();
            }
            let latency_of = if shared {
                "publish → delivery (consumer PUBACKs)"
            } else {
                "publish → delivery"
            };
            Ok(merge(result?, elapsed, latency_of))
        }
        Workload::W7 => bail!("W7: MQTT 3.1.1 has no request/reply"),
    }
}

async fn publishers(l: &Load, topic: &str) -> Result<Vec<ClientRun>> {
    let mut tasks = JoinSet::new();
    for i in 0..l.pubs {
        let (client, el) = AsyncClient::new(
            options(&l.addr, &client_id("pub", i), l.window as u16)?,
            l.window.max(16),
        );
        let acks = Acks::default();
        let driving = drive(el, acks.clone(), None, None);
        // Publishes enter the client in the order their waiters are queued.
        let order = Arc::new(tokio::sync::Mutex::new(()));
        let n = share(l.msgs, l.pubs, i);
        let (topic, size, window) = (topic.to_string(), l.size, l.window);
        tasks.spawn(async move {
            let run = pipelined(n, size, window, |payload| {
                let (client, acks, order, topic) =
                    (client.clone(), acks.clone(), order.clone(), topic.clone());
                async move {
                    let (tx, rx) = oneshot::channel();
                    {
                        let _in_order = order.lock().await;
                        acks.lock().expect("lock poisoned").push_back(tx);
                        client
                            .publish_bytes(topic, QoS::AtLeastOnce, false, payload)
                            .await?;
                    }
                    rx.await.map_err(|_| anyhow!("the connection ended"))
                }
            })
            .await;
            driving.abort();
            run
        });
    }
    join(tasks).await
}
