//! Publish: `POST /v1/topics/{topic}/messages` (the body is the payload; or one JSON
//! envelope with `Content-Type: application/vnd.mom.message+json`) and
//! `POST /v1/topics/{topic}/batch` (NDJSON: one envelope a line, one `publish` request).

use super::params::JsonLine;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use base64::Engine;
use bytes::Bytes;
use mom_proto::{ClientFrame, Headers, PubMsg, Publish, PublishOk, ServerFrame};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Who;
use super::error::{ApiError, ApiResult};
use super::params::body;
use super::App;

/// The media type of a JSON envelope: `{"payload", "payload_base64", "headers", "msg_id"}`.
pub const ENVELOPE: &str = "application/vnd.mom.message+json";

/// One message as JSON. `payload` is a string (stored as its UTF-8 bytes) or any other
/// JSON value (stored as its compact JSON text); `payload_base64` is for bytes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    msg_id: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

impl Envelope {
    fn into_msg(self) -> ApiResult<PubMsg> {
        let payload = match (self.payload, self.payload_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give payload or payload_base64, not both",
                ))
            }
            (Some(Value::String(s)), None) => Bytes::from(s),
            (Some(v), None) => Bytes::from(v.to_string()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map(Bytes::from)
                .map_err(|e| ApiError::bad_request(format!("payload_base64: {e}")))?,
            (None, None) => Bytes::new(),
        };
        Ok(PubMsg {
            payload,
            headers: self.headers,
            msg_id: self.msg_id,
            key: self.key,
        })
    }
}

/// `Mom-Msg-Id` and `Mom-Header-NAME: VALUE` of a raw publish. HTTP header names are
/// case-insensitive: NAME arrives lowercased.
/// A raw body's message headers (`Mom-Header-NAME`), its id (`Mom-Msg-Id`) and key
/// (`Mom-Key`).
pub fn raw_headers(h: &HeaderMap) -> ApiResult<(Headers, Option<String>, Option<String>)> {
    let mut headers = Headers::new();
    let mut msg_id = None;
    let mut key = None;
    for (name, value) in h {
        let n = name.as_str();
        let text = || {
            value.to_str().map(str::to_string).map_err(|_| {
                ApiError::bad_request(format!("header {n}: its value must be visible ASCII"))
            })
        };
        if n == "mom-msg-id" {
            msg_id = Some(text()?);
        } else if n == "mom-key" {
            key = Some(text()?);
        } else if let Some(key) = n.strip_prefix("mom-header-") {
            headers.insert(key.to_string(), text()?);
        }
    }
    Ok((headers, msg_id, key))
}

fn content_type(h: &HeaderMap) -> &str {
    h.get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .unwrap_or("")
}

async fn send(app: &App, who: &Who, topic: String, msgs: Vec<PubMsg>) -> ApiResult<PublishOk> {
    let reply = app
        .pool
        .call(&who.id, who.peer, |id| {
            ClientFrame::Publish(Publish {
                id,
                topic,
                msgs,
                no_ack: false,
            })
        })
        .await?;
    match reply {
        ServerFrame::PublishOk(ok) => Ok(ok),
        other => Err(ApiError::unexpected(&other)),
    }
}

pub async fn publish(
    State(app): State<App>,
    who: Who,
    Path(topic): Path<String>,
    headers: HeaderMap,
    req: Body,
) -> ApiResult<JsonLine> {
    let msg = if content_type(&headers) == ENVELOPE {
        let raw = body(req, app.cfg().max_frame).await?;
        let env: Envelope = serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request(format!("the JSON envelope: {e}")))?;
        env.into_msg()?
    } else {
        let (hdrs, msg_id, key) = raw_headers(&headers)?;
        PubMsg {
            payload: body(req, app.cfg().max_payload).await?,
            headers: hdrs,
            msg_id,
            key,
        }
    };
    let ok = send(&app, &who, topic, vec![msg]).await?;
    let mut out = json!({
        "topic": ok.topic,
        "seq": ok.seqs.first().copied().unwrap_or(0),
        "duplicate": ok.duplicates > 0,
        "watchers": ok.watchers,
        "queues": ok.queues,
    });
    if let Some(p) = ok.partitions.first() {
        out["partition"] = json!(p);
    }
    Ok(JsonLine(out))
}

pub async fn batch(
    State(app): State<App>,
    who: Who,
    Path(topic): Path<String>,
    req: Body,
) -> ApiResult<JsonLine> {
    let raw = body(req, app.cfg().max_frame).await?;
    let mut msgs = Vec::new();
    for (n, line) in raw.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let env: Envelope = serde_json::from_slice(line)
            .map_err(|e| ApiError::bad_request(format!("line {}: {e}", n + 1)))?;
        msgs.push(
            env.into_msg()
                .map_err(|e| ApiError::bad_request(format!("line {}: {}", n + 1, e.message)))?,
        );
    }
    if msgs.is_empty() {
        return Err(ApiError::bad_request(
            "the body holds no message: one JSON envelope a line is expected",
        ));
    }
    let ok = send(&app, &who, topic, msgs).await?;
    let mut out = json!({
        "topic": ok.topic,
        "seqs": ok.seqs,
        "duplicates": ok.duplicates,
        "duplicate_indexes": ok.duplicate_indexes,
        "watchers": ok.watchers,
        "queues": ok.queues,
    });
    if !ok.partitions.is_empty() {
        out["partitions"] = json!(ok.partitions);
    }
    Ok(JsonLine(out))
}
