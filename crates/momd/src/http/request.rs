//! `POST /v1/request/{topic}?timeout=2s`: request/reply as `momctl request` does it
//! (docs/protocol.md, 3.8) — watch an inbox of its own, publish the body with `reply-to`
//! and `correlation-id`, answer with the first reply. The reply's payload is the response
//! body; its headers come back as `Mom-Header-*`, its topic and seq as `Mom-Topic` and
//! `Mom-Seq`. No responder: 503 at once; no reply in time: 504.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mom_proto::{ClientFrame, ErrorCode, PubMsg, Publish, ServerFrame, StartAt, Watch};

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::link::{Link, Pushed};
use super::params::{body, Query};
use super::App;

const REPLY_TO: &str = "reply-to";
const CORRELATION_ID: &str = "correlation-id";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn request(
    State(app): State<App>,
    who: Who,
    Path(topic): Path<String>,
    headers: HeaderMap,
    q: Query,
    req: Body,
) -> ApiResult<Response> {
    let timeout = q.duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
    if timeout > MAX_TIMEOUT {
        return Err(ApiError::bad_request(format!(
            "timeout is at most {} s",
            MAX_TIMEOUT.as_secs()
        )));
    }
    let (mut hdrs, _, key) = super::publish::raw_headers(&headers)?;
    let payload = body(req, app.cfg().max_payload).await?;

    let mut link = Link::open(&app.broker, &who.id, who.peer, "http-request").await?;
    let nonce = u64::from_be_bytes(
        crate::auth::random_bytes(8)
            .ok()
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 8]),
    );
    let inbox = format!(
        "{}{}.{nonce:x}",
        crate::broker::INBOX_PREFIX,
        link.client_id
    );
    let correlation = format!("http-{}-{nonce:x}", link.client_id);
    // The watch exists before the request is published: no reply can come first.
    let watch = link
        .call(|id| {
            ClientFrame::Watch(Watch {
                id,
                patterns: vec![inbox.clone()],
                from: StartAt::New,
                ..Watch::default()
            })
        })
        .await?;
    if !matches!(watch, ServerFrame::WatchOk(_)) {
        return Err(ApiError::unexpected(&watch));
    }
    hdrs.insert(REPLY_TO.into(), inbox);
    hdrs.insert(CORRELATION_ID.into(), correlation.clone());
    let published = link
        .call(|id| {
            ClientFrame::Publish(Publish {
                id,
                topic: topic.clone(),
                msgs: vec![PubMsg {
                    payload,
                    headers: hdrs,
                    msg_id: None,
                    key,
                }],
                no_ack: false,
            })
        })
        .await?;
    match published {
        ServerFrame::PublishOk(ok) if ok.watchers == 0 && ok.queues == 0 => {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("no responders: nothing watches {topic:?} and no queue is bound to it"),
            ));
        }
        ServerFrame::PublishOk(_) => {}
        other => return Err(ApiError::unexpected(&other)),
    }
    let wait = async {
        loop {
            match link.next().await? {
                Pushed::Deliver { batch, bytes } => {
                    link.consumed(bytes);
                    let mine = batch.msgs.iter().position(|m| {
                        m.headers.get(CORRELATION_ID).map(String::as_str)
                            == Some(correlation.as_str())
                    });
                    if let Some(i) = mine {
                        return Ok::<_, ApiError>((batch, i));
                    }
                }
                Pushed::Notice(_) => {}
            }
        }
    };
    let wait = async {
        tokio::select! {
            r = wait => r,
            _ = app.shutdown.cancelled() => Err(ApiError::unavailable("the server is shutting down")),
        }
    };
    let (batch, i) = match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ApiError::unavailable(format!(
                "no reply within {}",
                humantime::format_duration(timeout)
            ))
            .with_status(StatusCode::GATEWAY_TIMEOUT))
        }
    };
    let Some(m) = batch.msgs.get(i) else {
        return Err(ApiError::internal("the reply vanished"));
    };
    let mut resp = m.payload.clone().into_response();
    let h = resp.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&batch.topic) {
        h.insert("mom-topic", v);
    }
    h.insert("mom-seq", HeaderValue::from(batch.first_seq + i as u64));
    for (k, v) in &m.headers {
        let name = HeaderName::from_bytes(format!("mom-header-{k}").as_bytes());
        if let (Ok(name), Ok(v)) = (name, HeaderValue::from_str(v)) {
            h.insert(name, v);
        }
    }
    Ok(resp)
}
