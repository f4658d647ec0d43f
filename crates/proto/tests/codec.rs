//! Codec properties: every frame round-trips, and no byte string makes the decoder panic.

use bytes::{BufMut, Bytes, BytesMut};
use mom_proto::*;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn server_codec() -> Codec<ClientFrame, ServerFrame> {
    Codec::new(DEFAULT_MAX_FRAME)
}

fn arb_headers() -> impl Strategy<Value = Headers> {
    proptest::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..4)
}

fn arb_pubmsg() -> impl Strategy<Value = PubMsg> {
    (
        proptest::collection::vec(any::<u8>(), 0..64),
        arb_headers(),
        proptest::option::of("[a-z0-9-]{1,12}"),
        proptest::option::of("\\PC{0,12}"),
    )
        .prop_map(|(p, headers, msg_id, key)| PubMsg {
            payload: Bytes::from(p),
            headers,
            msg_id,
            key,
        })
}

fn arb_page() -> impl Strategy<Value = Page> {
    (
        proptest::option::of("[a-z.$]{0,12}"),
        proptest::option::of(any::<u32>()),
        proptest::option::of("[a-z.]{0,8}"),
        proptest::option::of("[a-z*>.]{1,10}"),
    )
        .prop_map(|(after, limit, prefix, pattern)| Page {
            after,
            limit,
            prefix,
            pattern,
        })
}

fn arb_client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            ".{0,10}",
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(id, version, client, client_id)| ClientFrame::Hello(Hello {
                    id,
                    version,
                    client,
                    client_id,
                    ..Hello::default()
                })
            ),
        (
            any::<u64>(),
            "[a-z.]{1,20}",
            proptest::collection::vec(arb_pubmsg(), 0..8),
            any::<bool>()
        )
            .prop_map(|(id, topic, msgs, no_ack)| ClientFrame::Publish(Publish {
                id,
                topic,
                msgs,
                no_ack
            })),
        (
            any::<u64>(),
            proptest::collection::vec("[a-z.*>]{1,10}", 1..4),
            prop_oneof![
                Just(StartAt::New),
                Just(StartAt::All),
                Just(StartAt::Seq),
                Just(StartAt::Time),
                Just(StartAt::Last)
            ],
            any::<u64>(),
            any::<bool>(),
            proptest::option::of("[a-z]{1,8}"),
            proptest::collection::btree_map("[a-z.]{1,10}", any::<u64>(), 0..3),
        )
            .prop_map(
                |(id, patterns, from, at, passive, group, after)| ClientFrame::Watch(Watch {
                    id,
                    patterns,
                    from,
                    at,
                    passive,
                    group,
                    after,
                })
            ),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, watch)| ClientFrame::Unwatch(Unwatch { id, watch })),
        any::<u64>().prop_map(|id| ClientFrame::Ping(Req { id })),
        (
            any::<u64>(),
            proptest::option::of(arb_page()),
            proptest::option::of(arb_page()),
            proptest::option::of(arb_page())
        )
            .prop_map(
                |(id, topics, queues, clients)| ClientFrame::Stats(StatsReq {
                    id,
                    topics,
                    queues,
                    clients
                })
            ),
        (any::<u64>(), arb_page(), any::<bool>()).prop_map(|(id, page, queues)| {
            let r = ListReq::new(id, page);
            if queues {
                ClientFrame::QueueList(r)
            } else {
                ClientFrame::TopicList(r)
            }
        }),
        (any::<u64>(), "[a-z]{1,9}")
            .prop_map(|(id, topic)| ClientFrame::TopicInfo(TopicReq { id, topic })),
        (
            any::<u64>(),
            "[a-z]{1,9}",
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(id, topic, max_msgs)| ClientFrame::TopicSet(TopicSet {
                id,
                topic,
                max_msgs,
                ..TopicSet::default()
            })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(id, client_id)| ClientFrame::ClientClose(ClientClose { id, client_id })),
    ]
}

