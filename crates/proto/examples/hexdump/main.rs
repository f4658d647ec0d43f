//! Prints one example of every frame as hex, prefix included, for docs/protocol.md.
//!
//! Run with `cargo run -p mom-proto --example hexdump`. The examples form one small session:
//! frames 1-8 are the walk-through of the protocol document (hello, welcome, publish,
//! publish_ok, watch, watch_ok, deliver, notice), then the other frames, then the queue
//! frames (request ids 14 on), then the frames and keys added since (request ids 29 on:
//! watch groups, passive watches and resume, duplicate indexes, forced topic_rm,
//! topic_purge, queue_set, queue_peek, queue_redrive, extend, detached fetch, client_close),
//! then paged listings (request ids 42 on).

mod added;
mod queues;

use bytes::{Bytes, BytesMut};
use mom_proto::*;
use serde::Serialize;

/// A fixed time for the examples: 2023-11-14T22:13:20Z, in ms since the epoch.
const T: u64 = 1_700_000_000_000;

fn dump<F: Serialize>(name: &str, frame: &F) {
    let mut buf = BytesMut::new();
    encode_frame(frame, &mut buf, DEFAULT_MAX_FRAME).expect("example frames encode");
    println!(
        "== {name} ({} bytes: 4 prefix + {} body)",
        buf.len(),
        buf.len() - 4
    );
    for line in buf.chunks(16) {
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        println!("{}", hex.join(" "));
    }
    println!();
}

fn topic_info() -> TopicInfo {
    TopicInfo {
        name: "a.b".into(),
        messages: 1,
        bytes: 2,
        first_seq: 1,
        last_seq: 1,
        last_time: T,
        created: T,
        limits: Limits {
            max_msgs: 1000,
            max_bytes: 0,
            max_age_ms: 0,
            hard_max_bytes: 0,
            hard_max_age_ms: 0,
        },
        watchers: 1,
        queues: 0,
        in_rate: 0.5,
        out_rate: 0.0,
        damaged: 0,
        owner: String::new(),
        partitions: 0,
        replicas: 0,
    }
}

fn sender() -> Sender {
    Sender {
        user: "anonymous".into(),
        client: 7,
        name: "py".into(),
    }
}

/// A message of topic `a.b` as a queue delivers it: seq 1 is the `hi` of the walk-through,
/// seq 2 the `yo` published with a header and a msg_id.
fn queued(seq: u64, delivery: u32) -> Message {
    let (headers, msg_id, payload) = if seq == 1 {
        (Headers::new(), None, Bytes::from_static(b"hi"))
    } else {
        (
            [("k".to_string(), "v".to_string())].into(),
            Some("m1".to_string()),
            Bytes::from_static(b"yo"),
        )
    };
    Message {
        topic: "a.b".into(),
        seq,
        time: T,
        headers,
        sender: sender(),
        msg_id,
        payload,
        delivery: Some(delivery),
        key: None,
    }
}

fn queue_info(bindings: &[&str], consumers: u64, ready: u64, unacked: u64) -> QueueInfo {
    QueueInfo {
        name: "work".into(),
        owner: "anonymous".into(),
        created: T,
        bindings: bindings.iter().map(|b| b.to_string()).collect(),
        max_deliver: 5,
        ack_wait_ms: 30_000,
        consumers,
        ready,
        unacked,
        lag: ready + unacked,
        delivered: 0,
        acked: 0,
        redelivered: 0,
        dead_lettered: 0,
        dropped: 0,
        in_rate: 0.0,
        out_rate: 0.0,
        omitted: 0,
    }
}

