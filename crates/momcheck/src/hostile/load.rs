//! Hostile cases about load: huge header maps, hundreds of thousands of watch patterns,
//! many topics and queues, and publishers faster than the disk.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mom_proto::{
    ClientFrame, Headers, PubMsg, Publish, QueueCreate, QueueDelete, ServerFrame, StartAt, TopicRm,
    TopicSet, Watch,
};
use momctl::client::{Client, ConnectOptions, PendingReply};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::conns::count_frames;
use super::{Answers, Scale};
use crate::raw::{frame_bytes, Raw};
use crate::rng::Rng;

const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

fn publish_frame(topic: &str, msgs: Vec<PubMsg>) -> Vec<u8> {
    frame_bytes(&ClientFrame::Publish(Publish {
        id: 2,
        topic: topic.into(),
        msgs,
        no_ack: false,
    }))
}

/// Clients that send the same frame over and over, reading (and counting) the answers.
async fn repeat_frame(
    addr: &str,
    conns: u64,
    frame: Arc<Vec<u8>>,
    deadline: Instant,
) -> (u64, Answers) {
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let (addr, frame) = (addr.to_string(), frame.clone());
        tasks.spawn(async move {
            let mut raw = Raw::connect(&addr).await.ok()?;
            raw.hello("momcheck hostile").await.ok()?;
            let (rd, mut wr) = raw.stream.into_split();
            let reader = tokio::spawn(count_frames(rd, deadline + Duration::from_secs(2)));
            let mut sent = 0u64;
            while Instant::now() < deadline {
                use tokio::io::AsyncWriteExt;
                match tokio::time::timeout_at(deadline, wr.write_all(&frame)).await {
                    Ok(Ok(())) => sent += 1,
                    _ => break,
                }
            }
            let answers = reader.await.unwrap_or_default();
            Some((sent, answers))
        });
    }
    let (mut sent, mut answers) = (0, Answers::default());
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some((s, a))) = r {
            sent += s;
            answers.merge(a);
        }
    }
    (sent, answers)
}

/// Publishes whose one message has a 100,000-key header map (far over the 64 KiB limit).
pub async fn huge_headers(addr: &str, scale: Scale) -> anyhow::Result<String> {
    let conns = scale.pick(16, 4);
    let deadline = Instant::now() + scale.time;
    let headers: Headers = (0..100_000)
        .map(|i| (format!("k{i:05}"), "v".to_string()))
        .collect();
    let frame = publish_frame(
        "mc.h.headers",
        vec![PubMsg {
            payload: "x".into(),
            headers,
            msg_id: None,
            key: None,
        }],
    );
    let size = frame.len();
    let (sent, answers) = repeat_frame(addr, conns, Arc::new(frame), deadline).await;
    Ok(format!(
        "{conns} clients sent {sent} publishes with 100,000-key header maps ({:.1} MB each); \
         momd answered {answers}",
        size as f64 / 1e6
    ))
}

/// Watches at the documented maximum: 1024 per connection, 256 patterns each (64 watches
/// with --small), on two connections.
pub async fn watch_patterns(addr: &str, scale: Scale) -> anyhow::Result<String> {
    let conns = 2u64;
    let watches = scale.pick(1024, 64);
    let deadline = Instant::now() + scale.time;
    let mut tasks = JoinSet::new();
    for c in 0..conns {
        let addr = addr.to_string();
        tasks.spawn(async move {
            let mut raw = Raw::connect(&addr).await.ok()?;
            raw.hello("momcheck patterns").await.ok()?;
            let (rd, mut wr) = raw.stream.into_split();
            let reader = tokio::spawn(count_frames(rd, deadline));
            for w in 0..watches {
                let f = frame_bytes(&ClientFrame::Watch(Watch {
                    id: w + 2,
                    patterns: (0..256).map(|j| format!("mc.h.w{c}.{w}.{j}.*")).collect(),
                    from: StartAt::New,
                    ..Watch::default()
                }));
                use tokio::io::AsyncWriteExt;
                match tokio::time::timeout_at(deadline, wr.write_all(&f)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            let answers = reader.await.unwrap_or_default();
            drop(wr);
            Some(answers)
        });
    }
    let mut answers = Answers::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(a)) = r {
            answers.merge(a);
        }
    }
    Ok(format!(
        "{conns} connections asked for {watches} watches of 256 patterns each ({} patterns), \
         held {:?}; momd answered {answers}",
        conns * watches * 256,
        scale.time
    ))
}