fn arb_topic_info() -> impl Strategy<Value = TopicInfo> {
    ("[a-z.$]{1,16}", any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(name, messages, last_seq, damaged)| TopicInfo {
            name,
            messages,
            last_seq,
            damaged,
            ..TopicInfo::default()
        },
    )
}

fn arb_client_info() -> impl Strategy<Value = ClientInfo> {
    (
        any::<u64>(),
        ".{0,10}",
        proptest::collection::vec("[a-z.*> ]{1,12}", 0..3),
        any::<u64>(),
    )
        .prop_map(|(client_id, name, watch_patterns, omitted)| ClientInfo {
            client_id,
            name,
            watches: watch_patterns.len() as u64,
            watch_patterns,
            omitted,
            ..ClientInfo::default()
        })
}

fn arb_server_page_frame() -> impl Strategy<Value = ServerFrame> {
    let next = || proptest::option::of("[a-z.0-9]{1,12}");
    prop_oneof![
        (
            any::<u64>(),
            proptest::collection::vec(arb_topic_info(), 0..4),
            next(),
            any::<u64>()
        )
            .prop_map(
                |(id, topics, next, total)| ServerFrame::TopicList(TopicList {
                    id,
                    topics,
                    next,
                    total
                })
            ),
        (
            any::<u64>(),
            proptest::collection::vec(("[a-z.]{1,12}", any::<u64>()), 0..4),
            next(),
            any::<u64>()
        )
            .prop_map(|(id, qs, next, total)| ServerFrame::QueueList(QueueList {
                id,
                queues: qs
                    .into_iter()
                    .map(|(name, omitted)| QueueInfo {
                        name,
                        omitted,
                        ..QueueInfo::default()
                    })
                    .collect(),
                next,
                total
            })),
        (
            any::<u64>(),
            proptest::collection::vec(arb_topic_info(), 0..3),
            proptest::collection::vec(arb_client_info(), 0..3),
            (next(), next(), next()),
            (any::<u64>(), any::<u64>())
        )
            .prop_map(
                |(
                    id,
                    topics,
                    clients,
                    (topics_next, queues_next, clients_next),
                    (queues, damaged),
                )| {
                    ServerFrame::Stats(Stats {
                        id,
                        totals: Totals {
                            topics: topics.len() as u64,
                            queues,
                            damaged,
                            ..Totals::default()
                        },
                        topics,
                        clients,
                        topics_next,
                        queues_next,
                        clients_next,
                        ..Stats::default()
                    })
                }
            ),
    ]
}

fn encode(frame: &ClientFrame) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(frame, &mut buf, DEFAULT_MAX_FRAME).unwrap();
    buf
}

proptest! {
    #[test]
    fn client_frames_round_trip(frame in arb_client_frame()) {
        let mut buf = encode(&frame);
        let got = server_codec().decode(&mut buf).unwrap();
        prop_assert_eq!(got, Some(frame));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn paged_server_frames_round_trip(frame in arb_server_page_frame()) {
        let mut buf = BytesMut::new();
        encode_frame(&frame, &mut buf, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(buf.len() - 4, encoded_len(&frame), "encoded_len counts the body");
        let got = Codec::<ServerFrame, ClientFrame>::new(DEFAULT_MAX_FRAME).decode(&mut buf).unwrap();
        prop_assert_eq!(got, Some(frame));
    }

    #[test]
    fn split_stream_decodes_the_same(frames in proptest::collection::vec(arb_client_frame(), 1..6), cut in any::<prop::sample::Index>()) {
        let mut all = BytesMut::new();
        for f in &frames {
            all.extend_from_slice(&encode(f));
        }
        let cut = cut.index(all.len() + 1);
        let mut codec = server_codec();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        buf.extend_from_slice(&all[..cut]);
        while let Some(f) = codec.decode(&mut buf).unwrap() { got.push(f); }
        buf.extend_from_slice(&all[cut..]);
        while let Some(f) = codec.decode(&mut buf).unwrap() { got.push(f); }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut codec = server_codec();
        let mut buf = BytesMut::from(&bytes[..]);
        // Ok(None), Ok(Some) or Err: any is fine, a panic is not.
        for _ in 0..8 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) | Err(FrameError::Malformed(_)) => continue,
                _ => break,
            }
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        let _ = server_codec().decode(&mut buf);
        let _ = decode_body::<ServerFrame>(&body);
    }
}

