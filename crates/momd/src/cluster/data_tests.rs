//! Tests of `data.rs`: entries and forwards read back, the replies of an apply call, the
//! applied state of earlier versions.

use super::*;

fn items() -> Vec<PubItem> {
    let msg = |headers: &[(&str, &str)], msg_id: Option<&str>| PubMsg {
        payload: bytes::Bytes::from_static(b"x"),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        msg_id: msg_id.map(str::to_string),
        key: msg_id.map(|id| format!("key-{id}")),
    };
    vec![PubItem {
        topic: "t".into(),
        msgs: vec![
            msg(&[], Some("id-1")),
            msg(&[("k", "v")], Some("id-2")),
            msg(&[("k", "v")], None),
            msg(&[], None),
        ],
        sender: Sender::default(),
        spread: 7,
    }]
}

fn msgs_of(item: &DataItem) -> &[PubMsg] {
    match item {
        DataItem::Publish(p) => &p.msgs,
        DataItem::Queue(op) => panic!("a queue operation: {op:?}"),
    }
}

/// `items` written as the leader writes an entry (after batch 2, at time 7) and read back.
fn through_an_entry(origin: Origin, items: &[DataItem]) -> AppendCmd {
    let entry = super::super::encode_named(&AppendCmdRef {
        time: 7,
        origin,
        after: 2,
        items,
    })
    .unwrap();
    decode_append(&entry).unwrap()
}

#[test]
fn a_msg_id_without_headers_survives_the_entry_and_the_forward() {
    let items: Vec<DataItem> = items().into_iter().map(DataItem::Publish).collect();
    let origin = Origin {
        node: 1,
        process: 2,
        batch: 3,
    };
    let cmd = through_an_entry(origin, &items);
    assert_eq!(msgs_of(&cmd.items[0]), msgs_of(&items[0]));
    let req = super::super::PeerReq::Publish {
        origin,
        after: 2,
        items: items.clone(),
    };
    let body = super::super::encode_named(&req).unwrap();
    match rmp_serde::from_slice(&body).unwrap() {
        super::super::PeerReq::Publish { items: got, .. } => {
            assert_eq!(msgs_of(&got[0]), msgs_of(&items[0]))
        }
        other => panic!("decoded as {other:?}"),
    }
}

#[test]
fn a_queue_request_survives_the_entry_and_an_entry_of_before_still_reads() {
    let op = DataItem::Queue(QueueOp::Request {
        session: 4,
        user: "ann".into(),
        frame: Box::new(mom_proto::ClientFrame::Ack(mom_proto::Ack {
            id: 9,
            queue: "q".into(),
            msgs: vec![mom_proto::MsgKey {
                topic: "t".into(),
                seq: 12,
            }],
        })),
    });
    let origin = Origin {
        node: 1,
        process: 2,
        batch: 3,
    };
    let items = vec![op];
    let cmd = through_an_entry(origin, &items);
    match &cmd.items[0] {
        DataItem::Queue(QueueOp::Request {
            session,
            user,
            frame,
        }) => {
            assert_eq!((*session, user.as_str()), (4, "ann"));
            assert!(matches!(**frame, mom_proto::ClientFrame::Ack(ref a) if a.msgs[0].seq == 12));
        }
        other => panic!("decoded as {other:?}"),
    }
    // An entry written before queues were replicated: publishes only.
    #[derive(Serialize)]
    struct V1<'a> {
        time: u64,
        origin: Origin,
        items: &'a [PubItem],
    }
    let old = items_v1();
    let entry = rmp_serde::to_vec(&V1 {
        time: 5,
        origin,
        items: &old,
    })
    .unwrap();
    let cmd = decode_append(&entry).unwrap();
    assert_eq!(cmd.time, 5);
    assert_eq!(msgs_of(&cmd.items[0]), &old[0].msgs[..]);
}

#[test]
fn a_repeat_in_the_same_call_gets_the_first_copys_results_whole() {
    let done = |seqs: &[u64]| -> Vec<PubResult> {
        vec![Ok(Published {
            seqs: seqs.to_vec(),
            ..Default::default()
        })]
    };
    let fates = vec![
        Fate::Applied(0, None),
        Fate::RepeatOf(0),
        Fate::Applied(1, None),
        Fate::RepeatOf(1),
        Fate::Repeat(done(&[9])),
        Fate::Refused("no".into()),
        Fate::OutOfOrder,
        Fate::Nothing,
    ];
    let replies = replies(fates, vec![done(&[1]), done(&[2, 3])]).unwrap();
    let read: Vec<EntryReply> = replies
        .iter()
        .map(|r| rmp_serde::from_slice(&r.0).unwrap())
        .collect();
    let seqs = |r: &EntryReply| match r {
        EntryReply::Done(v) => v
            .iter()
            .map(|p| p.as_ref().map(|p| p.seqs.clone()).unwrap_or_default())
            .collect::<Vec<_>>(),
        _ => panic!("not done: {r:?}"),
    };
    assert_eq!(seqs(&read[0]), vec![vec![1]]);
    assert_eq!(seqs(&read[1]), vec![vec![1]]);
    assert_eq!(seqs(&read[2]), vec![vec![2, 3]]);
    assert_eq!(seqs(&read[3]), vec![vec![2, 3]]);
    assert_eq!(seqs(&read[4]), vec![vec![9]]);
    assert!(matches!(&read[5], EntryReply::Refused(e) if e == "no"));
    assert!(matches!(read[6], EntryReply::OutOfOrder));
    assert!(seqs(&read[7]).is_empty());
}

#[test]
fn an_applied_state_of_before_reads_with_its_table_of_last_batches() {
    // As versions that sent one batch at a time stored it: the table per node.
    #[derive(Serialize)]
    struct AppliedV1 {
        last: Option<LogId>,
        membership: Membership,
        origins: std::collections::BTreeMap<NodeId, LastBatch>,
    }
    let answer = vec![Ok(Published {
        seqs: vec![41, 42],
        ..Published::default()
    })];
    let old = AppliedV1 {
        last: None,
        membership: Membership::default(),
        origins: [(
            3,
            LastBatch {
                process: 9,
                batch: 17,
                results: answer.clone(),
            },
        )]
        .into(),
    };
    let a = Applied::read(Some(&rmp_serde::to_vec(&old).unwrap())).unwrap();
    assert!(a.origins.is_empty());
    let o = |batch| Origin {
        node: 3,
        process: 9,
        batch,
    };
    // Batch 17 sent again gets its answer; 16 is older; 18 follows it.
    assert_eq!(a.senders.judge(&o(17), None), Verdict::Repeat(answer));
    assert_eq!(a.senders.judge(&o(16), None), Verdict::Older);
    assert_eq!(a.senders.judge(&o(18), Some(17)), Verdict::Apply);
    // Stored again and read back, the same.
    let again = Applied::read(Some(&rmp_serde::to_vec(&a).unwrap())).unwrap();
    assert_eq!(again.senders, a.senders);
}

fn items_v1() -> Vec<PubItem> {
    let mut v = items();
    // Headers on every message: the array form of that version reads back as it was.
    for m in &mut v[0].msgs {
        m.headers.insert("h".into(), "1".into());
    }
    v
}
