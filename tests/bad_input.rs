//! Hostile and broken input on raw sockets (docs/protocol.md, section 9). After each case
//! the broker must still serve another client.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{rand_u64, Momd, Raw, Read1};
use mom_proto::{ClientFrame, ErrorCode, ServerFrame};

const T: Duration = Duration::from_secs(10);

fn expect_error(f: ServerFrame) -> mom_proto::ErrorFrame {
    match f {
        ServerFrame::Error(e) => e,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

fn ping(id: u64) -> ClientFrame {
    ClientFrame::Ping(mom_proto::Req { id })
}

fn expect_pong(raw: &mut Raw, id: u64) {
    match raw.expect_frame(T) {
        ServerFrame::Pong(p) => assert_eq!(p.id, id),
        other => panic!("expected pong {id}, got {other:?}"),
    }
}

#[test]
fn garbage_bytes_do_not_hurt_the_broker() {
    let m = Momd::start();
    // Random bytes, before and after a hello.
    for with_hello in [false, true] {
        let mut raw = Raw::connect(&m);
        if with_hello {
            raw.hello();
        }
        let garbage: Vec<u8> = (0..4096).map(|_| rand_u64() as u8).collect();
        raw.send_bytes_lossy(&garbage);
        // Whatever it answers, it answers with well-formed error frames (Raw::read_frame
        // panics on anything else) and does not crash.
        let mut frames = 0;
        // (It may also close the connection, or wait for the rest of a frame.)
        while let Read1::Frame(f) = raw.read_frame(Duration::from_secs(2)) {
            expect_error(f);
            frames += 1;
            assert!(frames < 10_000, "endless errors");
        }
        m.assert_serves();
    }
    // A classic: all zero bytes are empty frames (length 0), each a bad request.
    let mut raw = Raw::connect(&m);
    raw.hello();
    raw.send_bytes(&[0u8; 8]);
    for _ in 0..2 {
        let e = expect_error(raw.expect_frame(T));
        assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
    }
    raw.send(&ping(9));
    expect_pong(&mut raw, 9);
    m.assert_serves();
}

#[test]
fn four_gib_length_prefix_is_too_large_then_closed() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.send_bytes(&[0xff, 0xff, 0xff, 0xff, 0x81]);
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::TooLarge, "{e:?}");
    assert_eq!(e.id, None, "{e:?}");
    raw.expect_closed(T);
    m.assert_serves();

    // The same after a hello.
    let mut raw = Raw::connect(&m);
    raw.hello();
    raw.send_bytes(&[0xff, 0xff, 0xff, 0xff]);
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::TooLarge, "{e:?}");
    raw.expect_closed(T);
    m.assert_serves();
}

#[test]
fn array32_claiming_4g_items_is_bad_request_and_connection_stays() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    // A 5-byte body: an array 32 header claiming 4294967295 items.
    raw.send_bytes(&[0, 0, 0, 5, 0xdd, 0xff, 0xff, 0xff, 0xff]);
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
    // Likewise a map 32 header, and a str 32 / bin 32 claiming 4 GiB.
    for body in [
        [0xdf, 0xff, 0xff, 0xff, 0xff],
        [0xdb, 0xff, 0xff, 0xff, 0xff],
        [0xc6, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut f = vec![0, 0, 0, 5];
        f.extend_from_slice(&body);
        raw.send_bytes(&f);
        let e = expect_error(raw.expect_frame(T));
        assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
    }
    // The connection is still usable.
    raw.send(&ping(7));
    expect_pong(&mut raw, 7);
    m.assert_serves();
}

#[test]
fn half_a_frame_then_disconnect_applies_nothing() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    let mut buf = BytesMut::new();
    mom_proto::encode_frame(
        &ClientFrame::Publish(mom_proto::Publish {
            id: 2,
            topic: "half".into(),
            msgs: vec![momctl::client::message(
                vec![b'x'; 1000],
                Default::default(),
                None,
            )],
            no_ack: false,
        }),
        &mut buf,
        usize::MAX,
    )
    .unwrap();
    raw.send_bytes(&buf[..buf.len() / 2]);
    drop(raw);
    // Also half a length prefix on a fresh connection.
    let mut raw = Raw::connect(&m);
    raw.send_bytes(&[0, 0]);
    drop(raw);

    m.assert_serves();
    let out = m.ctl(&["topic", "info", "half"], None);
    assert_eq!(out.code, 6, "the half publish was applied: {out:?}");
}

#[test]
fn http_request_is_too_large_then_closed() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::TooLarge, "{e:?}");
    raw.expect_closed(T);
    m.assert_serves();
}

#[test]
fn first_frame_not_hello_is_unauthorized_then_closed() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.send(&ping(5));
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::Unauthorized, "{e:?}");
    assert_eq!(e.id, Some(5), "{e:?}");
    raw.expect_closed(T);

    // A publish before hello is not executed.
    let mut raw = Raw::connect(&m);
    raw.send(&ClientFrame::Publish(mom_proto::Publish {
        id: 3,
        topic: "sneaky".into(),
        msgs: vec![momctl::client::message(&b"x"[..], Default::default(), None)],
        no_ack: false,
    }));
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::Unauthorized, "{e:?}");
    raw.expect_closed(T);
    m.assert_serves();
    assert_eq!(
        m.ctl(&["topic", "info", "sneaky"], None).code,
        6,
        "a publish before hello was executed"
    );
}

