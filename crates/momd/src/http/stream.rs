//! `GET /v1/stream?pattern=P[&pattern=P2…]`: a watch as Server-Sent Events, on a broker
//! session of its own (so its outbox budget bounds it like any watch: a client that does
//! not read gets the `slow_consumer` event, not unbounded memory in the broker).
//!
//! **Resumption.** A watch resumes exactly with its `after` map — per topic, the last seq
//! the client has — plus, for topics it had nothing of, `from: time` with the time the
//! first watch was set up (docs/protocol.md, 4.3). The last event's id alone names one
//! topic, which cannot say where the others stood: so each message event's id is the
//! stream's whole position, its own `topic:seq` first, then the last seq sent of every
//! other topic of the stream, then, for a stream that began at `new`, `@` and the time it
//! began (topics have no spaces, so spaces separate):
//!
//! ```text
//! id: orders.eu:42 orders.us:17 @1767323045000
//! ```
//!
//! A client reconnecting with `Last-Event-ID` (what EventSource sends by itself) gets
//! exactly what it had not received, in every topic, then live messages. The id grows with
//! the number of topics the stream has carried: for patterns over very many topics, a
//! queue is the better reader.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use mom_proto::{ClientFrame, NoticeKind, ServerFrame, StartAt, Watch};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::link::{Link, Pushed};
use super::params::{batch_message_json, parse_time, Encoding, Query};
use super::App;

/// Where a stream stands: the last seq sent per topic, and when it began (for `new`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Cursor {
    pub seqs: BTreeMap<String, u64>,
    pub began: Option<u64>,
}

/// Longest `Last-Event-ID` taken.
const MAX_ID: usize = 1024 * 1024;

impl Cursor {
    pub fn parse(id: &str) -> ApiResult<Cursor> {
        if id.len() > MAX_ID {
            return Err(ApiError::bad_request("Last-Event-ID is too long"));
        }
        let bad = |t: &str| {
            ApiError::bad_request(format!(
                "Last-Event-ID: {t:?} is not TOPIC:SEQ or @TIME (ids are the stream's own)"
            ))
        };
        let mut c = Cursor::default();
        for t in id.split_whitespace() {
            if let Some(time) = t.strip_prefix('@') {
                c.began = Some(time.parse().map_err(|_| bad(t))?);
                continue;
            }
            let (topic, seq) = t.rsplit_once(':').ok_or_else(|| bad(t))?;
            let seq: u64 = seq.parse().map_err(|_| bad(t))?;
            if topic.is_empty() {
                return Err(bad(t));
            }
            c.seqs.insert(topic.to_string(), seq);
        }
        Ok(c)
    }

    /// The id of an event of `topic`: its own position first.
    pub fn id(&self, topic: &str) -> String {
        let mut s = String::new();
        if let Some(seq) = self.seqs.get(topic) {
            s.push_str(&format!("{topic}:{seq}"));
        }
        for (t, seq) in &self.seqs {
            if t != topic {
                s.push_str(&format!(" {t}:{seq}"));
            }
        }
        if let Some(b) = self.began {
            s.push_str(&format!(" @{b}"));
        }
        s
    }
}

