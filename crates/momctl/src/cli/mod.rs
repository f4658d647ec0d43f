//! Every flag of momctl, defined once with its doc (the `--help` text). The subcommands
//! that manage queues, topics and clients are in `admin`.

mod admin;
mod bench;
mod security;

pub use admin::{ClientCmd, QueueCmd, TopicCmd};
pub use bench::{BenchArgs, BenchCmd};
pub use security::{ContextCmd, LoginArgs, UserCmd};

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "momctl",
    version,
    about = "Publish, subscribe and manage the mom broker from the shell",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 timed out before enough messages, \
4 cannot connect, 5 unauthorized/forbidden, 6 not found, 7 conflict, 8 connection lost.\n\n\
Examples:\n  seq 1 1000 | momctl publish metrics.cpu\n  momctl subscribe 'metrics.>' --from all -n 1000\n  momctl recv jobs --exec -- ./build.sh\n  momctl topic ls\n  momctl -s broker:7443 --tls-ca ca.pem topic ls   # a momd with --tls-cert\n  momctl -s 127.0.0.1:7801,127.0.0.1:7802 publish orders.eu more   # the first that answers"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Broker address: HOST or HOST:PORT (the port defaults to 7878), or a comma-separated
    /// list of them to fail over between (`-s a:7801,b:7801,c:7801`). They are tried in
    /// order: one that refuses the connection, does not answer or fails the TLS or hello
    /// handshake gives way to the next, while a refused user or token is the answer (exit
    /// 5). Commands that reconnect move on to the next server of the list.
    #[arg(short, long, global = true, env = "MOM_SERVER", default_value = mom_proto::DEFAULT_ADDR,
          value_name = "ADDR[,ADDR...]", value_parser = momctl::client::server_list_arg)]
    pub server: String,

    /// Output JSON: one object per line (per message, per topic, per acknowledgement).
    #[arg(long, global = true)]
    pub json: bool,

    /// User to authenticate as (with MOM_PASSWORD, or the token `momctl login` saved).
    #[arg(long, global = true, env = "MOM_USER")]
    pub user: Option<String>,

    /// Password. Prefer MOM_PASSWORD or `momctl login`: a password on the command line
    /// shows in `ps` (momctl warns).
    #[arg(long, global = true, env = "MOM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// A token from `momctl login` to authenticate with.
    #[arg(long, global = true, env = "MOM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Use a saved context (server, user, TLS settings): see `momctl context`.
    #[arg(long, global = true, env = "MOM_CONTEXT")]
    pub context: Option<String>,

    /// Speak TLS, trusting the CA certificate(s) in this PEM file (each server's certificate
    /// must name its host as given to -s). The system's CA store is not read: for a public CA,
    /// give its bundle (e.g. /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, global = true, env = "MOM_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Speak TLS without checking the server's certificate (for testing only: anyone on
    /// the way can read and change the connection; warned about on stderr).
    #[arg(long, global = true, env = "MOM_TLS_INSECURE")]
    pub tls_insecure: bool,

    /// Speak TLS, trusting the system's CA certificates (SSL_CERT_FILE, else the system
    /// bundle); --tls-ca trusts a CA of your own instead.
    #[arg(long, global = true, env = "MOM_TLS")]
    pub tls: bool,
}

/// What a long-running command does when the connection to the broker is lost.
#[derive(Debug, Args, Clone)]
pub struct ReconnectArgs {
    /// Reconnect when the connection is lost (the default for subscribe, recv --follow,
    /// recv --exec and reply; publish needs it asked for), starting with the next server
    /// of a -s list.
    #[arg(long, conflicts_with = "no_reconnect")]
    pub reconnect: bool,

    /// Exit with code 8 when the connection is lost instead of reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,

