//! The frames and keys added since (request ids 29 on), then paged listings (42 on), then
//! partitioned topics and keys (44 on).

use super::*;

pub fn dump_all() {
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
            partitions: vec![],
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
                partitions: 0,
                replicas: 0,
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
    dump(
        "topic_create",
        &ClientFrame::TopicCreate(TopicCreate {
            id: 44,
            topic: "clicks".into(),
            partitions: 6,
            replicas: 0,
        }),
    );
    dump(
        "publish (a key)",
        &ClientFrame::Publish(Publish {
            id: 45,
            topic: "clicks".into(),
            msgs: vec![PubMsg {
                payload: Bytes::from_static(b"hi"),
                key: Some("u7".into()),
                ..PubMsg::default()
            }],
            no_ack: false,
        }),
    );
    dump(
        "publish_ok (a partitioned topic)",
        &ServerFrame::PublishOk(PublishOk {
            id: 45,
            topic: "clicks".into(),
            seqs: vec![12],
            duplicates: 0,
            watchers: 0,
            queues: 0,
            duplicate_indexes: vec![],
            partitions: vec![4],
        }),
    );
}