fn main() {
    // The walk-through.
    dump(
        "hello",
        &ClientFrame::Hello(Hello {
            id: 1,
            version: PROTOCOL_VERSION,
            client: "py".into(),
            ..Hello::default()
        }),
    );
    dump(
        "welcome",
        &ServerFrame::Welcome(Welcome {
            id: 1,
            version: PROTOCOL_VERSION,
            server_version: "0.1.0".into(),
            server_id: "s1".into(),
            client_id: 7,
            user: "anonymous".into(),
            max_frame: DEFAULT_MAX_FRAME as u64,
            max_payload: DEFAULT_MAX_PAYLOAD as u64,
            max_inflight: 1024,
            cluster_id: String::new(),
        }),
    );
    dump(
        "publish",
        &ClientFrame::Publish(Publish {
            id: 2,
            topic: "a.b".into(),
            msgs: vec![PubMsg {
                payload: Bytes::from_static(b"hi"),
                ..PubMsg::default()
            }],
            no_ack: false,
        }),
    );
    dump(
        "publish_ok",
        &ServerFrame::PublishOk(PublishOk {
            id: 2,
            topic: "a.b".into(),
            seqs: vec![1],
            duplicates: 0,
            watchers: 0,
            queues: 0,
            duplicate_indexes: vec![],
            partitions: vec![],
        }),
    );
    dump(
        "watch",
        &ClientFrame::Watch(Watch {
            id: 3,
            patterns: vec!["a.>".into()],
            from: StartAt::All,
            at: 0,
            ..Watch::default()
        }),
    );
    dump(
        "watch_ok",
        &ServerFrame::WatchOk(WatchOk {
            id: 3,
            watch: 1,
            time: 1_767_323_045_000,
        }),
    );
    dump(
        "deliver",
        &ServerFrame::Deliver(Deliver {
            watch: 1,
            msgs: vec![Message {
                topic: "a.b".into(),
                seq: 1,
                time: T,
                headers: Headers::new(),
                sender: Sender {
                    user: "anonymous".into(),
                    client: 7,
                    name: "py".into(),
                },
                msg_id: None,
                payload: Bytes::from_static(b"hi"),
                delivery: None,
                key: None,
            }],
        }),
    );
    dump(
        "notice (live)",
        &ServerFrame::Notice(Notice {
            watch: 1,
            kind: NoticeKind::Live,
            skipped: 0,
            message: String::new(),
            consumer: None,
        }),
    );

    // The other frames.
    dump(
        "hello (reconnect, with client_id)",
        &ClientFrame::Hello(Hello {
            id: 1,
            version: PROTOCOL_VERSION,
            client: "py".into(),
            client_id: Some(7),
            ..Hello::default()
        }),
    );
    dump(
        "publish (headers, msg_id, no_ack)",
        &ClientFrame::Publish(Publish {
            id: 4,
            topic: "a.b".into(),
            msgs: vec![PubMsg {
                payload: Bytes::from_static(b"yo"),
                headers: [("k".to_string(), "v".to_string())].into(),
                msg_id: Some("m1".into()),
                key: None,
            }],
            no_ack: true,
        }),
    );
    dump(
        "watch (from seq)",
        &ClientFrame::Watch(Watch {
            id: 5,
            patterns: vec!["a.*".into(), "c".into()],
            from: StartAt::Seq,
            at: 10,
            ..Watch::default()
        }),
    );
    dump(
        "notice (slow_consumer)",
        &ServerFrame::Notice(Notice {
            watch: 1,
            kind: NoticeKind::SlowConsumer,
            skipped: 12,
            message: String::new(),
            consumer: None,
        }),
    );
    dump(
        "unwatch",
        &ClientFrame::Unwatch(Unwatch { id: 6, watch: 1 }),
    );
    dump("ok", &ServerFrame::Ok(Req { id: 6 }));
    dump("ping", &ClientFrame::Ping(Req { id: 7 }));
    dump("pong", &ServerFrame::Pong(Pong { id: 7, time: T }));
    dump(
        "topic_list (request)",
        &ClientFrame::TopicList(ListReq {
            id: 8,
            ..ListReq::default()
        }),
    );
    dump(
        "topic_list (reply)",
        &ServerFrame::TopicList(TopicList {
            id: 8,
            topics: vec![topic_info()],
            next: None,
            total: 1,
        }),
    );
    dump(
        "topic_info (request)",
        &ClientFrame::TopicInfo(TopicReq {
            id: 9,
            topic: "a.b".into(),
        }),
    );
    dump(
        "topic_info (reply)",
        &ServerFrame::TopicInfo(TopicInfoReply {
            id: 9,
            topic: topic_info(),
            purged: None,
        }),
    );
    dump(
        "topic_set",
        &ClientFrame::TopicSet(TopicSet {
            id: 10,
            topic: "a.b".into(),
            max_msgs: Some(1000),
            max_bytes: None,
            max_age_ms: None,
            hard_max_bytes: None,
            hard_max_age_ms: None,
        }),
    );
    dump(
        "topic_rm",
        &ClientFrame::TopicRm(TopicRm {
            id: 11,
            topic: "a.b".into(),
            force: false,
        }),
    );
    dump(
        "stats (request)",
        &ClientFrame::Stats(StatsReq {
            id: 12,
            ..StatsReq::default()
        }),
    );
    dump(
        "stats (reply)",
        &ServerFrame::Stats(Stats {
            id: 12,
            server_id: "s1".into(),
            server_version: "0.1.0".into(),
            uptime_ms: 60_000,
            time: T,
            fsync: "always".into(),
            queues: Vec::new(),
            totals: Totals {
                topics: 0,
                messages: 0,
                bytes: 0,
                published: 0,
                delivered: 0,
                duplicates: 0,
                slow_consumer_skipped: 0,
                connections: 1,
                watches: 0,
                in_rate: 0.0,
                out_rate: 0.0,
                queues: 0,
                damaged: 0,
            },
            topics: vec![],
            clients: vec![ClientInfo {
                client_id: 7,
                name: "py".into(),
                user: "anonymous".into(),
                addr: "127.0.0.1:50000".into(),
                since: T,
                msgs_in: 0,
                msgs_out: 0,
                watches: 0,
                watch_patterns: Vec::new(),
                consumers: Vec::new(),
                omitted: 0,
            }],
            topics_next: None,
            queues_next: None,
            clients_next: None,
            rss_bytes: 0,
            disk_bytes: 0,
            disk_free_bytes: 0,
            disk_full: false,
            watch_patterns: 0,
        }),
    );
    dump(
        "error (reply to a request)",
        &ServerFrame::error(Some(13), ErrorCode::NotFound, "no topic x"),
    );
    dump(
        "error (connection-level, id nil)",
        &ServerFrame::error(None, ErrorCode::Unavailable, "server shutting down"),
    );
    queues::dump_all();
    added::dump_all();
}