#[test]
fn hello_with_version_99_is_bad_request_then_closed() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.send(&ClientFrame::Hello(mom_proto::Hello {
        id: 4,
        version: 99,
        client: "future".into(),
        ..Default::default()
    }));
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
    assert_eq!(e.id, Some(4), "{e:?}");
    assert!(
        e.message.contains("99") && e.message.contains('1'),
        "message names neither version: {e:?}"
    );
    raw.expect_closed(T);
    m.assert_serves();
}

#[test]
fn malformed_body_before_hello_is_bad_request_then_closed() {
    // docs/protocol.md 2.1: a frame that is not a valid frame at all (bad MessagePack, unknown
    // type, a hello without version) gets one bad_request and the connection is closed, so an
    // unauthenticated flood cannot queue replies.
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    // {"type": "hello", "id": 1} — no version.
    let mut body = Vec::new();
    mom_proto::encode_body(&serde_json::json!({"type": "hello", "id": 1}), &mut body).unwrap();
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    raw.send_bytes(&f);
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(
        e.code,
        ErrorCode::BadRequest,
        "hello without version: {e:?}"
    );
    assert_eq!(e.id, Some(1), "{e:?}");
    raw.expect_closed(T);
    m.assert_serves();
}

#[test]
fn publish_to_reserved_topic_is_forbidden_on_the_wire() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    raw.send(&ClientFrame::Publish(mom_proto::Publish {
        id: 2,
        topic: "$sys.x".into(),
        msgs: vec![momctl::client::message(&b"x"[..], Default::default(), None)],
        no_ack: false,
    }));
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::Forbidden, "{e:?}");
    assert_eq!(e.id, Some(2));
    raw.send(&ping(3));
    expect_pong(&mut raw, 3);
}

#[test]
fn invalid_topic_names_are_bad_requests_in_topic_info_rm_and_purge() {
    // docs/protocol.md 3.1: an invalid topic name in any request gets bad_request, also in
    // requests that only look a topic up (it could never name one: not not_found).
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    let mut id = 10;
    for bad in ["a..b", "a b", "a.*", "a.>", ".a", "$x..y"] {
        let frames = [
            ClientFrame::TopicInfo(mom_proto::TopicReq {
                id,
                topic: bad.into(),
            }),
            ClientFrame::TopicRm(mom_proto::TopicRm {
                id: id + 1,
                topic: bad.into(),
                force: false,
            }),
            ClientFrame::TopicPurge(mom_proto::TopicRm {
                id: id + 2,
                topic: bad.into(),
                force: true,
            }),
        ];
        for f in &frames {
            raw.send(f);
            let e = expect_error(raw.expect_frame(T));
            assert_eq!(e.code, ErrorCode::BadRequest, "{bad:?}: {e:?}");
            assert_eq!(e.id, Some(f.id()), "{e:?}");
        }
        id += 3;
    }
    // A valid name of a missing topic is still not_found.
    raw.send(&ClientFrame::TopicInfo(mom_proto::TopicReq {
        id: 99,
        topic: "no.such.topic".into(),
    }));
    assert_eq!(expect_error(raw.expect_frame(T)).code, ErrorCode::NotFound);
}

#[test]
fn a_str_payload_is_a_bad_request_and_nothing_is_stored() {
    // docs/protocol.md 4.2 and 9: a payload is a bin; a str is a value of the wrong type.
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    let frame = serde_json::json!({
        "type": "publish", "id": 2, "topic": "a.b", "msgs": [{"payload": "hi"}]
    });
    let mut body = Vec::new();
    mom_proto::encode_body(&frame, &mut body).unwrap();
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    raw.send_bytes(&f);
    let e = expect_error(raw.expect_frame(T));
    assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
    assert_eq!(e.id, Some(2), "{e:?}");
    raw.send(&ping(3));
    expect_pong(&mut raw, 3);
    raw.send(&ClientFrame::TopicInfo(mom_proto::TopicReq {
        id: 4,
        topic: "a.b".into(),
    }));
    assert_eq!(expect_error(raw.expect_frame(T)).code, ErrorCode::NotFound);
}

/// A publish whose message has 100,000 headers is refused with `too_large` and its id, as
/// soon as the decoder passes the limit; the connection goes on.
#[test]
fn a_100k_key_header_map_is_too_large_and_the_connection_goes_on() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    for (n, value) in [(100_000, "v"), (3, &*"x".repeat(40_000))] {
        let headers: mom_proto::Headers = (0..n)
            .map(|i| (format!("k{i:06}"), value.to_string()))
            .collect();
        raw.send(&ClientFrame::Publish(mom_proto::Publish {
            id: 7,
            topic: "a.b".into(),
            msgs: vec![mom_proto::PubMsg {
                payload: bytes::Bytes::from_static(b"x"),
                headers,
                msg_id: None,
                key: None,
            }],
            ..Default::default()
        }));
        let e = expect_error(raw.expect_frame(T));
        assert_eq!((e.code, e.id), (ErrorCode::TooLarge, Some(7)), "{e:?}");
        assert!(e.message.contains("headers"), "{e:?}");
        raw.send(&ping(8));
        expect_pong(&mut raw, 8);
    }
    m.assert_serves();
}
