//! The batching producer of the client library (`Client::producer`) against the real momd:
//! many tasks publishing one message each on one shared producer each get the ack of their
//! own message, the stored messages are exactly theirs at the seqs they were told, a
//! duplicate is reported as one, and a message the server would refuse fails alone.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Momd;
use mom_proto::{ErrorCode, StartAt};
use momctl::client::{message, Client, ConnectOptions, WatchEvent};

#[test]
fn many_tasks_share_one_producer_and_each_gets_its_own_ack() {
    let m = Momd::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = Client::connect(&ConnectOptions::new(m.addr(), "producer test"))
            .await
            .expect("connect");
        let producer = client.producer();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..600u32 {
            let p = producer.clone();
            tasks.spawn(async move {
                let topic = format!("p.t{}", i % 3);
                let msg = message(format!("m{i}"), Default::default(), Some(format!("id-{i}")));
                (topic.clone(), i, p.publish(&topic, msg).await)
            });
        }
        let mut acked: BTreeMap<String, BTreeMap<u64, u32>> = BTreeMap::new();
        while let Some(r) = tasks.join_next().await {
            let (topic, i, ack) = r.expect("task");
            let ack = ack.expect("ack");
            assert!(!ack.duplicate);
            let prev = acked.entry(topic).or_default().insert(ack.seq, i);
            assert!(prev.is_none(), "seq {} acked twice", ack.seq);
        }
        // Each topic holds exactly the messages acked, at the seqs each task was told.
        for (topic, seqs) in &acked {
            assert_eq!(seqs.len(), 200);
            assert_eq!(
                seqs.keys().copied().collect::<Vec<_>>(),
                (1..=200).collect::<Vec<_>>()
            );
            let mut w = client
                .watch(vec![topic.clone()], StartAt::All, 0)
                .await
                .expect("watch");
            let mut seen = 0;
            while seen < 200 {
                let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
                    .await
                    .expect("replay in time")
                    .expect("watch event");
                if let WatchEvent::Messages(msgs) = ev {
                    for msg in msgs {
                        let i = seqs[&msg.seq];
                        assert_eq!(&msg.payload[..], format!("m{i}").as_bytes());
                        assert_eq!(msg.msg_id.as_deref(), Some(format!("id-{i}").as_str()));
                        seen += 1;
                    }
                }
            }
        }
        // A duplicate is told as one, with the seq of the message stored first.
        let again = producer
            .publish(
                "p.t0",
                message("m0", Default::default(), Some("id-0".into())),
            )
            .await
            .expect("ack");
        assert!(again.duplicate);
        assert_eq!(Some(&0), acked["p.t0"].get(&again.seq));
        // Refused alone: an oversized payload and a bad topic, sent among good messages.
        let big = vec![0u8; client.welcome().max_payload as usize + 1];
        let (bad, good, bad_topic) = tokio::join!(
            producer.publish("p.t1", message(big, Default::default(), None)),
            producer.publish("p.t1", message("fine", Default::default(), None)),
            producer.publish("p.*", message("x", Default::default(), None)),
        );
        match bad {
            Err(momctl::client::ClientError::Server { code, .. }) => {
                assert_eq!(code, ErrorCode::TooLarge)
            }
            other => panic!("expected too_large, got {other:?}"),
        }
        assert_eq!(good.expect("the good message is stored").seq, 201);
        assert!(bad_topic.is_err());
    });
}

#[test]
fn a_lost_connection_fails_every_waiting_publish() {
    let mut m = Momd::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = Client::connect(&ConnectOptions::new(m.addr(), "producer test"))
            .await
            .expect("connect");
        let producer = client.producer();
        producer
            .publish("p.x", message("first", Default::default(), None))
            .await
            .expect("ack");
        m.kill9();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let p = producer.clone();
            tasks.spawn(async move {
                p.publish("p.x", message(format!("{i}"), Default::default(), None))
                    .await
            });
        }
        while let Some(r) = tasks.join_next().await {
            let r = tokio::time::timeout(Duration::from_secs(10), async { r })
                .await
                .expect("answered");
            assert!(
                r.expect("task").is_err(),
                "nothing is acked by a dead broker"
            );
        }
    });
}
