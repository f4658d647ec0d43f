//! The frames sent most, decoded straight from their bytes: the client's requests that
//! carry messages and acks, and the server's deliveries and publish acknowledgements.
//!
//! serde decodes an internally tagged enum such as [`ClientFrame`] by first buffering the
//! whole body into a tree of its values, to find the `type` wherever it is, and then
//! decoding the variant from that tree: an allocation per map, array and entry of every
//! frame. A frame that names its `type` first (every encoder of this crate does) can be
//! decoded as its variant's struct in one pass instead.
//!
//! The result must be exactly the buffered decoder's, errors included (docs/protocol.md
//! promises no more and no less), and the two decoders differ at the edges: a key written as
//! a uint16, an enum given as an integer, an ext, a bin where a list is expected. So the
//! one-pass decoder is only tried on a body of the plain shape (`depth.rs`: str keys, no ext,
//! bins only as payloads, `type` first and once) and only
//! for variants whose fields decode the same either way (no enums among them); anything
//! else, and any error of its own, goes to the buffered decoder, which gives the answer.

use serde::de::{value::MapAccessDeserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::depth::{survey, MAX_DEPTH};
use crate::error::FrameError;
use crate::frame::decode_body;
use crate::message::{ClientFrame, Deliver, Publish, PublishOk, Req, ServerFrame};
use crate::queue::{Ack, Fetch, FetchOk, Nack, QueueDeliver};

/// A frame the codec ([`crate::Codec`]) decodes: in one pass where it can.
pub trait DecodeFrame: Sized {
    fn decode_frame(body: &[u8]) -> Result<Self, FrameError>;
}

impl DecodeFrame for ClientFrame {
    fn decode_frame(body: &[u8]) -> Result<Self, FrameError> {
        decode_client_frame(body)
    }
}

impl DecodeFrame for ServerFrame {
    fn decode_frame(body: &[u8]) -> Result<Self, FrameError> {
        decode_server_frame(body)
    }
}

/// Decode a client frame's body: the same result as [`decode_body::<ClientFrame>`], faster
/// for the frames sent most.
pub fn decode_client_frame(body: &[u8]) -> Result<ClientFrame, FrameError> {
    one_pass(body).map_or_else(|| decode_body(body), Ok)
}

/// Decode a server frame's body: the same result as [`decode_body::<ServerFrame>`], faster
/// for deliveries (a replay reads millions of messages through here) and publish acks.
pub fn decode_server_frame(body: &[u8]) -> Result<ServerFrame, FrameError> {
    one_pass(body).map_or_else(|| decode_body(body), Ok)
}

/// The frame types some of whose variants are decoded in one pass.
trait Variants: Sized {
    /// The variant `tag` names, decoded from the rest of the map; None when it is not one
    /// decoded this way.
    fn variant<'de, A: MapAccess<'de>>(
        tag: &str,
        rest: MapAccessDeserializer<A>,
    ) -> Result<Option<Self>, A::Error>;
}

impl Variants for ClientFrame {
    fn variant<'de, A: MapAccess<'de>>(
        tag: &str,
        rest: MapAccessDeserializer<A>,
    ) -> Result<Option<Self>, A::Error> {
        Ok(Some(match tag {
            "publish" => ClientFrame::Publish(Publish::deserialize(rest)?),
            "ack" => ClientFrame::Ack(Ack::deserialize(rest)?),
            "nack" => ClientFrame::Nack(Nack::deserialize(rest)?),
            "extend" => ClientFrame::Extend(Ack::deserialize(rest)?),
            "fetch" => ClientFrame::Fetch(Fetch::deserialize(rest)?),
            "ping" => ClientFrame::Ping(Req::deserialize(rest)?),
            // The map's rest is left unread: rmp calls that an error, which means the same.
            _ => return Ok(None),
        }))
    }
}

impl Variants for ServerFrame {
    fn variant<'de, A: MapAccess<'de>>(
        tag: &str,
        rest: MapAccessDeserializer<A>,
    ) -> Result<Option<Self>, A::Error> {
        Ok(Some(match tag {
            "deliver" => ServerFrame::Deliver(Deliver::deserialize(rest)?),
            "publish_ok" => ServerFrame::PublishOk(PublishOk::deserialize(rest)?),
            "queue_deliver" => ServerFrame::QueueDeliver(QueueDeliver::deserialize(rest)?),
            "fetch_ok" => ServerFrame::FetchOk(FetchOk::deserialize(rest)?),
            "ok" => ServerFrame::Ok(Req::deserialize(rest)?),
            _ => return Ok(None),
        }))
    }
}

/// The frame decoded in one pass; None when the body is not plain (see the module doc),
/// its type is not one decoded this way, or on any error (the buffered decoder then says
/// which).
fn one_pass<T: Variants>(body: &[u8]) -> Option<T> {
    if !survey(body, MAX_DEPTH).plain {
        return None;
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    serde::Deserializer::deserialize_map(&mut de, Direct(std::marker::PhantomData))
        .ok()
        .flatten()
}

struct Direct<T>(std::marker::PhantomData<T>);

impl<'de, T: Variants> Visitor<'de> for Direct<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map whose first key is type")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // The survey found `type` as the first key, and as no other.
        if map.next_key::<IgnoredAny>()?.is_none() {
            return Ok(None);
        }
        // The buffered decoder reads the tag just so, straight from the map; only a str
        // tag is taken here (an integer one names a variant by its index).
        let tag: &'de str = map.next_value()?;
        // The rest of the map is the variant's struct, as the buffered decoder gives it
        // once the tag is taken out.
        T::variant(tag, MapAccessDeserializer::new(map))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::message::PubMsg;
    use crate::queue::MsgKey;

    fn body(frame: &ClientFrame) -> Vec<u8> {
        let mut b = Vec::new();
        crate::encode_body(frame, &mut b).expect("encodes");
        b
    }

    /// Every type decoded in one pass is named as serde names it, and comes out whole.
    #[test]
    fn each_direct_type_is_decoded_in_one_pass() {
        let key = MsgKey {
            topic: "a.b".into(),
            seq: 7,
        };
        let frames = [
            ClientFrame::Publish(Publish {
                id: 1,
                topic: "a.b".into(),
                msgs: vec![PubMsg {
                    payload: Bytes::from_static(b"hi"),
                    headers: [("k".to_string(), "v".to_string())].into(),
                    msg_id: Some("m".into()),
                    key: Some("k1".into()),
                }],
                no_ack: true,
            }),
            ClientFrame::Ack(Ack {
                id: 2,
                queue: "q".into(),
                msgs: vec![key.clone()],
            }),
            ClientFrame::Nack(Nack {
                id: 3,
                queue: "q".into(),
                msgs: vec![key.clone()],
                delay_ms: 5,
                release: true,
            }),
            ClientFrame::Extend(Ack {
                id: 4,
                queue: "q".into(),
                msgs: vec![key],
            }),
            ClientFrame::Fetch(Fetch {
                id: 5,
                queue: "q".into(),
                max: 10,
                timeout_ms: 100,
                detached: true,
            }),
            ClientFrame::Ping(Req { id: 6 }),
        ];
        for f in frames {
            let b = body(&f);
            assert!(survey(&b, MAX_DEPTH).plain, "{f:?}");
            assert_eq!(one_pass::<ClientFrame>(&b), Some(f.clone()));
            assert_eq!(decode_client_frame(&b).expect("decodes"), f);
        }
    }

    #[test]
    fn other_types_go_to_the_buffered_decoder() {
        let f = ClientFrame::Unwatch(crate::message::Unwatch { id: 1, watch: 2 });
        let b = body(&f);
        assert_eq!(one_pass::<ClientFrame>(&b), None);
        assert_eq!(decode_client_frame(&b).expect("decodes"), f);
    }

    #[test]
    fn only_plain_bodies_are_decoded_in_one_pass() {
        let plain = |b: &[u8]| survey(b, MAX_DEPTH).plain;
        // {"type": "ping", "id": 1}
        let ping = b"\x82\xa4type\xa4ping\xa2id\x01";
        assert!(plain(ping));
        // `type` not first, twice, a key that is not a str, an ext, trailing bytes, cut short.
        assert!(!plain(b"\x82\xa2id\x01\xa4type\xa4ping"));
        assert!(!plain(b"\x83\xa4type\xa4ping\xa2id\x01\xa4type\xa4ping"));
        assert!(!plain(b"\x82\xa4type\xa4ping\xcd\x00\x00\x01"));
        assert!(!plain(b"\x82\xa4type\xa4ping\xa2id\xd4\x01\x01"));
        let mut trailing = ping.to_vec();
        trailing.push(0xc0);
        assert!(!plain(&trailing));
        assert!(!plain(&ping[..ping.len() - 1]));
        // Nested maps' keys too.
        assert!(!plain(b"\x82\xa4type\xa4ping\xa2id\x81\x01\x01"));
        // Not a map, an empty map.
        assert!(!plain(b"\x92\xa4ping\x01"));
        assert!(!plain(b"\x80"));
    }
}
