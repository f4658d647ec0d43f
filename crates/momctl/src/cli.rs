//! Every flag of momctl, defined once with its doc (the `--help` text).

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "momctl",
    version,
    about = "Publish, subscribe and manage the mom broker from the shell",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 timed out before enough messages, \
4 cannot connect, 5 unauthorized/forbidden, 6 not found, 7 conflict.\n\n\
Examples:\n  seq 1 1000 | momctl publish metrics.cpu\n  momctl subscribe 'metrics.>' --from all -n 1000\n  momctl topic ls"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Broker address.
    #[arg(short, long, global = true, env = "MOM_SERVER", default_value = mom_proto::DEFAULT_ADDR)]
    pub server: String,

    /// Output JSON: one object per line (per message, per topic).
    #[arg(long, global = true)]
    pub json: bool,

    /// User name (for brokers with users).
    #[arg(long, global = true, env = "MOM_USER")]
    pub user: Option<String>,

    /// Password (for brokers with users).
    #[arg(long, global = true, env = "MOM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish messages: each MSG, or stdin one message per line.
    #[command(
        visible_alias = "pub",
        after_help = "Examples:\n  momctl publish orders.eu '{\"id\": 42}' -H trace=abc --id order-42\n  seq 1 1000000 | momctl publish metrics.cpu\n  printf 'a\\0b\\0' | momctl publish blobs -0\n  momctl publish images.raw --whole < photo.jpg\n\n\
Exits 0 only when every message was acknowledged (stored durably). With --json, each \
acknowledged batch is printed as {\"topic\", \"seqs\", \"duplicates\", \"watchers\", \"queues\"}. A stdin line over the \
payload limit is refused with its line number and exit 1; the lines before it stay acknowledged."
    )]
    Publish(PublishArgs),

    /// Stream messages matching PATTERNs to stdout as they arrive.
    #[command(
        visible_alias = "sub",
        after_help = "Examples:\n  momctl subscribe 'orders.*' --json\n  momctl subscribe 'metrics.>' --from all -n 1000000 > back.txt\n  momctl subscribe logs --from 10m --timeout 5s\n\n\
Patterns: '*' matches one token, a final '>' one or more. With -n, exits 0 after N \
messages, or 3 if --timeout passes first."
    )]
    Subscribe(SubscribeArgs),

    /// Pull messages from a queue (a durable subscription); each is acked after it reached
    /// stdout.
    #[command(
        after_help = "Examples:\n  momctl recv billing\n  momctl recv billing -n 100 --timeout 5s --json\n  momctl recv billing --follow | while read -r job; do ...; done\n  momctl recv billing --no-ack            # peek: it is delivered again later\n  momctl recv jobs --bind 'jobs.*'         # create the queue if missing\n\n\
Without --timeout, waits for the first message. Exits 6 if the queue does not exist, 3 if \
--timeout passes before enough messages came. A closed stdout leaves the unwritten message \
unacked: it is delivered again."
    )]
    Recv(RecvArgs),

    /// Remove bindings of a durable subscription (all of them with no PATTERN).
    #[command(
        after_help = "Examples:\n  momctl unsubscribe billing 'refunds.>'\n  momctl unsubscribe billing"
    )]
    Unsubscribe {
        /// The durable subscription (queue).
        name: String,
        /// Patterns to remove.
        patterns: Vec<String>,
    },

    /// Manage queues (durable subscriptions).
    #[command(subcommand)]
    Queue(QueueCmd),

    /// Send a request and print the reply.
    #[command(
        after_help = "Examples:\n  momctl request svc.time now --timeout 2s\n  echo '{\"q\": 1}' | momctl request svc.search\n\n\
The request carries the headers reply-to (a topic of its own under $inbox) and \
correlation-id. Exits 3 if no reply comes in time; if nothing watches or queues the topic, \
fails at once with exit 6 (no responders). A reply whose status header is not 0 (the \
replier's command failed) is printed and the exit is 1."
    )]
    Request {
        topic: String,
        /// The request; with none, all of stdin.
        msg: Option<String>,
        /// How long to wait for the reply.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Header KEY=VALUE (repeatable).
        #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
        headers: Vec<String>,
    },

    /// Answer requests on PATTERN by running a command: the request on its stdin, its stdout
    /// as the reply.
    #[command(
        after_help = "Examples:\n  momctl reply svc.time -- date\n  momctl reply 'svc.upper' -- tr a-z A-Z\n\n\
The reply carries the request's correlation-id and a status header with the command's exit \
code. Runs until interrupted."
    )]
    Reply {
        pattern: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },

    /// Manage topics.
    #[command(subcommand)]
    Topic(TopicCmd),

    /// Show what the broker holds: totals, topics, clients.
    #[command(
        after_help = "Examples:\n  momctl stats\n  momctl stats --watch\n  momctl stats --json | jq .totals"
    )]
    Stats {
        /// Refresh every second until interrupted.
        #[arg(long)]
        watch: bool,
    },

    /// Check that the broker answers, and how fast.
    #[command(after_help = "Examples:\n  momctl ping\n  momctl ping -c 5")]
    Ping {
        /// Number of round trips.
        #[arg(short, long, default_value_t = 1)]
        count: u32,
    },

    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  momctl completions bash > /etc/bash_completion.d/momctl\n  momctl completions zsh > ~/.zfunc/_momctl"
    )]
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Topic to publish to (created on first publish).
    pub topic: String,

    /// Messages; with none, read stdin.
    pub msgs: Vec<String>,

    /// Stdin messages are NUL-separated instead of one per line.
    #[arg(short = '0', long = "null", conflicts_with = "whole")]
    pub null: bool,

    /// All of stdin is one message.
    #[arg(long)]
    pub whole: bool,

    /// Header KEY=VALUE (repeatable).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,

    /// Message id for dedupe: a repeat within the broker's window is not stored twice.
    /// With several messages, the n-th gets ID-n, so re-running a pipeline is safe.
    #[arg(long = "id", value_name = "ID")]
    pub msg_id: Option<String>,

    /// Do not warn when a message reached no watcher and no queue.
    #[arg(short, long)]
    pub quiet: bool,

    /// Messages per batch (from stdin).
    #[arg(long, default_value_t = 4096, hide_short_help = true)]
    pub batch: usize,

    /// Batches in flight before waiting for acks.
    #[arg(long, default_value_t = 16, hide_short_help = true)]
    pub window: usize,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Patterns to watch ('*' one token, final '>' one or more).
    #[arg(required = true)]
    pub patterns: Vec<String>,

    /// Where to start: new (default), all, a seq number, a time (RFC 3339) or an age
    /// (e.g. 10m: from ten minutes ago).
    #[arg(long, default_value = "new")]
    pub from: String,

    /// Exit after N messages.
    #[arg(short = 'n', long = "count", value_name = "N")]
    pub count: Option<u64>,

    /// Give up after this long (e.g. 5s, 2m); with -n, exit 3 if fewer came.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,

    /// NUL-terminate payloads instead of newline.
    #[arg(short = '0', long = "null")]
    pub null: bool,

    /// Bind durable subscription NAME to the patterns (creating it) and stream from it with
    /// acks: what is published while the subscriber is away waits for its return.
    #[arg(long, value_name = "NAME")]
    pub durable: Option<String>,
}

