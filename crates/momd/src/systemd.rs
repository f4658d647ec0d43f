//! systemd's notify protocol (`Type=notify`): READY=1 once the listeners accept, RELOADING=1
//! and READY=1 around a SIGHUP reload, STOPPING=1 when the drain starts, and WATCHDOG=1 at
//! half the interval systemd asks for (`WatchdogSec=`). Without `NOTIFY_SOCKET` (not under
//! systemd) each call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("sd_notify to systemd failed: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining connections"),
    ]);
}

/// Ping systemd's watchdog until `stop`, if `WATCHDOG_USEC` asks for it. The pings come
/// from the runtime, so a wedged runtime stops them and systemd restarts momd.
pub fn spawn_watchdog(stop: CancellationToken) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(10));
    tracing::info!("systemd watchdog: pinging every {every:?}");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
                _ = stop.cancelled() => break,
            }
        }
    });
}
