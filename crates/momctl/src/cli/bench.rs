//! `momctl bench`: load the broker and measure it.

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Publish and wait for every acknowledgement (stored durably): msgs/s and the
    /// send → ack latency of each request.
    #[command(
        after_help = "Examples:\n  momctl bench pub bench.x --msgs 1000000 --pubs 4 --window 256\n  momctl bench pub bench.x --msgs 5000 --window 1     # one durable publish at a time\n  momctl bench pub dev --msgs 100000 --topics 100000  # a new topic per message\n  momctl -s 127.0.0.1:7801 bench pub w --msgs 200000 --baseline 127.0.0.1:7878  # a cluster against one node"
    )]
    Pub(BenchArgs),
    /// Read TOPIC's messages as they come (or from its start with --from-start), as a
    /// `bench pub` elsewhere sends them: msgs/s and the publish → delivery latency.
    #[command(
        after_help = "Examples:\n  momctl bench sub bench.x --msgs 100000 &  momctl bench pub bench.x --msgs 100000\n  momctl bench sub bench.x --msgs 1000000 --from-start  # replay what is stored"
    )]
    Sub(BenchArgs),
    /// Publishers and live watchers of one topic together: every watcher gets every
    /// message; the publish → delivery latency.
    Pubsub(BenchArgs),
    /// A durable queue bound to TOPIC: publishers, and --subs competing consumers that ack
    /// what they get; the publish → delivery latency. The queue is removed at the end.
    Queue(BenchArgs),
    /// Request/reply on TOPIC: --subs responders (sharing the requests) and --pubs
    /// requesters with --window requests each in flight (1 by default): the request →
    /// reply latency.
    Request(BenchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// The topic to load.
    pub topic: String,

    /// Messages to publish (or, for sub, to read) in all.
    #[arg(long, default_value_t = 100_000)]
    pub msgs: u64,

    /// Payload bytes of each message (at least 8: a send time goes in the first 8).
    #[arg(long, default_value_t = 128)]
    pub size: usize,

    /// Publishing (or requesting) connections; the messages are shared among them.
    #[arg(long, default_value_t = 1)]
    pub pubs: u32,

    /// Subscribing connections: watchers (sub, pubsub), consumers (queue), responders
    /// (request).
    #[arg(long, default_value_t = 1)]
    pub subs: u32,

    /// Requests in flight per publisher (publish requests of --batch messages each); the
    /// default is 256, and 1 for request.
    #[arg(long)]
    pub window: Option<u32>,

    /// Messages per publish request (1: one message per request, as an application
    /// publishing one event at a time does).
    #[arg(long, default_value_t = 1)]
    pub batch: u32,

    /// pub: each publisher runs --window tasks that each publish one message at a time,
    /// awaiting its ack, through the client library's batching producer (which sends what
    /// is waiting as batch frames), as a service with many concurrent requests would.
    #[arg(long)]
    pub coalesce: bool,

    /// pub: spread the messages over N topics, TOPIC.0 … TOPIC.<N-1> (each request to the
    /// next one in turn): with N as large as --msgs, every message creates a topic.
    #[arg(long, value_name = "N")]
    pub topics: Option<u64>,

    /// sub: read the topic from its first stored message instead of waiting for new ones.
    #[arg(long)]
    pub from_start: bool,

    /// Run the same load against these servers first (say one node, to compare a cluster
    /// with), then against --server, and say how the two compare: the ratio of their msgs/s
    /// and of their median latencies.
    #[arg(long, value_name = "ADDR[,ADDR...]", value_parser = momctl::client::server_list_arg)]
    pub baseline: Option<String>,
}