    /// Give up reconnecting after this long (exit 8); 0 tries forever.
    #[arg(long, default_value = "5m", value_parser = parse_duration_or_zero,
          hide_short_help = true)]
    pub reconnect_for: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish messages: each MSG, or stdin one message per line.
    #[command(
        visible_alias = "pub",
        after_help = "Examples:\n  momctl publish orders.eu '{\"id\": 42}' -H trace=abc --id order-42\n  seq 1 1000000 | momctl publish metrics.cpu\n  printf 'a\\0b\\0' | momctl publish blobs -0\n  momctl publish images.raw --whole < photo.jpg\n  tail -F app.log | momctl publish logs.app --id-from sha256 --reconnect\n  momctl subscribe 'a.>' --json | momctl publish b --json-input\n  momctl publish clicks --key user-42 '{\"page\": \"/\"}'\n\n\
Exits 0 only when every message was acknowledged (stored durably). With --json, each \
message's acknowledgement is printed as it comes: {\"topic\", \"seq\", \"duplicate\", \"line\", \
\"watchers\", \"queues\"}, and \"partition\" on a partitioned topic (the seq is that \
partition's). A duplicate (its id was seen within the broker's dedupe window) is \
reported on stderr and not stored again. A stdin line over the payload limit is refused with \
its line number and exit 1; the lines before it stay acknowledged. If the connection is lost, \
the exit is 8 and stderr says which lines were acknowledged and which are unknown; with \
--reconnect, the unknown ones are sent again after reconnecting and the broker drops what it \
already stored (they carry ids: --id, --id-from, or one made for this run). They are sent \
again only to the broker they were sent to: reconnected to another server of a -s list, \
publish reports them and exits 8.\n\n\
Ids: --id ID numbers stdin messages ID-1, ID-2, … (a re-run of the same input is deduplicated, \
but a restarted `tail -f` numbers from 1 again and its new lines would be taken for \
duplicates); --id-from sha256 names each message by its content (identical lines are one \
message within the window); --id-from header:NAME takes a header's value."
    )]
    Publish(PublishArgs),

    /// Stream messages matching PATTERNs to stdout as they arrive.
    #[command(
        visible_alias = "sub",
        after_help = "Examples:\n  momctl subscribe 'orders.*' --json\n  momctl subscribe 'metrics.>' --from all -n 1000000 > back.txt\n  momctl subscribe logs --from 10m --timeout 5s\n  momctl subscribe 'orders.>' -v\n  momctl subscribe 'orders.>' --format '%t %s %T %h{trace} %p\\n'\n  momctl subscribe logs.app --last 20 --until-end\n\n\
Patterns: '*' matches one token, a final '>' one or more. With -n, exits 0 after N \
messages, or 3 if --timeout passes first. In --json, payload_json holds the payload itself \
when it is a JSON object or array (a bare number or string stays text). When the broker restarts, the watch reconnects and \
resumes after the last message it printed: nothing twice, nothing skipped (--no-reconnect \
exits 8 instead).\n\n\
--format fields: %t topic, %s seq, %T time (RFC 3339), %e time (ms since the epoch), %h \
headers (k=v,k=v), %h{NAME} one header, %i msg id, %k key, %u sender (user/client id/name), %p \
payload, %S payload size, %d delivery count (queues), %D delivery id (queues), %% a percent \
sign; \\n \\t \\0 \\\\ escapes."
    )]
    Subscribe(SubscribeArgs),

    /// Take messages from a queue (a durable subscription): print them, or run a command
    /// for each.
    #[command(
        after_help = "Examples:\n  momctl recv billing\n  momctl recv billing -n 100 --timeout 5s --json\n  momctl recv jobs --exec -- ./build.sh              # the safe worker\n  momctl recv jobs --exec --concurrency 4 -- sh -c 'convert - out-$MOM_SEQ.png'\n  momctl recv jobs --follow --prefetch 1 | while read -r job; do ...; done\n  momctl recv jobs --no-ack --json                   # settle later: momctl ack jobs ID\n  momctl recv jobs --bind 'jobs.*'                   # create the queue if missing\n\n\
Printed messages are acknowledged once written (to a pipe: once the reader took them out of \
it); what could not be written is delivered again. --exec runs the command once per message \
with the payload on stdin and MOM_TOPIC, MOM_SEQ, MOM_DELIVERY (the delivery count), \
MOM_DELIVERY_ID, MOM_MSG_ID, MOM_TIME and MOM_H_<HEADER> in its environment, and acks on exit \
0, nacks otherwise; a killed worker loses nothing (its job is delivered again). Exits 6 if the \
queue does not exist, 3 if --timeout passes before enough messages came."
    )]
    Recv(RecvArgs),

    /// Acknowledge deliveries taken with `recv --no-ack`.
    #[command(
        after_help = "Examples:\n  momctl ack jobs jobs.build:17 jobs.build:18\n  momctl recv jobs --no-ack --json | jq -r .delivery_id | momctl ack jobs\n\n\
A DELIVERY is TOPIC:SEQ, as printed in delivery_id (--json) or %D (--format). With none \
given, they are read from stdin, one per line."
    )]
    Ack {
        /// The queue.
        #[arg(add = crate::complete::queues())]
        name: String,
        /// Deliveries (TOPIC:SEQ); none: read stdin.
        deliveries: Vec<String>,
    },

    /// Give deliveries back to be delivered again (after --delay).
    #[command(
        after_help = "Examples:\n  momctl nack jobs jobs.build:17 --delay 10s\n\n\
A nack counts as a failed delivery: after the queue's max deliveries the message moves to \
$dlq.NAME."
    )]
    Nack {
        /// The queue.
        #[arg(add = crate::complete::queues())]
        name: String,
        /// Deliveries (TOPIC:SEQ); none: read stdin.
        deliveries: Vec<String>,
        /// Deliver again no sooner than this.
        #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
        delay: Duration,
    },

    /// Remove bindings of a durable subscription (all of them with no PATTERN).
    #[command(
        after_help = "Examples:\n  momctl unsubscribe billing 'refunds.>'\n  momctl unsubscribe billing"
    )]
    Unsubscribe {
        /// The durable subscription (queue).
        #[arg(add = crate::complete::queues())]
        name: String,
        /// Patterns to remove.
        patterns: Vec<String>,
    },

    /// Manage queues (durable subscriptions).
    #[command(subcommand)]
    Queue(QueueCmd),

    /// Log in: exchange a user and password for a token, saved for this server.
    #[command(
        after_help = "Examples:\n  MOM_USER=alice momctl login -s broker:7878      # asks for the password\n  \
momctl login --user alice --password-stdin < alice.pw\n\n\
The token (valid for the server's --token-ttl, 1 h by default) is saved in momctl's config \
dir (MOM_CONFIG_DIR, else ~/.config/mom), readable by you only; later commands and momtui \
use it."
    )]
    Login(LoginArgs),

    /// Log out: revoke the saved token on the server and forget it.
    Logout,

    /// Show who this connection is: server, user, and the saved token's expiry.
    Whoami,

    /// Manage users (admins; a user may see itself and set its own password).
    #[command(subcommand)]
    User(UserCmd),

    /// Save and pick connection settings by name, like `nats context`.
    #[command(subcommand)]
    Context(ContextCmd),

    /// Send a request and print the reply.
    #[command(
        after_help = "Examples:\n  momctl request svc.time now --timeout 2s\n  echo '{\"q\": 1}' | momctl request svc.search\n  momctl request svc.health ping --replies 3 --timeout 1s --json\n\n\
The request carries the headers reply-to (a topic of its own under $inbox) and \
correlation-id. Exits 3 if fewer than --replies replies come in time; if nothing watches or \
queues the topic, fails at once with exit 6 (no responders; passive watchers do not count). \
A reply whose status header is not 0 (the replier's command failed) is printed and the exit \
is 1."
    )]
    Request {
        #[arg(add = crate::complete::topics())]
        topic: String,
        /// The request; with none, all of stdin.
        msg: Option<String>,
        /// How long to wait for the replies.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Header KEY=VALUE (repeatable).
        #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
        headers: Vec<String>,
        /// Wait for this many replies (from several repliers started with `reply --all`).
        #[arg(long, default_value_t = 1, value_name = "N")]
        replies: u32,
    },

    /// Answer requests on PATTERN by running a command: the request on its stdin, its stdout
    /// as the reply.
    #[command(
        after_help = "Examples:\n  momctl reply svc.time -- date\n  momctl reply 'svc.upper' -- tr a-z A-Z\n  momctl reply svc.resize -- convert - -resize 50% -\n\n\
Several repliers on one pattern share the requests (each request to one of them), like NATS \
queue groups; --all makes every replier answer every request. The reply carries the \
request's correlation-id and a status header with the command's exit code. Runs until \
interrupted, reconnecting when the broker restarts."
    )]
    Reply {
        pattern: String,
        /// Every replier answers every request (instead of sharing them).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        reconnect: ReconnectArgs,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },

    /// Manage topics.
    #[command(subcommand)]
    Topic(TopicCmd),

    /// See the connections to the broker.
    #[command(subcommand)]
    Client(ClientCmd),

    /// Show what the broker holds: totals, then every topic, queue and client.
    #[command(
        after_help = "Examples:\n  momctl stats\n  momctl stats --limit 0             # the totals only\n  momctl stats --limit 20 --watch\n  momctl stats --json | jq .totals\n\n\
The broker sends its listings a page at a time; momctl follows the pages, so every topic, \
queue and client is shown (with --limit, the first N of each, and stderr says when more \
exist). Messages found damaged on disk are counted (`damaged` in --json; a line of its own \
when there are any)."
    )]
    Stats {
        /// Refresh every second until interrupted.
        #[arg(long)]
        watch: bool,
        /// Show at most N topics, N queues and N clients (0: the totals only).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },

    /// Cluster mode: the nodes and Raft groups as the server sees them.
    #[command(subcommand)]
    Cluster(ClusterCmd),

    /// Check that the broker answers, and how fast.
    #[command(after_help = "Examples:\n  momctl ping\n  momctl ping -c 5")]
    Ping {
        /// Number of round trips.
        #[arg(short, long, default_value_t = 1)]
        count: u32,
    },

    /// Measure the broker: publish, subscribe, queue and request/reply loads with
    /// msgs/s and latency percentiles (`--json`: one object on the last line).
    #[command(subcommand)]
    Bench(BenchCmd),

    /// Print a shell completion script (commands and flags).
    #[command(
        after_help = "Examples:\n  momctl completions bash > /etc/bash_completion.d/momctl\n  momctl completions zsh > ~/.zfunc/_momctl\n  source <(COMPLETE=bash momctl)       # also offers topic and queue names, asked of the broker\n  COMPLETE=fish momctl | source\n\n\
The scripts printed here complete commands and flags. For topic and queue names, have the shell \
ask momctl itself as you type: `source <(COMPLETE=bash momctl)` in ~/.bashrc (zsh: \
`source <(COMPLETE=zsh momctl)`; fish: `COMPLETE=fish momctl | source`). The names come from \
the broker in MOM_SERVER."
    )]
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Topic to publish to (created on first publish). `-`: each stdin line names its own
    /// topic: `TOPIC MESSAGE` (the topic, one space, the message), as `sed 's/.*/devices.&
    /// &/'` makes them; consecutive lines of one topic go in one request, and at least
    /// 1024 requests are kept in flight.
    #[arg(add = crate::complete::topics())]
    pub topic: String,

    /// Messages; with none, read stdin.
    pub msgs: Vec<String>,

    /// Stdin messages are NUL-separated instead of one per line.
    #[arg(short = '0', long = "null", conflicts_with_all = ["whole", "json_input"])]
    pub null: bool,

    /// All of stdin is one message.
    #[arg(long, conflicts_with = "json_input")]
    pub whole: bool,

    /// Each stdin line is a JSON object as `subscribe --json` prints it: payload (with
    /// encoding), headers, msg_id and key are taken, other fields ignored.
    #[arg(short = 'J', long)]
    pub json_input: bool,

    /// Header KEY=VALUE (repeatable).
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,

    /// The messages' key, stored with each. On a partitioned topic it chooses the
    /// partition: one key's messages go to one partition, in order.
    #[arg(short = 'k', long, value_name = "KEY")]
    pub key: Option<String>,

    /// Message id for dedupe: a repeat within the broker's window is not stored twice.
    /// Stdin messages get ID-1, ID-2, … (the n-th message ID-n).
    #[arg(long = "id", value_name = "ID", conflicts_with = "id_from")]
    pub msg_id: Option<String>,

    /// Make each message's id from its content (`sha256`) or a header (`header:NAME`):
    /// ids that survive a restart of the publisher.
    #[arg(long, value_name = "sha256|header:NAME", value_parser = parse_id_from)]
    pub id_from: Option<IdFrom>,

    /// Do not warn when a message reached no watcher and no queue.
    #[arg(short, long)]
    pub quiet: bool,

    /// Messages per batch (from stdin).
    #[arg(long, default_value_t = 4096, hide_short_help = true)]
    pub batch: usize,

    /// Batches in flight before waiting for acks.
    #[arg(long, default_value_t = 16, hide_short_help = true)]
    pub window: usize,

    #[command(flatten)]
    pub reconnect: ReconnectArgs,
}