#[test]
fn oversized_length_is_refused_before_allocating() {
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
    let before = buf.capacity();
    match server_codec().decode(&mut buf) {
        Err(FrameError::FrameTooLarge { len, max }) => {
            assert_eq!(len, u32::MAX as u64);
            assert_eq!(max, DEFAULT_MAX_FRAME);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert_eq!(
        buf.capacity(),
        before,
        "no room was reserved for the claimed body"
    );
}

#[test]
fn announced_max_size_frame_reserves_nothing_until_its_bytes_arrive() {
    // A peer announcing an 8 MiB body and sending 3 bytes of it must not make the reader
    // hold 8 MiB: the buffer grows with the bytes that came, not with the announced length.
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(DEFAULT_MAX_FRAME as u32);
    buf.put_slice(&[0x81, 0xa4, 0x74]);
    let before = buf.capacity();
    let mut codec = RawCodec::new(DEFAULT_MAX_FRAME);
    assert!(matches!(codec.decode(&mut buf), Ok(None)));
    assert_eq!(
        buf.capacity(),
        before,
        "nothing reserved for the announced body"
    );
    assert_eq!(buf.len(), 7, "the partial frame stays in the buffer");
    // Once the whole body is there, it is split off as usual.
    let mut whole = BytesMut::new();
    whole.put_u32(3);
    whole.put_slice(&[1, 2, 3]);
    assert_eq!(
        codec.decode(&mut whole).ok().flatten().as_deref(),
        Some(&[1u8, 2, 3][..])
    );
}

#[test]
fn raw_codec_limit_can_be_raised_after_hello() {
    // A server reads pre-hello frames with a small limit, then the full one.
    let mut codec = RawCodec::new(64 * 1024);
    let mut buf = BytesMut::new();
    buf.put_u32(64 * 1024 + 1);
    assert!(matches!(
        codec.decode(&mut buf.clone()),
        Err(FrameError::FrameTooLarge { max, .. }) if max == 64 * 1024
    ));
    codec.set_max_frame(DEFAULT_MAX_FRAME);
    assert_eq!(codec.max_frame(), DEFAULT_MAX_FRAME);
    assert!(matches!(codec.decode(&mut buf), Ok(None)));
}

#[test]
fn array_header_claiming_4g_items_is_an_error() {
    // {"type": "publish", "id": 1, "topic": "t", "msgs": array32 of 0xffffffff items}
    let mut body = Vec::new();
    body.push(0x84);
    body.extend_from_slice(b"\xa4type\xa7publish\xa2id\x01\xa5topic\xa1t\xa4msgs");
    body.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    let mut buf = BytesMut::new();
    buf.put_u32(body.len() as u32);
    buf.extend_from_slice(&body);
    assert!(matches!(
        server_codec().decode(&mut buf),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn deeply_nested_body_is_an_error_not_a_stack_overflow() {
    let body = vec![0x91u8; 200_000];
    // Run on a small stack, like a runtime worker thread.
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || decode_body::<ClientFrame>(&body).is_err())
        .unwrap();
    assert!(handle.join().unwrap());
}

#[test]
fn unknown_fields_are_ignored_and_unknown_types_refused() {
    let mut body = Vec::new();
    body.push(0x83);
    body.extend_from_slice(b"\xa4type\xa4ping\xa2id\x07\xa5extra\xc3");
    assert_eq!(
        decode_body::<ClientFrame>(&body).unwrap(),
        ClientFrame::Ping(Req { id: 7 })
    );
    let mut body = Vec::new();
    body.push(0x82);
    body.extend_from_slice(b"\xa4type\xa4nope\xa2id\x07");
    assert!(decode_body::<ClientFrame>(&body).is_err());
}

#[test]
fn server_frames_round_trip() {
    let frames = vec![
        ServerFrame::PublishOk(PublishOk {
            id: 3,
            topic: "a.b".into(),
            seqs: vec![1, 2, 3],
            duplicates: 0,
            watchers: 1,
            queues: 0,
            duplicate_indexes: vec![2],
            partitions: vec![0, 5, 5],
        }),
        ServerFrame::Deliver(Deliver {
            watch: 1,
            msgs: vec![Message {
                topic: "a".into(),
                seq: 9,
                time: 1_700_000_000_000,
                headers: [("k".to_string(), "v".to_string())].into(),
                sender: Sender {
                    user: "anonymous".into(),
                    client: 4,
                    name: "momctl".into(),
                },
                msg_id: Some("x".into()),
                key: Some("user-7".into()),
                payload: Bytes::from_static(b"\x00\xffhi"),
                delivery: Some(2),
            }],
        }),
        ServerFrame::Notice(Notice {
            watch: 1,
            kind: NoticeKind::SlowConsumer,
            skipped: 12,
            message: String::new(),
            consumer: None,
        }),
        ServerFrame::error(None, ErrorCode::TooLarge, "too big"),
    ];
    for f in frames {
        let mut buf = BytesMut::new();
        encode_frame(&f, &mut buf, DEFAULT_MAX_FRAME).unwrap();
        let got = Codec::<ServerFrame, ClientFrame>::new(DEFAULT_MAX_FRAME)
            .decode(&mut buf)
            .unwrap();
        assert_eq!(got, Some(f));
    }
}

/// A MessagePack map from (key, value) pairs already encoded.
fn map(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = vec![0x80 | pairs.len() as u8];
    for (k, v) in pairs {
        body.push(0xa0 | k.len() as u8);
        body.extend_from_slice(k.as_bytes());
        body.extend_from_slice(v);
    }
    body
}

fn str_val(s: &str) -> Vec<u8> {
    let mut v = vec![0xa0 | s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

#[test]
fn list_and_stats_requests_without_paging_keys_still_decode() {
    // What a client written before paging sends: the first page, default limit.
    for kind in ["topic_list", "queue_list"] {
        let body = map(&[("type", &str_val(kind)), ("id", &[0x08])]);
        let want = ListReq {
            id: 8,
            ..ListReq::default()
        };
        let got = decode_body::<ClientFrame>(&body).unwrap();
        match got {
            ClientFrame::TopicList(r) | ClientFrame::QueueList(r) => assert_eq!(r, want),
            other => panic!("{kind}: got {other:?}"),
        }
    }
    let body = map(&[("type", &str_val("stats")), ("id", &[0x0c])]);
    assert_eq!(
        decode_body::<ClientFrame>(&body).unwrap(),
        ClientFrame::Stats(StatsReq {
            id: 12,
            ..StatsReq::default()
        })
    );
}

#[test]
fn replies_without_paging_keys_still_decode() {
    // What a broker written before paging answers: no next, no total, no new totals.
    let body = map(&[
        ("type", &str_val("topic_list")),
        ("id", &[0x08]),
        ("topics", &[0x90]),
    ]);
    assert_eq!(
        decode_body::<ServerFrame>(&body).unwrap(),
        ServerFrame::TopicList(TopicList {
            id: 8,
            ..TopicList::default()
        })
    );
}

#[test]
fn a_page_request_round_trips_every_key() {
    let f = ClientFrame::Stats(StatsReq {
        id: 3,
        topics: Some(Page {
            after: Some("a.b".into()),
            limit: Some(0),
            prefix: Some("a.".into()),
            pattern: Some("a.*".into()),
        }),
        queues: None,
        clients: Some(Page {
            after: Some("17".into()),
            ..Page::default()
        }),
    });
    let mut buf = encode(&f);
    assert_eq!(server_codec().decode(&mut buf).unwrap(), Some(f));
}

/// Deeply nested MessagePack (issue 10): a field of a frame holding a million nested arrays
/// or maps is refused as malformed, on a thread with a tokio worker's 2 MiB stack, instead of
/// overflowing the stack.
#[test]
fn deeply_nested_messagepack_is_malformed_not_a_stack_overflow() {
    for nest in [0x91u8, 0x81] {
        let body = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                // { "type": "publish", "id": 1, "topic": "a", "msgs": <nested> }
                let mut b = vec![0x84];
                for (k, v) in [("type", "publish"), ("topic", "a")] {
                    b.push(0xa0 | k.len() as u8);
                    b.extend_from_slice(k.as_bytes());
                    b.push(0xa0 | v.len() as u8);
                    b.extend_from_slice(v.as_bytes());
                }
                b.extend_from_slice(&[0xa2, b'i', b'd', 0x01]);
                b.extend_from_slice(&[0xa4, b'm', b's', b'g', b's']);
                for _ in 0..1_000_000 {
                    b.push(nest);
                    if nest == 0x81 {
                        b.extend_from_slice(&[0xa1, b'k']);
                    }
                }
                b.push(0xc0);
                mom_proto::decode_body::<ClientFrame>(&b).is_err()
            })
            .expect("spawn")
            .join()
            .expect("the decoder must not overflow its stack");
        assert!(body, "nested 0x{nest:02x} must be malformed");
    }
}

#[test]
fn a_publish_payload_must_be_bin_not_str_or_array() {
    let publish = |payload: &[u8]| {
        let mut msg = vec![0x81, 0xa7];
        msg.extend_from_slice(b"payload");
        msg.extend_from_slice(payload);
        let mut msgs = vec![0x91];
        msgs.extend_from_slice(&msg);
        map(&[
            ("type", &str_val("publish")),
            ("id", &[0x05]),
            ("topic", &str_val("a.b")),
            ("msgs", &msgs),
        ])
    };
    match decode_body::<ClientFrame>(&publish(b"\xc4\x02hi")).unwrap() {
        ClientFrame::Publish(p) => assert_eq!(p.msgs[0].payload, Bytes::from_static(b"hi")),
        other => panic!("expected a publish, got {other:?}"),
    }
    // The same two bytes as a str, and as an array of numbers: a value of the wrong type.
    assert!(decode_body::<ClientFrame>(&publish(b"\xa2hi")).is_err());
    assert!(decode_body::<ClientFrame>(&publish(b"\x92\x68\x69")).is_err());
}

/// A publish whose one message carries `n` headers of `value_len`-byte values.
fn publish_with_headers(n: usize, value_len: usize) -> Vec<u8> {
    let headers: Headers = (0..n)
        .map(|i| (format!("k{i:06}"), "v".repeat(value_len)))
        .collect();
    let f = ClientFrame::Publish(Publish {
        id: 9,
        topic: "a.b".into(),
        msgs: vec![PubMsg {
            payload: Bytes::from_static(b"x"),
            headers,
            msg_id: None,
            key: None,
        }],
        ..Default::default()
    });
    let mut buf = BytesMut::new();
    encode_frame(&f, &mut buf, usize::MAX).unwrap();
    buf[4..].to_vec()
}

#[test]
fn headers_over_a_limit_are_too_large_not_malformed() {
    assert!(decode_body::<ClientFrame>(&publish_with_headers(MAX_HEADERS, 1)).is_ok());
    for body in [
        publish_with_headers(MAX_HEADERS + 1, 1),
        publish_with_headers(100_000, 1),
        publish_with_headers(10, MAX_HEADER_BYTES / 8),
    ] {
        match decode_body::<ClientFrame>(&body) {
            Err(FrameError::TooLarge(e)) => assert!(e.contains("headers"), "{e}"),
            other => panic!("expected too large, got {other:?}"),
        }
    }
}
