//! `decode_client_frame` (one pass for the frames sent most) gives exactly what the buffered
//! serde decoder (`decode_body::<ClientFrame>`) gives, errors included, on frames as clients
//! encode them and on MessagePack written every other way: other integer widths, keys that
//! are not strs, `type` elsewhere or twice, values of the wrong type, exts, cut-short bodies.

use bytes::{Bytes, BytesMut};
use mom_proto::*;
use proptest::prelude::*;

/// Both decoders on one body: the same frame, or the same error.
fn same(body: &[u8]) -> Result<(), TestCaseError> {
    agree(
        decode_client_frame(body),
        decode_body::<ClientFrame>(body),
        body,
    )
}

/// The same for server frames.
fn same_server(body: &[u8]) -> Result<(), TestCaseError> {
    agree(
        decode_server_frame(body),
        decode_body::<ServerFrame>(body),
        body,
    )
}

fn agree<T: PartialEq + std::fmt::Debug>(
    direct: Result<T, FrameError>,
    buffered: Result<T, FrameError>,
    body: &[u8],
) -> Result<(), TestCaseError> {
    match (&direct, &buffered) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(a), Err(b)) => {
            prop_assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b));
            prop_assert_eq!(a.to_string(), b.to_string());
        }
        _ => prop_assert!(false, "{direct:?} vs {buffered:?} for {body:02x?}"),
    }
    Ok(())
}

/// `check` on `body` with byte `at` set to `byte`, and on that cut at `cut`.
fn changed(
    mut body: Vec<u8>,
    at: prop::sample::Index,
    byte: u8,
    cut: prop::sample::Index,
    check: fn(&[u8]) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let i = at.index(body.len());
    body[i] = byte;
    check(&body)?;
    check(&body[..cut.index(body.len() + 1)])
}

// A MessagePack writer that can say things any way the format allows.

fn uint(n: u64, width: u8) -> Vec<u8> {
    match width % 6 {
        0 if n < 128 => vec![n as u8],
        0 | 4 => {
            let mut v = vec![0xcf];
            v.extend_from_slice(&n.to_be_bytes());
            v
        }
        1 if n <= 0xff => vec![0xcc, n as u8],
        2 if n <= 0xffff => {
            let mut v = vec![0xcd];
            v.extend_from_slice(&(n as u16).to_be_bytes());
            v
        }
        3 if n <= 0xffff_ffff => {
            let mut v = vec![0xce];
            v.extend_from_slice(&(n as u32).to_be_bytes());
            v
        }
        // A positive number written as a signed one.
        5 if n <= i64::MAX as u64 => {
            let mut v = vec![0xd3];
            v.extend_from_slice(&(n as i64).to_be_bytes());
            v
        }
        _ => uint(n, 4),
    }
}

fn str_bytes(s: &[u8], wide: bool) -> Vec<u8> {
    let mut v = if s.len() < 32 && !wide {
        vec![0xa0 | s.len() as u8]
    } else {
        let mut v = vec![0xda];
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v
    };
    v.extend_from_slice(s);
    v
}

fn str_(s: &str) -> Vec<u8> {
    str_bytes(s.as_bytes(), false)
}

fn bin(b: &[u8]) -> Vec<u8> {
    let mut v = vec![0xc4, b.len() as u8];
    v.extend_from_slice(b);
    v
}

fn array(items: Vec<Vec<u8>>) -> Vec<u8> {
    let mut v = vec![0x90 | items.len() as u8];
    items.iter().for_each(|i| v.extend_from_slice(i));
    v
}

fn map(entries: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    let mut v = if entries.len() < 16 {
        vec![0x80 | entries.len() as u8]
    } else {
        let mut v = vec![0xde];
        v.extend_from_slice(&(entries.len() as u16).to_be_bytes());
        v
    };
    for (k, val) in entries {
        v.extend_from_slice(&k);
        v.extend_from_slice(&val);
    }
    v
}

const TYPES: &[&str] = &[
    "publish", "ack", "nack", "extend", "fetch", "ping", "hello", "watch", "unwatch", "stats",
    "nope", "",
];

