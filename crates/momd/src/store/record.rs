//! A message record: consecutive messages of one topic, stored as one segment record and
//! named by one index entry (like a Kafka record batch), so the index sees one insert per
//! record, not per message. A record holds everything one group commit stored in its
//! topic, up to [`RECORD_MAX_BYTES`]: the messages of several publish requests, each run
//! with its own time and sender. Each message carries a CRC-32 of its content, checked when
//! read.
//!
//! Layout (MessagePack arrays):
//! - version 2 (written): `[2, [[time, sender, [[headers, msg_id, payload, crc], …]], …]]`,
//!   one inner array per run of messages that share time and sender; a message published
//!   with a key has it last, `[headers, msg_id, payload, crc, key]`;
//! - version 1 (read; written by older momd): `[1, time, sender, [[headers, msg_id,
//!   payload, crc], …]]`, one run.

use bytes::Bytes;
use mom_proto::{Headers, Sender};
use serde::{Deserialize, Serialize};

use crate::core::{Batch, NewMsg};

/// Records are cut at about this many payload bytes (a bigger single message gets a record
/// of its own).
pub const RECORD_MAX_BYTES: usize = 32 * 1024;

const VERSION: u8 = 2;

#[derive(Serialize)]
struct RecordRef<'a>(u8, Vec<RunRef<'a>>);

#[derive(Serialize)]
struct RunRef<'a>(u64, &'a Sender, Vec<AnyMsgRef<'a>>);

#[derive(Serialize)]
struct MsgRef<'a>(&'a Headers, &'a Option<String>, &'a Bytes, u32);

#[derive(Serialize)]
struct KeyedMsgRef<'a>(&'a Headers, &'a Option<String>, &'a Bytes, u32, &'a str);

/// A message as written: with its key only when it has one (what older records hold).
#[derive(Serialize)]
#[serde(untagged)]
enum AnyMsgRef<'a> {
    Plain(MsgRef<'a>),
    Keyed(KeyedMsgRef<'a>),
}

#[derive(Deserialize)]
struct V1(
    #[allow(dead_code)] serde::de::IgnoredAny,
    u64,
    Sender,
    Vec<RecMsg>,
);

#[derive(Deserialize)]
struct V2(#[allow(dead_code)] serde::de::IgnoredAny, Vec<Run>);

/// A decoded record: its runs, in seq order.
pub struct Record {
    pub runs: Vec<Run>,
}

/// Messages of a record that share a time and a sender (one publish request, or part of
/// one).
#[derive(Deserialize)]
pub struct Run {
    pub time: u64,
    pub sender: Sender,
    pub msgs: Vec<RecMsg>,
}

impl Record {
    /// Messages in the record.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.msgs.len()).sum()
    }

    /// Every message, in seq order.
    pub fn msgs(&self) -> impl Iterator<Item = &RecMsg> {
        self.runs.iter().flat_map(|r| r.msgs.iter())
    }

    /// The newest time of its messages (times never decrease within a topic).
    pub fn time(&self) -> u64 {
        self.runs.iter().map(|r| r.time).max().unwrap_or(0)
    }
}

#[derive(Deserialize)]
pub struct RecMsg {
    pub headers: Headers,
    pub msg_id: Option<String>,
    pub payload: Bytes,
    pub crc: u32,
    #[serde(default)]
    pub key: Option<String>,
}

pub fn checksum(
    headers: &Headers,
    msg_id: &Option<String>,
    key: &Option<String>,
    payload: &[u8],
) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (k, v) in headers {
        h.update(&(k.len() as u32).to_be_bytes());
        h.update(k.as_bytes());
        h.update(&(v.len() as u32).to_be_bytes());
        h.update(v.as_bytes());
    }
    if let Some(id) = msg_id {
        h.update(&[1]);
        h.update(id.as_bytes());
    }
    if let Some(key) = key {
        h.update(&[2]);
        h.update(&(key.len() as u32).to_be_bytes());
        h.update(key.as_bytes());
    }
    h.update(payload);
    h.finalize()
}

impl RecMsg {
    pub fn checksum_ok(&self) -> bool {
        checksum(&self.headers, &self.msg_id, &self.key, &self.payload) == self.crc
    }

    pub fn size(&self) -> u64 {
        crate::core::msg_size(&self.headers, &self.msg_id, &self.key, &self.payload)
    }
}

/// Payload bytes a message counts toward [`RECORD_MAX_BYTES`].
fn weight(m: &NewMsg) -> usize {
    m.payload.len() + 16
}

/// One record to write: runs of messages (slices of staged publishes), its first seq, how
/// many messages, its newest time and their bytes (payload and headers).
pub struct Planned<'a> {
    pub first_seq: u64,
    runs: Vec<(&'a Batch, std::ops::Range<usize>)>,
    pub count: u32,
    pub time: u64,
    pub bytes: u64,
}

