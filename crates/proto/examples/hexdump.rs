//! Prints one example of every frame as hex, prefix included, for docs/protocol.md.
//!
//! Run with `cargo run -p mom-proto --example hexdump`. The examples form one small session:
//! frames 1-8 are the walk-through of the protocol document (hello, welcome, publish,
//! publish_ok, watch, watch_ok, deliver, notice), then the other frames, then the queue
//! frames (request ids 14 on), then the frames and keys added since (request ids 29 on:
//! watch groups, passive watches and resume, duplicate indexes, forced topic_rm,
//! topic_purge, queue_set, queue_peek, queue_redrive, extend, detached fetch, client_close),
//! then paged listings (request ids 42 on).

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

    // Queues.
    dump(
        "queue_create",
        &ClientFrame::QueueCreate(QueueCreate {
            id: 14,
            queue: "work".into(),
            bindings: vec!["a.>".into()],
            from: StartAt::All,
            at: 0,
            max_deliver: None,
            ack_wait_ms: None,
            exist_ok: false,
        }),
    );
    dump(
        "queue_info (reply to queue_create)",
        &ServerFrame::QueueInfo(QueueInfoReply {
            id: 14,
            queue: queue_info(&["a.>"], 0, 2, 0),
            ..QueueInfoReply::default()
        }),
    );
    dump(
        "queue_create (exist_ok, max_deliver, ack_wait_ms)",
        &ClientFrame::QueueCreate(QueueCreate {
            id: 15,
            queue: "work".into(),
            bindings: vec!["a.>".into()],
            from: StartAt::New,
            at: 0,
            max_deliver: Some(3),
            ack_wait_ms: Some(10_000),
            exist_ok: true,
        }),
    );
    dump(
        "queue_bind",
        &ClientFrame::QueueBind(QueueBind {
            id: 16,
            queue: "work".into(),
            patterns: vec!["c".into()],
        }),
    );
    dump(
        "queue_unbind",
        &ClientFrame::QueueUnbind(QueueBind {
            id: 17,
            queue: "work".into(),
            patterns: vec!["c".into()],
        }),
    );
    dump(
        "queue_info (request)",
        &ClientFrame::QueueInfo(QueueReq {
            id: 18,
            queue: "work".into(),
        }),
    );
    dump(
        "queue_list (request)",
        &ClientFrame::QueueList(ListReq {
            id: 19,
            ..ListReq::default()
        }),
    );
    dump(
        "queue_list (reply)",
        &ServerFrame::QueueList(QueueList {
            id: 19,
            queues: vec![queue_info(&["a.>"], 0, 2, 0)],
            next: None,
            total: 1,
        }),
    );
    dump(
        "consume",
        &ClientFrame::Consume(Consume {
            id: 20,
            queue: "work".into(),
            credit: 10,
        }),
    );
    dump(
        "consume_ok",
        &ServerFrame::ConsumeOk(ConsumeOk {
            id: 20,
            consumer: 1,
        }),
    );
    dump(
        "queue_deliver",
        &ServerFrame::QueueDeliver(QueueDeliver {
            consumer: 1,
            queue: "work".into(),
            msgs: vec![queued(1, 1), queued(2, 1)],
        }),
    );
    dump(
        "ack",
        &ClientFrame::Ack(Ack {
            id: 21,
            queue: "work".into(),
            msgs: vec![MsgKey {
                topic: "a.b".into(),
                seq: 1,
            }],
        }),
    );
    dump(
        "nack",
        &ClientFrame::Nack(Nack {
            id: 22,
            queue: "work".into(),
            msgs: vec![MsgKey {
                topic: "a.b".into(),
                seq: 2,
            }],
            delay_ms: 5000,
            release: false,
        }),
    );
    dump(
        "cancel",
        &ClientFrame::Cancel(Cancel {
            id: 23,
            consumer: 1,
            release: false,
        }),
    );
    dump(
        "fetch",
        &ClientFrame::Fetch(Fetch {
            id: 24,
            queue: "work".into(),
            max: 10,
            timeout_ms: 30_000,
            detached: false,
        }),
    );
    dump(
        "fetch_ok",
        &ServerFrame::FetchOk(FetchOk {
            id: 24,
            queue: "work".into(),
            msgs: vec![queued(2, 2)],
        }),
    );
    dump(
        "fetch_ok (timed out, empty)",
        &ServerFrame::FetchOk(FetchOk {
            id: 25,
            queue: "work".into(),
            msgs: vec![],
        }),
    );
    dump(
        "queue_purge",
        &ClientFrame::QueuePurge(QueueReq {
            id: 26,
            queue: "work".into(),
        }),
    );
    dump(
        "queue_delete",
        &ClientFrame::QueueDelete(QueueDelete {
            id: 27,
            queue: "work".into(),
            force: false,
        }),
    );
    dump(
        "error (queue_delete refused)",
        &ServerFrame::error(
            Some(27),
            ErrorCode::Conflict,
            "queue \"work\" still holds 1 messages; delete it with force to lose them",
        ),
    );
    dump(
        "queue_delete (force)",
        &ClientFrame::QueueDelete(QueueDelete {
            id: 28,
            queue: "work".into(),
            force: true,
        }),
    );

    // Added since: request ids 29 on.
    dump(
        "watch (group)",
        &ClientFrame::Watch(Watch {
            id: 29,
            patterns: vec!["jobs.>".into()],
            group: Some("workers".into()),
            ..Watch::default()
        }),
    );
    dump(
        "watch (passive, resume)",
        &ClientFrame::Watch(Watch {
            id: 30,
            patterns: vec!["a.>".into()],
            passive: true,
            after: [("a.b".to_string(), 2)].into(),
            ..Watch::default()
        }),
    );
    dump(
        "watch (from last)",
        &ClientFrame::Watch(Watch {
            id: 31,
            patterns: vec!["a.>".into()],
            from: StartAt::Last,
            at: 10,
            ..Watch::default()
        }),
    );
    dump(
        "publish_ok (a duplicate)",
        &ServerFrame::PublishOk(PublishOk {
            id: 32,
            topic: "a.b".into(),
            seqs: vec![2, 3],
            duplicates: 1,
            watchers: 1,
            queues: 0,
            duplicate_indexes: vec![0],
        }),
    );
    dump(
        "topic_rm (force)",
        &ClientFrame::TopicRm(TopicRm {
            id: 33,
            topic: "jobs.a".into(),
            force: true,
        }),
    );
    dump(
        "topic_purge",
        &ClientFrame::TopicPurge(TopicRm {
            id: 34,
            topic: "jobs.b".into(),
            force: false,
        }),
    );
    dump(
        "error (topic_purge refused)",
        &ServerFrame::error(
            Some(34),
            ErrorCode::Conflict,
            "topic \"jobs.b\" has 3 messages queues still hold (jobs: 3); purge it with force to drop them",
        ),
    );
    dump(
        "topic_purge (force)",
        &ClientFrame::TopicPurge(TopicRm {
            id: 35,
            topic: "jobs.b".into(),
            force: true,
        }),
    );
    dump(
        "topic_info (reply to topic_purge)",
        &ServerFrame::TopicInfo(TopicInfoReply {
            id: 35,
            topic: TopicInfo {
                name: "jobs.b".into(),
                messages: 0,
                bytes: 0,
                first_seq: 4,
                last_seq: 3,
                last_time: T,
                created: T,
                limits: Limits::default(),
                watchers: 0,
                queues: 1,
                in_rate: 0.0,
                out_rate: 0.0,
                damaged: 0,
                owner: String::new(),
            },
            purged: Some(3),
        }),
    );
    dump(
        "queue_set",
        &ClientFrame::QueueSet(QueueSet {
            id: 36,
            queue: "jobs".into(),
            max_deliver: Some(10),
            ack_wait_ms: Some(60_000),
        }),
    );
    dump(
        "queue_peek",
        &ClientFrame::QueuePeek(QueuePeek {
            id: 37,
            queue: "work".into(),
            max: 5,
        }),
    );
    dump(
        "fetch_ok (reply to queue_peek)",
        &ServerFrame::FetchOk(FetchOk {
            id: 37,
            queue: "work".into(),
            msgs: vec![queued(1, 0)],
        }),
    );
    dump(
        "queue_redrive",
        &ClientFrame::QueueRedrive(QueueRedrive {
            id: 38,
            queue: "work".into(),
        }),
    );
    dump(
        "queue_info (reply to queue_redrive)",
        &ServerFrame::QueueInfo(QueueInfoReply {
            id: 38,
            queue: QueueInfo {
                delivered: 5,
                redelivered: 4,
                dead_lettered: 1,
                ..queue_info(&["a.>"], 0, 1, 0)
            },
            purged: None,
            redriven: Some(1),
        }),
    );
    dump(
        "extend",
        &ClientFrame::Extend(Ack {
            id: 39,
            queue: "work".into(),
            msgs: vec![MsgKey {
                topic: "a.b".into(),
                seq: 1,
            }],
        }),
    );
    dump(
        "fetch (detached)",
        &ClientFrame::Fetch(Fetch {
            id: 40,
            queue: "work".into(),
            max: 1,
            timeout_ms: 0,
            detached: true,
        }),
    );
    dump(
        "client_close",
        &ClientFrame::ClientClose(ClientClose {
            id: 41,
            client_id: 9,
        }),
    );
    dump(
        "ok (reply to client_close)",
        &ServerFrame::Ok(Req { id: 41 }),
    );
    // Paged listings (request ids 42 on).
    dump(
        "topic_list (request, a page)",
        &ClientFrame::TopicList(ListReq {
            id: 42,
            after: Some("a.b".into()),
            limit: Some(1),
            prefix: None,
            pattern: Some("a.>".into()),
        }),
    );
    dump(
        "topic_list (reply, more to come)",
        &ServerFrame::TopicList(TopicList {
            id: 42,
            topics: vec![TopicInfo {
                name: "a.c".into(),
                damaged: 2,
                ..topic_info()
            }],
            next: Some("a.c".into()),
            total: 3,
        }),
    );
    dump(
        "stats (request, paged sections)",
        &ClientFrame::Stats(StatsReq {
            id: 43,
            topics: Some(Page {
                after: Some("a.b".into()),
                limit: Some(100),
                ..Page::default()
            }),
            queues: Some(Page {
                limit: Some(0),
                ..Page::default()
            }),
            clients: Some(Page {
                after: Some("7".into()),
                ..Page::default()
            }),
        }),
    );
}
