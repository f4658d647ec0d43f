//! W10: the broker's memory with many idle connections. Each connection is a real client
//! session (mom hello, NATS CONNECT, AMQP connection open, MQTT CONNECT, a Redis PING),
//! opened 64 at a time and then left alone.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use futures_util::stream::{self, StreamExt};
use rumqttc::{AsyncClient, Event, Packet};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::{now_ns, status_kb, Broker};

/// Something that must live for the connection to stay open.
type Held = Box<dyn std::any::Any + Send>;

async fn open(broker: Broker, addr: String, i: u32) -> Result<Held> {
    Ok(match broker {
        Broker::Mom => Box::new(crate::mom::connect(&addr, &format!("idle {i}")).await?),
        Broker::Nats => Box::new(async_nats::connect(addr.as_str()).await?),
        Broker::Rabbitmq => Box::new(amqp_open(&addr).await?),
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

/// An AMQP 0-9-1 connection opened by hand (protocol header, start-ok with PLAIN
/// guest/guest, tune-ok without heartbeats, open of vhost `/`): a full client keeps a
/// thread and megabytes of buffers per connection, which 10,000 of cannot afford.
async fn amqp_open(addr: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"AMQP\x00\x00\x09\x01").await?;
    expect_method(&mut s, 10, 10).await?; // connection.start
    let mut args = Vec::new();
    args.extend_from_slice(&0u32.to_be_bytes()); // client properties: an empty table
    shortstr(&mut args, "PLAIN");
    let response = b"\0guest\0guest";
    args.extend_from_slice(&(response.len() as u32).to_be_bytes());
    args.extend_from_slice(response);
    shortstr(&mut args, "en_US");
    send_method(&mut s, 10, 11, &args).await?; // start-ok
    let tune = expect_method(&mut s, 10, 30).await?;
    let mut ok = tune
        .get(4..10)
        .ok_or_else(|| anyhow!("short connection.tune"))?
        .to_vec();
    ok.extend_from_slice(&0u16.to_be_bytes()); // heartbeat: none
    send_method(&mut s, 10, 31, &ok).await?; // tune-ok
    let mut open = Vec::new();
    shortstr(&mut open, "/");
    shortstr(&mut open, "");
    open.push(0);
    send_method(&mut s, 10, 40, &open).await?;
    expect_method(&mut s, 10, 41).await?; // open-ok
    Ok(s)
}

fn shortstr(out: &mut Vec<u8>, v: &str) {
    out.push(v.len() as u8);
    out.extend_from_slice(v.as_bytes());
}

async fn send_method(s: &mut TcpStream, class: u16, method: u16, args: &[u8]) -> Result<()> {
    let mut f = vec![1u8, 0, 0];
    f.extend_from_slice(&((args.len() + 4) as u32).to_be_bytes());
    f.extend_from_slice(&class.to_be_bytes());
    f.extend_from_slice(&method.to_be_bytes());
    f.extend_from_slice(args);
    f.push(0xCE);
    s.write_all(&f).await?;
    Ok(())
}

/// Read one frame; it must be the method `class`.`method` on channel 0. Returns its body.
async fn expect_method(s: &mut TcpStream, class: u16, method: u16) -> Result<Vec<u8>> {
    let mut head = [0u8; 7];
    s.read_exact(&mut head).await?;
    let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
    if !(4..=1 << 20).contains(&size) {
        return Err(anyhow!("an AMQP frame of {size} bytes"));
    }
    let mut body = vec![0u8; size + 1];
    s.read_exact(&mut body).await?;
    let got = (
        head[0],
        u16::from_be_bytes([body[0], body[1]]),
        u16::from_be_bytes([body[2], body[3]]),
    );
    if got != (1, class, method) {
        return Err(anyhow!(
            "expected AMQP method {class}.{method}, got frame type {} method {}.{}",
            got.0,
            got.1,
            got.2
        ));
    }
    body.truncate(size);
    Ok(body)
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
