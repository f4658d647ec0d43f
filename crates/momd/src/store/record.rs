//! A message record: consecutive messages of one publish, stored as one sled value (like a
//! Kafka record batch) so sled sees one insert per batch, not per message. Each message
//! carries a CRC-32 of its content, checked when read.
//!
//! Layout (MessagePack array): `[version=1, time, sender, [[headers, msg_id, payload, crc], …]]`.

use bytes::Bytes;
use mom_proto::{Headers, Sender};
use serde::{Deserialize, Serialize};

use crate::core::NewMsg;

/// Records are cut at about this many payload bytes (a bigger single message gets a record
/// of its own). Keeps sled's nodes small enough to stay inline in its log.
pub const RECORD_MAX_BYTES: usize = 32 * 1024;

const VERSION: u8 = 1;

#[derive(Serialize)]
struct RecordRef<'a> {
    version: u8,
    time: u64,
    sender: &'a Sender,
    msgs: Vec<MsgRef<'a>>,
}

#[derive(Serialize)]
struct MsgRef<'a>(&'a Headers, &'a Option<String>, &'a Bytes, u32);

#[derive(Deserialize)]
pub struct Record {
    #[allow(dead_code)]
    version: u8,
    pub time: u64,
    pub sender: Sender,
    pub msgs: Vec<RecMsg>,
}

#[derive(Deserialize)]
pub struct RecMsg {
    pub headers: Headers,
    pub msg_id: Option<String>,
    pub payload: Bytes,
    pub crc: u32,
}

pub fn checksum(headers: &Headers, msg_id: &Option<String>, payload: &[u8]) -> u32 {
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
    h.update(payload);
    h.finalize()
}

impl RecMsg {
    pub fn checksum_ok(&self) -> bool {
        checksum(&self.headers, &self.msg_id, &self.payload) == self.crc
    }

    pub fn size(&self) -> u64 {
        let h: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        (self.payload.len() + h + self.msg_id.as_ref().map_or(0, String::len)) as u64
    }
}

/// Split messages into record-sized runs.
pub fn chunks(msgs: &[NewMsg]) -> impl Iterator<Item = &[NewMsg]> {
    let mut rest = msgs;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        for m in rest {
            if n > 0 && bytes + m.payload.len() > RECORD_MAX_BYTES {
                break;
            }
            bytes += m.payload.len() + 16;
            n += 1;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

pub fn encode(time: u64, sender: &Sender, msgs: &[NewMsg]) -> Vec<u8> {
    let rec = RecordRef {
        version: VERSION,
        time,
        sender,
        msgs: msgs
            .iter()
            .map(|m| {
                MsgRef(
                    &m.headers,
                    &m.msg_id,
                    &m.payload,
                    checksum(&m.headers, &m.msg_id, &m.payload),
                )
            })
            .collect(),
    };
    rmp_serde::to_vec(&rec).expect("a record of owned strings and bytes always encodes")
}

pub fn decode(v: &[u8]) -> Result<Record, rmp_serde::decode::Error> {
    rmp_serde::from_slice(v)
}