impl Planned<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let runs = self
            .runs
            .iter()
            .map(|(b, r)| {
                let msgs = b.msgs[r.clone()]
                    .iter()
                    .map(|m| {
                        let crc = checksum(&m.headers, &m.msg_id, &m.key, &m.payload);
                        match &m.key {
                            None => {
                                AnyMsgRef::Plain(MsgRef(&m.headers, &m.msg_id, &m.payload, crc))
                            }
                            Some(k) => AnyMsgRef::Keyed(KeyedMsgRef(
                                &m.headers, &m.msg_id, &m.payload, crc, k,
                            )),
                        }
                    })
                    .collect();
                RunRef(b.time, &b.sender, msgs)
            })
            .collect();
        rmp_serde::to_vec(&RecordRef(VERSION, runs))
            .expect("a record of owned strings and bytes always encodes")
    }
}

/// Cut the publishes staged for one topic (in seq order) into records: consecutive
/// messages up to about [`RECORD_MAX_BYTES`] each; a record never spans a gap in seqs.
pub fn plan<'a>(batches: &[&'a Batch]) -> Vec<Planned<'a>> {
    let mut out: Vec<Planned<'a>> = Vec::new();
    let mut weight_now = 0usize;
    for b in batches {
        let mut i = 0;
        while i < b.msgs.len() {
            let seq = b.first_seq + i as u64;
            let fits = out.last().is_some_and(|p| {
                p.first_seq + u64::from(p.count) == seq
                    && weight_now + weight(&b.msgs[i]) <= RECORD_MAX_BYTES
            });
            if !fits {
                out.push(Planned {
                    first_seq: seq,
                    runs: Vec::new(),
                    count: 0,
                    time: b.time,
                    bytes: 0,
                });
                weight_now = 0;
            }
            let Some(p) = out.last_mut() else { break };
            // As many of this publish's messages as fit (at least one).
            let start = i;
            loop {
                weight_now += weight(&b.msgs[i]);
                p.bytes += b.msgs[i].size();
                i += 1;
                if i >= b.msgs.len() || weight_now + weight(&b.msgs[i]) > RECORD_MAX_BYTES {
                    break;
                }
            }
            p.count += (i - start) as u32;
            p.time = p.time.max(b.time);
            p.runs.push((b, start..i));
        }
    }
    out
}

pub fn decode(v: &[u8]) -> Result<Record, rmp_serde::decode::Error> {
    // A record is a MessagePack array whose first element is its version (a positive
    // fixint right after the array's marker).
    match v.get(1) {
        Some(1) => {
            let V1(_, time, sender, msgs) = rmp_serde::from_slice(v)?;
            Ok(Record {
                runs: vec![Run { time, sender, msgs }],
            })
        }
        Some(2) => {
            // Records as momd writes them, in one pass; anything else (and every error)
            // through serde, which says what is wrong.
            if let Some(r) = fast::decode_v2(v) {
                return Ok(r);
            }
            let V2(_, runs) = rmp_serde::from_slice(v)?;
            Ok(Record { runs })
        }
        other => Err(rmp_serde::decode::Error::Syntax(format!(
            "unknown record version {other:?}"
        ))),
    }
}

/// Decoding a version 2 record of the shape momd writes without serde: replay and queue
/// deliveries read every message back through here, and serde's visitors (a call per
/// value, a map per message's headers) were most of the read's cost.
mod fast {
    use super::*;
    use rmp::decode::{read_array_len, read_bin_len, read_int, read_map_len, read_str_len};

    type Rd<'a> = &'a [u8];

    pub fn decode_v2(v: &[u8]) -> Option<Record> {
        let mut rd: Rd = v;
        if read_array_len(&mut rd).ok()? != 2 || read_int::<u8, _>(&mut rd).ok()? != 2 {
            return None;
        }
        let n_runs = read_array_len(&mut rd).ok()? as usize;
        let mut runs = Vec::with_capacity(n_runs.min(rd.len()));
        for _ in 0..n_runs {
            if read_array_len(&mut rd).ok()? != 3 {
                return None;
            }
            let time: u64 = read_int(&mut rd).ok()?;
            let sender = sender(&mut rd)?;
            let n = read_array_len(&mut rd).ok()? as usize;
            let mut msgs = Vec::with_capacity(n.min(rd.len()));
            for _ in 0..n {
                msgs.push(msg(&mut rd)?);
            }
            runs.push(Run { time, sender, msgs });
        }
        rd.is_empty().then_some(Record { runs })
    }