const KEYS: &[&str] = &[
    "id",
    "topic",
    "msgs",
    "no_ack",
    "payload",
    "headers",
    "msg_id",
    "queue",
    "seq",
    "max",
    "timeout_ms",
    "detached",
    "delay_ms",
    "release",
    "type",
    "extra",
];

fn arb_scalar() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<u64>(), any::<u8>()).prop_map(|(n, w)| uint(n, w)),
        (0u64..300, any::<u8>()).prop_map(|(n, w)| uint(n, w)),
        any::<i8>().prop_map(|n| vec![0xd0, n as u8]),
        Just(vec![0xe0]),
        any::<bool>().prop_map(|b| vec![if b { 0xc3 } else { 0xc2 }]),
        Just(vec![0xc0]),
        (prop::sample::select(TYPES), any::<bool>())
            .prop_map(|(s, wide)| str_bytes(s.as_bytes(), wide)),
        "[a-z.]{0,8}".prop_map(|s| str_(&s)),
        // Not UTF-8.
        Just(vec![0xa2, 0xff, 0xfe]),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| bin(&b)),
        Just(bin(b"type")),
        any::<f32>().prop_map(|f| {
            let mut v = vec![0xca];
            v.extend_from_slice(&f.to_be_bytes());
            v
        }),
        // ext: fixext1, and ext8 of 2 bytes.
        any::<u8>().prop_map(|b| vec![0xd4, 0x01, b]),
        Just(vec![0xc7, 0x02, 0x05, 0x00, 0x01]),
    ]
}

fn arb_value() -> impl Strategy<Value = Vec<u8>> {
    arb_scalar().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(array),
            proptest::collection::vec((arb_key(), inner), 0..5).prop_map(map),
        ]
    })
}

fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::sample::select(KEYS).prop_map(str_),
        1 => prop::sample::select(KEYS).prop_map(|k| str_bytes(k.as_bytes(), true)),
        1 => prop::sample::select(KEYS).prop_map(|k| bin(k.as_bytes())),
        2 => (0u64..20, any::<u8>()).prop_map(|(n, w)| uint(n, w)),
        1 => arb_scalar(),
    ]
}

/// A value a field of a frame decoded in one pass could plausibly hold, or now and then any.
fn arb_field(key: &'static str) -> BoxedStrategy<Vec<u8>> {
    let msg = || {
        prop_oneof![
            // A publish's message, as a map or as an array.
            (
                proptest::collection::vec(any::<u8>(), 0..6),
                proptest::collection::btree_map("[a-z]{1,3}", "[a-z]{0,3}", 0..3),
                proptest::option::of("[a-z]{1,4}"),
            )
                .prop_map(|(p, h, id)| {
                    let mut e = vec![(str_("payload"), bin(&p))];
                    if !h.is_empty() {
                        e.push((
                            str_("headers"),
                            map(h.iter().map(|(k, v)| (str_(k), str_(v))).collect()),
                        ));
                    }
                    if let Some(id) = id {
                        e.push((str_("msg_id"), str_(&id)));
                    }
                    map(e)
                }),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(|p| array(vec![
                bin(&p),
                map(vec![]),
                vec![0xc0]
            ])),
            // A queue message's key, as a map or as an array.
            ("[a-z]{1,4}", any::<u64>(), any::<u8>()).prop_map(|(t, s, w)| map(vec![
                (str_("topic"), str_(&t)),
                (str_("seq"), uint(s, w))
            ])),
            ("[a-z]{1,4}", 0u64..9).prop_map(|(t, s)| array(vec![str_(&t), uint(s, 0)])),
            arb_value(),
        ]
    };
    let plausible: BoxedStrategy<Vec<u8>> = match key {
        "id" | "seq" | "delay_ms" | "timeout_ms" => (any::<u64>(), any::<u8>())
            .prop_map(|(n, w)| uint(n, w))
            .boxed(),
        "max" => (0u64..1000, any::<u8>())
            .prop_map(|(n, w)| uint(n, w))
            .boxed(),
        "topic" | "queue" | "msg_id" => "[a-z.]{0,6}".prop_map(|s| str_(&s)).boxed(),
        "no_ack" | "detached" | "release" => any::<bool>()
            .prop_map(|b| vec![if b { 0xc3 } else { 0xc2 }])
            .boxed(),
        "msgs" => proptest::collection::vec(msg(), 0..4)
            .prop_map(array)
            .boxed(),
        "payload" => proptest::collection::vec(any::<u8>(), 0..6)
            .prop_map(|b| bin(&b))
            .boxed(),
        "type" => prop::sample::select(TYPES).prop_map(str_).boxed(),
        _ => arb_value().boxed(),
    };
    prop_oneof![6 => plausible, 1 => arb_value()].boxed()
}

