//! SIGHUP: read the configuration again (file, environment and the flags momd started with)
//! and apply what can change while connections stay: limits, retention defaults of new
//! topics, the dedupe window, the topic cap and creation rate, the log level and the TLS
//! certificates. What needs a restart
//! (listeners, data dir, fsync, max_frame, …) is logged and left as it is. No connection is
//! dropped: per-connection limits apply to connections made after the reload, the limits
//! the broker enforces (max_payload, retention, dedupe) at once to all.

use std::ffi::OsString;
use std::time::Duration;

use crate::broker::{BrokerConfig, BrokerHandle, Cmd};
use crate::config::Args;
use crate::config_file::{self, Setting};
use crate::core::CoreConfig;
use crate::logging::LogHandle;
use crate::server::{self, SharedCfg, TlsSlot};

/// Keys a reload applies; every other key needs a restart.
const LIVE: &[&str] = &[
    "log_level",
    "max_payload",
    "max_inflight",
    "frame_timeout",
    "write_timeout",
    "watch_buffer",
    "dedupe_window",
    "max_msgs",
    "max_bytes",
    "max_age",
    "max_topics",
    "topic_create_rate",
    "topic_create_burst",
    "tls_cert",
    "tls_key",
    "drain_timeout",
];

pub fn broker_config(args: &Args) -> BrokerConfig {
    BrokerConfig {
        fsync: args.fsync,
        max_frame: args.max_frame,
        max_payload: args.max_payload,
        max_inflight: args.max_inflight.max(1),
        watch_budget: args.watch_buffer.max(64 * 1024),
        frame_timeout: args.frame_timeout.max(Duration::from_millis(10)),
        frame_budget: args.frame_budget,
        inflight_budget: args.inflight_budget.max(64 * 1024),
        write_timeout: args.write_timeout.max(Duration::from_millis(10)),
        drain_timeout: args.drain_timeout,
    }
}

pub fn core_config(args: &Args) -> CoreConfig {
    CoreConfig {
        max_payload: args.max_payload,
        dedupe_window_ms: args.dedupe_window.as_millis() as u64,
        default_limits: mom_proto::Limits {
            max_msgs: args.max_msgs,
            max_bytes: args.max_bytes,
            max_age_ms: args.max_age.as_millis() as u64,
            ..mom_proto::Limits::default()
        },
        creation: crate::core::CreationLimits {
            max_topics: args.max_topics,
            rate: args.topic_create_rate,
            burst: args.topic_create_burst,
        },
    }
}

/// What a reload needs to reach.
pub struct Live {
    pub argv: Vec<OsString>,
    pub settings: Vec<Setting>,
    /// The settings momd started with: what needs a restart keeps these.
    pub started: BrokerConfig,
    pub log: LogHandle,
    pub broker: BrokerHandle,
    pub cfg: SharedCfg,
    pub tls: Option<TlsSlot>,
    /// The data dir (where `momd backup` waits for its checkpoint).
    pub data: std::path::PathBuf,
}

impl Live {
    /// Read the configuration again and apply it; errors leave everything as it was.
    pub async fn reload(&mut self) {
        let resolved = match config_file::resolve(self.argv.clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("reload refused, nothing changed: {e}");
                return;
            }
        };
        if let Err(e) = resolved.args.check() {
            tracing::error!("reload refused, nothing changed: {e}");
            return;
        }
        let changed: Vec<Setting> = resolved
            .settings
            .iter()
            .filter(|s| {
                self.settings
                    .iter()
                    .find(|o| o.key == s.key)
                    .is_none_or(|o| o.value != s.value)
            })
            .cloned()
            .collect();
        if changed.is_empty() {
            tracing::info!("reload: nothing changed");
            return;
        }
        let new = resolved.args;
        // Prepare what can fail before changing anything.
        let tls_changed = changed
            .iter()
            .any(|s| s.key == "tls_cert" || s.key == "tls_key");
        let acceptor = match (&new.tls_cert, &new.tls_key, tls_changed, &self.tls) {
            (Some(cert), Some(key), true, Some(_)) => match crate::tls::acceptor(cert, key) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::error!("reload refused, nothing changed: {e:#}");
                    return;
                }
            },
            _ => None,
        };
        let mut restart = Vec::new();
        for s in &changed {
            let value = s.value.as_deref().unwrap_or("(unset)");
            let live = LIVE.contains(&s.key.as_str())
                && !(s.key.starts_with("tls_") && (self.tls.is_none() || new.tls_cert.is_none()));
            if live {
                tracing::info!(key = %s.key, value, source = %s.source, "reload: changed");
            } else {
                tracing::warn!(key = %s.key, value, source = %s.source, "reload: needs a restart to change");
                restart.push(s.key.clone());
            }
        }
        if changed.iter().any(|s| s.key == "log_level") {
            if let Err(e) = self.log.set_level(&new.log_level) {
                tracing::warn!("reload: log_level not changed: {e}");
            }
        }
        if let (Some(a), Some(slot)) = (acceptor, &self.tls) {
            server::replace(slot, a);
        }
        // What needs a restart keeps its running value.
        let mut cfg = broker_config(&new);
        let running = &self.started;
        cfg.fsync = running.fsync;
        cfg.max_frame = running.max_frame;
        cfg.frame_budget = running.frame_budget;
        cfg.inflight_budget = running.inflight_budget;
        server::replace(&self.cfg, std::sync::Arc::new(cfg.clone()));
        let core = core_config(&new);
        self.broker.send(Cmd::Reconfigure { cfg, core }).await;
        // Remember the applied values, and the running ones of what needs a restart, so
        // that the next reload reports a restart-only key again until momd is restarted.
        let old = std::mem::replace(&mut self.settings, resolved.settings);
        for s in self.settings.iter_mut() {
            if restart.contains(&s.key) {
                if let Some(o) = old.iter().find(|o| o.key == s.key) {
                    *s = o.clone();
                }
            }
        }
        tracing::info!(
            restart_needed = restart.len(),
            "reload done: {} setting(s) changed",
            changed.len()
        );
    }
}