    /// `[user, client]` or `[user, client, name]`.
    fn sender(rd: &mut Rd) -> Option<Sender> {
        let n = read_array_len(rd).ok()?;
        if !(2..=3).contains(&n) {
            return None;
        }
        let user = string(rd)?;
        let client: u64 = read_int(rd).ok()?;
        let name = if n == 3 { string(rd)? } else { String::new() };
        Some(Sender { user, client, name })
    }

    /// `[headers, msg_id, payload, crc]` or `[headers, msg_id, payload, crc, key]`.
    fn msg(rd: &mut Rd) -> Option<RecMsg> {
        let n = read_array_len(rd).ok()?;
        if !(4..=5).contains(&n) {
            return None;
        }
        let mut headers = Headers::new();
        for _ in 0..read_map_len(rd).ok()? {
            let k = string(rd)?;
            let v = string(rd)?;
            headers.insert(k, v);
        }
        let msg_id = match rd.split_first() {
            Some((0xc0, rest)) => {
                *rd = rest;
                None
            }
            _ => Some(string(rd)?),
        };
        let len = read_bin_len(rd).ok()? as usize;
        let payload = Bytes::copy_from_slice(take(rd, len)?);
        let crc: u32 = read_int(rd).ok()?;
        let key = if n == 5 { Some(string(rd)?) } else { None };
        Some(RecMsg {
            headers,
            msg_id,
            payload,
            crc,
            key,
        })
    }

    fn string(rd: &mut Rd) -> Option<String> {
        let len = read_str_len(rd).ok()? as usize;
        Some(std::str::from_utf8(take(rd, len)?).ok()?.to_owned())
    }

    fn take<'a>(rd: &mut Rd<'a>, len: usize) -> Option<&'a [u8]> {
        if rd.len() < len {
            return None;
        }
        let (head, rest) = rd.split_at(len);
        *rd = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A record as plain values: (time, sender, [(headers, msg_id, payload, crc)]) per run.
    type Flat = Vec<(u64, Sender, Vec<(Headers, Option<String>, Vec<u8>, u32)>)>;

    fn serde_decode(v: &[u8]) -> Option<Flat> {
        let V2(_, runs) = rmp_serde::from_slice(v).ok()?;
        Some(flat(&Record { runs }))
    }

    fn flat(r: &Record) -> Flat {
        r.runs
            .iter()
            .map(|run| {
                let msgs = run
                    .msgs
                    .iter()
                    .map(|m| {
                        (
                            m.headers.clone(),
                            m.msg_id.clone(),
                            m.payload.to_vec(),
                            m.crc,
                        )
                    })
                    .collect();
                (run.time, run.sender.clone(), msgs)
            })
            .collect()
    }

    fn arb_msg() -> impl Strategy<Value = NewMsg> {
        (
            proptest::collection::btree_map("[a-z]{0,4}", "\\PC{0,6}", 0..3),
            proptest::option::of("[a-z0-9-]{0,12}"),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::option::of("\\PC{0,8}"),
        )
            .prop_map(|(headers, msg_id, payload, key)| NewMsg {
                headers,
                msg_id,
                payload: Bytes::from(payload),
                key,
            })
    }

    proptest! {
        /// What momd writes decodes in one pass to exactly what serde decodes, and a
        /// record cut short or with a byte changed never decodes to something else
        /// without serde agreeing.
        #[test]
        fn the_fast_decoder_agrees_with_serde(
            runs in proptest::collection::vec(
                (any::<u64>(), "[a-z]{0,5}", any::<u64>(), "[a-z]{0,5}",
                 proptest::collection::vec(arb_msg(), 1..5)),
                1..4),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut seq = 1;
            let batches: Vec<Batch> = runs
                .into_iter()
                .map(|(time, user, client, name, msgs)| {
                    let b = Batch {
                        topic: std::sync::Arc::from("t"),
                        first_seq: seq,
                        time,
                        sender: Sender { user, client, name },
                        msgs,
                    };
                    seq += b.msgs.len() as u64;
                    b
                })
                .collect();
            let refs: Vec<&Batch> = batches.iter().collect();
            for p in plan(&refs) {
                let v = p.encode();
                let fast = fast::decode_v2(&v).map(|r| flat(&r));
                prop_assert!(fast.is_some());
                prop_assert_eq!(&fast, &serde_decode(&v));
                let short = &v[..cut.index(v.len())];
                prop_assert!(fast::decode_v2(short).is_none());
                let mut changed = v.clone();
                let i = flip.index(changed.len());
                changed[i] ^= 0x5a;
                if let Some(r) = fast::decode_v2(&changed) {
                    prop_assert_eq!(Some(flat(&r)), serde_decode(&changed));
                }
            }
        }
    }
}