/// Where a message's id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdFrom {
    Sha256,
    Header(String),
}

fn parse_id_from(s: &str) -> Result<IdFrom, String> {
    if s == "sha256" {
        return Ok(IdFrom::Sha256);
    }
    match s.strip_prefix("header:") {
        Some(h) if !h.is_empty() => Ok(IdFrom::Header(h.to_string())),
        _ => Err(format!("{s:?}: expected sha256 or header:NAME")),
    }
}

/// How messages are written to stdout (subscribe, recv, queue peek, request).
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// NUL-terminate payloads instead of newline.
    #[arg(short = '0', long = "null", conflicts_with_all = ["raw", "format", "headers_only", "verbose"])]
    pub null: bool,

    /// Payloads as they are, with nothing after them (a `--whole` publish round-trips byte
    /// for byte).
    #[arg(long, conflicts_with_all = ["format", "headers_only", "verbose"])]
    pub raw: bool,

    /// Print the topic before each payload: `TOPIC PAYLOAD`.
    #[arg(short, long, conflicts_with_all = ["format", "headers_only"])]
    pub verbose: bool,

    /// Print each message with a template, e.g. '%t %s %T %h{trace} %p\n' (see below).
    #[arg(long, value_name = "FMT", conflicts_with = "headers_only")]
    pub format: Option<String>,

    /// Print only the headers, `k=v` separated by spaces, one line per message.
    #[arg(long)]
    pub headers_only: bool,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Patterns to watch ('*' one token, final '>' one or more).
    #[arg(required = true, add = crate::complete::topics())]
    pub patterns: Vec<String>,

    /// Where to start: new (default), all, last, a seq number, a time (RFC 3339) or an age
    /// (e.g. 10m: from ten minutes ago).
    #[arg(long, default_value = "new")]
    pub from: String,

    /// Start with the last N messages of each matching topic.
    #[arg(long, value_name = "N", conflicts_with = "from")]
    pub last: Option<u64>,

    /// Exit after N messages.
    #[arg(short = 'n', long = "count", value_name = "N")]
    pub count: Option<u64>,

    /// Give up after this long (e.g. 5s, 2m); with -n, exit 3 if fewer came.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,

    /// Exit once what was stored when it started has been printed (with --from or --last).
    #[arg(long)]
    pub until_end: bool,

    /// Only look: this watch does not count as a watcher or a responder (it does not turn
    /// "no responders" into a timeout, nor silence publish's "reached no watcher").
    #[arg(long)]
    pub passive: bool,

    /// Bind durable subscription NAME to the patterns (creating it; --from says where a new
    /// binding starts) and stream from it with acks: what is published while the subscriber
    /// is away waits for its return.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["passive", "until_end", "last"])]
    pub durable: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub reconnect: ReconnectArgs,
}