pub async fn stream(
    State(app): State<App>,
    who: Who,
    headers: HeaderMap,
    q: Query,
) -> ApiResult<Response> {
    let patterns = q.all("pattern");
    if patterns.is_empty() {
        return Err(ApiError::bad_request("give at least one pattern=…"));
    }
    let enc = Encoding::from_query(&q)?;
    let (mut from, mut at) = match q.get("from").unwrap_or("new") {
        "new" => (StartAt::New, 0),
        "all" => (StartAt::All, 0),
        "seq" => (StartAt::Seq, q.u64("at")?.unwrap_or(1)),
        "time" => (StartAt::Time, parse_time("at", q.get("at").unwrap_or("0"))?),
        "last" => (StartAt::Last, q.u64("at")?.unwrap_or(1)),
        other => {
            return Err(ApiError::bad_request(format!(
                "from={other:?}: expected new, all, seq, time or last"
            )))
        }
    };
    let last_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::bad_request("Last-Event-ID must be text"))
        })
        .transpose()?
        .or_else(|| q.get("last_event_id").map(str::to_string));
    let mut cursor = match &last_id {
        Some(id) => Cursor::parse(id)?,
        None => Cursor::default(),
    };
    // A stream that began at `new`: topics it had nothing of start when it began.
    if let (StartAt::New, Some(began)) = (from, cursor.began) {
        (from, at) = (StartAt::Time, began);
    }
    let passive = q.flag("passive")?;

    let mut link = Link::open(&app.broker, &who.id, who.peer, "http-stream").await?;
    let reply = link
        .call(|id| {
            ClientFrame::Watch(Watch {
                id,
                patterns,
                from,
                at,
                passive,
                group: None,
                after: cursor.seqs.clone(),
            })
        })
        .await?;
    let ServerFrame::WatchOk(ok) = reply else {
        return Err(ApiError::unexpected(&reply));
    };
    if from == StartAt::New && cursor.began.is_none() {
        cursor.began = Some(ok.time);
    }
    let state = Streaming {
        link,
        cursor,
        enc,
        queued: VecDeque::new(),
        shutdown: app.shutdown.clone(),
        done: false,
    };
    // A first comment, so the response starts at once (not with the first message).
    let opened = Event::default().comment(format!("watch {}", ok.watch));
    let events = futures_util::stream::unfold((state, Some(opened)), |(mut s, first)| async move {
        let e = match first {
            Some(e) => e,
            None => s.next_event().await?,
        };
        Some((Ok::<Event, Infallible>(e), (s, None)))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Streaming {
    link: Link,
    cursor: Cursor,
    enc: Encoding,
    queued: VecDeque<Event>,
    shutdown: CancellationToken,
    done: bool,
}

impl Streaming {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let pushed = tokio::select! {
                p = self.link.next() => p,
                _ = self.shutdown.cancelled() => {
                    self.done = true;
                    return Some(Event::default().event("ended").data(
                        json!({"message": "the server is shutting down"}).to_string(),
                    ));
                }
            };
            match pushed {
                Ok(Pushed::Deliver { batch, bytes }) => {
                    for i in 0..batch.msgs.len() {
                        let seq = batch.first_seq + i as u64;
                        self.cursor.seqs.insert(batch.topic.to_string(), seq);
                        let Some(m) = batch_message_json(&batch, i, self.enc) else {
                            continue;
                        };
                        self.queued.push_back(
                            Event::default()
                                .id(self.cursor.id(&batch.topic))
                                .data(m.to_string()),
                        );
                    }
                    self.link.consumed(bytes);
                }
                Ok(Pushed::Notice(n)) => {
                    let kind = match n.kind {
                        NoticeKind::Live => "live",
                        NoticeKind::SlowConsumer => "slow_consumer",
                        NoticeKind::Ended => {
                            self.done = true;
                            "ended"
                        }
                        NoticeKind::Unknown => continue,
                    };
                    return Some(
                        Event::default()
                            .event(kind)
                            .data(json!({"skipped": n.skipped, "message": n.message}).to_string()),
                    );
                }
                Err(e) => {
                    self.done = true;
                    return Some(
                        Event::default().event("ended").data(
                            json!({"code": e.code.as_str(), "message": e.message}).to_string(),
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_ids_round_trip_with_their_own_topic_first() {
        let mut c = Cursor::default();
        c.seqs.insert("orders.us".into(), 17);
        c.seqs.insert("orders.eu".into(), 42);
        c.seqs.insert("a:b".into(), 3);
        c.began = Some(1767323045000);
        let id = c.id("orders.us");
        assert_eq!(id, "orders.us:17 a:b:3 orders.eu:42 @1767323045000");
        assert_eq!(Cursor::parse(&id).expect("parses"), c);
    }

    #[test]
    fn foreign_ids_are_refused() {
        for bad in ["42", "a.b:x", ":4", "@now"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }
}
