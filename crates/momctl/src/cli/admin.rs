//! The subcommands that manage what the broker holds: `queue`, `topic` and `client`.

use std::time::Duration;

use clap::Subcommand;

use super::OutputArgs;

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Create a queue bound to patterns; succeeds if it exists with the same settings.
    #[command(
        after_help = "Examples:\n  momctl queue create jobs --bind 'jobs.*' --from all --max-deliver 5 --ack-wait 30s\n\n\
Exits 7 if the queue exists with other settings (change them with `queue set`)."
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
        ack_wait: Option<Duration>,
    },
    /// Change a queue's settings.
    #[command(after_help = "Examples:\n  momctl queue set jobs --max-deliver 10 --ack-wait 5m")]
    Set {
        #[arg(add = crate::complete::queues())]
        name: String,
        /// Deliveries before a message moves to $dlq.NAME (0 = never).
        #[arg(long)]
        max_deliver: Option<u32>,
        /// Time a consumer has to ack before the message is delivered again.
        #[arg(long, value_parser = humantime::parse_duration)]
        ack_wait: Option<Duration>,
    },
    /// List queues (those whose name matches PATTERN), by name.
    #[command(
        after_help = "Examples:\n  momctl queue ls\n  momctl queue ls 'billing.*' --limit 20\n  momctl queue ls --json\n\n\
Queues come from the broker a page at a time, filtered there; all are shown unless --limit \
says otherwise (stderr then says when more exist)."
    )]
    Ls {
        /// Only queues whose name matches this pattern (as if it were a topic).
        pattern: Option<String>,
        /// Show at most N queues.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// Show one queue.
    #[command(after_help = "Examples:\n  momctl queue info jobs")]
    Info {
        #[arg(add = crate::complete::queues())]
        name: String,
    },
    /// Show the next messages a queue would deliver, without delivering them.
    #[command(
        after_help = "Examples:\n  momctl queue peek jobs -n 5\n  momctl queue peek jobs --json | jq .payload\n\n\
Peeking changes nothing: no delivery is counted, no ack deadline starts. In --json, \
`delivery` is how often the message was delivered before (0: never)."
    )]
    Peek {
        #[arg(add = crate::complete::queues())]
        name: String,
        /// How many messages (1 to 256).
        #[arg(short = 'n', long = "count", value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(1..=256))]
        count: u32,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Move the dead letters of $dlq.NAME back into the queue, with fresh delivery counts.
    #[command(after_help = "Examples:\n  momctl queue redrive jobs")]
    Redrive {
        #[arg(add = crate::complete::queues())]
        name: String,
    },
    /// Delete a queue; refused (exit 7) while messages wait in it, unless --force.
    #[command(after_help = "Examples:\n  momctl queue rm jobs\n  momctl queue rm jobs --force")]
    Rm {
        #[arg(add = crate::complete::queues())]
        name: String,
        /// Delete it even though messages wait in it.
        #[arg(long)]
        force: bool,
    },
    /// Drop every message waiting in a queue (not those delivered and not yet
    /// acknowledged); says how many.
    #[command(after_help = "Examples:\n  momctl queue purge jobs")]
    Purge {
        #[arg(add = crate::complete::queues())]
        name: String,
    },
    /// Add patterns to a queue.
    #[command(after_help = "Examples:\n  momctl queue bind jobs 'batch.>'")]
    Bind {
        #[arg(add = crate::complete::queues())]
        name: String,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Remove patterns from a queue (all with none).
    #[command(after_help = "Examples:\n  momctl queue unbind jobs 'batch.>'")]
    Unbind {
        #[arg(add = crate::complete::queues())]
        name: String,
        patterns: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// List topics (those matching PATTERN), by name; reply inboxes ($inbox.*) only with
    /// --all.
    #[command(
        after_help = "Examples:\n  momctl topic ls\n  momctl topic ls 'orders.>'\n  momctl topic ls 'devices.*.telemetry' --prefix devices.d12 --limit 50\n  momctl topic ls --all --json\n\n\
Topics come from the broker a page at a time, filtered there, and are printed as they come: \
all of them unless --limit says otherwise (stderr then says when more exist)."
    )]
    Ls {
        /// Only topics matching this pattern.
        pattern: Option<String>,
        /// Only topics whose name starts with this text.
        #[arg(long, value_name = "TEXT")]
        prefix: Option<String>,
        /// Show at most N topics.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Show reply inboxes too.
        #[arg(short, long)]
        all: bool,
    },
    /// Create a topic, optionally partitioned; answered as the first time if it exists as
    /// asked, refused (exit 7) if it exists otherwise.
    #[command(
        after_help = "Examples:\n  momctl topic create clicks --partitions 6\n  momctl topic create clicks --partitions 6 --replicas 3\n  momctl publish clicks --key user-42 '{\"page\":\"/\"}'\n  momctl subscribe clicks --from all -v\n\n\
A topic with N partitions (2 or more) stores its messages in the topics NAME.0 … NAME.{N-1}, \
each with its own seqs and order. A message's key chooses its partition (FNV-1a of the key, \
modulo N), so one key's messages stay in order; a publish without a key goes to the next \
partition in turn. Publishing or subscribing to NAME means all its partitions; NAME.3 is one \
of them. --replicas (cluster mode) is checked against the cluster's voting members, each of \
which keeps a copy of every message."
    )]
    Create {
        topic: String,
        /// Partitions (1: an ordinary topic).
        #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
        partitions: u32,
        /// Copies of each message the cluster must keep, at least (cluster mode; a single
        /// node keeps one).
        #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..=255))]
        replicas: Option<u32>,
    },
    /// Show one topic.
    #[command(after_help = "Examples:\n  momctl topic info metrics.cpu")]
    Info {
        #[arg(add = crate::complete::topics())]
        topic: String,
    },
    /// Delete a topic and all its messages; refused (exit 7) while queues hold some of
    /// them, unless --force.
    #[command(
        after_help = "Examples:\n  momctl topic rm metrics.cpu\n  momctl topic rm jobs.build --force"
    )]
    Rm {
        #[arg(add = crate::complete::topics())]
        topic: String,
        /// Delete it even though queues still hold some of its messages.
        #[arg(long)]
        force: bool,
    },
    /// Remove every message of a topic (it stays, and its seqs go on); refused (exit 7)
    /// while queues hold some of them, unless --force.
    #[command(
        after_help = "Examples:\n  momctl topic purge metrics.cpu\n  momctl topic purge '$dlq.jobs'"
    )]
    Purge {
        #[arg(add = crate::complete::topics())]
        topic: String,
        /// Purge even what queues still hold (they count it as dropped).
        #[arg(long)]
        force: bool,
    },
    /// Set a topic's retention limits (0 = unlimited); creates the topic if missing.
    #[command(
        after_help = "Examples:\n  momctl topic set metrics.cpu --max-msgs 100000 --max-age 7d\n  momctl topic set logs --max-bytes 1GiB"
    )]
    Set {
        #[arg(add = crate::complete::topics())]
        topic: String,
        /// Keep at most this many messages.
        #[arg(long)]
        max_msgs: Option<u64>,
        /// Keep at most this many bytes (accepts KiB, MiB, GiB, KB, MB, GB).
        #[arg(long, value_parser = mom_proto::parse::size)]
        max_bytes: Option<u64>,
        /// Drop messages older than this (e.g. 1h, 7d; 0 = unlimited).
        #[arg(long, value_parser = parse_age)]
        max_age: Option<u64>,
        /// Hard byte limit: applies even to messages queues still hold (they count them as
        /// dropped). The limits above never remove those.
        #[arg(long, value_parser = mom_proto::parse::size)]
        hard_max_bytes: Option<u64>,
        /// Hard age limit: applies even to messages queues still hold.
        #[arg(long, value_parser = parse_age)]
        hard_max_age: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCmd {
    /// List the connections, by client id: name, user, address, messages in and out.
    #[command(
        after_help = "Examples:\n  momctl client ls\n  momctl client ls --limit 100\n  momctl client ls --json | jq -r .name\n\n\
All are shown unless --limit says otherwise (stderr then says when more exist); this \
momctl's own connection is among them."
    )]
    Ls {
        /// Show at most N clients.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
}

/// An age in ms; "0" means unlimited.
fn parse_age(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    humantime::parse_duration(s)
        .map(|d| d.as_millis() as u64)
        .map_err(|e| e.to_string())
}