#[derive(Debug, Args)]
pub struct RecvArgs {
    /// The queue (durable subscription).
    #[arg(add = crate::complete::queues())]
    pub name: String,

    /// How many messages to take (default 1; with --exec: jobs to run, by default until
    /// interrupted).
    #[arg(short = 'n', long = "count", value_name = "N")]
    pub count: Option<u64>,

    /// Give up after this long (e.g. 5s); exit 3 if fewer than N messages came.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,

    /// Keep receiving until interrupted.
    #[arg(short, long, conflicts_with = "count")]
    pub follow: bool,

    /// With --follow into a pipe: messages written to the pipe and not yet read from it
    /// (each is acknowledged once the reader took it, so a pipe cannot swallow a queue). 1
    /// takes about a thousand messages a second; more is faster and shares less evenly.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub prefetch: u32,

    /// Do not ack: print each message with its delivery id (delivery_id in --json, %D in
    /// --format) and settle it later with `momctl ack|nack`. Unsettled by the ack deadline,
    /// it is delivered again without counting as a failed delivery.
    #[arg(long, conflicts_with = "exec")]
    pub no_ack: bool,

    /// Run the command after `--` once per message (payload on stdin); ack on exit 0, nack
    /// otherwise.
    #[arg(long, requires = "command")]
    pub exec: bool,

