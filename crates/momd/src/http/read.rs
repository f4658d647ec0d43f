//! `GET /v1/topics/{topic}/messages`: stored messages of one topic, a page at a time, by
//! seq (`from`), time (`since`) or count (`last`). Read as `momctl sub --from` reads them:
//! a passive watch on a session of its own, whose replay is cut after `limit` messages.

use std::time::Duration;

use super::params::JsonLine;
use axum::extract::{Path, State};
use mom_proto::{ClientFrame, NoticeKind, ServerFrame, StartAt, TopicReq, Watch};
use serde_json::json;

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::link::{Link, Pushed};
use super::params::{batch_message_json, parse_time, Encoding, Query};
use super::App;

/// Messages of one page by default, and at most.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 10_000;
/// A page is answered within this time, full or not.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn read(
    State(app): State<App>,
    who: Who,
    Path(topic): Path<String>,
    q: Query,
) -> ApiResult<JsonLine> {
    let limit = q.u64("limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit={limit}: expected 1 to {MAX_LIMIT}"
        )));
    }
    let enc = Encoding::from_query(&q)?;
    let (from, at) = match (q.u64("from")?, q.get("since"), q.u64("last")?) {
        (Some(seq), None, None) => (StartAt::Seq, seq.max(1)),
        (None, Some(t), None) => (StartAt::Time, parse_time("since", t)?),
        (None, None, Some(n)) => (StartAt::Last, n),
        (None, None, None) => (StartAt::Seq, 1),
        _ => {
            return Err(ApiError::bad_request(
                "give one of from (a seq), since (a time) or last (a count)",
            ))
        }
    };
    mom_proto::topic::validate_topic(&topic)
        .map_err(|e| ApiError::bad_request(format!("{topic:?}: {e}")))?;

    let mut link = Link::open(&app.broker, &who.id, who.peer, "http-read").await?;
    let info = match link
        .call(|id| {
            ClientFrame::TopicInfo(TopicReq {
                id,
                topic: topic.clone(),
            })
        })
        .await?
    {
        ServerFrame::TopicInfo(t) => t.topic,
        other => return Err(ApiError::unexpected(&other)),
    };
    let mut messages = Vec::new();
    let mut last_seen = 0;
    if info.messages > 0 {
        link.call(|id| {
            ClientFrame::Watch(Watch {
                id,
                patterns: vec![topic.clone()],
                from,
                at,
                passive: true,
                ..Watch::default()
            })
        })
        .await?;
        let collect = async {
            while (messages.len() as u64) < limit && last_seen < info.last_seq {
                match link.next().await? {
                    Pushed::Deliver { batch, bytes } => {
                        for i in 0..batch.msgs.len() {
                            if messages.len() as u64 >= limit {
                                break;
                            }
                            if let Some(m) = batch_message_json(&batch, i, enc) {
                                messages.push(m);
                            }
                            last_seen = batch.first_seq + i as u64;
                        }
                        link.consumed(bytes);
                    }
                    Pushed::Notice(n) if n.kind == NoticeKind::Live => break,
                    Pushed::Notice(_) => {}
                }
            }
            Ok::<(), ApiError>(())
        };
        if tokio::time::timeout(READ_TIMEOUT, collect).await.is_err() {
            tracing::debug!(topic, "a read page timed out before it was full");
        }
    }
    // Where the next page starts: after the last message returned, while the topic held
    // more when this page was read.
    let next = (last_seen > 0 && last_seen < info.last_seq).then_some(last_seen + 1);
    Ok(JsonLine(json!({
        "topic": topic,
        "messages": messages,
        "next": next,
        "last_seq": info.last_seq,
    })))
}
