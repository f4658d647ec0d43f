//! momd's settings: command-line flags (each also from a `MOMD_*` environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// When momd fsyncs, and so what an acknowledgement means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// Ack after the data is fsynced (group commit). Nothing acked is ever lost.
    Always,
    /// Ack at once; fsync every interval. A crash loses up to one interval of acked data.
    Batch(Duration),
    /// Ack at once; no fsync of momd's own (the store writes about every second).
    Never,
}

impl FsyncMode {
    /// The trade-off, printed at start.
    pub fn explain(&self) -> String {
        match self {
            FsyncMode::Always => "fsync always: a publish is acknowledged only after it is fsynced; \
                                  nothing acknowledged is lost, even on power loss"
                .into(),
            FsyncMode::Batch(d) => format!(
                "fsync batch={}ms: publishes are acknowledged before they are fsynced; a crash or \
                 power loss can lose up to {}ms of acknowledged messages",
                d.as_millis(),
                d.as_millis()
            ),
            FsyncMode::Never => "fsync never: publishes are acknowledged before they reach the disk \
                                 and momd never fsyncs on its own; a crash can lose about a second of \
                                 acknowledged messages, a power loss more"
                .into(),
        }
    }
}

impl std::fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncMode::Always => f.write_str("always"),
            FsyncMode::Batch(d) => write!(f, "batch={}", d.as_millis()),
            FsyncMode::Never => f.write_str("never"),
        }
    }
}

impl FromStr for FsyncMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncMode::Always),
            "never" => Ok(FsyncMode::Never),
            _ => {
                let ms = s
                    .strip_prefix("batch=")
                    .ok_or_else(|| format!("{s:?}: expected always, batch=MS or never"))?;
                let ms: u64 = ms
                    .trim_end_matches("ms")
                    .parse()
                    .map_err(|_| format!("{s:?}: batch=MS needs a number of milliseconds"))?;
                if ms == 0 {
                    return Err("batch=0 is not an interval; use always".into());
                }
                Ok(FsyncMode::Batch(Duration::from_millis(ms)))
            }
        }
    }
}

/// momd: the mom broker.
#[derive(Debug, Parser)]
#[command(
    name = "momd",
    version,
    about = "The mom message broker: persistent topics, live watches, one TCP protocol",
    after_help = "Examples:\n  momd                                  # 127.0.0.1:7878, platform data dir\n  momd --listen 127.0.0.1:7000 --data /var/lib/mom\n  momd --fsync batch=5                  # faster acks, may lose 5 ms on a crash\n  RUST_LOG=debug momd                   # per-request logs"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOMD_LISTEN", default_value = mom_proto::DEFAULT_ADDR)]
    pub listen: SocketAddr,

    /// Data directory (created if missing). Default: the platform data dir
    /// (e.g. ~/.local/share/mom on Linux).
    #[arg(long, env = "MOMD_DATA")]
    pub data: Option<PathBuf>,

    /// When to fsync: `always` (ack after fsync), `batch=MS` (fsync every MS ms, ack at
    /// once) or `never`.
    #[arg(long, env = "MOMD_FSYNC", default_value = "always")]
    pub fsync: FsyncMode,

    /// Largest frame a client may send, in bytes.
    #[arg(long, env = "MOMD_MAX_FRAME", default_value_t = mom_proto::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,

    /// Largest payload of one message, in bytes.
    #[arg(long, env = "MOMD_MAX_PAYLOAD", default_value_t = mom_proto::DEFAULT_MAX_PAYLOAD)]
    pub max_payload: usize,

    /// Requests a connection may have unanswered before momd stops reading it.
    #[arg(long, env = "MOMD_MAX_INFLIGHT", default_value_t = 1024)]
    pub max_inflight: usize,

    /// Most connections served at once; more wait to be accepted.
    #[arg(long, env = "MOMD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Bytes of deliveries queued per connection before live messages are skipped for a
    /// slow consumer.
    #[arg(long, env = "MOMD_WATCH_BUFFER", default_value_t = 8 * 1024 * 1024)]
    pub watch_buffer: usize,

    /// Dedupe window for message ids.
    #[arg(long, env = "MOMD_DEDUPE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub dedupe_window: Duration,

    /// Retention of new topics: most messages kept (0 = unlimited).
    #[arg(long, env = "MOMD_MAX_MSGS", default_value_t = 0)]
    pub max_msgs: u64,

    /// Retention of new topics: most bytes kept (0 = unlimited).
    #[arg(long, env = "MOMD_MAX_BYTES", default_value_t = 0)]
    pub max_bytes: u64,

    /// Retention of new topics: oldest age kept, e.g. 7d (0 = unlimited).
    #[arg(long, env = "MOMD_MAX_AGE", default_value = "0", value_parser = parse_age)]
    pub max_age: Duration,

    /// Memory for the store's page cache, in MiB.
    #[arg(long, env = "MOMD_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,
}

fn parse_age(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

impl Args {
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.data {
            return Ok(d.clone());
        }
        let dirs = directories::ProjectDirs::from("", "", "mom").ok_or_else(|| {
            anyhow::anyhow!("no home directory to put the default data dir in; pass --data DIR")
        })?;
        Ok(dirs.data_dir().to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_modes_parse() {
        assert_eq!("always".parse::<FsyncMode>(), Ok(FsyncMode::Always));
        assert_eq!("never".parse::<FsyncMode>(), Ok(FsyncMode::Never));
        assert_eq!(
            "batch=5".parse::<FsyncMode>(),
            Ok(FsyncMode::Batch(Duration::from_millis(5)))
        );
        assert!("batch=0".parse::<FsyncMode>().is_err());
        assert!("sometimes".parse::<FsyncMode>().is_err());
        assert_eq!(
            FsyncMode::Batch(Duration::from_millis(5)).to_string(),
            "batch=5"
        );
    }
}