/// What a pipelined run of requests got.
struct Piped {
    sent: u64,
    ok: u64,
    err: u64,
    first_err: Option<String>,
    secs: f64,
}

impl Piped {
    fn say(&self, what: &str, of: u64) -> String {
        let mut s = format!("{what}: {} of {of} sent in {:.1}s", self.sent, self.secs);
        if self.sent < of {
            s.push_str(" (stopped at the time limit)");
        }
        s.push_str(&format!(", {} ok", self.ok));
        if let Some(e) = &self.first_err {
            s.push_str(&format!(", {} failed (first: {e})", self.err));
        }
        s
    }
}

/// Send up to `n` requests with up to `window` in flight, none after `limit`.
async fn pipelined(
    c: &Client,
    n: u64,
    window: usize,
    limit: Duration,
    make: impl Fn(u64, u64) -> ClientFrame,
) -> anyhow::Result<Piped> {
    let t0 = Instant::now();
    let mut q: VecDeque<PendingReply> = VecDeque::new();
    let mut p = Piped {
        sent: 0,
        ok: 0,
        err: 0,
        first_err: None,
        secs: 0.0,
    };
    let settle =
        |p: &mut Piped, r: Result<Result<ServerFrame, momctl::client::ClientError>, _>| match r {
            Ok(Ok(_)) => p.ok += 1,
            Ok(Err(e)) => {
                p.err += 1;
                p.first_err.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                p.err += 1;
                p.first_err
                    .get_or_insert_with(|| format!("no reply within {REPLY_TIMEOUT:?}"));
            }
        };
    for i in 0..n {
        if t0.elapsed() > limit {
            break;
        }
        if q.len() >= window {
            if let Some(r) = q.pop_front() {
                settle(
                    &mut p,
                    tokio::time::timeout(REPLY_TIMEOUT, r.await_reply()).await,
                );
            }
        }
        q.push_back(c.send(|id| make(id, i)).await?);
        p.sent += 1;
    }
    while let Some(r) = q.pop_front() {
        settle(
            &mut p,
            tokio::time::timeout(REPLY_TIMEOUT, r.await_reply()).await,
        );
    }
    p.secs = t0.elapsed().as_secs_f64();
    Ok(p)
}

/// Many topics (one message each) and many queues, each bound to one of them; then a
/// `stats`, a `topic_list` and a `queue_list` of it all; then everything removed again.
/// Each step stops sending after two minutes (one with --small) and says how far it got.
pub async fn many_topics_queues(addr: &str, scale: Scale, rng: &mut Rng) -> anyhow::Result<String> {
    let topics = scale.pick(100_000, 1_000);
    let queues = scale.pick(10_000, 100);
    let limit = Duration::from_secs(scale.pick(120, 60));
    let tag = rng.below(1_000_000);
    let c = Client::connect(&ConnectOptions::new(addr, "momcheck many")).await?;
    let made = pipelined(&c, topics, 512, limit, |id, i| {
        ClientFrame::Publish(Publish {
            id,
            topic: format!("mc.h.{tag}.t{i}"),
            msgs: vec![PubMsg {
                payload: "x".into(),
                ..PubMsg::default()
            }],
            no_ack: false,
        })
    })
    .await?;
    let mut parts = vec![made.say("topics", topics)];
    let bound = pipelined(&c, queues.min(made.sent), 512, limit, |id, i| {
        ClientFrame::QueueCreate(QueueCreate {
            id,
            queue: format!("mc.h.{tag}.q{i}"),
            bindings: vec![format!("mc.h.{tag}.t{i}")],
            from: StartAt::All,
            ..QueueCreate::default()
        })
    })
    .await?;
    parts.push(bound.say("queues", queues));
    let held = Instant::now();
    let t = Instant::now();
    parts.push(match tokio::time::timeout(REPLY_TIMEOUT, c.stats()).await {
        Ok(Ok(s)) => format!(
            "stats: {} topics, {} queues in {:.1?}",
            s.totals.topics,
            s.queues.len(),
            t.elapsed()
        ),
        Ok(Err(e)) => format!("stats failed: {e}"),
        Err(_) => format!("stats: no reply within {REPLY_TIMEOUT:?}"),
    });
    let t = Instant::now();
    parts.push(
        match tokio::time::timeout(REPLY_TIMEOUT, c.topic_list()).await {
            Ok(Ok(l)) => format!("topic_list: {} topics in {:.1?}", l.len(), t.elapsed()),
            Ok(Err(e)) => format!("topic_list failed: {e}"),
            Err(_) => format!("topic_list: no reply within {REPLY_TIMEOUT:?}"),
        },
    );
    let t = Instant::now();
    parts.push(
        match tokio::time::timeout(REPLY_TIMEOUT, c.queue_list()).await {
            Ok(Ok(l)) => format!("queue_list: {} queues in {:.1?}", l.len(), t.elapsed()),
            Ok(Err(e)) => format!("queue_list failed: {e}"),
            Err(_) => format!("queue_list: no reply within {REPLY_TIMEOUT:?}"),
        },
    );
    tokio::time::sleep_until(held + scale.time).await;
    let gone = pipelined(&c, bound.sent, 512, limit * 2, |id, i| {
        ClientFrame::QueueDelete(QueueDelete {
            id,
            queue: format!("mc.h.{tag}.q{i}"),
            force: true,
        })
    })
    .await?;
    parts.push(gone.say("queues removed", bound.sent));
    let gone = pipelined(&c, made.sent, 512, limit * 2, |id, i| {
        ClientFrame::TopicRm(TopicRm {
            id,
            topic: format!("mc.h.{tag}.t{i}"),
            force: true,
        })
    })
    .await?;
    parts.push(gone.say("topics removed", made.sent));
    Ok(parts.join("; "))
}

