//! Every frame of the protocol, as Rust types. docs/protocol.md is the contract; these
//! types follow it field for field. Each frame is a MessagePack map whose `type` field names
//! it; unknown fields are ignored so the protocol can grow.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::auth::*;
use crate::cluster::{ClusterJoin, ClusterLeave, ClusterStatus};
use crate::error::ErrorCode;
use crate::page::{ListReq, StatsReq};
use crate::queue::*;
use crate::topic_admin::*;

/// Headers of a message: string keys to string values.
pub type Headers = BTreeMap<String, String>;

/// Bytes of the header keys and values of one published message, at most.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Headers of one published message, at most.
pub const MAX_HEADERS: usize = 1024;

/// Starts the text of a decoding error that is a size limit, not malformed input
/// ([`crate::decode_body`] turns it into [`crate::FrameError::TooLarge`]).
pub(crate) const TOO_LARGE: &str = "too large: ";

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Hello(Hello),
    Publish(Publish),
    Watch(Watch),
    Unwatch(Unwatch),
    TopicList(ListReq),
    TopicInfo(TopicReq),
    TopicRm(TopicRm),
    TopicPurge(TopicRm),
    TopicSet(TopicSet),
    TopicCreate(TopicCreate),
    Stats(StatsReq),
    Ping(Req),
    QueueCreate(QueueCreate),
    QueueBind(QueueBind),
    QueueUnbind(QueueBind),
    QueueDelete(QueueDelete),
    QueuePurge(QueueReq),
    QueueInfo(QueueReq),
    QueueList(ListReq),
    Consume(Consume),
    Cancel(Cancel),
    Ack(Ack),
    Nack(Nack),
    Extend(Ack),
    Fetch(Fetch),
    QueueSet(QueueSet),
    QueuePeek(QueuePeek),
    QueueRedrive(QueueRedrive),
    ClientClose(ClientClose),
    TokenCreate(TokenCreate),
    TokenRevoke(TokenRevoke),
    UserAdd(UserAdd),
    UserRm(UserReq),
    UserInfo(UserReq),
    UserList(Req),
    UserPasswd(UserPasswd),
    UserGrant(UserGrant),
    UserRevoke(UserGrant),
    ClusterStatus(Req),
    ClusterJoin(ClusterJoin),
    ClusterLeave(ClusterLeave),
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome(Welcome),
    PublishOk(PublishOk),
    WatchOk(WatchOk),
    Deliver(Deliver),
    Notice(Notice),
    Ok(Req),
    Pong(Pong),
    TopicList(TopicList),
    TopicInfo(TopicInfoReply),
    Stats(Stats),
    Error(ErrorFrame),
    QueueInfo(QueueInfoReply),
    QueueList(QueueList),
    ConsumeOk(ConsumeOk),
    QueueDeliver(QueueDeliver),
    FetchOk(FetchOk),
    Token(Token),
    UserInfo(UserInfoReply),
    UserList(UserList),
    ClusterStatus(ClusterStatus),
}

/// The first frame of every connection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Hello {
    pub id: u64,
    /// Protocol version the client speaks.
    pub version: u32,
    /// Free-form client name, shown in stats and as part of the sender of its messages.
    #[serde(default)]
    pub client: String,
    /// A global client id this client was given before; the server keeps it if it is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The answer to `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub id: u64,
    pub version: u32,
    pub server_version: String,
    pub server_id: String,
    pub client_id: u64,
    pub user: String,
    pub max_frame: u64,
    pub max_payload: u64,
    pub max_inflight: u64,
    /// The cluster this node belongs to; absent for a single node. Nodes of one cluster
    /// hold the same messages, and the dedupe window of a `msg_id` spans them all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_id: String,
}

/// A request that carries only its id.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Req {
    pub id: u64,
}

/// A request naming one topic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TopicReq {
    pub id: u64,
    pub topic: String,
}

/// A batch of messages to one topic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Publish {
    pub id: u64,
    pub topic: String,
    pub msgs: Vec<PubMsg>,
    /// Fire and forget: no `publish_ok` is sent (errors still are). The client then does not
    /// learn whether the batch was stored.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_ack: bool,
}

