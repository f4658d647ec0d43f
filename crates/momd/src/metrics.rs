//! `--metrics ADDR`: Prometheus text at `GET /metrics`, served with axum on momd's runtime.
//! The broker renders its counters (`broker/metrics.rs`); the process's own (resident
//! memory, start time) are added here.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::broker::{BrokerHandle, Cmd};

/// Bind `addr` now (so a taken port fails the start) and serve until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    broker: BrokerHandle,
    cluster: Option<crate::cluster::Cluster>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics: listening on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!("metrics at http://{local}/metrics");
    let started = process_start_seconds();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || scrape(broker.clone(), cluster.clone(), started)),
    );
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!("metrics server ended: {e}");
        }
    }))
}

async fn scrape(
    broker: BrokerHandle,
    cluster: Option<crate::cluster::Cluster>,
    started: f64,
) -> axum::response::Response {
    let (tx, rx) = oneshot::channel();
    if !broker.send(Cmd::Metrics { reply: tx }).await {
        return (StatusCode::SERVICE_UNAVAILABLE, "momd is stopping\n").into_response();
    }
    let Ok(mut text) = rx.await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "momd is stopping\n").into_response();
    };
    if let Some(c) = &cluster {
        text.push_str(&c.metrics_text());
    }
    text.push_str(&format!(
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
         # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n\
         # HELP process_start_time_seconds Start time of the process since the Unix epoch.\n\
         # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {started}\n",
        rss_bytes()
    ));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Resident set size from /proc/self/statm (0 where there is no /proc).
pub fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Seconds since the epoch when momd started: taken when the server starts, which is
/// within the same second as the process start for Prometheus' purposes.
fn process_start_seconds() -> f64 {
    static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    })
}

/// Fix the start time at the start of `main`.
pub fn mark_start() {
    let _ = process_start_seconds();
}