/// The fields a frame of this type must have.
fn required(tag: &str) -> &'static [&'static str] {
    match tag {
        "publish" => &["id", "topic", "msgs"],
        "ack" | "nack" | "extend" => &["id", "queue", "msgs"],
        "fetch" => &["id", "queue", "max"],
        _ => &["id"],
    }
}

/// A frame-like map: mostly `type` first, then its type's fields and a few others, each
/// plausibly typed.
fn arb_frame_body() -> impl Strategy<Value = Vec<u8>> {
    let entry = || {
        prop_oneof![
            8 => prop::sample::select(KEYS).prop_flat_map(|k| arb_field(k).prop_map(move |v| (str_(k), v))),
            1 => (arb_key(), arb_value()),
        ]
    };
    prop::sample::select(TYPES)
        .prop_flat_map(move |t| {
            let fields: Vec<BoxedStrategy<(Vec<u8>, Vec<u8>)>> = required(t)
                .iter()
                .map(|k| arb_field(k).prop_map(move |v| (str_(k), v)).boxed())
                .collect();
            (
                prop_oneof![8 => Just(str_(t)), 1 => arb_scalar()],
                fields,
                proptest::collection::vec(entry(), 0..3),
                any::<prop::sample::Index>(),
                0u8..10,
            )
        })
        .prop_map(|(tag, mut entries, extra, at, how)| {
            entries.extend(extra);
            let tag = (str_("type"), tag);
            match how {
                // `type` somewhere else, or missing.
                0 => entries.insert(at.index(entries.len() + 1), tag),
                1 => {}
                _ => entries.insert(0, tag),
            }
            map(entries)
        })
}

fn arb_pubmsg() -> impl Strategy<Value = PubMsg> {
    (
        proptest::collection::vec(any::<u8>(), 0..32),
        proptest::collection::btree_map("[a-z]{1,6}", ".{0,8}", 0..3),
        proptest::option::of("[a-z0-9-]{1,12}"),
        proptest::option::of(".{0,8}"),
    )
        .prop_map(|(p, headers, msg_id, key)| PubMsg {
            payload: Bytes::from(p),
            headers,
            msg_id,
            key,
        })
}

fn arb_keys() -> impl Strategy<Value = Vec<MsgKey>> {
    proptest::collection::vec(
        ("[a-z.]{1,8}", any::<u64>()).prop_map(|(topic, seq)| MsgKey { topic, seq }),
        0..4,
    )
}

