//! The listener: accepts connections (at most `max_connections` at once) and runs one
//! session task per connection until shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{BrokerConfig, BrokerHandle};
use crate::session;

pub async fn serve(
    listener: TcpListener,
    broker: BrokerHandle,
    cfg: Arc<BrokerConfig>,
    max_connections: usize,
    auth: Arc<crate::auth::Auth>,
    shutdown: CancellationToken,
) -> TaskTracker {
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(max_connections));
    let frame_budget = crate::reader::FrameBudget::new(cfg.frame_budget);
    let admission = crate::admission::Admission::new(cfg.inflight_budget);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, addr)) => {
                let (broker, cfg, shutdown) = (broker.clone(), cfg.clone(), shutdown.clone());
                let ctx = session::Ctx {
                    frame_budget: frame_budget.clone(),
                    admission: admission.clone(),
                    auth: auth.clone(),
                };
                tracker.spawn(async move {
                    session::run(stream, addr, broker, cfg, ctx, shutdown).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    tracker.close();
    tracker
}