/// One message of a publish batch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PubMsg {
    /// MessagePack `bin` only: a `str` or an array is a value of the wrong type
    /// (docs/protocol.md §4.2, §9), refused like any malformed frame.
    #[serde(deserialize_with = "bin_only")]
    pub payload: Bytes,
    #[serde(
        default,
        skip_serializing_if = "Headers::is_empty",
        deserialize_with = "headers_within_limits"
    )]
    pub headers: Headers,
    /// Publisher-chosen id; a repeat within the dedupe window is not stored twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// The message's key: stored with it, and on a partitioned topic it chooses the
    /// partition (the same key, the same partition, so one key's messages keep their order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A payload as the protocol has it, a `bin`. `Bytes`' own deserializer also takes a `str`
/// (its UTF-8 bytes) and an array of numbers, which would let a client that sends text by
/// mistake believe it speaks the protocol.
fn bin_only<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    struct Bin;
    impl<'de> serde::de::Visitor<'de> for Bin {
        type Value = Bytes;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a payload of type bin")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }
    }
    d.deserialize_bytes(Bin)
}

/// The headers of a published message, refused as soon as they pass [`MAX_HEADERS`] or
/// [`MAX_HEADER_BYTES`]: a frame holding a 100,000-key map costs no more to refuse than
/// its first thousand keys.
fn headers_within_limits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Headers, D::Error> {
    struct Within;
    impl<'de> serde::de::Visitor<'de> for Within {
        type Value = Headers;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of str to str")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
            use serde::de::Error;
            let mut out = Headers::new();
            let (mut n, mut bytes) = (0usize, 0usize);
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                n += 1;
                bytes += k.len() + v.len();
                if n > MAX_HEADERS {
                    return Err(A::Error::custom(format!(
                        "{TOO_LARGE}a message has more than {MAX_HEADERS} headers"
                    )));
                }
                if bytes > MAX_HEADER_BYTES {
                    return Err(A::Error::custom(format!(
                        "{TOO_LARGE}a message's headers are over {MAX_HEADER_BYTES} bytes \
                         (keys and values)"
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Within)
}

/// The acknowledgement of a publish batch: every message is durable.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PublishOk {
    pub id: u64,
    pub topic: String,
    /// The seq of each message, in batch order. A duplicate gets its original seq.
    pub seqs: Vec<u64>,
    /// How many messages of the batch were duplicates (not stored again).
    pub duplicates: u64,
    /// Live watches that matched the topic.
    pub watchers: u64,
    /// Queues bound to the topic.
    pub queues: u64,
    /// Indexes (0-based, in batch order) of the messages that were duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicate_indexes: Vec<u32>,
    /// For a partitioned topic: the partition of each message, in batch order (its seq in
    /// `seqs` is that partition's). Absent for other topics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<u32>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Only messages published after the watch was set up.
    #[default]
    New,
    /// Every stored message, then live.
    All,
    /// From seq `at` of each matching topic, then live.
    Seq,
    /// From the first message with time >= `at` (ms since the epoch), then live.
    Time,
    /// The last `at` messages of each matching topic (at least 1), then live.
    Last,
}

/// Start a live subscription (a watch) to one or more patterns.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Watch {
    pub id: u64,
    pub patterns: Vec<String>,
    #[serde(default)]
    pub from: StartAt,
    /// The seq, the time or the count for `from: seq` / `from: time` / `from: last`.
    #[serde(default)]
    pub at: u64,
    /// Only looking: the watch gets every message but does not count as a watcher or a
    /// responder (the `watchers` of `publish_ok` and `topic_info`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub passive: bool,
    /// Watches with the same group and the same patterns share the messages: each message
    /// goes to one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Resume: per topic, the last seq this client already has. Those topics replay from
    /// the next seq, whatever `from` says.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub after: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WatchOk {
    pub id: u64,
    /// The id carried by this watch's `deliver` and `notice` frames.
    pub watch: u64,
    /// Server time when the watch started, ms since the epoch: a client that reconnects
    /// resumes from it (`from: time`) for topics it has seen nothing of.
    #[serde(default)]
    pub time: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Unwatch {
    pub id: u64,
    pub watch: u64,
}

/// Who published a message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sender {
    pub user: String,
    pub client: u64,
    #[serde(default)]
    pub name: String,
}

/// A stored message as delivered.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Message {
    pub topic: String,
    pub seq: u64,
    /// Broker time of the publish, ms since the Unix epoch.
    pub time: u64,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
    pub sender: Sender,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// The key it was published with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub payload: Bytes,
    /// For a message from a queue: how many times it has been delivered (1 the first time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<u32>,
}

/// Messages for a watch, in order per topic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Deliver {
    pub watch: u64,
    pub msgs: Vec<Message>,
}

