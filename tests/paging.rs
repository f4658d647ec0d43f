//! Paged listings (docs/protocol.md section 2.5): with more topics, queues and clients than
//! one frame holds, `topic_list`, `queue_list` and `stats` answer a page at a time and
//! momctl follows the pages, so every item is listed exactly once and none of them fails
//! with "over the frame limit". `--limit` stops early and says so.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use bytes::BytesMut;
use common::{json_lines, lines, Momd, Raw};
use mom_proto::{ClientFrame, ErrorCode, ListReq, Page, ServerFrame, StatsReq, TopicList};

const T: Duration = Duration::from_secs(30);
/// The broker's frame limit in these tests: small, so that a few hundred topics already
/// make a listing larger than one frame.
const MAX_FRAME: usize = 192 * 1024;
const TOPICS: usize = 1200;
const QUEUES: usize = 800;

fn small_frames() -> Momd {
    Momd::start_with(&[
        "--fsync",
        "never",
        "--max-frame",
        "192KiB",
        "--max-payload",
        "16KiB",
    ])
}

fn frames(fs: &[ClientFrame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for f in fs {
        mom_proto::encode_frame(f, &mut buf, usize::MAX).expect("encode");
    }
    buf.to_vec()
}

fn topic_name(i: usize) -> String {
    format!("page.t{i:04}")
}

/// Create topics `page.t0000…` (one message each) and queues `pq-0000…` bound to them,
/// pipelined on one connection.
fn create(m: &Momd, topics: usize, queues: usize) {
    let mut raw = Raw::connect(m);
    raw.hello();
    let mut reqs: Vec<ClientFrame> = (0..topics)
        .map(|i| {
            ClientFrame::Publish(mom_proto::Publish {
                id: 100 + i as u64,
                topic: topic_name(i),
                msgs: vec![momctl::client::message(&b"x"[..], Default::default(), None)],
                no_ack: false,
            })
        })
        .collect();
    reqs.extend((0..queues).map(|i| {
        ClientFrame::QueueCreate(mom_proto::QueueCreate {
            id: 100_000 + i as u64,
            queue: format!("pq-{i:04}"),
            bindings: vec![format!("page.t{:04}", i % topics.max(1))],
            ..Default::default()
        })
    }));
    for chunk in reqs.chunks(500) {
        raw.send_bytes(&frames(chunk));
        for _ in chunk {
            match raw.expect_frame(T) {
                ServerFrame::PublishOk(_) | ServerFrame::QueueInfo(_) => {}
                other => panic!("expected publish_ok or queue_info, got {other:?}"),
            }
        }
    }
}

/// The first column of a table's rows (its header left out).
fn first_column(out: &[u8]) -> Vec<String> {
    lines(out)
        .iter()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Each name once, in order; returns them as a set.
fn once_in_order(names: &[String]) -> BTreeSet<String> {
    let set: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(set.len(), names.len(), "a name came twice");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "names out of order");
    set
}

fn json_names(out: &[u8]) -> Vec<String> {
    json_lines(out)
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn listings_larger_than_a_frame_come_in_pages_with_every_item_once() {
    let m = small_frames();
    create(&m, TOPICS, QUEUES);
    let want_topics: BTreeSet<String> = (0..TOPICS).map(topic_name).collect();
    let want_queues: BTreeSet<String> = (0..QUEUES).map(|i| format!("pq-{i:04}")).collect();

    // A client written before paging asks with no paging key: it gets the first page, in
    // one frame under the limit, and a cursor — not an error.
    let mut raw = Raw::connect(&m);
    raw.hello();
    raw.send(&ClientFrame::TopicList(ListReq {
        id: 7,
        ..ListReq::default()
    }));
    match raw.expect_frame(T) {
        ServerFrame::TopicList(l) => {
            assert!(!l.topics.is_empty() && (l.topics.len() as u64) < l.total);
            assert!(
                l.next.is_some(),
                "a first page of {} says nothing follows",
                l.total
            );
            assert!(mom_proto::encoded_len(&l) <= MAX_FRAME);
        }
        other => panic!("expected topic_list, got {other:?}"),
    }

    // momctl follows the pages: every topic once, in name order, $sys.events too.
    let out = m.ctl_ok(&["topic", "ls"], None);
    let names = first_column(&out);
    let got = once_in_order(&names);
    assert!(got.contains("$sys.events"));
    assert_eq!(
        got.iter()
            .filter(|n| n.starts_with("page."))
            .cloned()
            .collect::<BTreeSet<_>>(),
        want_topics
    );
    let json = m.ctl_ok(&["topic", "ls", "page.>", "--json"], None);
    assert_eq!(once_in_order(&json_names(&json)), want_topics);

    // Filters on the broker: a prefix and a pattern.
    let out = m.ctl_ok(&["topic", "ls", "--prefix", "page.t01"], None);
    let want: Vec<String> = (100..200).map(topic_name).collect();
    assert_eq!(first_column(&out), want);
    let out = m.ctl_ok(&["topic", "ls", "*.t0999"], None);
    assert_eq!(first_column(&out), vec![topic_name(999)]);

    // --limit stops early and says so on stderr; the rows are the first ones.
    let out = m.ctl(&["topic", "ls", "page.>", "--limit", "250"], None);
    assert_eq!(out.code, 0, "{out:?}");
    let want: Vec<String> = (0..250).map(topic_name).collect();
    assert_eq!(first_column(&out.stdout), want);
    assert!(
        out.stderr
            .contains("showing the first 250 topics; more exist"),
        "{out:?}"
    );
    let out = m.ctl(
        &["topic", "ls", "--prefix", "page.t000", "--limit", "10"],
        None,
    );
    assert_eq!(first_column(&out.stdout).len(), 10);
    assert!(
        out.stderr.is_empty(),
        "exactly 10 match: nothing more to say: {out:?}"
    );

    // Queues likewise.
    let out = m.ctl_ok(&["queue", "ls"], None);
    assert_eq!(once_in_order(&first_column(&out)), want_queues);
    let json = m.ctl_ok(&["queue", "ls", "--json", "--limit", "300"], None);
    let names = json_names(&json);
    assert_eq!(names.len(), 300);
    assert_eq!(
        once_in_order(&names),
        want_queues.iter().take(300).cloned().collect()
    );

    // stats: the totals, and every topic, queue and client, in one JSON object.
    let s = m.stats();
    assert_eq!(s["totals"]["topics"], TOPICS as u64 + 1);
    assert_eq!(s["totals"]["queues"], QUEUES as u64);
    assert_eq!(s["totals"]["damaged"], 0);
    let names = |key: &str| -> Vec<String> {
        s[key]
            .as_array()
            .expect("array")
            .iter()
            .map(|v| v["name"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(once_in_order(&names("topics")).len(), TOPICS + 1);
    assert_eq!(once_in_order(&names("queues")), want_queues);
    assert!(s.get("topics_next").is_none() && s.get("queues_next").is_none());

    // stats --limit: the first N of each section, their cursors kept, and a note.
    let out = m.ctl(&["stats", "--json", "--limit", "5"], None);
    assert_eq!(out.code, 0, "{out:?}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats --json");
    assert_eq!(s["topics"].as_array().map(Vec::len), Some(5));
    assert_eq!(s["queues"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        s["topics_next"],
        topic_name(3),
        "$sys.events, then page.t0000…"
    );
    assert_eq!(s["queues_next"], "pq-0004");
    let err = &out.stderr;
    assert!(
        err.contains("5 of 1201 topics") && err.contains("5 of 800 queues"),
        "{err}"
    );
    // The text form follows the same pages; --limit 0 is the totals only.
    let out = m.ctl_ok(&["stats"], None);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("1201 topics"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("page.t1199 ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("pq-0799 ")), "{text}");
    let out = m.ctl_ok(&["stats", "--limit", "0"], None);
    assert_eq!(lines(&out).len(), 4, "{}", String::from_utf8_lossy(&out));
}

/// Walk `topic_list` pages of `limit` with `pattern` on a raw connection, calling
/// `between` after each page; returns the names seen, in order.
fn walk(raw: &mut Raw, limit: u32, pattern: &str, mut between: impl FnMut(usize)) -> Vec<String> {
    let mut page = Page::first(Some(limit), None, Some(pattern.into()));
    let mut seen = Vec::new();
    for n in 1u64.. {
        raw.send(&ClientFrame::TopicList(ListReq::new(n, page.clone())));
        let l: TopicList = match raw.expect_frame(T) {
            ServerFrame::TopicList(l) => l,
            other => panic!("expected topic_list, got {other:?}"),
        };
        assert!(l.topics.len() <= limit as usize);
        seen.extend(l.topics.into_iter().map(|t| t.name));
        match l.next {
            Some(next) => page.after = Some(next),
            None => return seen,
        }
        between(n as usize);
    }
    unreachable!()
}

#[test]
fn a_walk_sees_each_topic_once_while_topics_come_and_go() {
    let m = Momd::start_with(&["--fsync", "never"]);
    create(&m, 300, 0);
    let mut raw = Raw::connect(&m);
    raw.hello();
    let mut other = Raw::connect(&m);
    other.hello();
    let mut removed = HashSet::new();
    let mut pages = 0;
    let seen = walk(&mut raw, 50, "page.>", |n| {
        pages = n;
        // Behind the cursor (never seen), ahead of it (seen), and one removed ahead of it.
        for (id, topic) in [(1000, format!("page.a{n}")), (2000, format!("page.z{n}"))] {
            other.send(&ClientFrame::Publish(mom_proto::Publish {
                id: id + n as u64,
                topic,
                msgs: vec![momctl::client::message(&b"y"[..], Default::default(), None)],
                no_ack: false,
            }));
            assert!(matches!(other.expect_frame(T), ServerFrame::PublishOk(_)));
        }
        let t = topic_name(299 - n);
        m.ctl_ok(&["topic", "rm", &t], None);
        removed.insert(t);
    });
    let set = once_in_order(&seen);
    assert!(
        pages >= 5,
        "300 topics in pages of 50: {pages} pages followed"
    );
    assert!(set.iter().all(|t| !t.starts_with("page.a")), "{set:?}");
    for n in 1..=pages {
        assert!(set.contains(&format!("page.z{n}")), "page.z{n} not seen");
    }
    for t in (0..300).map(topic_name) {
        assert_eq!(set.contains(&t), !removed.contains(&t), "{t}");
    }
}

#[test]
fn clients_are_paged_by_id_and_bad_pages_are_refused() {
    let m = Momd::start_with(&["--fsync", "never"]);
    let conns: Vec<Raw> = (0..30)
        .map(|_| {
            let mut r = Raw::connect(&m);
            r.hello();
            r
        })
        .collect();
    let json = m.ctl_ok(&["client", "ls", "--json"], None);
    let ids: Vec<u64> = json_lines(&json)
        .iter()
        .map(|v| v["client_id"].as_u64().expect("client_id"))
        .collect();
    assert_eq!(ids.len(), conns.len() + 1, "the raw ones and momctl's own");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let out = m.ctl(&["client", "ls", "--limit", "7"], None);
    assert_eq!(lines(&out.stdout).len(), 8, "a header and 7 rows: {out:?}");
    assert!(
        out.stderr.contains("showing the first 7 clients"),
        "{out:?}"
    );

    // Walk the clients section of stats 4 at a time: each connection once.
    let mut raw = Raw::connect(&m);
    raw.hello();
    let mut after = None;
    let mut seen = Vec::new();
    for id in 1u64.. {
        let mut req = StatsReq::summary(id);
        req.clients = Some(Page {
            after: after.take(),
            limit: Some(4),
            ..Page::default()
        });
        raw.send(&ClientFrame::Stats(req));
        let s = match raw.expect_frame(T) {
            ServerFrame::Stats(s) => s,
            other => panic!("expected stats, got {other:?}"),
        };
        assert!(
            s.topics.is_empty() && s.queues.is_empty(),
            "limit 0 lists none"
        );
        assert!(s.clients.len() <= 4);
        seen.extend(s.clients.iter().map(|c| c.client_id));
        match s.clients_next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.len(), conns.len() + 1, "the raw ones and this one");

    // Bad pages get bad_request, and the connection goes on.
    let bad = [
        ClientFrame::TopicList(ListReq {
            id: 90,
            pattern: Some("a.>.b".into()),
            ..ListReq::default()
        }),
        ClientFrame::Stats(StatsReq {
            id: 91,
            clients: Some(Page {
                pattern: Some("a.*".into()),
                ..Page::default()
            }),
            ..StatsReq::default()
        }),
        ClientFrame::Stats(StatsReq {
            id: 92,
            clients: Some(Page {
                after: Some("nine".into()),
                ..Page::default()
            }),
            ..StatsReq::default()
        }),
    ];
    for f in &bad {
        raw.send(f);
        match raw.expect_frame(T) {
            ServerFrame::Error(e) => {
                assert_eq!(
                    (e.id, e.code),
                    (Some(f.id()), ErrorCode::BadRequest),
                    "{e:?}"
                )
            }
            other => panic!("expected bad_request, got {other:?}"),
        }
    }
    m.assert_serves();
}