    /// With --exec: commands running at once (messages in flight).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "exec")]
    pub concurrency: u32,

    /// With --exec: a failed job is delivered again no sooner than this.
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration_or_zero,
          requires = "exec")]
    pub nack_delay: Duration,

    /// Create the queue bound to PATTERN if it is missing (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub bind: Vec<String>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub reconnect: ReconnectArgs,

    /// The command for --exec and its arguments.
    #[arg(last = true, requires = "exec")]
    pub command: Vec<String>,
}

/// A duration where a bare "0" is allowed.
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_without_port_gets_the_default() {
        let c = Cli::try_parse_from(["momctl", "-s", "127.0.0.1", "ping"]).unwrap();
        assert_eq!(c.global.server, "127.0.0.1:7878");
        assert!(Cli::try_parse_from(["momctl", "-s", "127.0.0.1:x", "ping"]).is_err());
    }

    #[test]
    fn server_takes_a_list_and_bad_lists_are_usage_errors() {
        let c = Cli::try_parse_from(["momctl", "-s", "127.0.0.1:7801,broker", "ping"]).unwrap();
        assert_eq!(c.global.server, "127.0.0.1:7801,broker:7878");
        for bad in ["a,,b", "a,b,", ",a", "a,b:x", "a,a"] {
            let e = Cli::try_parse_from(["momctl", "--server", bad, "ping"]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
    }

    #[test]
    fn id_from_values() {
        assert_eq!(parse_id_from("sha256"), Ok(IdFrom::Sha256));
        assert_eq!(
            parse_id_from("header:trace"),
            Ok(IdFrom::Header("trace".into()))
        );
        assert!(parse_id_from("header:").is_err());
        assert!(parse_id_from("md5").is_err());
    }
}

/// `momctl cluster …`.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Nodes (role in the metadata group, the groups each leads, client and peer address,
    /// last contact) and each Raft group (leader, term, log and applied index, each
    /// replica's lag), as the server asked sees them. Publishes go to the data group's
    /// leader.
    #[command(
        after_help = "Examples:\n  momctl cluster status\n  momctl -s 127.0.0.1:7803 cluster status --json | jq .groups\n\n\
A single node (not in cluster mode) says so and exits 0. A replica's lag is known from the \
group's leader: the server asked fetches it, and shows `?` when no leader answers."
    )]
    Status,
    /// Add node ID, started with `--node-id ID --peer-listen PEER_ADDR` and the cluster's
    /// `--cluster-id` and `--peers` (admins). It catches up as a learner, then votes.
    #[command(
        after_help = "Examples:\n  momd --cluster-id demo --node-id 4 --listen 127.0.0.1:7804 \\\n       --peer-listen 127.0.0.1:7904 --peers 1=127.0.0.1:7901,2=127.0.0.1:7902,3=127.0.0.1:7903 --data n4\n  momctl cluster join 4 127.0.0.1:7904\n\n\
Exit 7 (conflict) when whoever answers at PEER_ADDR is not node ID of this cluster; exit 1 \
(unavailable) when it does not answer within 5 s, or has not caught up in 20 s (it stays a learner and \
keeps catching up: run the join again); exit 5 for a user who is not an admin."
    )]
    Join {
        /// The new node's id (not used before in this cluster).
        id: u64,
        /// Its --peer-listen address.
        peer_addr: String,
    },
    /// Remove node ID (admins); then stop it. Its id is not given to a new node: a node
    /// that comes back needs its own data dir and a new id.
    #[command(
        after_help = "Examples:\n  momctl cluster leave 3\n\nExit 6 when ID is not a member; 7 \
when it is the last voter."
    )]
    Leave {
        /// The node to remove.
        id: u64,
    },
}