/// Something the server tells a watch outside the message stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub watch: u64,
    pub kind: NoticeKind,
    /// For `slow_consumer`: messages skipped since the last notice.
    #[serde(default)]
    pub skipped: u64,
    #[serde(default)]
    pub message: String,
    /// Set when the notice is for a queue consumer (then `watch` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The watch could not keep up; `skipped` messages were not sent to it.
    SlowConsumer,
    /// The replayed part of the watch is over; what follows is live.
    Live,
    /// The server ended the watch or the consumer (its queue was deleted).
    Ended,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Pong {
    pub id: u64,
    /// Server time, ms since the epoch.
    pub time: u64,
}

/// A client as seen in stats.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClientInfo {
    pub client_id: u64,
    pub name: String,
    pub user: String,
    pub addr: String,
    /// Connected since, ms since the epoch.
    pub since: u64,
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub watches: u64,
    /// The patterns of its live watches, one entry per watch (patterns joined by spaces).
    #[serde(default)]
    pub watch_patterns: Vec<String>,
    /// The queues it takes messages from: one entry per consumer (`consume`), and one per
    /// waiting pull (`fetch`) marked ` (pull)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
    /// Entries left out of `watch_patterns` and `consumers` so that this entry stays within
    /// its share of a page (`watches` still counts every watch). Sent only when not 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
}

/// Totals over the whole broker.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Totals {
    pub topics: u64,
    pub messages: u64,
    pub bytes: u64,
    pub published: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub slow_consumer_skipped: u64,
    pub connections: u64,
    pub watches: u64,
    pub in_rate: f64,
    pub out_rate: f64,
    /// Queues the broker holds.
    #[serde(default)]
    pub queues: u64,
    /// Stored messages found damaged on disk, all topics together (see `TopicInfo`).
    #[serde(default)]
    pub damaged: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Stats {
    pub id: u64,
    pub server_id: String,
    pub server_version: String,
    pub uptime_ms: u64,
    pub time: u64,
    pub fsync: String,
    pub totals: Totals,
    /// A page of topics, by name (the request's `topics`).
    pub topics: Vec<TopicInfo>,
    /// A page of connections, by client id (the request's `clients`).
    pub clients: Vec<ClientInfo>,
    /// A page of queues, by name (the request's `queues`).
    #[serde(default)]
    pub queues: Vec<QueueInfo>,
    /// Cursors of the sections' next pages; each absent when its section is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics_next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues_next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients_next: Option<String>,
    /// Resident memory of the broker process in bytes (0 where unknown).
    pub rss_bytes: u64,
    /// Size of the data directory on disk in bytes.
    pub disk_bytes: u64,
    /// Free space under the data directory in bytes (0 where unknown).
    #[serde(default)]
    pub disk_free_bytes: u64,
    /// Publishes are refused: the free space is under the server's floor.
    #[serde(default, skip_serializing_if = "is_false")]
    pub disk_full: bool,
    /// Watch patterns held by all connections together.
    #[serde(default)]
    pub watch_patterns: u64,
}

/// A failed request, or (with `id` nil) a connection-level error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame {
    #[serde(default)]
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(crate) fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// Close another client's connection (by its global client id), as if it had closed its
/// socket: its watches and consumers end and its unacked deliveries go back to their queues.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClientClose {
    pub id: u64,
    pub client_id: u64,
}

