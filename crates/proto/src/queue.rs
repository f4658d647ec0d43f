//! The frames of queues (durable subscriptions): create, bind, consume, fetch, ack and
//! nack, peek, redrive, and what the broker says about a queue. docs/protocol.md sections
//! 3.7 and 4.11–4.27 are the contract.

use serde::{Deserialize, Serialize};

use crate::message::{is_false, is_zero, Message, StartAt};

/// A request naming one queue.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueReq {
    pub id: u64,
    pub queue: String,
}

/// Create a queue (a durable subscription) bound to patterns.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueCreate {
    pub id: u64,
    pub queue: String,
    #[serde(default)]
    pub bindings: Vec<String>,
    /// Where the queue starts in topics that exist now: `new` (default), `all`, `seq`, `time`.
    #[serde(default)]
    pub from: StartAt,
    #[serde(default)]
    pub at: u64,
    /// Deliveries before a message is dead-lettered (default 5; 0 = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    /// Time a consumer has to ack a delivery before it is redelivered (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait_ms: Option<u64>,
    /// Succeed if the queue exists already (its bindings are then added to).
    #[serde(default, skip_serializing_if = "is_false")]
    pub exist_ok: bool,
}

/// Add (`queue_bind`) or remove (`queue_unbind`) patterns; unbind with none removes all.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueBind {
    pub id: u64,
    pub queue: String,
    #[serde(default)]
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueDelete {
    pub id: u64,
    pub queue: String,
    /// Delete even though messages wait in it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}

/// Start pushing a queue's messages to this connection, at most `credit` unacked at once.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Consume {
    pub id: u64,
    pub queue: String,
    pub credit: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConsumeOk {
    pub id: u64,
    /// The id carried by this consumer's `queue_deliver` frames.
    pub consumer: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cancel {
    pub id: u64,
    pub consumer: u64,
    /// What the consumer still holds was never worked on: it goes back as if never
    /// delivered (the attempts do not count), as with `nack`'s `release`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub release: bool,
}

/// A message of a queue, named by its topic and seq.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MsgKey {
    pub topic: String,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ack {
    pub id: u64,
    pub queue: String,
    pub msgs: Vec<MsgKey>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Nack {
    pub id: u64,
    pub queue: String,
    pub msgs: Vec<MsgKey>,
    /// Deliver again no sooner than this.
    #[serde(default)]
    pub delay_ms: u64,
    /// The messages were not worked on at all (taken, then given back unopened): they go
    /// back as if never delivered, and the attempt does not count towards `max_deliver`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub release: bool,
}

/// Pull up to `max` messages, waiting up to `timeout_ms` for the first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Fetch {
    pub id: u64,
    pub queue: String,
    pub max: u32,
    #[serde(default)]
    pub timeout_ms: u64,
    /// The deliveries outlive this connection: they wait for an `ack` or `nack` from any
    /// connection until their ack deadline. One that is neither acked nor nacked in time is
    /// delivered again without counting as a failed delivery.
    #[serde(default, skip_serializing_if = "is_false")]
    pub detached: bool,
}

/// Change a queue's settings; a missing field keeps its value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueSet {
    pub id: u64,
    pub queue: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_wait_ms: Option<u64>,
}

/// Read up to `max` of the messages a queue would deliver next, without delivering them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueuePeek {
    pub id: u64,
    pub queue: String,
    pub max: u32,
}

/// Move the messages of `$dlq.<queue>` back into the queue, to be delivered again with
/// fresh attempts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueRedrive {
    pub id: u64,
    pub queue: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FetchOk {
    pub id: u64,
    pub queue: String,
    pub msgs: Vec<Message>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueDeliver {
    pub consumer: u64,
    pub queue: String,
    pub msgs: Vec<Message>,
}

/// What the broker holds for one queue.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueInfo {
    pub name: String,
    pub owner: String,
    pub created: u64,
    pub bindings: Vec<String>,
    pub max_deliver: u32,
    pub ack_wait_ms: u64,
    pub consumers: u64,
    /// Messages waiting to be delivered.
    pub ready: u64,
    /// Delivered, not yet acknowledged.
    pub unacked: u64,
    /// Messages published to its topics and not yet acknowledged: ready + unacked.
    #[serde(default)]
    pub lag: u64,
    pub delivered: u64,
    pub acked: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    /// Removed by a topic's retention or removal before this queue delivered them.
    pub dropped: u64,
    pub in_rate: f64,
    pub out_rate: f64,
    /// Bindings left out of `bindings` in a listing (`queue_list`, `stats`) so that this
    /// entry stays within its share of a page; `queue_info` lists them all. Sent only when
    /// not 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueInfoReply {
    pub id: u64,
    pub queue: QueueInfo,
    /// For `queue_purge`: how many messages it dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<u64>,
    /// For `queue_redrive`: how many dead letters went back into the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redriven: Option<u64>,
}

/// One page of queues, by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueList {
    pub id: u64,
    pub queues: Vec<QueueInfo>,
    /// The cursor of the next page (its request's `after`); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Queues the broker holds in all, whatever the page's filters.
    #[serde(default)]
    pub total: u64,
}