/// Frames of the types decoded in one pass, as this crate encodes them.
fn arb_direct_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (
            any::<u64>(),
            "[a-z.]{1,20}",
            proptest::collection::vec(arb_pubmsg(), 0..6),
            any::<bool>()
        )
            .prop_map(|(id, topic, msgs, no_ack)| ClientFrame::Publish(Publish {
                id,
                topic,
                msgs,
                no_ack
            })),
        (any::<u64>(), "[a-z]{1,8}", arb_keys(), any::<u8>()).prop_map(|(id, queue, msgs, k)| {
            let a = Ack { id, queue, msgs };
            if k % 2 == 0 {
                ClientFrame::Ack(a)
            } else {
                ClientFrame::Extend(a)
            }
        }),
        (
            any::<u64>(),
            "[a-z]{1,8}",
            arb_keys(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(
                |(id, queue, msgs, delay_ms, release)| ClientFrame::Nack(Nack {
                    id,
                    queue,
                    msgs,
                    delay_ms,
                    release
                })
            ),
        (
            any::<u64>(),
            "[a-z]{1,8}",
            any::<u32>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(
                |(id, queue, max, timeout_ms, detached)| ClientFrame::Fetch(Fetch {
                    id,
                    queue,
                    max,
                    timeout_ms,
                    detached
                })
            ),
        any::<u64>().prop_map(|id| ClientFrame::Ping(Req { id })),
    ]
}

/// A frame's body as this crate encodes it (client or server frame).
fn encoded<T: serde::Serialize>(frame: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_frame(frame, &mut buf, DEFAULT_MAX_FRAME).expect("encodes");
    buf[4..].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn encoded_frames_decode_as_encoded(frame in arb_direct_frame()) {
        let body = encoded(&frame);
        prop_assert_eq!(decode_client_frame(&body).ok(), Some(frame));
        same(&body)?;
    }

    #[test]
    fn encoded_frames_changed_anywhere_decode_the_same(
        frame in arb_direct_frame(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        changed(encoded(&frame), at, byte, cut, same)?;
    }

    #[test]
    fn frame_like_maps_decode_the_same(body in arb_frame_body()) {
        same(&body)?;
    }

    #[test]
    fn arbitrary_values_decode_the_same(body in arb_value()) {
        same(&body)?;
    }

    #[test]
    fn arbitrary_bytes_decode_the_same(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        same(&body)?;
    }
}

/// Where a one-pass decoder alone would answer otherwise: a field key written as a uint16 or
/// a uint32 (serde's buffer refuses those as identifiers, a one-pass decoder takes them as
/// field numbers), `type` twice or not first, a tag given as a variant's index.
#[test]
fn edges_where_one_pass_alone_would_differ_decode_the_same() {
    let ping = || (str_("type"), str_("ping"));
    let id = || (str_("id"), uint(1, 0));
    let bodies = [
        map(vec![ping(), (uint(0, 2), uint(5, 0))]),
        map(vec![ping(), id(), (uint(7, 2), uint(5, 0))]),
        map(vec![ping(), id(), (uint(7, 3), uint(5, 0))]),
        map(vec![ping(), id(), (uint(7, 0), uint(5, 0))]),
        map(vec![ping(), id(), (vec![0xc0], uint(5, 0))]),
        map(vec![ping(), id(), ping()]),
        map(vec![id(), ping()]),
        map(vec![(str_("type"), uint(10, 0)), id()]),
        map(vec![ping(), id(), (str_("extra"), vec![0xd4, 0x01, 0x02])]),
        // A bin where a list is expected: rmp alone reads it as a list of its bytes.
        map(vec![
            (str_("type"), str_("nack")),
            id(),
            (str_("queue"), str_("q")),
            (str_("msgs"), bin(b"")),
        ]),
    ];
    for b in bodies {
        let direct = decode_client_frame(&b);
        let buffered = decode_body::<ClientFrame>(&b);
        assert_eq!(format!("{direct:?}"), format!("{buffered:?}"), "{b:02x?}");
    }
    let publish_ok = |seqs: Vec<u8>| {
        map(vec![
            (str_("type"), str_("publish_ok")),
            id(),
            (str_("topic"), str_("t")),
            (str_("seqs"), seqs),
            (str_("duplicates"), uint(0, 0)),
            (str_("watchers"), uint(0, 0)),
            (str_("queues"), uint(0, 0)),
        ])
    };
    for b in [
        publish_ok(bin(&[1, 2])),
        publish_ok(bin(b"")),
        publish_ok(array(vec![uint(1, 0)])),
    ] {
        let direct = decode_server_frame(&b);
        let buffered = decode_body::<ServerFrame>(&b);
        assert_eq!(format!("{direct:?}"), format!("{buffered:?}"), "{b:02x?}");
    }
}

/// The errors a client sees for the shapes the protocol names (docs/protocol.md, 9).
#[test]
fn malformed_frames_get_the_buffered_decoders_errors() {
    let too_many_headers: Headers = (0..=MAX_HEADERS)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    let big = encoded(&ClientFrame::Publish(Publish {
        id: 1,
        topic: "a".into(),
        msgs: vec![PubMsg {
            headers: too_many_headers,
            ..PubMsg::default()
        }],
        no_ack: false,
    }));
    assert!(matches!(
        decode_client_frame(&big),
        Err(FrameError::TooLarge(_))
    ));
    let mut deep = b"\x84\xa4type\xa7publish\xa2id\x01\xa5topic\xa1a\xa4msgs".to_vec();
    deep.extend(std::iter::repeat_n(0x91, 40));
    deep.push(0xc0);
    let bodies: Vec<Vec<u8>> = vec![
        big,
        deep,
        // Unknown type, missing type, an id of the wrong type, a str payload.
        map(vec![(str_("type"), str_("nope")), (str_("id"), uint(1, 0))]),
        map(vec![(str_("id"), uint(1, 0))]),
        map(vec![(str_("type"), str_("ping")), (str_("id"), str_("x"))]),
        map(vec![
            (str_("type"), str_("publish")),
            (str_("id"), uint(1, 0)),
            (str_("topic"), str_("a")),
            (
                str_("msgs"),
                array(vec![map(vec![(str_("payload"), str_("hi"))])]),
            ),
        ]),
    ];
    for b in bodies {
        let direct = decode_client_frame(&b);
        let buffered = decode_body::<ClientFrame>(&b);
        assert!(direct.is_err(), "{direct:?}");
        assert_eq!(format!("{direct:?}"), format!("{buffered:?}"));
    }
}

// ---------------------------------------------------------------------------------------
// Server frames: `decode_server_frame` against `decode_body::<ServerFrame>`.

fn arb_message() -> impl Strategy<Value = Message> {
    (
        ("[a-z.]{1,12}", any::<u64>(), any::<u64>()),
        proptest::collection::btree_map("[a-z]{1,4}", "[a-z]{0,4}", 0..3),
        ("[a-z]{0,6}", any::<u64>(), "[a-z]{0,6}"),
        (
            proptest::option::of("[a-z0-9-]{1,8}"),
            proptest::option::of("[a-z0-9]{0,8}"),
        ),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(
                (topic, seq, time),
                headers,
                (user, client, name),
                (msg_id, key),
                payload,
                delivery,
            )| {
                Message {
                    topic,
                    seq,
                    time,
                    headers,
                    sender: Sender { user, client, name },
                    msg_id,
                    key,
                    payload: Bytes::from(payload),
                    delivery,
                }
            },
        )
}

fn arb_server_frame() -> impl Strategy<Value = ServerFrame> {
    let msgs = || proptest::collection::vec(arb_message(), 0..4);
    prop_oneof![
        (any::<u64>(), msgs())
            .prop_map(|(watch, msgs)| ServerFrame::Deliver(Deliver { watch, msgs })),
        (
            (any::<u64>(), "[a-z.]{1,12}"),
            proptest::collection::vec(any::<u64>(), 0..5),
            (any::<u64>(), any::<u64>(), any::<u64>()),
            (
                proptest::collection::vec(any::<u32>(), 0..3),
                proptest::collection::vec(any::<u32>(), 0..3),
            ),
        )
            .prop_map(
                |((id, topic), seqs, (duplicates, watchers, queues), (dups, partitions))| {
                    ServerFrame::PublishOk(PublishOk {
                        id,
                        topic,
                        seqs,
                        duplicates,
                        watchers,
                        queues,
                        duplicate_indexes: dups,
                        partitions,
                    })
                }
            ),
        (any::<u64>(), "[a-z]{1,8}", msgs()).prop_map(|(consumer, queue, msgs)| {
            ServerFrame::QueueDeliver(QueueDeliver {
                consumer,
                queue,
                msgs,
            })
        }),
        (any::<u64>(), "[a-z]{1,8}", msgs())
            .prop_map(|(id, queue, msgs)| ServerFrame::FetchOk(FetchOk { id, queue, msgs })),
        any::<u64>().prop_map(|id| ServerFrame::Ok(Req { id })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn encoded_server_frames_decode_as_encoded(frame in arb_server_frame()) {
        let body = encoded(&frame);
        prop_assert_eq!(decode_server_frame(&body).ok(), Some(frame));
        same_server(&body)?;
    }

    #[test]
    fn encoded_server_frames_changed_anywhere_decode_the_same(
        frame in arb_server_frame(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        changed(encoded(&frame), at, byte, cut, same_server)?;
    }

    #[test]
    fn arbitrary_values_decode_the_same_as_server_frames(body in arb_value()) {
        same_server(&body)?;
    }

    #[test]
    fn arbitrary_bytes_decode_the_same_as_server_frames(
        body in proptest::collection::vec(any::<u8>(), 0..256)
    ) {
        same_server(&body)?;
    }
}
