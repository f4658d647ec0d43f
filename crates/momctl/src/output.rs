//! Writing messages to stdout: lines, NUL-terminated, or JSON objects. A closed stdout
//! (`| head`) is not an error: the caller ends quietly.

use std::io::{self, Write};

use base64::Engine;
use mom_proto::{Message, Sender};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Lines,
    Null,
    Json,
}

#[derive(Serialize)]
struct JsonMsg<'a> {
    topic: &'a str,
    seq: u64,
    time: u64,
    headers: &'a mom_proto::Headers,
    sender: &'a Sender,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg_id: Option<&'a str>,
    /// The payload as UTF-8 text, or base64 when it is not valid UTF-8 (then `encoding`
    /// says so).
    payload: std::borrow::Cow<'a, str>,
    encoding: &'static str,
    /// For a message from a queue: its delivery count.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<u32>,
}

/// Write one message in `format`.
pub fn write_message(out: &mut impl Write, m: &Message, format: Format) -> io::Result<()> {
    match format {
        Format::Lines => {
            out.write_all(&m.payload)?;
            out.write_all(b"\n")
        }
        Format::Null => {
            out.write_all(&m.payload)?;
            out.write_all(b"\0")
        }
        Format::Json => {
            let (payload, encoding) = match std::str::from_utf8(&m.payload) {
                Ok(s) => (std::borrow::Cow::Borrowed(s), "utf8"),
                Err(_) => (
                    std::borrow::Cow::Owned(
                        base64::engine::general_purpose::STANDARD.encode(&m.payload),
                    ),
                    "base64",
                ),
            };
            let j = JsonMsg {
                topic: &m.topic,
                seq: m.seq,
                time: m.time,
                headers: &m.headers,
                sender: &m.sender,
                msg_id: m.msg_id.as_deref(),
                payload,
                encoding,
                delivery: m.delivery,
            };
            serde_json::to_writer(&mut *out, &j).map_err(io::Error::from)?;
            out.write_all(b"\n")
        }
    }
}

/// Print one JSON value on its own line.
pub fn print_json(v: &impl Serialize) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, v).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}

pub use momctl::human::bytes as human_bytes;

/// A time in ms since the epoch as RFC 3339 (UTC, seconds), or "-" for 0.
pub fn human_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}