#[derive(Debug, Args)]
pub struct RecvArgs {
    /// The queue (durable subscription).
    pub name: String,

    /// How many messages to receive.
    #[arg(short = 'n', long = "count", value_name = "N", default_value_t = 1)]
    pub count: u64,

    /// Give up after this long (e.g. 5s); exit 3 if fewer than N messages came.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,

    /// Keep receiving until interrupted.
    #[arg(short, long, conflicts_with = "count")]
    pub follow: bool,

    /// Do not ack: the messages are delivered again (to anyone) once this command ends or
    /// their ack deadline passes.
    #[arg(long)]
    pub no_ack: bool,

    /// NUL-terminate payloads instead of newline.
    #[arg(short = '0', long = "null")]
    pub null: bool,

    /// Create the queue bound to PATTERN if it is missing (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub bind: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Create a queue bound to patterns.
    #[command(
        after_help = "Examples:\n  momctl queue create jobs --bind 'jobs.*' --from all --max-deliver 5 --ack-wait 30s"
    )]
    Create {
        name: String,
        /// Pattern to bind (repeatable).
        #[arg(long, value_name = "PATTERN")]
        bind: Vec<String>,
        /// Where to start in the topics that exist now: new (default), all, a seq, a time
        /// or an age.
        #[arg(long, default_value = "new")]
        from: String,
        /// Deliveries before a message moves to $dlq.NAME (0 = never).
        #[arg(long)]
        max_deliver: Option<u32>,
        /// Time a consumer has to ack before the message is delivered again.
        #[arg(long, value_parser = humantime::parse_duration)]
        ack_wait: Option<std::time::Duration>,
    },
    /// List queues.
    #[command(after_help = "Examples:\n  momctl queue ls\n  momctl queue ls --json")]
    Ls,
    /// Show one queue.
    #[command(after_help = "Examples:\n  momctl queue info jobs")]
    Info { name: String },
    /// Delete a queue; refused (exit 7) while messages wait in it, unless --force.
    #[command(after_help = "Examples:\n  momctl queue rm jobs\n  momctl queue rm jobs --force")]
    Rm {
        name: String,
        /// Delete it even though messages wait in it.
        #[arg(long)]
        force: bool,
    },
    /// Drop every message waiting in a queue.
    #[command(after_help = "Examples:\n  momctl queue purge jobs")]
    Purge { name: String },
    /// Add patterns to a queue.
    #[command(after_help = "Examples:\n  momctl queue bind jobs 'batch.>'")]
    Bind {
        name: String,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Remove patterns from a queue (all with none).
    #[command(after_help = "Examples:\n  momctl queue unbind jobs 'batch.>'")]
    Unbind { name: String, patterns: Vec<String> },
}

