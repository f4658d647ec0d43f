//! Messages as JSON objects, one per line: what `momctl subscribe --json` prints, what
//! `momctl publish --json-input` reads back, and what momtui saves.

use std::io::{self, Write};

use base64::Engine;
use mom_proto::{Message, Sender};
use serde::Serialize;

/// The id that names a delivery in `momctl ack|nack`: `TOPIC:SEQ`.
pub fn delivery_id(m: &Message) -> String {
    format!("{}:{}", m.topic, m.seq)
}

#[derive(Serialize)]
struct JsonMsg<'a> {
    topic: &'a str,
    seq: u64,
    time: u64,
    time_iso: String,
    headers: &'a mom_proto::Headers,
    sender: &'a Sender,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    /// The payload as UTF-8 text, or base64 when it is not valid UTF-8 (then `encoding`
    /// says so).
    payload: std::borrow::Cow<'a, str>,
    encoding: &'static str,
    /// The payload itself when it is valid JSON (key order kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_json: Option<serde_json::Value>,
    /// For a message from a queue: its delivery count and the id to ack or nack it by.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_id: Option<String>,
}

/// Write one message as a JSON object (no newline).
pub fn write_message(out: &mut impl Write, m: &Message) -> io::Result<()> {
    let (payload, encoding) = match std::str::from_utf8(&m.payload) {
        Ok(s) => (std::borrow::Cow::Borrowed(s), "utf8"),
        Err(_) => (
            std::borrow::Cow::Owned(base64::engine::general_purpose::STANDARD.encode(&m.payload)),
            "base64",
        ),
    };
    let payload_json = if encoding == "utf8" && looks_like_json(&m.payload) {
        serde_json::from_slice(&m.payload).ok()
    } else {
        None
    };
    let j = JsonMsg {
        topic: &m.topic,
        seq: m.seq,
        time: m.time,
        time_iso: time_iso(m.time),
        headers: &m.headers,
        sender: &m.sender,
        msg_id: m.msg_id.as_deref(),
        key: m.key.as_deref(),
        payload,
        encoding,
        payload_json,
        delivery: m.delivery,
        delivery_id: m.delivery.map(|_| delivery_id(m)),
    };
    serde_json::to_writer(&mut *out, &j).map_err(io::Error::from)
}

/// Only objects and arrays are embedded: a payload `42` or `true` is a number to whoever
/// sent it, and a bare string is not JSON text anyone meant.
fn looks_like_json(p: &[u8]) -> bool {
    matches!(
        p.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{') | Some(b'[')
    )
}

/// A time in ms since the epoch as RFC 3339 with milliseconds (UTC).
pub fn time_iso(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// One message as a JSON line's text (no newline).
pub fn message_line(m: &Message) -> String {
    let mut v = Vec::new();
    // Writing to a Vec cannot fail; serde_json only fails on non-string map keys.
    let _ = write_message(&mut v, m);
    String::from_utf8_lossy(&v).into_owned()
}
