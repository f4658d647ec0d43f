//! The queue frames (request ids 14 on).

use super::*;

pub fn dump_all() {
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
}
