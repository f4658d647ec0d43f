//! Reading what `momctl publish` sends: stdin split into messages (lines, NUL-separated,
//! all of it, or JSON objects), batched, each message given its id. Runs on a thread of its
//! own, so a stdin that blocks never stops acks from being read.

use std::io::{BufRead, BufReader, Read};

use base64::Engine;
use mom_proto::{Headers, PubMsg};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::cli::IdFrom;

/// Payload bytes per batch from stdin, so a batch frame stays far below the frame limit.
const BATCH_BYTES: usize = 1024 * 1024;

pub enum Input {
    /// Messages numbered `first`, `first + 1`, … (stdin line or argument number), to
    /// `topic` (None: the command's topic).
    Batch {
        first: u64,
        topic: Option<String>,
        msgs: Vec<PubMsg>,
    },
    /// Reading stops here: nothing from this point was sent. Says why.
    Stop { message: String },
}

#[derive(Clone, Copy)]
pub enum Split {
    Delim(u8),
    Whole,
    Json,
}

/// How each message gets its id.
#[derive(Clone)]
pub struct Ids {
    prefix: Option<String>,
    from: Option<IdFrom>,
    /// Made for this run when reconnecting needs ids and the user gave none: resending a
    /// batch whose ack was lost must not store it twice.
    run: Option<String>,
}

impl Ids {
    pub fn new(prefix: Option<String>, from: Option<IdFrom>, reconnect: bool) -> Ids {
        let run = (reconnect && prefix.is_none() && from.is_none()).then(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("momctl-{:x}-{:x}", t, std::process::id())
        });
        Ids { prefix, from, run }
    }

    /// The id of message `n`; `single` when it is the only one (then `--id` is used as
    /// is). Err when the id cannot be made (a missing header).
    pub fn id(
        &self,
        n: u64,
        single: bool,
        payload: &[u8],
        headers: &Headers,
    ) -> Result<Option<String>, String> {
        if let Some(p) = &self.prefix {
            return Ok(Some(if single {
                p.clone()
            } else {
                format!("{p}-{n}")
            }));
        }
        match &self.from {
            Some(IdFrom::Sha256) => {
                let d = Sha256::digest(payload);
                Ok(Some(d.iter().map(|b| format!("{b:02x}")).collect()))
            }
            Some(IdFrom::Header(h)) => match headers.get(h) {
                Some(v) if !v.is_empty() => Ok(Some(v.clone())),
                _ => Err(format!(
                    "message {n} has no header {h:?} to take its id from"
                )),
            },
            None => Ok(self.run.as_ref().map(|r| format!("{r}-{n}"))),
        }
    }
}

/// Reads stdin on its own thread and hands batches to the publisher.
pub struct StdinReader {
    pub mode: Split,
    pub max_payload: usize,
    pub batch: usize,
    pub headers: Headers,
    /// `--key`: every message's key, unless its JSON line has one.
    pub key: Option<String>,
    pub ids: Ids,
    pub tx: mpsc::Sender<Input>,
    /// Each record starts with its topic and a space (`momctl publish -`).
    pub topic_per_line: bool,
}

/// One line of `--json-input`: what `subscribe --json` prints (other fields ignored).
#[derive(serde::Deserialize)]
struct JsonIn {
    payload: serde_json::Value,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    msg_id: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

impl StdinReader {
    pub fn run(self, stdin: impl Read) {
        let mut rd = BufReader::with_capacity(256 * 1024, stdin);
        let res = match self.mode {
            Split::Whole => self.whole(&mut rd),
            Split::Delim(d) => self.split(&mut rd, d),
            Split::Json => self.split(&mut rd, b'\n'),
        };
        if let Err(e) = res {
            let _ = self.tx.blocking_send(Input::Stop {
                message: format!("reading stdin: {e}"),
            });
        }
    }

    /// Bytes a message takes in a frame besides its payload: headers, id, framing.
    fn overhead(m: &PubMsg) -> usize {
        let h: usize = m.headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        h + m.msg_id.as_ref().map_or(0, |i| i.len() + 24) + 32
    }