impl ClientFrame {
    /// The request id of this frame.
    pub fn id(&self) -> u64 {
        match self {
            ClientFrame::Hello(r) => r.id,
            ClientFrame::Publish(r) => r.id,
            ClientFrame::Watch(r) => r.id,
            ClientFrame::Unwatch(r) => r.id,
            ClientFrame::TopicList(r) | ClientFrame::QueueList(r) => r.id,
            ClientFrame::Stats(r) => r.id,
            ClientFrame::Ping(r) => r.id,
            ClientFrame::TopicInfo(r) => r.id,
            ClientFrame::TopicRm(r) | ClientFrame::TopicPurge(r) => r.id,
            ClientFrame::TopicSet(r) => r.id,
            ClientFrame::TopicCreate(r) => r.id,
            ClientFrame::QueueCreate(r) => r.id,
            ClientFrame::QueueBind(r) | ClientFrame::QueueUnbind(r) => r.id,
            ClientFrame::QueueDelete(r) => r.id,
            ClientFrame::QueuePurge(r) | ClientFrame::QueueInfo(r) => r.id,
            ClientFrame::Consume(r) => r.id,
            ClientFrame::Cancel(r) => r.id,
            ClientFrame::Ack(r) => r.id,
            ClientFrame::Nack(r) => r.id,
            ClientFrame::Extend(r) => r.id,
            ClientFrame::Fetch(r) => r.id,
            ClientFrame::QueueSet(r) => r.id,
            ClientFrame::QueuePeek(r) => r.id,
            ClientFrame::QueueRedrive(r) => r.id,
            ClientFrame::ClientClose(r) => r.id,
            ClientFrame::TokenCreate(r) => r.id,
            ClientFrame::TokenRevoke(r) => r.id,
            ClientFrame::UserAdd(r) => r.id,
            ClientFrame::UserRm(r) | ClientFrame::UserInfo(r) => r.id,
            ClientFrame::UserList(r) => r.id,
            ClientFrame::UserPasswd(r) => r.id,
            ClientFrame::UserGrant(r) | ClientFrame::UserRevoke(r) => r.id,
            ClientFrame::ClusterStatus(r) => r.id,
            ClientFrame::ClusterJoin(r) => r.id,
            ClientFrame::ClusterLeave(r) => r.id,
        }
    }
}

impl ServerFrame {
    /// The request id this frame answers, if it is a reply.
    pub fn reply_id(&self) -> Option<u64> {
        match self {
            ServerFrame::Welcome(r) => Some(r.id),
            ServerFrame::PublishOk(r) => Some(r.id),
            ServerFrame::WatchOk(r) => Some(r.id),
            ServerFrame::Ok(r) => Some(r.id),
            ServerFrame::Pong(r) => Some(r.id),
            ServerFrame::TopicList(r) => Some(r.id),
            ServerFrame::TopicInfo(r) => Some(r.id),
            ServerFrame::Stats(r) => Some(r.id),
            ServerFrame::Error(r) => r.id,
            ServerFrame::QueueInfo(r) => Some(r.id),
            ServerFrame::QueueList(r) => Some(r.id),
            ServerFrame::ConsumeOk(r) => Some(r.id),
            ServerFrame::FetchOk(r) => Some(r.id),
            ServerFrame::Token(r) => Some(r.id),
            ServerFrame::UserInfo(r) => Some(r.id),
            ServerFrame::UserList(r) => Some(r.id),
            ServerFrame::ClusterStatus(r) => Some(r.id),
            ServerFrame::Deliver(_) | ServerFrame::Notice(_) | ServerFrame::QueueDeliver(_) => None,
        }
    }

    pub fn error(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error(ErrorFrame {
            id,
            code,
            message: message.into(),
        })
    }
}

/// Just the `id` of a frame: used to answer a frame that otherwise failed to decode.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct IdOnly {
    pub id: u64,
}

/// A borrowed view of a [`Message`] that serializes to exactly the same map, so a server can
/// write deliveries without copying payloads.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRef<'a> {
    pub topic: &'a str,
    pub seq: u64,
    pub time: u64,
    #[serde(skip_serializing_if = "Headers::is_empty")]
    pub headers: &'a Headers,
    pub sender: &'a Sender,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    pub payload: &'a Bytes,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<u32>,
}
