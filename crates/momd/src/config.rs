//! momd's settings: command-line flags, each also from a `MOMD_*` environment variable and
//! a key of the config file (`config_file.rs` reads the file and says where each value came
//! from). The key is the flag's name with `_` for `-`: `--max-frame` is `max_frame`.

use std::net::{SocketAddr, ToSocketAddrs};
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
    /// Ack at once; the store is written out about once a second.
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
            FsyncMode::Never => "fsync never: publishes are acknowledged before they reach the disk, \
                                 which momd writes out about once a second; a crash or power loss can \
                                 lose about a second of acknowledged messages"
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
    after_help = "Examples:\n  momd                                  # 127.0.0.1:7878, platform data dir\n  momd --listen 127.0.0.1:7000 --data /var/lib/mom\n  momd --listen localhost:7000 --max-bytes 1GiB  # sizes take units\n  momd --fsync batch=5                  # faster acks, may lose 5 ms on a crash\n  momd --http 127.0.0.1:7879            # also the HTTP API (docs/http.md)\n  momd --max-topics 1000000 --topic-create-rate 1000  # cap topics; 1000 new a second per user\n  momd --listen 0.0.0.0:7878 --tls-cert cert.pem --tls-key key.pem --listen-plain 127.0.0.1:7879\n  RUST_LOG=debug momd                   # per-request logs\n  momd verify --data /var/lib/mom       # offline: check every stored record\n  momd repair --data /var/lib/mom       # offline: move damaged records aside"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Config file (TOML; keys are the flags' names with `_`, e.g. `max_frame = "16MiB"`).
    /// Default: /etc/mom/momd.toml when it exists. Flags and MOMD_* variables override it.
    #[arg(long, env = "MOMD_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Address to listen on: HOST, HOST:PORT, IP, IP:PORT or [IPV6]:PORT (the port
    /// defaults to 7878; a host name listens on its first address).
    #[arg(long, env = "MOMD_LISTEN", default_value = mom_proto::DEFAULT_ADDR, value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Speak TLS on --listen with this certificate chain (PEM, leaf first); needs
    /// --tls-key. Clients then need `momctl --tls-ca CA.pem` (or --tls-insecure to test).
    #[arg(long, env = "MOMD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, env = "MOMD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Also listen in plaintext on this address, beside the TLS --listen (meant for
    /// loopback: local tools without certificates; momd warns about any other address).
    #[arg(long, env = "MOMD_LISTEN_PLAIN", value_name = "ADDR", value_parser = parse_listen)]
    pub listen_plain: Option<SocketAddr>,

    /// Serve the HTTP API (docs/http.md) on this address too: HOST:PORT (the port defaults
    /// to 7879). Off unless given. With --tls-cert it speaks HTTPS with the same
    /// certificate; users, tokens and permissions are those of the TCP protocol.
    #[arg(long, env = "MOMD_HTTP", value_name = "ADDR", value_parser = parse_http_listen)]
    pub http: Option<SocketAddr>,

    /// Data directory (created if missing). Default: the platform data dir
    /// (e.g. ~/.local/share/mom on Linux).
    #[arg(long, env = "MOMD_DATA")]
    pub data: Option<PathBuf>,

    /// When to fsync: `always` (ack after fsync), `batch=MS` (fsync every MS ms, ack at
    /// once) or `never`.
    #[arg(long, env = "MOMD_FSYNC", default_value = "always")]
    pub fsync: FsyncMode,

    /// Largest frame a client may send: bytes, or a size such as 16MiB.
    #[arg(long, env = "MOMD_MAX_FRAME", default_value_t = mom_proto::DEFAULT_MAX_FRAME, value_parser = parse_size_usize)]
    pub max_frame: usize,

    /// Largest payload of one message: bytes, or a size such as 4MiB.
    #[arg(long, env = "MOMD_MAX_PAYLOAD", default_value_t = mom_proto::DEFAULT_MAX_PAYLOAD, value_parser = parse_size_usize)]
    pub max_payload: usize,

    /// Requests a connection may have unanswered before momd stops reading it.
    #[arg(long, env = "MOMD_MAX_INFLIGHT", default_value_t = 1024)]
    pub max_inflight: usize,

    /// How long a partial frame may go without a new byte before momd closes the
    /// connection (a duration such as 30s or 500ms).
    #[arg(long, env = "MOMD_FRAME_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub frame_timeout: Duration,

    /// Bytes of large frames (over 64 KiB) momd reads at once, all connections together
    /// (a size such as 256MiB). A connection whose next frame does not fit waits, unread,
    /// until others' frames are done; smaller frames never wait.
    #[arg(long, env = "MOMD_FRAME_BUDGET", default_value_t = 256 * 1024 * 1024, value_parser = parse_size_usize)]
    pub frame_budget: usize,

    /// Bytes of requests momd holds at once, all connections together: a publish counts
    /// until it is durable and answered (a size such as 16MiB). Past it, connections are
    /// not read until there is room, each in turn, so a small publisher waits about one
    /// flush round of the others, not for their backlog.
    #[arg(long, env = "MOMD_INFLIGHT_BUDGET", default_value_t = 16 * 1024 * 1024, value_parser = parse_size_usize)]
    pub inflight_budget: usize,

    /// How long a client with replies or messages waiting may read none of them before
    /// momd closes its connection as a slow consumer (a duration such as 30s).
    #[arg(long, env = "MOMD_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Take clients without a user from any address, as admin, while no user is defined
    /// (without it, only clients from 127.0.0.1 and ::1 are taken, and momd refuses to
    /// listen on another address until a user exists). Warned about at every start.
    #[arg(long, env = "MOMD_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Lifetime of the tokens `momctl login` gets (a duration such as 1h).
    #[arg(long, env = "MOMD_TOKEN_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// Most connections one user may hold at once.
    #[arg(long, env = "MOMD_MAX_CONNECTIONS_PER_USER", default_value_t = 1000)]
    pub max_connections_per_user: usize,

    /// Most connections served at once; more wait to be accepted.
    #[arg(long, env = "MOMD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Bytes of deliveries queued per connection before live messages are skipped for a
    /// slow consumer (a size such as 8MiB).
    #[arg(long, env = "MOMD_WATCH_BUFFER", default_value_t = 8 * 1024 * 1024, value_parser = parse_size_usize)]
    pub watch_buffer: usize,

    /// Dedupe window for message ids.
    #[arg(long, env = "MOMD_DEDUPE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub dedupe_window: Duration,

    /// Retention of new topics: most messages kept (0 = unlimited).
    #[arg(long, env = "MOMD_MAX_MSGS", default_value_t = 0)]
    pub max_msgs: u64,

    /// Retention of new topics: most bytes kept, e.g. 1GiB (0 = unlimited).
    #[arg(long, env = "MOMD_MAX_BYTES", default_value_t = 0, value_parser = mom_proto::parse::size)]
    pub max_bytes: u64,

    /// Retention of new topics: oldest age kept, e.g. 7d (0 = unlimited).
    #[arg(long, env = "MOMD_MAX_AGE", default_value = "0", value_parser = parse_age)]
    pub max_age: Duration,

    /// Most topics the broker holds, all users together (0 = unlimited). Past it, a publish
    /// or `topic set` that would create a topic is refused with `too_large`; existing
    /// topics go on. The broker's own topics ($sys.events, dead letters) are not refused.
    #[arg(long, env = "MOMD_MAX_TOPICS", default_value_t = crate::core::DEFAULT_MAX_TOPICS)]
    pub max_topics: u64,

    /// Topics one user may create per second (0 = unlimited, the default). Past it, a
    /// publish or `topic set` that would create a topic is refused with `rate_limited`,
    /// saying when to retry; publishes to existing topics and reply inboxes are not
    /// counted.
    #[arg(long, env = "MOMD_TOPIC_CREATE_RATE", default_value_t = 0)]
    pub topic_create_rate: u64,

    /// Topics one user may create at once above --topic-create-rate, after a pause
    /// (0 = one second's worth: the rate).
    #[arg(long, env = "MOMD_TOPIC_CREATE_BURST", default_value_t = 0)]
    pub topic_create_burst: u64,

    /// Memory for the index's page cache, in MiB (it takes about twice that). Reads of
    /// messages go through the OS's page cache either way: a larger one speeds up only
    /// lookups spread over many topics' old messages.
    #[arg(long, env = "MOMD_CACHE_MB", default_value_t = 8)]
    pub cache_mb: u64,

    /// Free disk space below which publishes are refused (`unavailable`) while reads,
    /// acks and admin go on; they are taken again once the disk has room (a size such as
    /// 64MiB). A quarter of it is kept as a reserve file in the data dir.
    #[arg(long, env = "MOMD_MIN_FREE_DISK", default_value_t = 64 * 1024 * 1024, value_parser = mom_proto::parse::size)]
    pub min_free_disk: u64,

    /// What to log: a level (error, warn, info, debug, trace) or tracing directives such as
    /// `info,momd::session=debug`. The Raft library (cluster mode) logs only errors unless the
    /// filter names it (`info,openraft=info`). RUST_LOG, when set, wins. Changes on SIGHUP.
    #[arg(long, env = "MOMD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log lines as `text` or as `json` (one object per line, for journald and log shippers).
    #[arg(long, env = "MOMD_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9787). Off by default.
    #[arg(long, env = "MOMD_METRICS", value_name = "ADDR", value_parser = parse_listen_any_port)]
    pub metrics: Option<SocketAddr>,

    /// Topics with their own series in the metrics: the first N to carry traffic; the rest
    /// are summed under topic="other", so many topics never make many series.
    #[arg(long, env = "MOMD_METRICS_TOPICS", default_value_t = 20)]
    pub metrics_topics: usize,

    /// On SIGTERM, how long in-flight requests may take before connections are closed
    /// anyway (a duration such as 5s). What was acknowledged is on disk either way.
    #[arg(long, env = "MOMD_DRAIN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Cluster mode: the cluster's name. Nodes of one cluster share it; a node refuses peers
    /// of another. Needs --node-id, --peer-listen and --peers.
    #[arg(
        long,
        env = "MOMD_CLUSTER_ID",
        value_name = "NAME",
        help_heading = "Cluster"
    )]
    pub cluster_id: Option<String>,

    /// Cluster mode: this node's id (a number ≥ 1). Written into the data dir at first start;
    /// the data dir is refused under another id. A node not in --peers is a new one: it
    /// waits to be added (`momctl cluster join ID ADDR`).
    #[arg(long, env = "MOMD_NODE_ID", value_name = "N", help_heading = "Cluster",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: Option<u64>,

    /// Cluster mode: where this node listens for its peers (Raft traffic), e.g.
    /// 127.0.0.1:7901. Keep it off networks clients reach.
    #[arg(long, env = "MOMD_PEER_LISTEN", value_name = "ADDR", help_heading = "Cluster",
          value_parser = parse_peer_addr)]
    pub peer_listen: Option<SocketAddr>,

    /// Cluster mode: the first members, as ID=HOST:PORT of their --peer-listen, comma
    /// separated (this node included), e.g. 1=10.0.0.1:7901,2=10.0.0.2:7901,3=10.0.0.3:7901.
    /// Nodes started with the same list form the cluster by themselves.
    #[arg(long, env = "MOMD_PEERS", value_name = "LIST", help_heading = "Cluster",
          value_parser = parse_peers)]
    pub peers: Option<PeerList>,

    /// Cluster mode: spread the topics over N data groups (1 to 64), each a Raft group with
    /// its own leader, log and snapshots, their leaders on different nodes: publishes to
    /// topics of different groups are ordered, replicated and applied side by side. A topic's
    /// group comes from its name (a partitioned topic's partitions lie in consecutive
    /// groups). Fixed when the data dir is made (default 1); a later start may leave it out,
    /// and one with another number is refused. Every node of a cluster has the same.
    /// Queues are not yet available with more than one.
    #[arg(long, env = "MOMD_DATA_GROUPS", value_name = "N", help_heading = "Cluster",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub data_groups: Option<u16>,

    /// Cluster mode: a file holding the cluster's secret (at least 16 bytes, trailing
    /// whitespace ignored; the same on every node), e.g. made with `head -c 32 /dev/urandom
    /// | base64 > secret`. Peers then prove to each other that they hold it before anything
    /// else, and a node without it, or with another, is refused. It authenticates the
    /// peers; it does not encrypt their traffic.
    #[arg(
        long,
        env = "MOMD_CLUSTER_SECRET_FILE",
        value_name = "FILE",
        help_heading = "Cluster"
    )]
    pub cluster_secret_file: Option<PathBuf>,

    /// Cluster mode: encrypt the peer link with TLS. This node's certificate chain (PEM),
    /// signed by the CA of --peer-tls-ca and naming this node's --peer-listen host (an IP
    /// address or a DNS name, as the others dial it). With --peer-tls-key and
    /// --peer-tls-ca, on every node.
    #[arg(
        long,
        env = "MOMD_PEER_TLS_CERT",
        value_name = "FILE",
        help_heading = "Cluster"
    )]
    pub peer_tls_cert: Option<PathBuf>,

    /// Cluster mode: the private key of --peer-tls-cert (PEM).
    #[arg(
        long,
        env = "MOMD_PEER_TLS_KEY",
        value_name = "FILE",
        help_heading = "Cluster"
    )]
    pub peer_tls_key: Option<PathBuf>,

    /// Cluster mode: the CA certificate(s) (PEM) that sign every node's peer certificate;
    /// a peer whose certificate it did not sign is refused, both ways.
    #[arg(
        long,
        env = "MOMD_PEER_TLS_CA",
        value_name = "FILE",
        help_heading = "Cluster"
    )]
    pub peer_tls_ca: Option<PathBuf>,
}

