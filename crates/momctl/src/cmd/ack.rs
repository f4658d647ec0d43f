//! `momctl ack|nack QUEUE DELIVERY...`: settle deliveries taken with `recv --no-ack`, from
//! any process.

use std::io::BufRead;
use std::time::Duration;

use momctl::client::{Client, ConnectOptions};

use super::{parse_delivery, CmdResult, Failure};

pub async fn run(
    opts: &ConnectOptions,
    queue: String,
    deliveries: Vec<String>,
    nack: Option<Duration>,
) -> CmdResult {
    super::queue_name_ok(&queue)?;
    let raw = if deliveries.is_empty() {
        let mut v = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| Failure::new(1, format!("reading stdin: {e}")))?;
            if !line.trim().is_empty() {
                v.push(line);
            }
        }
        v
    } else {
        deliveries
    };
    if raw.is_empty() {
        return Err(Failure::new(
            2,
            "no delivery ids given (as arguments or on stdin)",
        ));
    }
    let keys = raw
        .iter()
        .map(|d| parse_delivery(d))
        .collect::<Result<Vec<_>, _>>()?;
    let client = Client::connect(opts).await?;
    let n = keys.len();
    match nack {
        None => client.ack(&queue, keys).await?,
        Some(delay) => client.nack(&queue, keys, delay).await?,
    }
    eprintln!(
        "momctl: {} {} of {queue}",
        if nack.is_some() { "nacked" } else { "acked" },
        super::count(n as u64, "delivery", "deliveries")
    );
    Ok(())
}
