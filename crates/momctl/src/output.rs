//! Writing messages to stdout: lines, NUL-terminated, raw, `TOPIC PAYLOAD`, a template, or
//! JSON objects. A closed stdout (`| head`) is not an error: the caller ends quietly.

use std::io::{self, Write};

use mom_proto::{Message, Sender};
pub use momctl::json::{delivery_id, time_iso};
use serde::Serialize;

use crate::cli::OutputArgs;
use crate::cmd::Failure;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// The payload and a newline.
    Lines,
    /// The payload and a NUL.
    Null,
    /// The payload alone.
    Raw,
    /// `TOPIC PAYLOAD`, like `mosquitto_sub -v`.
    Verbose,
    Json,
    /// `k=v k=v`, one line per message.
    HeadersOnly,
    Template(Vec<Piece>),
}

/// One part of a `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(Vec<u8>),
    Topic,
    Seq,
    TimeIso,
    TimeMs,
    Headers,
    Header(String),
    MsgId,
    Key,
    Sender,
    Payload,
    Size,
    Delivery,
    DeliveryId,
}

impl Format {
    /// The format the flags ask for; a bad template is a usage error.
    pub fn from_args(json: bool, o: &OutputArgs) -> Result<Format, Failure> {
        if json {
            if o.null || o.raw || o.verbose || o.format.is_some() || o.headers_only {
                return Err(Failure::new(
                    2,
                    "--json cannot be combined with -0, --raw, -v, --format or --headers-only",
                ));
            }
            return Ok(Format::Json);
        }
        Ok(if let Some(t) = &o.format {
            Format::Template(parse_template(t).map_err(|e| Failure::new(2, e))?)
        } else if o.headers_only {
            Format::HeadersOnly
        } else if o.null {
            Format::Null
        } else if o.raw {
            Format::Raw
        } else if o.verbose {
            Format::Verbose
        } else {
            Format::Lines
        })
    }
}