    /// Message `n` from its bytes; Err says why reading stops.
    fn msg(&self, raw: Vec<u8>, n: u64, single: bool) -> Result<PubMsg, String> {
        let (payload, headers, msg_id, key) = match self.mode {
            Split::Json => {
                let j: JsonIn = serde_json::from_slice(&raw)
                    .map_err(|e| format!("line {n} is not a message object ({e})"))?;
                let payload = match (j.payload, j.encoding.as_deref()) {
                    (serde_json::Value::String(s), Some("base64")) => {
                        base64::engine::general_purpose::STANDARD
                            .decode(s.as_bytes())
                            .map_err(|e| format!("line {n}: payload is not base64 ({e})"))?
                    }
                    (serde_json::Value::String(s), _) => s.into_bytes(),
                    // Any other JSON value is the payload, as compact JSON text.
                    (v, _) => v.to_string().into_bytes(),
                };
                let mut headers = self.headers.clone();
                headers.extend(j.headers);
                (
                    payload,
                    headers,
                    j.msg_id,
                    j.key.or_else(|| self.key.clone()),
                )
            }
            _ => (raw, self.headers.clone(), None, self.key.clone()),
        };
        if payload.len() > self.max_payload {
            return Err(format!(
                "{} {n} is longer than the broker's payload limit of {} bytes; it was not sent",
                if matches!(self.mode, Split::Whole) {
                    "message"
                } else {
                    "line"
                },
                self.max_payload
            ));
        }
        let msg_id = match msg_id {
            Some(id) if self.ids.prefix.is_none() && self.ids.from.is_none() => Some(id),
            _ => self.ids.id(n, single, &payload, &headers)?,
        };
        Ok(PubMsg {
            payload: payload.into(),
            headers,
            msg_id,
            key,
        })
    }

    fn whole(&self, rd: &mut impl BufRead) -> std::io::Result<()> {
        let mut all = Vec::new();
        rd.take(self.max_payload as u64 + 1).read_to_end(&mut all)?;
        let input = match self.msg(all, 1, true) {
            Ok(m) => Input::Batch {
                first: 1,
                topic: None,
                msgs: vec![m],
            },
            Err(message) => Input::Stop { message },
        };
        let _ = self.tx.blocking_send(input);
        Ok(())
    }

    fn split<R: Read>(&self, rd: &mut BufReader<R>, delim: u8) -> std::io::Result<()> {
        let mut batch: Vec<PubMsg> = Vec::new();
        // The topic of what is in `batch` (with a topic per line).
        let mut topic: Option<String> = None;
        let mut first = 1;
        let mut batch_bytes = 0;
        let mut cur: Vec<u8> = Vec::new();
        let mut n: u64 = 0;
        // A JSON line carries its payload in text: allow for escapes and base64.
        let line_limit = match self.mode {
            Split::Json => self.max_payload * 2 + 64 * 1024,
            _ => self.max_payload + usize::from(delim == b'\n'),
        };
        loop {
            let buf = match rd.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.send(&mut batch, &mut topic, &mut first, n);
                    return Err(e);
                }
            };
            let eof = buf.is_empty();
            let mut line_done = false;
            if eof {
                if cur.is_empty() {
                    break;
                }
                line_done = true;
            } else {
                let take = match buf.iter().position(|b| *b == delim) {
                    Some(i) => {
                        line_done = true;
                        cur.extend_from_slice(&buf[..i]);
                        i + 1
                    }
                    None => {
                        cur.extend_from_slice(buf);
                        buf.len()
                    }
                };
                rd.consume(take);
            }
            if cur.len() > line_limit {
                // Flush what came before so those lines are acknowledged, then stop.
                self.send(&mut batch, &mut topic, &mut first, n);
                let _ = self.tx.blocking_send(Input::Stop {
                    message: format!(
                        "line {} is longer than the broker's payload limit of {} bytes; it was not sent",
                        n + 1,
                        self.max_payload
                    ),
                });
                return Ok(());
            }
            if line_done {
                n += 1;
                let mut line = std::mem::take(&mut cur);
                if delim == b'\n' && line.last() == Some(&b'\r') {
                    line.pop();
                }
                if matches!(self.mode, Split::Json) && line.iter().all(u8::is_ascii_whitespace) {
                    // Blank lines between JSON objects are not messages.
                } else {
                    let line = if self.topic_per_line {
                        match split_topic(&line, n) {
                            Ok((t, rest)) => {
                                if topic.as_deref() != Some(t.as_str()) {
                                    // A new topic: what came before goes first, in its own
                                    // request (`first` then names this line).
                                    if !self.send(&mut batch, &mut topic, &mut first, n - 1) {
                                        return Ok(());
                                    }
                                    batch_bytes = 0;
                                    topic = Some(t);
                                }
                                rest
                            }
                            Err(message) => {
                                self.send(&mut batch, &mut topic, &mut first, n);
                                let _ = self.tx.blocking_send(Input::Stop { message });
                                return Ok(());
                            }
                        }
                    } else {
                        line
                    };
                    match self.msg(line, n, false) {
                        Ok(m) => {
                            batch_bytes += m.payload.len() + Self::overhead(&m);
                            batch.push(m);
                        }
                        Err(message) => {
                            self.send(&mut batch, &mut topic, &mut first, n);
                            let _ = self.tx.blocking_send(Input::Stop { message });
                            return Ok(());
                        }
                    }
                }
                // Send when the batch is full, or when stdin has nothing more buffered (the
                // next read may block: a live pipe must not wait for a full batch).
                let idle = rd.buffer().is_empty();
                if batch.len() >= self.batch
                    || batch_bytes >= BATCH_BYTES
                    || (idle && !batch.is_empty())
                {
                    if !self.send(&mut batch, &mut topic, &mut first, n) {
                        return Ok(());
                    }
                    batch_bytes = 0;
                }
            }
            if eof {
                break;
            }
        }
        self.send(&mut batch, &mut topic, &mut first, n);
        Ok(())
    }

    /// Send the batch (messages `first..`, to `topic`); the next batch starts after message
    /// `n`. False when the publisher is gone.
    fn send(
        &self,
        batch: &mut Vec<PubMsg>,
        topic: &mut Option<String>,
        first: &mut u64,
        n: u64,
    ) -> bool {
        let ok = batch.is_empty()
            || self
                .tx
                .blocking_send(Input::Batch {
                    first: *first,
                    topic: topic.clone(),
                    msgs: std::mem::take(batch),
                })
                .is_ok();
        *first = n + 1;
        ok
    }
}

