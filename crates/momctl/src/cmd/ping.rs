//! `momctl ping`: round trips to the broker.

use std::time::Instant;

use momctl::client::{Client, ConnectOptions};

use super::CmdResult;
use crate::output;

pub async fn run(opts: &ConnectOptions, count: u32, json: bool) -> CmdResult {
    let t0 = Instant::now();
    let client = Client::connect(opts).await?;
    let connect = t0.elapsed();
    let w = client.welcome().clone();
    for i in 0..count.max(1) {
        let t = Instant::now();
        client.ping().await?;
        let rtt = t.elapsed();
        if json {
            output::print_json(&serde_json::json!({
                "server": client.server(),
                "server_id": w.server_id,
                "server_version": w.server_version,
                "client_id": w.client_id,
                "rtt_us": rtt.as_micros() as u64,
                "connect_us": connect.as_micros() as u64,
            }))?;
        } else {
            outln!(
                "pong from {} (momd {}, server id {}) in {:.2} ms",
                client.server(),
                w.server_version,
                w.server_id,
                rtt.as_secs_f64() * 1000.0
            );
        }
        if i + 1 < count {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