#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// List topics.
    #[command(after_help = "Examples:\n  momctl topic ls\n  momctl topic ls --json")]
    Ls,
    /// Show one topic.
    #[command(after_help = "Examples:\n  momctl topic info metrics.cpu")]
    Info { topic: String },
    /// Delete a topic and all its messages.
    #[command(after_help = "Examples:\n  momctl topic rm metrics.cpu")]
    Rm { topic: String },
    /// Set a topic's retention limits (0 = unlimited); creates the topic if missing.
    #[command(
        after_help = "Examples:\n  momctl topic set metrics.cpu --max-msgs 100000 --max-age 7d\n  momctl topic set logs --max-bytes 1GiB"
    )]
    Set {
        topic: String,
        /// Keep at most this many messages.
        #[arg(long)]
        max_msgs: Option<u64>,
        /// Keep at most this many bytes (accepts KiB, MiB, GiB, KB, MB, GB).
        #[arg(long, value_parser = parse_size)]
        max_bytes: Option<u64>,
        /// Drop messages older than this (e.g. 1h, 7d; 0 = unlimited).
        #[arg(long, value_parser = parse_age)]
        max_age: Option<u64>,
        /// Hard byte limit: applies even to messages queues still hold (they count them as
        /// dropped). The limits above never remove those.
        #[arg(long, value_parser = parse_size)]
        hard_max_bytes: Option<u64>,
        /// Hard age limit: applies even to messages queues still hold.
        #[arg(long, value_parser = parse_age)]
        hard_max_age: Option<u64>,
    },
}

/// A byte size: a number with an optional unit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// An age in ms; "0" means unlimited.
pub fn parse_age(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    humantime::parse_duration(s)
        .map(|d| d.as_millis() as u64)
        .map_err(|e| e.to_string())
}