/// A `TOPIC MESSAGE` record of `momctl publish -`: its topic (checked) and the message.
fn split_topic(line: &[u8], n: u64) -> Result<(String, Vec<u8>), String> {
    let at = line.iter().position(|b| *b == b' ');
    let (t, rest) = match at {
        Some(i) => (&line[..i], line.get(i + 1..).unwrap_or_default()),
        None => (line, &[][..]),
    };
    let t = std::str::from_utf8(t)
        .map_err(|_| format!("line {n}: its topic is not UTF-8; it was not sent"))?;
    if at.is_none() {
        return Err(format!(
            "line {n} has no space after its topic {t:?} (with `-` as the topic, each line is \
             `TOPIC MESSAGE`); it was not sent"
        ));
    }
    mom_proto::topic::validate_publish_topic(t)
        .map_err(|e| format!("line {n}: {e}; it was not sent"))?;
    Ok((t.to_string(), rest.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_per_line_is_split_at_the_first_space() {
        assert_eq!(
            split_topic(b"devices.d1.telemetry 21.5 C", 1),
            Ok(("devices.d1.telemetry".to_string(), b"21.5 C".to_vec()))
        );
        assert_eq!(split_topic(b"t.x ", 2), Ok(("t.x".to_string(), Vec::new())));
        assert!(split_topic(b"no-space", 3).unwrap_err().contains("line 3"));
        assert!(split_topic(b"bad..topic x", 4)
            .unwrap_err()
            .contains("line 4"));
        assert!(split_topic(b"$sys.events x", 5).is_err());
    }

    #[test]
    fn ids_by_scheme() {
        let h = Headers::new();
        let p = Ids::new(Some("ship".into()), None, false);
        assert_eq!(p.id(3, false, b"x", &h).unwrap().as_deref(), Some("ship-3"));
        assert_eq!(p.id(1, true, b"x", &h).unwrap().as_deref(), Some("ship"));
        let s = Ids::new(None, Some(IdFrom::Sha256), true);
        assert_eq!(
            s.id(9, false, b"abc", &h).unwrap().as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        let mut h2 = Headers::new();
        h2.insert("k".into(), "v1".into());
        let hd = Ids::new(None, Some(IdFrom::Header("k".into())), false);
        assert_eq!(hd.id(1, false, b"", &h2).unwrap().as_deref(), Some("v1"));
        assert!(hd.id(1, false, b"", &h).is_err());
        assert_eq!(Ids::new(None, None, false).id(1, false, b"", &h), Ok(None));
        let r = Ids::new(None, None, true)
            .id(4, false, b"", &h)
            .unwrap()
            .unwrap();
        assert!(r.starts_with("momctl-") && r.ends_with("-4"), "{r}");
    }
}
