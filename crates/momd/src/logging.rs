//! Logs through `tracing` to stderr (journald under systemd), as text or as one JSON object
//! per line (`--log-format json`), with a filter that SIGHUP can change (`--log-level`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

impl LogHandle {
    /// Apply `--log-level` (ignored while RUST_LOG is set: it wins, as at start).
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        if std::env::var_os("RUST_LOG").is_some() {
            return Err("RUST_LOG is set and wins over log_level".into());
        }
        let filter =
            EnvFilter::try_new(with_quiet_raft(level)).map_err(|e| format!("{level:?}: {e}"))?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// openraft logs every vote and election step at info (and some at warn), and an error for
/// every heartbeat a down peer misses (ten a second); momd logs leader changes, and a peer
/// lost and back, itself. Unless the filter names openraft, only its other errors are shown.
fn with_quiet_raft(level: &str) -> String {
    if level.contains("openraft") {
        level.to_string()
    } else {
        format!("{level},openraft=error,openraft::replication=off")
    }
}

/// Start logging; a bad `--log-level` falls back to `info` with a warning.
pub fn init(level: &str, json: bool) -> LogHandle {
    let mut bad = None;
    // RUST_LOG, when set, is quieted the same way.
    let env = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let from_env = env.and_then(|v| EnvFilter::try_new(with_quiet_raft(&v)).ok());
    let filter = from_env.unwrap_or_else(|| {
        EnvFilter::try_new(with_quiet_raft(level)).unwrap_or_else(|e| {
            bad = Some(format!("--log-level {level:?}: {e}; logging at info"));
            EnvFilter::new("info")
        })
    });
    let (filter, handle) = reload::Layer::new(filter);
    type Filtered =
        tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;
    let fmt: Box<dyn Layer<Filtered> + Send + Sync> = if json {
        Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(std::io::stderr),
        )
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(
                    std::io::IsTerminal::is_terminal(&std::io::stderr())
                        && std::env::var_os("NO_COLOR").is_none(),
                ),
        )
    };
    Registry::default().with(filter).with(fmt).init();
    if let Some(why) = bad {
        tracing::warn!("{why}");
    }
    LogHandle { filter: handle }
}
