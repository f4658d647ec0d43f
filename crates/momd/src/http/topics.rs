//! Topics and stats: `GET /v1/topics` (paged and filtered as `momctl topic ls`),
//! `GET|DELETE /v1/topics/{topic}`, `PUT /v1/topics/{topic}/limits`,
//! `POST /v1/topics/{topic}/purge`, `GET /v1/stats`.

use super::params::JsonLine;
use axum::extract::{Path, State};
use mom_proto::{ClientFrame, ListReq, Page, ServerFrame, StatsReq, TopicReq, TopicRm, TopicSet};
use serde::Deserialize;
use serde_json::json;

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::params::{to_json, Query};
use super::App;

/// The page a listing's query asks for: `after`, `limit`, `prefix`, `pattern`.
pub fn page(q: &Query) -> ApiResult<Page> {
    let limit = q
        .u64("limit")?
        .map(|l| u32::try_from(l).unwrap_or(u32::MAX));
    Ok(Page {
        after: q.get("after").map(str::to_string),
        limit,
        prefix: q.get("prefix").map(str::to_string),
        pattern: q.get("pattern").map(str::to_string),
    })
}

pub async fn list(State(app): State<App>, who: Who, q: Query) -> ApiResult<JsonLine> {
    let page = page(&q)?;
    match app
        .pool
        .call(&who.id, who.peer, |id| {
            ClientFrame::TopicList(ListReq::new(id, page))
        })
        .await?
    {
        ServerFrame::TopicList(l) => Ok(JsonLine(json!({
            "topics": to_json(&l.topics)?,
            "next": l.next,
            "total": l.total,
        }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

pub async fn info(
    State(app): State<App>,
    who: Who,
    Path(topic): Path<String>,
) -> ApiResult<JsonLine> {
    match app
        .pool
        .call(&who.id, who.peer, |id| {
            ClientFrame::TopicInfo(TopicReq { id, topic })
        })
        .await?
    {
        ServerFrame::TopicInfo(t) => Ok(JsonLine(to_json(&t.topic)?)),
        other => Err(ApiError::unexpected(&other)),
    }
}

pub async fn remove(
    State(app): State<App>,
    who: Who,
    Path(topic): Path<String>,
    q: Query,
) -> ApiResult<JsonLine> {
    let force = q.flag("force")?;
    let name = topic.clone();
    match app
        .pool
        .call(&who.id, who.peer, |id| {
            ClientFrame::TopicRm(TopicRm { id, topic, force })
        })
        .await?
    {
        ServerFrame::Ok(_) => Ok(JsonLine(json!({ "removed": name }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

pub async fn purge(
    State(app): State<App>,
    who: Who,
    Path(topic): Path<String>,
    q: Query,
) -> ApiResult<JsonLine> {
    let force = q.flag("force")?;
    match app
        .pool
        .call(&who.id, who.peer, |id| {
            ClientFrame::TopicPurge(TopicRm { id, topic, force })
        })
        .await?
    {
        ServerFrame::TopicInfo(t) => Ok(JsonLine(json!({
            "purged": t.purged.unwrap_or(0),
            "topic": to_json(&t.topic)?,
        }))),
        ServerFrame::Ok(_) => Ok(JsonLine(json!({ "purged": 0 }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// `PUT /v1/topics/{topic}`: create it, with `{"partitions": N, "replicas": R}` (both
/// optional); answered with its info.
pub async fn create(
    State(app): State<App>,
    who: Who,
    Path(topic): Path<String>,
    body: axum::body::Body,
) -> ApiResult<JsonLine> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Create {
        #[serde(default)]
        partitions: u32,
        #[serde(default)]
        replicas: u32,
    }
    let raw = super::params::body(body, 64 * 1024).await?;
    let c: Create = if raw.iter().all(u8::is_ascii_whitespace) {
        Create::default()
    } else {
        serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("the body: {e}")))?
    };
    match app
        .pool
        .call(&who.id, who.peer, |id| {
            ClientFrame::TopicCreate(mom_proto::TopicCreate {
                id,
                topic,
                partitions: c.partitions,
                replicas: c.replicas,
            })
        })
        .await?
    {
        ServerFrame::TopicInfo(t) => Ok(JsonLine(to_json(&t.topic)?)),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// The body of `PUT /v1/topics/{topic}/limits`: each limit left out is unchanged; 0 is
/// unlimited.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    max_msgs: Option<u64>,
    max_bytes: Option<u64>,
    max_age_ms: Option<u64>,
    hard_max_bytes: Option<u64>,
    hard_max_age_ms: Option<u64>,
}

pub async fn limits(
    State(app): State<App>,
    who: Who,
    Path(topic): Path<String>,
    body: axum::body::Body,
) -> ApiResult<JsonLine> {
    let raw = super::params::body(body, 64 * 1024).await?;
    let l: Limits = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::bad_request(format!("the limits: {e}")))?;
    match app
        .pool
        .call(&who.id, who.peer, |id| {
            ClientFrame::TopicSet(TopicSet {
                id,
                topic,
                max_msgs: l.max_msgs,
                max_bytes: l.max_bytes,
                max_age_ms: l.max_age_ms,
                hard_max_bytes: l.hard_max_bytes,
                hard_max_age_ms: l.hard_max_age_ms,
            })
        })
        .await?
    {
        ServerFrame::TopicInfo(t) => Ok(JsonLine(to_json(&t.topic)?)),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// The broker's summary (`momctl stats`); `?topics=N&queues=N&clients=N` add the first N
/// of each.
pub async fn stats(State(app): State<App>, who: Who, q: Query) -> ApiResult<JsonLine> {
    let section = |name: &str| -> ApiResult<Option<Page>> {
        let limit = q.u64(name)?.unwrap_or(0);
        Ok(Some(Page {
            limit: Some(u32::try_from(limit).unwrap_or(u32::MAX)),
            ..Page::default()
        }))
    };
    let (topics, queues, clients) = (section("topics")?, section("queues")?, section("clients")?);
    match app
        .pool
        .call(&who.id, who.peer, |id| {
            ClientFrame::Stats(StatsReq {
                id,
                topics,
                queues,
                clients,
            })
        })
        .await?
    {
        ServerFrame::Stats(s) => {
            let mut v = to_json(&s)?;
            if let Some(m) = v.as_object_mut() {
                // Not remove(): that swaps the last field into the place of `id`.
                m.shift_remove("id");
            }
            Ok(JsonLine(v))
        }
        other => Err(ApiError::unexpected(&other)),
    }
}