/// `--peers`: node id → peer address, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerList(pub std::collections::BTreeMap<u64, String>);

fn parse_peer_addr(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{s:?}: expected HOST:PORT"));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?}: the name resolves to no address"))
}

fn parse_peers(s: &str) -> Result<PeerList, String> {
    let mut map = std::collections::BTreeMap::new();
    for item in s.split(',') {
        let item = item.trim();
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{item:?}: the node id must be a number ≥ 1"))?;
        parse_peer_addr(addr.trim())?;
        if map.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    Ok(PeerList(map))
}

/// Tools besides the broker. verify, repair and user need the data dir to themselves
/// (stop momd first).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the effective configuration, each value with where it came from (flag,
    /// environment, file and line, or default); or the first bad key and its line. Exit 0
    /// when the configuration is valid, 1 when not.
    #[command(
        after_help = "Examples:\n  momd check-config --config /etc/mom/momd.toml\n  \
        MOMD_FSYNC=never momd check-config   # shows fsync from env MOMD_FSYNC"
    )]
    CheckConfig,
    /// Copy the data dir to DIR, consistent at one moment: with momd running (it takes a
    /// checkpoint when asked, and keeps serving) or stopped. DIR must be new or empty.
    #[command(
        after_help = "Examples:\n  momd backup /srv/backup/mom-2026-12-01 --data /var/lib/mom\n  \
        momd restore /srv/backup/mom-2026-12-01 --data /var/lib/mom-new"
    )]
    Backup {
        /// Where the copy goes (created; must be empty if it exists).
        dir: PathBuf,
        /// Data directory to back up. Default: momd's --data / MOMD_DATA, else the
        /// platform data dir.
        #[arg(long, env = "MOMD_DATA")]
        data: Option<PathBuf>,
    },
    /// Make a backup made by `momd backup` a data dir again (NEW must be new or empty).
    #[command(
        after_help = "Example:\n  momd restore /srv/backup/mom-2026-12-01 --data /var/lib/mom-new\n  \
        momd --data /var/lib/mom-new"
    )]
    Restore {
        /// The backup.
        dir: PathBuf,
        /// The new data directory.
        #[arg(long, value_name = "NEW")]
        data: PathBuf,
    },
    /// Print what a data dir holds (format, topics, messages, queues) without starting the
    /// broker; for a running momd's, only what the files say.
    #[command(after_help = "Example:\n  momd info --data /var/lib/mom")]
    Info {
        /// Data directory. Default: momd's --data / MOMD_DATA, else the platform data dir.
        #[arg(long, env = "MOMD_DATA")]
        data: Option<PathBuf>,
    },
    /// Check every stored record against its checksum and the index; print one line per
    /// damaged range and a summary. Exit 0 when clean, 1 when damage is found, 3 when the
    /// check cannot run (e.g. a momd holds the data dir).
    #[command(
        after_help = "Example:\n  momd verify --data /var/lib/mom   # one line per damaged range, then a summary"
    )]
    Verify {
        /// Data directory to check. Default: momd's --data / MOMD_DATA, else the platform
        /// data dir.
        #[arg(long, env = "MOMD_DATA")]
        data: Option<PathBuf>,
    },
    /// Move damaged records aside into DATA/damaged/ (their bytes, and a line each in
    /// DATA/damaged/NOTES naming topic, seqs, segment file and offset). Every intact record
    /// stays readable at its seq; the seqs of what was moved are never given again. Exit 0
    /// when done, 3 when it cannot run.
    #[command(
        after_help = "Example:\n  momd verify --data /var/lib/mom   # exit 1: damage found\n  \
        momd repair --data /var/lib/mom\n  momd verify --data /var/lib/mom   # exit 0"
    )]
    Repair {
        /// Data directory to repair. Default: momd's --data / MOMD_DATA, else the platform
        /// data dir.
        #[arg(long, env = "MOMD_DATA")]
        data: Option<PathBuf>,
    },
    /// Manage users offline, on a stopped momd's data dir (the first admin, or a lost
    /// password). While momd runs, use `momctl user` instead. A cluster node's data dir is
    /// refused: a cluster's users are the cluster's, changed with `momctl user` through any
    /// node.
    #[command(
        after_help = "Examples:\n  momd user add root --admin --password-stdin --data /var/lib/mom < root.pw\n  \
        momd user add alice --publish 'orders.>' --subscribe 'orders.>' --data /var/lib/mom\n  \
        momd user ls --data /var/lib/mom\n  momd user passwd alice --data /var/lib/mom\n  \
        momd user rm alice --data /var/lib/mom"
    )]
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        /// Data directory. Default: momd's --data / MOMD_DATA, else the platform data dir.
        #[arg(long, env = "MOMD_DATA", global = true)]
        data: Option<PathBuf>,
    },
}

