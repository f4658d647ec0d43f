//! The broker's requests over a real connection to a real momd, spoken with the protocol
//! types alone (no momctl): watch groups and passive watches, resume, purge, queue peek,
//! detached fetch, extend and redrive. The end-to-end tests in /tests cover the same
//! ground through momctl; these pin the wire behaviour docs/protocol.md promises.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mom_proto::{
    decode_body, encode_frame, Ack, ClientFrame, ErrorCode, Fetch, Hello, Message, MsgKey, Nack,
    PubMsg, Publish, QueueCreate, QueuePeek, QueueRedrive, QueueReq, QueueSet, ServerFrame,
    StartAt, TopicReq, TopicRm, Watch,
};

struct Momd {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Momd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A momd of its own on a port that was free a moment ago. Another test's momd may take
/// the port first: then this one exits (address in use) and another port is tried. It is
/// ready once it says it listens on that address (a connection alone could reach the other).
fn momd() -> Momd {
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log_path = dir.path().join("momd.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_momd"))
            .args(["--listen", &addr, "--data"])
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn momd");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = format!("listening on {addr}");
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            if said.contains(&listening) {
                return Momd {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            assert!(Instant::now() < deadline, "momd did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("momd found no free port in five tries")
}

struct Conn {
    stream: TcpStream,
    next_id: u64,
    /// Frames read while waiting for another one.
    seen: Vec<ServerFrame>,
}

impl Conn {
    fn open(m: &Momd) -> Conn {
        let stream = TcpStream::connect(&m.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut c = Conn {
            stream,
            next_id: 1,
            seen: Vec::new(),
        };
        c.send(ClientFrame::Hello(Hello {
            id: 0,
            version: mom_proto::PROTOCOL_VERSION,
            client: "protocol-test".into(),
            ..Hello::default()
        }));
        assert!(matches!(c.read(), ServerFrame::Welcome(_)));
        c
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&mut self, f: ClientFrame) {
        let mut buf = BytesMut::new();
        encode_frame(&f, &mut buf, mom_proto::DEFAULT_MAX_FRAME).expect("encode");
        self.stream.write_all(&buf).expect("write");
    }

    fn read(&mut self) -> ServerFrame {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).expect("read a frame");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).expect("read a body");
        decode_body(&body).expect("decode")
    }

    /// Send a request and wait for its reply.
    fn call(&mut self, make: impl FnOnce(u64) -> ClientFrame) -> ServerFrame {
        let id = self.id();
        self.send(make(id));
        loop {
            let f = self.read();
            if f.reply_id() == Some(id) {
                return f;
            }
            self.seen.push(f);
        }
    }

    fn publish(&mut self, topic: &str, payloads: &[&str]) -> mom_proto::PublishOk {
        let msgs = payloads
            .iter()
            .map(|p| PubMsg {
                payload: Bytes::copy_from_slice(p.as_bytes()),
                ..PubMsg::default()
            })
            .collect();
        match self.call(|id| {
            ClientFrame::Publish(Publish {
                id,
                topic: topic.into(),
                msgs,
                no_ack: false,
            })
        }) {
            ServerFrame::PublishOk(ok) => ok,
            other => panic!("publish: {other:?}"),
        }
    }

    fn watch(&mut self, w: Watch) -> u64 {
        match self.call(|id| ClientFrame::Watch(Watch { id, ..w })) {
            ServerFrame::WatchOk(ok) => {
                assert!(
                    ok.time > 1_600_000_000_000,
                    "watch_ok carries the broker's time"
                );
                ok.watch
            }
            other => panic!("watch: {other:?}"),
        }
    }

    /// What is delivered to `watch` (topic, seq, payload) until `n` messages have come,
    /// counting those read meanwhile.
    fn delivered(&mut self, watch: u64, n: usize) -> Vec<(String, u64, String)> {
        let mut out = Vec::new();
        let take = |f: &ServerFrame, out: &mut Vec<(String, u64, String)>| {
            if let ServerFrame::Deliver(d) = f {
                if d.watch == watch {
                    out.extend(d.msgs.iter().map(|m| {
                        (
                            m.topic.clone(),
                            m.seq,
                            String::from_utf8_lossy(&m.payload).into_owned(),
                        )
                    }));
                }
            }
        };
        let seen = std::mem::take(&mut self.seen);
        for f in &seen {
            take(f, &mut out);
        }
        while out.len() < n {
            let f = self.read();
            take(&f, &mut out);
        }
        out
    }

    fn error(&mut self, make: impl FnOnce(u64) -> ClientFrame) -> (ErrorCode, String) {
        match self.call(make) {
            ServerFrame::Error(e) => (e.code, e.message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn queue_info(&mut self, make: impl FnOnce(u64) -> ClientFrame) -> mom_proto::QueueInfoReply {
        match self.call(make) {
            ServerFrame::QueueInfo(q) => q,
            other => panic!("expected queue_info, got {other:?}"),
        }
    }

    fn fetch_ok(&mut self, make: impl FnOnce(u64) -> ClientFrame) -> Vec<Message> {
        match self.call(make) {
            ServerFrame::FetchOk(f) => f.msgs,
            other => panic!("expected fetch_ok, got {other:?}"),
        }
    }
}

fn key(m: &Message) -> MsgKey {
    MsgKey {
        topic: m.topic.clone(),
        seq: m.seq,
    }
}

#[test]
fn a_group_shares_messages_and_passive_watches_do_not_count() {
    let m = momd();
    let mut a = Conn::open(&m);
    let mut b = Conn::open(&m);
    let mut look = Conn::open(&m);
    let mut publisher = Conn::open(&m);
    let group = |patterns: &[&str]| Watch {
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        group: Some("workers".into()),
        ..Watch::default()
    };
    let wa = a.watch(group(&["g.t", "g.u"]));
    // The same pattern set in another order is the same group.
    let wb = b.watch(group(&["g.u", "g.t"]));
    let wl = look.watch(Watch {
        patterns: vec!["g.>".into()],
        passive: true,
        ..Watch::default()
    });
    let ok = publisher.publish("g.t", &["1", "2", "3", "4"]);
    assert_eq!(
        ok.watchers, 1,
        "a group counts once, a passive watch not at all"
    );
    let got_a = a.delivered(wa, 2);
    let got_b = b.delivered(wb, 2);
    let seqs = |v: &[(String, u64, String)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    assert_eq!(seqs(&got_a), vec![1, 3]);
    assert_eq!(seqs(&got_b), vec![2, 4]);
    assert_eq!(
        look.delivered(wl, 4).len(),
        4,
        "the passive watch sees everything"
    );
    let (code, msg) = a.error(|id| {
        ClientFrame::Watch(Watch {
            id,
            from: StartAt::All,
            ..group(&["g.t"])
        })
    });
    assert_eq!(code, ErrorCode::BadRequest, "{msg}");
    // Only the passive watch left: nobody to respond.
    drop(a);
    drop(b);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(publisher.publish("g.t", &["5"]).watchers, 0);
}

#[test]
fn resume_after_and_from_last_replay_the_right_messages() {
    let m = momd();
    let mut c = Conn::open(&m);
    c.publish("r.a", &["a1", "a2", "a3", "a4", "a5"]);
    c.publish("r.b", &["b1", "b2", "b3"]);
    let dup = c.call(|id| {
        ClientFrame::Publish(Publish {
            id,
            topic: "r.c".into(),
            msgs: ["x", "x", "y", "x"]
                .iter()
                .map(|i| PubMsg {
                    payload: Bytes::from_static(b"p"),
                    msg_id: Some(i.to_string()),
                    ..PubMsg::default()
                })
                .collect(),
            no_ack: false,
        })
    });
    match dup {
        ServerFrame::PublishOk(ok) => {
            assert_eq!(ok.seqs, vec![1, 1, 2, 1]);
            assert_eq!(ok.duplicate_indexes, vec![1, 3]);
        }
        other => panic!("{other:?}"),
    }
    let w = c.watch(Watch {
        patterns: vec!["r.a".into(), "r.b".into()],
        after: BTreeMap::from([("r.a".to_string(), 3), ("r.gone".to_string(), 9)]),
        ..Watch::default()
    });
    let got = c.delivered(w, 2);
    assert_eq!(
        got.iter().map(|x| x.2.as_str()).collect::<Vec<_>>(),
        vec!["a4", "a5"],
        "r.a resumes after 3; r.b follows from: new"
    );
    c.publish("r.b", &["b4"]);
    assert_eq!(
        c.delivered(w, 1).last().map(|x| x.2.clone()),
        Some("b4".into())
    );
    let w = c.watch(Watch {
        patterns: vec!["r.*".into()],
        from: StartAt::Last,
        at: 2,
        ..Watch::default()
    });
    let mut got: Vec<String> = c.delivered(w, 6).into_iter().map(|x| x.2).collect();
    got.sort();
    assert_eq!(got, vec!["a4", "a5", "b3", "b4", "p", "p"]);
}

#[test]
fn purge_and_rm_refuse_while_a_queue_holds_messages_unless_forced() {
    let m = momd();
    let mut c = Conn::open(&m);
    c.publish("p.t", &["1", "2", "3"]);
    c.queue_info(|id| {
        ClientFrame::QueueCreate(QueueCreate {
            id,
            queue: "jobs".into(),
            bindings: vec!["p.t".into()],
            from: StartAt::All,
            ..QueueCreate::default()
        })
    });
    let purge = |force| {
        move |id| {
            ClientFrame::TopicPurge(TopicRm {
                id,
                topic: "p.t".into(),
                force,
            })
        }
    };
    let (code, msg) = c.error(purge(false));
    assert_eq!(code, ErrorCode::Conflict);
    assert!(msg.contains("(jobs: 3)"), "{msg}");
    let (code, _) = c.error(|id| {
        ClientFrame::TopicRm(TopicRm {
            id,
            topic: "p.t".into(),
            force: false,
        })
    });
    assert_eq!(code, ErrorCode::Conflict);
    match c.call(purge(true)) {
        ServerFrame::TopicInfo(t) => {
            assert_eq!(t.purged, Some(3));
            assert_eq!(
                (t.topic.messages, t.topic.first_seq, t.topic.last_seq),
                (0, 4, 3)
            );
        }
        other => panic!("{other:?}"),
    }
    let q = c.queue_info(|id| {
        ClientFrame::QueueInfo(QueueReq {
            id,
            queue: "jobs".into(),
        })
    });
    assert_eq!((q.queue.ready, q.queue.dropped), (0, 3));
    assert_eq!(c.publish("p.t", &["4"]).seqs, vec![4], "seqs go on");
    let (code, _) = c.error(|id| {
        ClientFrame::TopicPurge(TopicRm {
            id,
            topic: "$sys.events".into(),
            force: true,
        })
    });
    assert_eq!(code, ErrorCode::Forbidden);
    match c.call(|id| {
        ClientFrame::TopicInfo(TopicReq {
            id,
            topic: "p.t".into(),
        })
    }) {
        ServerFrame::TopicInfo(t) => assert_eq!(t.topic.messages, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn queue_create_twice_is_fine_and_queue_set_changes_settings() {
    let m = momd();
    let mut c = Conn::open(&m);
    let create = |max_deliver: Option<u32>| {
        move |id| {
            ClientFrame::QueueCreate(QueueCreate {
                id,
                queue: "jobs".into(),
                bindings: vec!["a.>".into(), "b".into()],
                max_deliver,
                ..QueueCreate::default()
            })
        }
    };
    c.queue_info(create(None));
    c.queue_info(create(Some(5)));
    let (code, msg) = c.error(create(Some(3)));
    assert_eq!(code, ErrorCode::Conflict);
    assert!(msg.contains("max_deliver 5 (asked 3)"), "{msg}");
    let set = |max_deliver, ack_wait_ms| {
        move |id| {
            ClientFrame::QueueSet(QueueSet {
                id,
                queue: "jobs".into(),
                max_deliver,
                ack_wait_ms,
            })
        }
    };
    assert_eq!(c.error(set(None, Some(0))).0, ErrorCode::BadRequest);
    let q = c.queue_info(set(Some(3), Some(1_000)));
    assert_eq!((q.queue.max_deliver, q.queue.ack_wait_ms), (3, 1_000));
    c.queue_info(create(Some(3)));
    assert_eq!(
        c.error(|id| {
            ClientFrame::QueueSet(QueueSet {
                id,
                queue: "nope".into(),
                ..QueueSet::default()
            })
        })
        .0,
        ErrorCode::NotFound
    );
}

#[test]
fn peek_detached_fetch_extend_and_redrive() {
    let m = momd();
    let mut c = Conn::open(&m);
    c.queue_info(|id| {
        ClientFrame::QueueCreate(QueueCreate {
            id,
            queue: "q".into(),
            bindings: vec!["d.t".into()],
            max_deliver: Some(1),
            ack_wait_ms: Some(300),
            ..QueueCreate::default()
        })
    });
    c.publish("d.t", &["one", "two"]);
    let peek = |id| {
        ClientFrame::QueuePeek(QueuePeek {
            id,
            queue: "q".into(),
            max: 10,
        })
    };
    let first = c.fetch_ok(peek);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|m| m.delivery == Some(0)));
    assert_eq!(c.fetch_ok(peek), first, "peeking changes nothing");

    // A detached fetch outlives its connection; unsettled, it comes back uncounted even
    // with max_deliver 1.
    let mut looker = Conn::open(&m);
    let got = looker.fetch_ok(|id| {
        ClientFrame::Fetch(Fetch {
            id,
            queue: "q".into(),
            max: 1,
            timeout_ms: 1_000,
            detached: true,
        })
    });
    assert_eq!(got.len(), 1);
    drop(looker);
    std::thread::sleep(Duration::from_millis(100));
    let q = c.queue_info(|id| {
        ClientFrame::QueueInfo(QueueReq {
            id,
            queue: "q".into(),
        })
    });
    assert_eq!(
        q.queue.unacked, 1,
        "a closed connection does not take it back"
    );
    std::thread::sleep(Duration::from_millis(500));
    let again = c.fetch_ok(peek);
    assert_eq!(
        again.first().map(|m| (m.seq, m.delivery)),
        Some((1, Some(0)))
    );

    // A real delivery, extended, then nacked: dead-lettered (max_deliver 1).
    let got = c.fetch_ok(|id| {
        ClientFrame::Fetch(Fetch {
            id,
            queue: "q".into(),
            max: 1,
            timeout_ms: 1_000,
            detached: false,
        })
    });
    let one = key(&got[0]);
    let extend = |msgs: Vec<MsgKey>| {
        move |id| {
            ClientFrame::Extend(Ack {
                id,
                queue: "q".into(),
                msgs,
            })
        }
    };
    assert!(matches!(
        c.call(extend(vec![one.clone()])),
        ServerFrame::Ok(_)
    ));
    let gone = MsgKey {
        topic: "d.t".into(),
        seq: 99,
    };
    let (code, msg) = c.error(extend(vec![one.clone(), gone]));
    assert_eq!(code, ErrorCode::NotFound);
    assert!(msg.contains("d.t#99") && !msg.contains("d.t#1,"), "{msg}");
    assert!(matches!(
        c.call(|id| ClientFrame::Nack(Nack {
            id,
            queue: "q".into(),
            msgs: vec![one.clone()],
            delay_ms: 0,
            release: false,
        })),
        ServerFrame::Ok(_)
    ));
    let q = c.queue_info(|id| {
        ClientFrame::QueueInfo(QueueReq {
            id,
            queue: "q".into(),
        })
    });
    assert_eq!(q.queue.dead_lettered, 1);

    let redrive = |id| {
        ClientFrame::QueueRedrive(QueueRedrive {
            id,
            queue: "q".into(),
        })
    };
    assert_eq!(c.queue_info(redrive).redriven, Some(1));
    assert_eq!(c.queue_info(redrive).redriven, Some(0), "not twice");
    match c.call(|id| {
        ClientFrame::TopicInfo(TopicReq {
            id,
            topic: "$dlq.q".into(),
        })
    }) {
        ServerFrame::TopicInfo(t) => assert_eq!(t.topic.messages, 0),
        other => panic!("{other:?}"),
    }
    // Back as the original message, with a fresh count, ahead of what was never delivered.
    let peeked = c.fetch_ok(peek);
    assert_eq!(
        peeked
            .iter()
            .map(|m| (m.topic.as_str(), m.seq, m.delivery))
            .collect::<Vec<_>>(),
        vec![("d.t", 1, Some(0)), ("d.t", 2, Some(0))]
    );
}

#[test]
fn a_dead_letter_whose_original_is_gone_is_redriven_as_itself() {
    let m = momd();
    let mut c = Conn::open(&m);
    c.queue_info(|id| {
        ClientFrame::QueueCreate(QueueCreate {
            id,
            queue: "q".into(),
            bindings: vec!["e.t".into()],
            max_deliver: Some(1),
            ..QueueCreate::default()
        })
    });
    c.publish("e.t", &["lost?"]);
    let fetch = |id| {
        ClientFrame::Fetch(Fetch {
            id,
            queue: "q".into(),
            max: 1,
            timeout_ms: 1_000,
            detached: false,
        })
    };
    let got = c.fetch_ok(fetch);
    c.call(|id| {
        ClientFrame::Nack(Nack {
            id,
            queue: "q".into(),
            msgs: vec![key(&got[0])],
            delay_ms: 0,
            release: false,
        })
    });
    assert!(matches!(
        c.call(|id| ClientFrame::TopicRm(TopicRm {
            id,
            topic: "e.t".into(),
            force: false,
        })),
        ServerFrame::Ok(_)
    ));
    let redrive = |id| {
        ClientFrame::QueueRedrive(QueueRedrive {
            id,
            queue: "q".into(),
        })
    };
    assert_eq!(c.queue_info(redrive).redriven, Some(1));
    let dlq_messages = |c: &mut Conn| match c.call(|id| {
        ClientFrame::TopicInfo(TopicReq {
            id,
            topic: "$dlq.q".into(),
        })
    }) {
        ServerFrame::TopicInfo(t) => t.topic.messages,
        other => panic!("{other:?}"),
    };
    assert_eq!(dlq_messages(&mut c), 1, "kept: the queue holds it");
    let got = c.fetch_ok(fetch);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].topic.as_str(), got[0].delivery),
        ("$dlq.q", Some(1))
    );
    assert_eq!(
        got[0].headers.get("dlq-topic").map(String::as_str),
        Some("e.t")
    );
    assert!(matches!(
        c.call(|id| ClientFrame::Ack(Ack {
            id,
            queue: "q".into(),
            msgs: vec![key(&got[0])],
        })),
        ServerFrame::Ok(_)
    ));
    assert_eq!(c.queue_info(redrive).redriven, Some(0), "not twice");
    assert_eq!(
        dlq_messages(&mut c),
        0,
        "settled, it goes at the next redrive"
    );
}

#[test]
fn client_close_ends_the_connection_and_gives_its_deliveries_back() {
    let m = momd();
    let mut admin = Conn::open(&m);
    admin.queue_info(|id| {
        ClientFrame::QueueCreate(QueueCreate {
            id,
            queue: "cq".into(),
            bindings: vec!["c.t".into()],
            ..QueueCreate::default()
        })
    });
    admin.publish("c.t", &["one", "two"]);

    // The client to close: it holds a watch and an unacked delivery.
    let stream = TcpStream::connect(&m.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut victim = Conn {
        stream,
        next_id: 1,
        seen: Vec::new(),
    };
    victim.send(ClientFrame::Hello(Hello {
        id: 0,
        version: mom_proto::PROTOCOL_VERSION,
        client: "victim".into(),
        ..Hello::default()
    }));
    let ServerFrame::Welcome(w) = victim.read() else {
        panic!("no welcome");
    };
    victim.watch(Watch {
        patterns: vec!["c.>".into()],
        ..Watch::default()
    });
    let got = victim.fetch_ok(|id| {
        ClientFrame::Fetch(Fetch {
            id,
            queue: "cq".into(),
            max: 1,
            timeout_ms: 1_000,
            detached: false,
        })
    });
    assert_eq!(got.len(), 1);
    let unacked = |c: &mut Conn| {
        c.queue_info(|id| {
            ClientFrame::QueueInfo(QueueReq {
                id,
                queue: "cq".into(),
            })
        })
        .queue
    };
    assert_eq!(unacked(&mut admin).unacked, 1);

    match admin.call(|id| {
        ClientFrame::ClientClose(mom_proto::ClientClose {
            id,
            client_id: w.client_id,
        })
    }) {
        ServerFrame::Ok(_) => {}
        other => panic!("client_close: {other:?}"),
    }
    // Given back by the time the `ok` is read.
    let q = unacked(&mut admin);
    assert_eq!((q.unacked, q.ready), (0, 2));

    // The closed client reads a last connection-level error, then the end of the stream.
    let last = loop {
        match victim.read() {
            ServerFrame::Error(e) => break e,
            ServerFrame::Deliver(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!((last.id, last.code), (None, ErrorCode::Unavailable));
    assert!(
        last.message.contains("closed by client"),
        "{}",
        last.message
    );
    let mut rest = Vec::new();
    victim
        .stream
        .read_to_end(&mut rest)
        .expect("the socket is closed, not left hanging");

    let stats = match admin.call(|id| {
        ClientFrame::Stats(mom_proto::StatsReq {
            id,
            ..Default::default()
        })
    }) {
        ServerFrame::Stats(s) => s,
        other => panic!("stats: {other:?}"),
    };
    assert!(stats.clients.iter().all(|c| c.client_id != w.client_id));
    assert_eq!(stats.totals.watches, 0);
    let (code, _) = admin.error(|id| {
        ClientFrame::ClientClose(mom_proto::ClientClose {
            id,
            client_id: w.client_id,
        })
    });
    assert_eq!(code, ErrorCode::NotFound);
}
