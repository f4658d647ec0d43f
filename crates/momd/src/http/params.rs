//! Query strings, request bodies and the JSON form of a message.

use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use base64::Engine;
use bytes::Bytes;
use mom_proto::{ErrorCode, Headers, Message, Sender};
use serde::Serialize;

use super::error::{ApiError, ApiResult};

/// A request's query parameters, in order (a name may repeat: `pattern=a&pattern=b`).
pub struct Query(pub Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Query, ApiError> {
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
    }
}

impl Query {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn u64(&self, name: &str) -> ApiResult<Option<u64>> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("{name}={v:?}: expected a whole number"))
                })
            })
            .transpose()
    }

    pub fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.get(name) {
            None => Ok(false),
            Some("" | "1" | "true" | "yes") => Ok(true),
            Some("0" | "false" | "no") => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "{name}={v:?}: expected true or false"
            ))),
        }
    }

    /// A duration such as `5s`, `250ms` or `2m` (a bare number is seconds).
    pub fn duration(&self, name: &str) -> ApiResult<Option<Duration>> {
        self.get(name).map(|v| parse_duration(name, v)).transpose()
    }
}

pub fn parse_duration(name: &str, v: &str) -> ApiResult<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).map_err(|e| {
        ApiError::bad_request(format!(
            "{name}={v:?}: expected a duration such as 5s or 250ms ({e})"
        ))
    })
}

/// A time: ms since the epoch, or RFC 3339 (`2026-11-30T16:00:00Z`).
pub fn parse_time(name: &str, v: &str) -> ApiResult<u64> {
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name}={v:?}: expected ms since the epoch or an RFC 3339 time"
            ))
        })
}

/// The whole body, refused with `too_large` (413) past `limit` bytes.
pub async fn body(body: Body, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // Besides a broken connection, the one error is the length limit.
        let msg = e.to_string();
        if msg.contains("length limit") {
            ApiError::new(
                ErrorCode::TooLarge,
                format!("the request body is over the limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {msg}"))
        }
    })
}

/// A message as JSON: the payload as text when it is UTF-8 (`payload`), else, or when
/// asked, as base64 (`payload_base64`).
#[derive(Serialize)]
pub struct JsonMessage<'a> {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<u32>,
}

/// How payloads are written in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Text when UTF-8, else base64.
    Auto,
    Base64,
}

impl Encoding {
    pub fn from_query(q: &Query) -> ApiResult<Encoding> {
        match q.get("encoding") {
            None | Some("auto") => Ok(Encoding::Auto),
            Some("base64") => Ok(Encoding::Base64),
            Some(v) => Err(ApiError::bad_request(format!(
                "encoding={v:?}: expected auto or base64"
            ))),
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn json_message<'a>(
    topic: &'a str,
    seq: u64,
    time: u64,
    headers: &'a Headers,
    sender: &'a Sender,
    msg_id: Option<&'a str>,
    payload: &'a [u8],
    delivery: Option<u32>,
    enc: Encoding,
) -> JsonMessage<'a> {
    let text = match enc {
        Encoding::Auto => std::str::from_utf8(payload).ok(),
        Encoding::Base64 => None,
    };
    JsonMessage {
        topic,
        seq,
        time,
        headers,
        sender,
        msg_id,
        key: None,
        payload: text,
        payload_base64: text
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(payload)),
        delivery,
    }
}

pub fn from_message(m: &Message, enc: Encoding) -> JsonMessage<'_> {
    let j = json_message(
        &m.topic,
        m.seq,
        m.time,
        &m.headers,
        &m.sender,
        m.msg_id.as_deref(),
        &m.payload,
        m.delivery,
        enc,
    );
    JsonMessage {
        key: m.key.as_deref(),
        ..j
    }
}

/// A message of a batch delivered to a watch, as JSON.
pub fn batch_message_json(
    batch: &crate::core::Batch,
    i: usize,
    enc: Encoding,
) -> Option<serde_json::Value> {
    let m = batch.msgs.get(i)?;
    let j = json_message(
        &batch.topic,
        batch.first_seq + i as u64,
        batch.time,
        &m.headers,
        &batch.sender,
        m.msg_id.as_deref(),
        &m.payload,
        None,
        enc,
    );
    let j = JsonMessage {
        key: m.key.as_deref(),
        ..j
    };
    serde_json::to_value(j).ok()
}

/// A JSON answer, ended by a newline so that `curl` output reads as lines.
pub struct JsonLine(pub serde_json::Value);

impl axum::response::IntoResponse for JsonLine {
    fn into_response(self) -> axum::response::Response {
        json_response(axum::http::StatusCode::OK, &self.0)
    }
}

pub fn json_response(
    status: axum::http::StatusCode,
    v: &serde_json::Value,
) -> axum::response::Response {
    let mut body = v.to_string();
    body.push('\n');
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// JSON value of any serializable reply.
pub fn to_json<T: Serialize>(v: &T) -> ApiResult<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(format!("cannot write JSON: {e}")))
}