/// `momd user …`: the password comes from a prompt without echo, from `--password-stdin`
/// (one line), or from MOM_PASSWORD; never from the command line.
#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Add {
        name: String,
        /// The user may do everything, users included.
        #[arg(long)]
        admin: bool,
        /// Topic pattern the user may publish to (repeat for more).
        #[arg(long = "publish", value_name = "PATTERN")]
        publish: Vec<String>,
        /// Topic pattern the user may watch and consume (repeat for more).
        #[arg(long = "subscribe", value_name = "PATTERN")]
        subscribe: Vec<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user.
    Rm { name: String },
    /// List users (never their passwords).
    Ls,
    /// Set a user's password.
    Passwd {
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `--metrics`: like `--listen`, with 9787 when no port is given.
fn parse_listen_any_port(s: &str) -> Result<SocketAddr, String> {
    let mut a = parse_listen(s)?;
    if !s.contains(':') || s.ends_with(']') {
        a.set_port(9787);
    }
    Ok(a)
}

/// `--listen`: what `momctl -s` accepts, resolved to the first address it names.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let addr = mom_proto::parse::addr(s)?;
    addr.to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?}: the name resolves to no address"))
}

fn parse_http_listen(s: &str) -> Result<SocketAddr, String> {
    let has_port = s.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':')
    }) && (!s.starts_with('[') || s.contains("]:"));
    if has_port {
        parse_listen(s)
    } else if s.starts_with('[') || !s.contains(':') {
        parse_listen(&format!("{s}:7879"))
    } else {
        parse_listen(&format!("[{s}]:7879"))
    }
}

