//! The frames that manage topics: `topic_create`, `topic_set` (with [`Limits`]),
//! `topic_rm` and `topic_purge`, and what `topic_info` and `topic_list` answer
//! (docs/protocol.md §4.5–4.8, §4.23, §4.34, §5.8, §5.9, §6.3).

use serde::{Deserialize, Serialize};

use crate::message::{is_false, is_zero, is_zero_u32};

/// Retention limits of a topic. 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default)]
    pub max_msgs: u64,
    #[serde(default)]
    pub max_bytes: u64,
    #[serde(default)]
    pub max_age_ms: u64,
    /// Hard limits: applied even to messages a queue still holds (the queue then counts
    /// them as dropped). The limits above never remove those.
    #[serde(default)]
    pub hard_max_bytes: u64,
    #[serde(default)]
    pub hard_max_age_ms: u64,
}

/// Change the retention limits of a topic (creating it if needed). A missing field keeps
/// its current value; 0 means unlimited.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TopicSet {
    pub id: u64,
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msgs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_max_age_ms: Option<u64>,
}

/// Create a topic, with `partitions` partitions (topics `NAME.0` … `NAME.{N-1}`, each with
/// its own seqs). Refused with `conflict` if the topic exists.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TopicCreate {
    pub id: u64,
    pub topic: String,
    /// 0 or 1: an ordinary topic.
    #[serde(default)]
    pub partitions: u32,
    /// Copies the cluster keeps of each message, at least (0: the server's default). A
    /// single node keeps one.
    #[serde(default)]
    pub replicas: u32,
}

/// What the broker holds for one topic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    /// Messages currently stored.
    pub messages: u64,
    /// Payload and header bytes currently stored.
    pub bytes: u64,
    /// Seq of the oldest stored message (last_seq + 1 when empty).
    pub first_seq: u64,
    /// Seq of the newest message ever stored (0 if none).
    pub last_seq: u64,
    /// Time of the newest message, ms since the epoch (0 if none).
    pub last_time: u64,
    pub created: u64,
    pub limits: Limits,
    /// Live watches matching this topic now.
    pub watchers: u64,
    /// Queues bound to this topic now.
    pub queues: u64,
    /// Messages published per second, averaged over the last few seconds.
    pub in_rate: f64,
    /// Messages delivered per second to watches and queues, averaged likewise.
    pub out_rate: f64,
    /// Stored messages found damaged on disk (they cannot be read; `momd verify` lists
    /// them, `momd repair` moves them aside). Sent only when not 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub damaged: u64,
    /// The user who created it; only it or an admin may remove, purge or change it. Absent
    /// for topics made before owners were recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// A partitioned topic: how many partitions (`NAME.0` … `NAME.{N-1}`), whose messages
    /// and bytes this entry sums. Sent only when not 0.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub partitions: u32,
    /// The copies kept of each message (cluster mode; sent only when not 0).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub replicas: u32,
}

/// One page of topics, by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TopicList {
    pub id: u64,
    pub topics: Vec<TopicInfo>,
    /// The cursor of the next page (its request's `after`); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Topics the broker holds in all, whatever the page's filters.
    #[serde(default)]
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TopicInfoReply {
    pub id: u64,
    pub topic: TopicInfo,
    /// For `topic_purge`: how many messages it removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<u64>,
}

/// Remove a topic (`topic_rm`) or every message of it (`topic_purge`). Refused with
/// `conflict` while a queue still holds some of its messages, unless `force`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TopicRm {
    pub id: u64,
    pub topic: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
}
