//! Queues: `GET /v1/queues`, `PUT|GET|DELETE /v1/queues/{queue}`, `bind`, `unbind`,
//! `purge`, and reading: `fetch` (a long poll), `ack`, `nack`.
//!
//! A fetch over HTTP is `detached` (docs/protocol.md, 4.18): its deliveries belong to no
//! connection, so the `ack` or `nack` that settles them may come on any later request. One
//! never settled is delivered again after the queue's ack deadline, not counted as a
//! failed delivery; one whose HTTP client went away before the answer was written is given
//! back at once (`link.rs`).

use std::time::Duration;

use super::params::JsonLine;
use axum::body::Body;
use axum::extract::{Path, State};
use mom_proto::{
    Ack, ClientFrame, Fetch, ListReq, MsgKey, Nack, QueueBind, QueueCreate, QueueDelete, QueueReq,
    ServerFrame, StartAt,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::params::{body, from_message, parse_duration, to_json, Encoding, Query};
use super::topics::page;
use super::App;

/// Longest a fetch may wait for its first message.
const MAX_WAIT: Duration = Duration::from_secs(300);

async fn json_body<T: DeserializeOwned>(req: Body, what: &str) -> ApiResult<T> {
    let raw = body(req, 1024 * 1024).await?;
    let raw: &[u8] = if raw.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &raw
    };
    serde_json::from_slice(raw).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

async fn call(
    app: &App,
    who: &Who,
    make: impl FnOnce(u64) -> ClientFrame,
) -> ApiResult<ServerFrame> {
    app.pool.call(&who.id, who.peer, make).await
}

fn queue_json(frame: ServerFrame) -> ApiResult<JsonLine> {
    match frame {
        ServerFrame::QueueInfo(q) => {
            let mut v = to_json(&q.queue)?;
            if let (Some(m), Some(p)) = (v.as_object_mut(), q.purged) {
                m.insert("purged".into(), p.into());
            }
            Ok(JsonLine(v))
        }
        ServerFrame::Ok(_) => Ok(JsonLine(json!({ "ok": true }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

pub async fn list(State(app): State<App>, who: Who, q: Query) -> ApiResult<JsonLine> {
    let page = page(&q)?;
    match call(&app, &who, |id| {
        ClientFrame::QueueList(ListReq::new(id, page))
    })
    .await?
    {
        ServerFrame::QueueList(l) => Ok(JsonLine(json!({
            "queues": to_json(&l.queues)?,
            "next": l.next,
            "total": l.total,
        }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// The body of `PUT /v1/queues/{queue}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    #[serde(default)]
    bindings: Vec<String>,
    #[serde(default)]
    from: StartAt,
    #[serde(default)]
    at: u64,
    max_deliver: Option<u32>,
    ack_wait_ms: Option<u64>,
    #[serde(default)]
    exist_ok: bool,
}

pub async fn create(
    State(app): State<App>,
    who: Who,
    Path(queue): Path<String>,
    req: Body,
) -> ApiResult<JsonLine> {
    let c: Create = json_body(req, "the queue").await?;
    let reply = call(&app, &who, |id| {
        ClientFrame::QueueCreate(QueueCreate {
            id,
            queue,
            bindings: c.bindings,
            from: c.from,
            at: c.at,
            max_deliver: c.max_deliver,
            ack_wait_ms: c.ack_wait_ms,
            exist_ok: c.exist_ok,
        })
    })
    .await?;
    queue_json(reply)
}

pub async fn info(
    State(app): State<App>,
    who: Who,
    Path(queue): Path<String>,
) -> ApiResult<JsonLine> {
    queue_json(
        call(&app, &who, |id| {
            ClientFrame::QueueInfo(QueueReq { id, queue })
        })
        .await?,
    )
}

pub async fn remove(
    State(app): State<App>,
    who: Who,
    Path(queue): Path<String>,
    q: Query,
) -> ApiResult<JsonLine> {
    let force = q.flag("force")?;
    let name = queue.clone();
    match call(&app, &who, |id| {
        ClientFrame::QueueDelete(QueueDelete { id, queue, force })
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
    Path(queue): Path<String>,
) -> ApiResult<JsonLine> {
    queue_json(
        call(&app, &who, |id| {
            ClientFrame::QueuePurge(QueueReq { id, queue })
        })
        .await?,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patterns {
    #[serde(default)]
    patterns: Vec<String>,
}

pub async fn bind(
    State(app): State<App>,
    who: Who,
    Path(queue): Path<String>,
    req: Body,
) -> ApiResult<JsonLine> {
    change_bindings(&app, &who, queue, req, ClientFrame::QueueBind).await
}

pub async fn unbind(
    State(app): State<App>,
    who: Who,
    Path(queue): Path<String>,
    req: Body,
) -> ApiResult<JsonLine> {
    change_bindings(&app, &who, queue, req, ClientFrame::QueueUnbind).await
}

/// `queue_bind` or `queue_unbind` (`frame`) with the patterns of the body.
async fn change_bindings(
    app: &App,
    who: &Who,
    queue: String,
    req: Body,
    frame: fn(QueueBind) -> ClientFrame,
) -> ApiResult<JsonLine> {
    let p: Patterns = json_body(req, "the patterns").await?;
    let reply = call(app, who, |id| {
        frame(QueueBind {
            id,
            queue,
            patterns: p.patterns,
        })
    })
    .await?;
    queue_json(reply)
}

pub async fn fetch(
    State(app): State<App>,
    who: Who,
    Path(queue): Path<String>,
    q: Query,
) -> ApiResult<JsonLine> {
    let max = q.u64("max")?.unwrap_or(1);
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    let wait = q.duration("wait")?.unwrap_or(Duration::ZERO);
    if wait > MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "wait is at most {} s",
            MAX_WAIT.as_secs()
        )));
    }
    let enc = Encoding::from_query(&q)?;
    let reply = call(&app, &who, |id| {
        ClientFrame::Fetch(Fetch {
            id,
            queue,
            max,
            timeout_ms: wait.as_millis() as u64,
            detached: true,
        })
    })
    .await?;
    match reply {
        ServerFrame::FetchOk(f) => {
            let msgs: Vec<_> = f.msgs.iter().map(|m| from_message(m, enc)).collect();
            Ok(JsonLine(
                json!({ "queue": f.queue, "messages": to_json(&msgs)? }),
            ))
        }
        other => Err(ApiError::unexpected(&other)),
    }
}

/// The body of `ack` and `nack`: the deliveries, by topic and seq.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settle {
    deliveries: Vec<MsgKey>,
    /// nack: deliver again no sooner than this (`5s`, `250ms`).
    #[serde(default)]
    delay: Option<String>,
    /// nack: never worked on; the delivery does not count.
    #[serde(default)]
    release: bool,
}

pub async fn ack(
    State(app): State<App>,
    who: Who,
    Path(queue): Path<String>,
    req: Body,
) -> ApiResult<JsonLine> {
    let s: Settle = json_body(req, "the deliveries").await?;
    if s.delay.is_some() || s.release {
        return Err(ApiError::bad_request(
            "delay and release belong to nack, not ack",
        ));
    }
    let n = s.deliveries.len();
    match call(&app, &who, |id| {
        ClientFrame::Ack(Ack {
            id,
            queue,
            msgs: s.deliveries,
        })
    })
    .await?
    {
        ServerFrame::Ok(_) => Ok(JsonLine(json!({ "acked": n }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

pub async fn nack(
    State(app): State<App>,
    who: Who,
    Path(queue): Path<String>,
    req: Body,
) -> ApiResult<JsonLine> {
    let s: Settle = json_body(req, "the deliveries").await?;
    let delay = match &s.delay {
        Some(d) => parse_duration("delay", d)?,
        None => Duration::ZERO,
    };
    let n = s.deliveries.len();
    match call(&app, &who, |id| {
        ClientFrame::Nack(Nack {
            id,
            queue,
            msgs: s.deliveries,
            delay_ms: delay.as_millis() as u64,
            release: s.release,
        })
    })
    .await?
    {
        ServerFrame::Ok(_) => Ok(JsonLine(json!({ "nacked": n }))),
        other => Err(ApiError::unexpected(&other)),
    }
}