fn parse_size_usize(s: &str) -> Result<usize, String> {
    let n = mom_proto::parse::size(s)?;
    usize::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

fn parse_age(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

impl Args {
    /// Rules between flags, checked at start, by `check-config` and on reload.
    pub fn check(&self) -> Result<(), String> {
        // A delivery frame must hold one whole message: payload, headers and envelope.
        if self
            .max_payload
            .checked_add(2 * crate::core::MAX_HEADER_BYTES)
            .is_none_or(|n| n > self.max_frame)
        {
            return Err(format!(
                "max_payload ({}) must be at least 128 KiB below max_frame ({})",
                self.max_payload, self.max_frame
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key go together: give both or neither".into());
        }
        let cluster = [
            self.cluster_id.is_some(),
            self.node_id.is_some(),
            self.peer_listen.is_some(),
            self.peers.is_some(),
        ];
        if cluster.iter().any(|b| *b) && !cluster.iter().all(|b| *b) {
            return Err(
                "cluster mode needs cluster_id, node_id, peer_listen and peers together \
                        (give all four, or none for a single node)"
                    .into(),
            );
        }
        if let (Some(id), Some(addr), Some(peers)) = (self.node_id, self.peer_listen, &self.peers) {
            // A node not in the list is a new one, to be added with `momctl cluster join`.
            if let Some(listed) = peers.0.get(&id) {
                let same = listed
                    .to_socket_addrs()
                    .map(|mut a| a.any(|a| a == addr))
                    .unwrap_or(false);
                if !same {
                    return Err(format!(
                        "peers lists node {id} at {listed}, but peer_listen is {addr}"
                    ));
                }
            }
        }
        if self.data_groups.is_some() && self.cluster_id.is_none() {
            return Err("data_groups is for cluster mode (with cluster_id)".into());
        }
        if self.cluster_secret_file.is_some() && self.cluster_id.is_none() {
            return Err("cluster_secret_file is for cluster mode (with cluster_id)".into());
        }
        let peer_tls = [&self.peer_tls_cert, &self.peer_tls_key, &self.peer_tls_ca];
        let given = peer_tls.iter().filter(|f| f.is_some()).count();
        if given != 0 && given != 3 {
            return Err(
                "peer_tls_cert, peer_tls_key and peer_tls_ca go together: give all three or none"
                    .into(),
            );
        }
        if given == 3 && self.cluster_id.is_none() {
            return Err("peer_tls_cert is for cluster mode (with cluster_id)".into());
        }
        if let Some(c) = &self.cluster_id {
            if c.is_empty()
                || c.len() > 64
                || c.chars().any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return Err("cluster_id must be 1 to 64 characters, without spaces".into());
            }
        }
        if self.listen_plain.is_some() && self.tls_cert.is_none() {
            return Err(
                "listen_plain is the plaintext listener beside a TLS listen: it needs \
                        tls_cert and tls_key"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        let sub = match &self.command {
            Some(
                Command::Verify { data }
                | Command::Repair { data }
                | Command::User { data, .. }
                | Command::Backup { data, .. }
                | Command::Info { data },
            ) => data.as_ref(),
            _ => None,
        };
        if let Some(d) = sub.or(self.data.as_ref()) {
            return Ok(d.clone());
        }
        let dirs = directories::ProjectDirs::from("", "", "mom").ok_or_else(|| {
            anyhow::anyhow!("no home directory to put the default data dir in; pass --data DIR")
        })?;
        Ok(dirs.data_dir().to_path_buf())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
