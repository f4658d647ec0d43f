//! W10: the broker's memory with many idle connections. Each connection is a real client
//! session (mom hello, NATS CONNECT, AMQP connection open, MQTT CONNECT, a Redis PING),
//! opened 64 at a time and then left alone.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use futures_util::stream::{self, StreamExt};
use rumqttc::{AsyncClient, Event, Packet};
use serde_json::json;

use crate::load::{now_ns, status_kb, Broker};

/// Something that must live for the connection to stay open.
type Held = Box<dyn std::any::Any + Send>;

async fn open(broker: Broker, addr: String, i: u32) -> Result<Held> {
    Ok(match broker {
        Broker::Mom => Box::new(crate::mom::connect(&addr, &format!("idle {i}")).await?),
        Broker::Nats => Box::new(async_nats::connect(addr.as_str()).await?),
        Broker::Rabbitmq => Box::new(crate::rabbit::connect(&addr).await?),
        Broker::Redis => {
            let mut c = crate::redis::connect(&addr).await?;
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
            Box::new(c)
        }
        Broker::Mqtt => {
            let id = format!("idle-{i}-{:x}", now_ns());
            let (client, mut el) = AsyncClient::new(crate::mqtt::options(&addr, &id, 16)?, 16);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                    Ok(_) => {}
                    Err(e) => return Err(anyhow!("mqtt connect: {e}")),
                }
            }
            // Keep the session alive (pings) for as long as it is held.
            let driving = tokio::spawn(async move { while el.poll().await.is_ok() {} });
            Box::new((client, AbortOnDrop(driving)))
        }
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn run(broker: Broker, addr: &str, conns: u32, pid: u32) -> Result<()> {
    let mb = |kb: Option<u64>| kb.unwrap_or(0) as f64 / 1024.0;
    let before = mb(status_kb(pid, "VmRSS"));
    let start = Instant::now();
    let held: Vec<Result<Held>> = stream::iter(0..conns)
        .map(|i| open(broker, addr.to_string(), i))
        .buffer_unordered(64)
        .collect()
        .await;
    let opened = start.elapsed();
    let held: Vec<Held> = held.into_iter().collect::<Result<_>>()?;
    // Let the broker settle (and any lazy per-connection allocation happen).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = mb(status_kb(pid, "VmRSS"));
    let peak = mb(status_kb(pid, "VmHWM"));
    println!(
        "{}",
        json!({
            "broker": broker.name(),
            "label": "",
            "workload": "W10",
            "conns": held.len(),
            "seconds": opened.as_secs_f64(),
            "rss_before_mb": before,
            "rss_mb": rss,
            "rss_peak_mb": peak,
        })
    );
    drop(held);
    Ok(())
}