/// Parse a kcat-like template: `%t %s %T %e %h %h{NAME} %i %k %u %p %S %d %D %%` and the escapes
/// `\n \t \0 \\`.
pub fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut chars = t.chars().peekable();
    let flush = |lit: &mut Vec<u8>, out: &mut Vec<Piece>| {
        if !lit.is_empty() {
            out.push(Piece::Lit(std::mem::take(lit)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => lit.push(b'\n'),
                Some('t') => lit.push(b'\t'),
                Some('0') => lit.push(0),
                Some('\\') => lit.push(b'\\'),
                Some(o) => return Err(format!("--format: unknown escape \\{o}")),
                None => return Err("--format: a lone \\ at the end".into()),
            },
            '%' => {
                let Some(f) = chars.next() else {
                    return Err(
                        "--format: a lone % at the end (write %% for a percent sign)".into(),
                    );
                };
                let piece = match f {
                    '%' => {
                        lit.push(b'%');
                        continue;
                    }
                    't' => Piece::Topic,
                    's' => Piece::Seq,
                    'T' => Piece::TimeIso,
                    'e' => Piece::TimeMs,
                    'h' => {
                        if chars.peek() == Some(&'{') {
                            chars.next();
                            let mut name = String::new();
                            loop {
                                match chars.next() {
                                    Some('}') => break,
                                    Some(c) => name.push(c),
                                    None => return Err("--format: %h{ without its }".into()),
                                }
                            }
                            Piece::Header(name)
                        } else {
                            Piece::Headers
                        }
                    }
                    'i' => Piece::MsgId,
                    'k' => Piece::Key,
                    'u' => Piece::Sender,
                    'p' => Piece::Payload,
                    'S' => Piece::Size,
                    'd' => Piece::Delivery,
                    'D' => Piece::DeliveryId,
                    o => return Err(format!("--format: unknown field %{o} (see --help)")),
                };
                flush(&mut lit, &mut out);
                out.push(piece);
            }
            c => {
                let mut b = [0; 4];
                lit.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    flush(&mut lit, &mut out);
    Ok(out)
}

fn headers_text(m: &Message) -> String {
    m.headers
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn sender_text(s: &Sender) -> String {
    format!("{}/{}/{}", s.user, s.client, s.name)
}

/// Write one message in `format`.
pub fn write_message(out: &mut impl Write, m: &Message, format: &Format) -> io::Result<()> {
    match format {
        Format::Lines => {
            out.write_all(&m.payload)?;
            out.write_all(b"\n")
        }
        Format::Null => {
            out.write_all(&m.payload)?;
            out.write_all(b"\0")
        }
        Format::Raw => out.write_all(&m.payload),
        Format::Verbose => {
            out.write_all(m.topic.as_bytes())?;
            out.write_all(b" ")?;
            out.write_all(&m.payload)?;
            out.write_all(b"\n")
        }
        Format::HeadersOnly => {
            let line = m
                .headers
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")
        }
        Format::Json => {
            momctl::json::write_message(out, m)?;
            out.write_all(b"\n")
        }
        Format::Template(pieces) => {
            for p in pieces {
                match p {
                    Piece::Lit(b) => out.write_all(b)?,
                    Piece::Topic => out.write_all(m.topic.as_bytes())?,
                    Piece::Seq => write!(out, "{}", m.seq)?,
                    Piece::TimeIso => out.write_all(time_iso(m.time).as_bytes())?,
                    Piece::TimeMs => write!(out, "{}", m.time)?,
                    Piece::Headers => out.write_all(headers_text(m).as_bytes())?,
                    Piece::Header(h) => {
                        out.write_all(m.headers.get(h).map_or("", String::as_str).as_bytes())?
                    }
                    Piece::MsgId => out.write_all(m.msg_id.as_deref().unwrap_or("").as_bytes())?,
                    Piece::Key => out.write_all(m.key.as_deref().unwrap_or("").as_bytes())?,
                    Piece::Sender => out.write_all(sender_text(&m.sender).as_bytes())?,
                    Piece::Payload => out.write_all(&m.payload)?,
                    Piece::Size => write!(out, "{}", m.payload.len())?,
                    Piece::Delivery => write!(out, "{}", m.delivery.unwrap_or(0))?,
                    Piece::DeliveryId => out.write_all(delivery_id(m).as_bytes())?,
                }
            }
            Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        let mut headers = mom_proto::Headers::new();
        headers.insert("trace".into(), "abc".into());
        headers.insert("a".into(), "1".into());
        Message {
            topic: "orders.eu".into(),
            seq: 7,
            time: 1_767_323_045_123,
            headers,
            sender: Sender {
                user: "anonymous".into(),
                client: 1003,
                name: "momctl".into(),
            },
            msg_id: Some("o-7".into()),
            key: None,
            payload: bytes::Bytes::from_static(b"{\"z\":1,\"a\":[2]}"),
            delivery: Some(2),
        }
    }

    fn render(f: &Format) -> String {
        let mut v = Vec::new();
        write_message(&mut v, &msg(), f).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn template_fields() {
        let t = parse_template(r"%t %s %T %e %h{trace} %h %i %u %S %d %D 100%% %p\n").unwrap();
        assert_eq!(
            render(&Format::Template(t)),
            "orders.eu 7 2026-01-02T03:04:05.123Z 1767323045123 abc a=1,trace=abc o-7 \
             anonymous/1003/momctl 15 2 orders.eu:7 100% {\"z\":1,\"a\":[2]}\n"
        );
        assert!(parse_template("%x").is_err());
        assert!(parse_template("%h{x").is_err());
        assert!(parse_template("50%").is_err());
        assert!(parse_template(r"\q").is_err());
    }

    #[test]
    fn json_embeds_json_payloads_in_order() {
        let s = render(&Format::Json);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["time_iso"], "2026-01-02T03:04:05.123Z");
        assert_eq!(v["delivery_id"], "orders.eu:7");
        assert_eq!(v["delivery"], 2);
        assert!(s.contains(r#""payload_json":{"z":1,"a":[2]}"#), "{s}");
        let mut m = msg();
        m.payload = bytes::Bytes::from_static(b"42");
        let mut out = Vec::new();
        write_message(&mut out, &m, &Format::Json).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("payload_json"));
    }

    #[test]
    fn verbose_raw_and_headers_only() {
        assert_eq!(render(&Format::Verbose), "orders.eu {\"z\":1,\"a\":[2]}\n");
        assert_eq!(render(&Format::Raw), "{\"z\":1,\"a\":[2]}");
        assert_eq!(render(&Format::HeadersOnly), "a=1 trace=abc\n");
    }
}