/// Publishers of 1 MB messages with 64 publishes in flight each, to a topic whose hard
/// limit keeps the disk bounded: faster than the disk can take.
pub async fn fast_publisher(addr: &str, scale: Scale) -> anyhow::Result<String> {
    const TOPIC: &str = "mc.h.flood";
    const WINDOW: i64 = 64;
    let conns = scale.pick(16, 4);
    let c = Client::connect(&ConnectOptions::new(addr, "momcheck flood admin")).await?;
    c.topic_set(TopicSet {
        topic: TOPIC.into(),
        max_bytes: Some(64 << 20),
        hard_max_bytes: Some(64 << 20),
        ..TopicSet::default()
    })
    .await?;
    let frame = Arc::new(publish_frame(
        TOPIC,
        vec![PubMsg {
            payload: vec![0x42u8; 1_000_000].into(),
            ..PubMsg::default()
        }],
    ));
    let t0 = Instant::now();
    let deadline = t0 + scale.time;
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let (addr, frame, acked) = (addr.to_string(), frame.clone(), acked.clone());
        tasks.spawn(async move {
            let mut raw = Raw::connect(&addr).await.ok()?;
            raw.hello("momcheck flood").await.ok()?;
            let (mut rd, mut wr) = raw.stream.into_split();
            let inflight = Arc::new(AtomicI64::new(0));
            let space = Arc::new(tokio::sync::Notify::new());
            let (inf, sp, ack) = (inflight.clone(), space.clone(), acked.clone());
            let reader = tokio::spawn(async move {
                let mut a = Answers::default();
                let mut buf = BytesMut::new();
                let mut chunk = vec![0u8; 256 * 1024];
                let until = deadline + Duration::from_secs(5);
                loop {
                    while let Ok(Some(body)) = mom_proto::split_frame(&mut buf, 64 << 20) {
                        if let Ok(f) = mom_proto::decode_body::<ServerFrame>(&body) {
                            if matches!(f, ServerFrame::PublishOk(_)) {
                                ack.fetch_add(1, Ordering::Relaxed);
                            }
                            a.frame(&f);
                        }
                        inf.fetch_sub(1, Ordering::Relaxed);
                        sp.notify_one();
                    }
                    match tokio::time::timeout_at(until, rd.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        Ok(_) => {
                            a.closed += 1;
                            return a;
                        }
                        Err(_) => return a,
                    }
                }
            });
            while Instant::now() < deadline {
                if inflight.load(Ordering::Relaxed) >= WINDOW {
                    let _ = tokio::time::timeout(Duration::from_millis(50), space.notified()).await;
                    continue;
                }
                use tokio::io::AsyncWriteExt;
                match tokio::time::timeout_at(deadline, wr.write_all(&frame)).await {
                    Ok(Ok(())) => {
                        inflight.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            drop(wr);
            reader.await.ok()
        });
    }
    let mut answers = Answers::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(a)) = r {
            answers.merge(a);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = acked.load(Ordering::Relaxed);
    let _ = tokio::time::timeout(REPLY_TIMEOUT, c.topic_rm(TOPIC, true)).await;
    Ok(format!(
        "{conns} publishers of 1 MB messages, {WINDOW} in flight each: {n} acknowledged in \
         {secs:.1}s ({:.0} MB/s); momd answered {answers}",
        n as f64 / secs.max(0.001)
    ))
}
