//! Many requests in flight on one connection, written at once as a pipelining client does:
//! momd takes the frames already in its read buffer together, and each is still answered
//! once, applied in the order it was sent, with malformed and user requests among them
//! answered where they are, and with the connection's limits as small as they go.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Momd, Raw};
use mom_proto::{ClientFrame, ErrorCode, PubMsg, Publish, Req, ServerFrame};

const T: Duration = Duration::from_secs(30);

fn publish(id: u64, topic: &str, n: u64) -> ClientFrame {
    ClientFrame::Publish(Publish {
        id,
        topic: topic.into(),
        msgs: vec![PubMsg {
            payload: Bytes::from(format!("m{n}")),
            ..PubMsg::default()
        }],
        no_ack: false,
    })
}

fn encode(frames: &[ClientFrame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for f in frames {
        mom_proto::encode_frame(f, &mut buf, usize::MAX).expect("encode");
    }
    buf.to_vec()
}

/// Write `bytes` from another thread, so the replies can be read meanwhile.
fn write_all_behind(raw: &Raw, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    let mut stream = raw.stream.try_clone().expect("clone the socket");
    std::thread::spawn(move || stream.write_all(&bytes).expect("write to momd"))
}

/// Read `n` replies; each publish's seq by its request id, and the other frames.
fn replies(raw: &mut Raw, n: usize) -> (Vec<(u64, u64)>, Vec<ServerFrame>) {
    let (mut acks, mut other) = (Vec::new(), Vec::new());
    for _ in 0..n {
        match raw.expect_frame(T) {
            ServerFrame::PublishOk(ok) => {
                assert_eq!(ok.seqs.len(), 1, "{ok:?}");
                acks.push((ok.id, ok.seqs[0]));
            }
            f => other.push(f),
        }
    }
    (acks, other)
}

/// Each request is acked once, and the seqs follow the order the requests were sent in
/// (request `first + i` got seq `i + 1`).
fn assert_acked_in_order(acks: &[(u64, u64)], first: u64, n: u64) {
    let ids: HashSet<u64> = acks.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), acks.len(), "a request was acked twice");
    assert_eq!(ids, (first..first + n).collect::<HashSet<_>>());
    for (id, seq) in acks {
        assert_eq!(*seq, id - first + 1, "request {id} got seq {seq}");
    }
}

#[test]
fn pipelined_publishes_are_each_acked_and_stored_in_the_order_sent() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    let n = 2000u64;
    let frames: Vec<ClientFrame> = (0..n).map(|i| publish(100 + i, "pipe.a", i)).collect();
    let writer = write_all_behind(&raw, encode(&frames));
    let (acks, other) = replies(&mut raw, n as usize);
    writer.join().expect("writer");
    assert!(other.is_empty(), "{other:?}");
    assert_acked_in_order(&acks, 100, n);
    let stored = m.read_all_lines("pipe.a");
    let want: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(stored, want);
}

#[test]
fn malformed_and_user_requests_among_pipelined_publishes_are_answered_in_place() {
    let m = Momd::start();
    let mut raw = Raw::connect(&m);
    raw.hello();
    let mut bytes = encode(
        &(0..300)
            .map(|i| publish(100 + i, "pipe.b", i))
            .collect::<Vec<_>>(),
    );
    // A frame whose body is not MessagePack, one over the header limit, a user request
    // (answered by the connection, not the broker), then more publishes and a ping.
    bytes.extend_from_slice(&[0, 0, 0, 1, 0xc1]);
    let too_many: mom_proto::Headers = (0..=mom_proto::MAX_HEADERS)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    bytes.extend(encode(&[
        ClientFrame::Publish(Publish {
            id: 50,
            topic: "pipe.b".into(),
            msgs: vec![PubMsg {
                headers: too_many,
                ..PubMsg::default()
            }],
            no_ack: false,
        }),
        ClientFrame::UserList(Req { id: 60 }),
    ]));
    bytes.extend(encode(
        &(300..600)
            .map(|i| publish(100 + i, "pipe.b", i))
            .collect::<Vec<_>>(),
    ));
    bytes.extend(encode(&[ClientFrame::Ping(Req { id: 70 })]));
    let writer = write_all_behind(&raw, bytes);
    let (acks, other) = replies(&mut raw, 600 + 4);
    writer.join().expect("writer");
    assert_acked_in_order(&acks, 100, 600);
    let mut codes = Vec::new();
    let (mut users, mut pong) = (false, false);
    for f in other {
        match f {
            ServerFrame::Error(e) => codes.push((e.id, e.code)),
            ServerFrame::UserList(l) => users = l.id == 60,
            ServerFrame::Pong(p) => pong = p.id == 70,
            f => panic!("unexpected {f:?}"),
        }
    }
    codes.sort_by_key(|(id, _)| *id);
    assert_eq!(
        codes,
        vec![
            (None, ErrorCode::BadRequest),
            (Some(50), ErrorCode::TooLarge)
        ]
    );
    assert!(users && pong);
    assert_eq!(m.read_all_lines("pipe.b").len(), 600);
}

/// With one request in flight per connection and the smallest admission budget, a burst of
/// pipelined requests takes its turns and every one is answered: none is held back for ever
/// by requests gathered behind it.
#[test]
fn pipelining_past_every_limit_waits_and_every_request_is_answered() {
    for limits in [
        &["--max-inflight", "1"][..],
        &["--max-inflight", "3", "--inflight-budget", "1"][..],
        &["--max-inflight", "64", "--watch-buffer", "1KiB"][..],
    ] {
        let m = Momd::start_with(limits);
        let mut raw = Raw::connect(&m);
        raw.hello();
        let n = 500u64;
        let frames: Vec<ClientFrame> = (0..n).map(|i| publish(1000 + i, "pipe.c", i)).collect();
        let writer = write_all_behind(&raw, encode(&frames));
        let (acks, other) = replies(&mut raw, n as usize);
        writer.join().expect("writer");
        assert!(other.is_empty(), "{limits:?}: {other:?}");
        assert_acked_in_order(&acks, 1000, n);
    }
}
