//! Read back what momd holds: every topic of the run replayed from its start, the dead
//! letters of the queue, and the damage momd announced on `$sys.events`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{bail, Context};
use mom_proto::{Message, NoticeKind, StartAt};
use momctl::client::{Client, WatchEvent};

use crate::ledger::{key_parts, parse_id, payload, Ctx, Id, Key, SeqRange};
use crate::workload::{key_partition, msg_key, QUEUE};

/// One stored message.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    /// None: the id is not one of ours (or missing).
    pub key: Option<Key>,
    /// A message a client dropped mid-frame: must never be stored.
    pub half: bool,
    /// Its payload is what its id says.
    pub payload_ok: bool,
}

#[derive(Debug, Default)]
pub struct Readback {
    /// Per topic of the run: seq → what is stored there.
    pub topics: Vec<HashMap<u64, Stored>>,
    /// Per topic: messages the replay skipped as unreadable (the `live` notice).
    pub skipped: Vec<u64>,
    /// Messages dead-lettered from the queue: (topic, seq) of the original.
    pub dead_lettered: HashSet<(u16, u64)>,
    /// Damage announced on `$sys.events` (`record_damaged`).
    pub damage_events: Vec<SeqRange>,
}

/// Replay one topic from its start until the `live` notice; `f` gets each message.
/// Returns how many the replay skipped as unreadable.
pub async fn replay(
    c: &Client,
    topic: &str,
    idle: Duration,
    mut f: impl FnMut(Message),
) -> anyhow::Result<u64> {
    // Bounded like every wait of the read-back: a watch never answered is an error that
    // names its topic, not a run that hangs.
    let mut w = tokio::time::timeout(idle, c.watch(vec![topic.to_string()], StartAt::All, 0))
        .await
        .map_err(|_| anyhow::anyhow!("watch of {topic} from the start: no answer within {idle:?}"))?
        .with_context(|| format!("watching {topic} from the start"))?;
    loop {
        match tokio::time::timeout(idle, w.next()).await {
            Err(_) => bail!("replay of {topic} stalled: nothing for {idle:?} before its end"),
            Ok(Err(e)) => bail!("replay of {topic}: {e}"),
            Ok(Ok(WatchEvent::Messages(msgs))) => msgs.into_iter().for_each(&mut f),
            Ok(Ok(WatchEvent::Notice(n))) if n.kind == NoticeKind::Live => {
                let _ = w.unwatch().await;
                return Ok(n.skipped);
            }
            Ok(Ok(WatchEvent::Notice(_))) => {}
        }
    }
}

pub async fn read_all(ctx: &Ctx, c: &Client) -> anyhow::Result<Readback> {
    let idle = Duration::from_secs(120);
    let mut rb = read_topics(ctx, c).await?;
    let dlq = format!("$dlq.{QUEUE}");
    let mut dead = HashSet::new();
    replay(c, &dlq, idle, |m| {
        let topic = m.headers.get("dlq-topic").and_then(|t| ctx.topic_index(t));
        let seq = m.headers.get("dlq-seq").and_then(|s| s.parse::<u64>().ok());
        if let (Some(t), Some(s)) = (topic, seq) {
            dead.insert((t, s));
        }
    })
    .await?;
    rb.dead_lettered = dead;
    let mut events = Vec::new();
    replay(c, "$sys.events", idle, |m| {
        if let Some(r) = damage_event(ctx, &m.payload) {
            events.push(r);
        }
    })
    .await?;
    rb.damage_events = events;
    Ok(rb)
}

/// Every topic of the run replayed from its start (what a cluster node holds; no queue and
/// no damage events).
pub async fn read_topics(ctx: &Ctx, c: &Client) -> anyhow::Result<Readback> {
    let idle = Duration::from_secs(120);
    let mut rb = Readback::default();
    for (t, name) in ctx.topics.iter().enumerate() {
        let mut stored = HashMap::new();
        let partition = ctx.partition_of(t as u16);
        let skipped = replay(c, name, idle, |m| {
            let (key, half) = match m.msg_id.as_deref().map(|s| parse_id(s, ctx.probe)) {
                Some(Id::Msg(k)) => (Some(k), false),
                Some(Id::Half(_)) => (None, true),
                _ => (None, false),
            };
            // In a partition, a message of ours published with a key (not one a hostile
            // client sent it directly) holds the key it was given, in the key's partition.
            let key_ok = match (partition, key, &m.key) {
                (Some(part), Some(k), Some(got)) => {
                    let (p, n) = key_parts(k);
                    *got == msg_key(p, n) && key_partition(got) == part
                }
                (_, _, Some(_)) => false,
                _ => true,
            };
            let payload_ok = key_ok
                && m.msg_id
                    .as_deref()
                    .is_some_and(|id| m.payload.as_ref() == payload(id).as_slice());
            stored.insert(
                m.seq,
                Stored {
                    key,
                    half,
                    payload_ok,
                },
            );
        })
        .await?;
        rb.topics.push(stored);
        rb.skipped.push(skipped);
    }
    Ok(rb)
}

/// A `record_damaged` event of a topic of the run.
fn damage_event(ctx: &Ctx, payload: &[u8]) -> Option<SeqRange> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if v.get("event")?.as_str()? != "record_damaged" {
        return None;
    }
    Some(SeqRange {
        topic: ctx.topic_index(v.get("topic")?.as_str()?)?,
        first: v.get("first_seq")?.as_u64()?,
        last: v.get("last_seq")?.as_u64()?,
    })
}
