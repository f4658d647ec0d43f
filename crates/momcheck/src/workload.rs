//! The well-behaved workload: publishers with unique ids that re-send what was not
//! acknowledged (same ids) after a lost connection, consumers of the durable queue that ack
//! (and sometimes nack) what they get, and watchers that resume where they were. Each
//! writes down what it saw in the ledger.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mom_proto::{Ack, ClientFrame, ErrorCode, Message, Nack, PubMsg, StartAt, Watch};
use momctl::client::{keys, Client, ClientError, ConnectOptions, PendingReply, WatchEvent};
use tokio_util::sync::CancellationToken;

use crate::ledger::{id_string, parse_id, payload, Conflict, Ctx, Id, Sent};
use crate::rng::Rng;

/// The durable queue every workload topic is bound to.
pub const QUEUE: &str = "mc.work";
/// Pattern of the workload topics (`mc.t.0`, `mc.t.1`, …, and the partitions of
/// [`PARTITIONED`]).
pub const TOPIC_PATTERN: &str = "mc.t.>";
pub const PROBE_TOPIC: &str = "mc.probe";
/// A partitioned topic of the workload: publishers send it batches of keyed messages, and
/// its partitions (`mc.t.p.0`, …) are checked as topics of the run.
pub const PARTITIONED: &str = "mc.t.p";
pub const PARTITIONS: u16 = 3;

/// The topics of a run: `topics` plain ones, the partitions of [`PARTITIONED`], then the
/// probe's.
pub fn run_topics(topics: u32) -> Vec<String> {
    let mut v: Vec<String> = (0..topics.max(1)).map(|i| format!("mc.t.{i}")).collect();
    v.extend((0..PARTITIONS).map(|p| format!("{PARTITIONED}.{p}")));
    v.push(PROBE_TOPIC.to_string());
    v
}

/// Create [`PARTITIONED`] (after the queue, which takes its partitions as they come).
pub async fn create_partitioned(c: &Client) -> anyhow::Result<()> {
    use anyhow::Context;
    c.topic_create(mom_proto::TopicCreate {
        id: 0,
        topic: PARTITIONED.into(),
        partitions: u32::from(PARTITIONS),
        replicas: 0,
    })
    .await
    .with_context(|| format!("creating {PARTITIONED}"))?;
    Ok(())
}

/// The key of message `n` of publisher `p` when it goes to [`PARTITIONED`].
pub fn msg_key(p: u32, n: u64) -> String {
    format!("k{}", (n * 7 + u64::from(p)) % 11)
}

/// The partition a key goes to, as docs/protocol.md §3.10 says (FNV-1a, 32 bits), worked
/// out here independently of momd.
pub fn key_partition(key: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % u32::from(PARTITIONS)) as u16
}

/// How long one request may take before the client gives up on the connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Connect, retrying every 50 ms until `stop` (then None).
pub async fn connect(ctx: &Ctx, name: &str, stop: &CancellationToken) -> Option<Client> {
    connect_from(ctx, name, 0, stop).await
}

/// The same, trying the servers from the `turn`th of the list on (a cluster's clients
/// spread over its nodes).
pub async fn connect_from(
    ctx: &Ctx,
    name: &str,
    turn: usize,
    stop: &CancellationToken,
) -> Option<Client> {
    loop {
        if stop.is_cancelled() {
            return None;
        }
        let mut opts = ConnectOptions::with_servers(ctx.servers(turn), name);
        opts.connect_timeout = Duration::from_secs(5);
        match Client::connect(&opts).await {
            Ok(c) => return Some(c),
            Err(_) => {
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// The msg of message `n` of publisher `p`; `keyed` for [`PARTITIONED`].
pub fn message(ctx: &Ctx, p: u32, n: u64, keyed: bool) -> PubMsg {
    let id = id_string(p, ctx.probe, n);
    PubMsg {
        payload: payload(&id).into(),
        headers: Default::default(),
        msg_id: Some(id),
        key: keyed.then(|| msg_key(p, n)),
    }
}

/// One publisher: batches of 1..=32 messages to a random topic, one batch in flight (so a
/// refused batch can be re-sent before the next without reordering), paced to `rate`
/// messages a second. Stops making new batches at `stop`; gives up re-sending at
/// `give_up`. In a cluster it starts at its own node of the list and moves on to the next
/// after a lost connection or an `unavailable` answer (no leader, or the fate of the batch
/// unknown): the batch is sent again with the same ids, and dedupe stores it once.
pub async fn publisher(
    ctx: Ctx,
    p: u32,
    mut rng: Rng,
    rate: f64,
    stop: CancellationToken,
    give_up: CancellationToken,
) {
    let name = format!("momcheck publisher {p}");
    let mut client: Option<Client> = None;
    let mut pending: Option<(u16, u64, u64)> = None; // topic, first n, count
                                                     // When the pending batch was first sent, and the run's phase then.
    let mut since = (Instant::now(), 0usize);
    let mut turn = p as usize;
    let mut next_n: u64 = 0;
    let t0 = Instant::now();
    let workload_topics = ctx.topics.len() as u64 - 1;
    loop {
        if pending.is_none() {
            if stop.is_cancelled() {
                return;
            }
            let due = t0 + Duration::from_secs_f64(next_n as f64 / rate.max(1.0));
            let now = Instant::now();
            if due > now {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(due - now) => {}
                }
            }
            let count = rng.range(1, 32);
            let topic = rng.below(workload_topics) as u16;
            {
                // A batch for a partition goes to the partitioned topic, its messages
                // keyed: each to its key's partition.
                let parts = ctx.partition_of(topic).map(|p| topic - p);
                let mut l = ctx.ledger();
                for n in next_n..next_n + count {
                    let topic = parts.map_or(topic, |first| first + key_partition(&msg_key(p, n)));
                    l.sent[p as usize].push(Sent {
                        topic,
                        ..Sent::default()
                    });
                }
            }
            pending = Some((topic, next_n, count));
            since = (Instant::now(), ctx.phase_mark());
            next_n += count;
        }
        let Some((topic, first, count)) = pending else {
            continue;
        };
        if give_up.is_cancelled() {
            return;
        }
        let c = match &client {
            Some(c) if !c.is_closed() => c.clone(),
            _ => match connect_from(&ctx, &name, turn, &give_up).await {
                Some(c) => {
                    client = Some(c.clone());
                    c
                }
                None => return,
            },
        };
        let keyed = ctx.partition_of(topic).is_some();
        let msgs: Vec<PubMsg> = (first..first + count)
            .map(|n| message(&ctx, p, n, keyed))
            .collect();
        let topic_name = if keyed {
            PARTITIONED
        } else {
            &ctx.topics[topic as usize]
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, c.publish(topic_name, msgs)).await {
            Ok(Ok(ok)) if ok.seqs.len() as u64 == count => {
                if keyed {
                    let want: Vec<u32> = (first..first + count)
                        .map(|n| u32::from(key_partition(&msg_key(p, n))))
                        .collect();
                    if ok.partitions != want {
                        let e = format!(
                            "publisher {p}: messages {first}.. went to partitions {:?}, their \
                             keys say {want:?}",
                            ok.partitions
                        );
                        ctx.ledger().publish_errors.push(e);
                    }
                }
                let epoch = ctx.epoch.load(Ordering::Relaxed);
                let mut l = ctx.ledger();
                for (i, seq) in ok.seqs.iter().enumerate() {
                    let s = &mut l.sent[p as usize][(first + i as u64) as usize];
                    s.seq = *seq;
                    s.epoch = epoch;
                }
                drop(l);
                ctx.acked.fetch_add(count, Ordering::Relaxed);
                if ctx.cluster {
                    ctx.latency(since.1, since.0.elapsed());
                }
                pending = None;
            }
            Ok(Ok(ok)) => {
                let e = format!(
                    "publisher {p}: publish_ok of {count} messages has {} seqs",
                    ok.seqs.len()
                );
                ctx.ledger().publish_errors.push(e);
                client = None;
            }
            Ok(Err(e)) => {
                note_publish_error(&ctx, &format!("publisher {p}"), &e);
                client = client.filter(|c| !c.is_closed());
                let unavailable = matches!(
                    e,
                    ClientError::Server {
                        code: ErrorCode::Unavailable,
                        ..
                    }
                );
                if ctx.cluster && (unavailable || client.is_none()) {
                    // The next node of the list: its turn is the one after the node lost.
                    turn = ctx
                        .servers(0)
                        .iter()
                        .position(|s| s == c.server())
                        .map_or(turn + 1, |i| i + 1);
                    client = None;
                }
                tokio::time::sleep(Duration::from_millis(rng.range(20, 100))).await;
            }
            Err(_) => {
                let e = format!(
                    "publisher {p}: no publish_ok within {REQUEST_TIMEOUT:?} (phase {})",
                    ctx.phase()
                );
                ctx.ledger().publish_errors.push(e);
                client = None;
                turn += 1;
            }
        }
    }
}

/// A failed publish: `unavailable` (a full disk) is counted as refused; a lost connection
/// is what faults do; anything else a well-behaved client should never see.
pub fn note_publish_error(ctx: &Ctx, who: &str, e: &ClientError) {
    match e {
        ClientError::Server {
            code: ErrorCode::Unavailable,
            ..
        } => ctx.ledger().refused += 1,
        e if e.is_connection_lost() => {}
        ClientError::Connect { .. } => {}
        e => {
            let phase = ctx.phase();
            ctx.ledger()
                .publish_errors
                .push(format!("{who}: {e} (phase {phase})"));
        }
    }
}

/// Write down queue deliveries.
fn record_deliveries(ctx: &Ctx, msgs: &[Message]) {
    let mut l = ctx.ledger();
    for m in msgs {
        let Some(t) = ctx.topic_index(&m.topic) else {
            l.conflicts.push(Conflict {
                topic: u16::MAX,
                seq: m.seq,
                foreign: true,
                what: format!("delivery from topic {:?}", m.topic),
            });
            continue;
        };
        let key = match m.msg_id.as_deref().map(|s| parse_id(s, ctx.probe)) {
            Some(Id::Msg(k)) => Some(k),
            _ => None,
        };
        if key.is_none() {
            l.conflicts.push(Conflict {
                topic: t,
                seq: m.seq,
                foreign: true,
                what: format!("delivered with msg id {:?}, not one of ours", m.msg_id),
            });
        }
        let d = l.deliveries.entry((t, m.seq)).or_default();
        let conflict = !d.counts.is_empty() && d.key != key;
        if d.counts.is_empty() {
            d.key = key;
        }
        d.counts.push(m.delivery.unwrap_or(0));
        if conflict {
            let before = d.key;
            l.conflicts.push(Conflict {
                topic: t,
                seq: m.seq,
                foreign: false,
                what: format!(
                    "{}:{} delivered as {:?}, earlier as another ({before:?})",
                    ctx.topics[t as usize], m.seq, m.msg_id
                ),
            });
        }
    }
}

/// A consumer of the queue: acks what it gets, nacks about one in fifty (delivered again,
/// with a higher delivery count). Acks are pipelined (up to 16 unanswered), so the consumer
/// is not paced by one flush per batch. Reconnects after a lost connection.
pub async fn consumer(ctx: Ctx, c: u32, mut rng: Rng, stop: CancellationToken) {
    let name = format!("momcheck consumer {c}");
    'outer: loop {
        let Some(client) = connect(&ctx, &name, &stop).await else {
            return;
        };
        let mut stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(REQUEST_TIMEOUT, client.consume(QUEUE, 256)) => match r {
                Ok(Ok(s)) => s,
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut replies: VecDeque<PendingReply> = VecDeque::new();
        loop {
            let msgs = tokio::select! {
                _ = stop.cancelled() => return,
                r = stream.next() => match r {
                    Ok(m) => m,
                    Err(_) => continue 'outer,
                },
            };
            record_deliveries(&ctx, &msgs);
            let (nack, ack): (Vec<Message>, Vec<Message>) =
                msgs.into_iter().partition(|_| rng.chance(0.02));
            let queue = QUEUE.to_string();
            let mut sends = Vec::new();
            if !ack.is_empty() {
                let (queue, msgs) = (queue.clone(), keys(&ack));
                sends.push(
                    client
                        .send(|id| ClientFrame::Ack(Ack { id, queue, msgs }))
                        .await,
                );
            }
            if !nack.is_empty() {
                let delay_ms = rng.below(20);
                let msgs = keys(&nack);
                sends.push(
                    client
                        .send(|id| {
                            ClientFrame::Nack(Nack {
                                id,
                                queue,
                                msgs,
                                delay_ms,
                                release: false,
                            })
                        })
                        .await,
                );
            }
            for s in sends {
                match s {
                    Ok(p) => replies.push_back(p),
                    Err(_) => continue 'outer,
                }
            }
            while replies.len() > 16 {
                let Some(p) = replies.pop_front() else { break };
                if !matches!(
                    tokio::time::timeout(REQUEST_TIMEOUT, p.await_reply()).await,
                    Ok(Ok(_))
                ) {
                    continue 'outer;
                }
            }
        }
    }
}

/// A watcher of every topic of the run, from the first message, resuming after the last
/// seq it saw of each topic when it reconnects. Checks that each topic's seqs only go up.
pub async fn watcher(ctx: Ctx, w: u32, stop: CancellationToken) {
    let name = format!("momcheck watcher {w}");
    let mut after: BTreeMap<String, u64> = BTreeMap::new();
    'outer: loop {
        // In a cluster each watcher starts at a node of its own.
        let Some(client) = connect_from(&ctx, &name, w as usize + 1, &stop).await else {
            return;
        };
        let req = Watch {
            patterns: vec![TOPIC_PATTERN.into(), PROBE_TOPIC.into()],
            from: StartAt::All,
            after: after.clone(),
            ..Watch::default()
        };
        let mut stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(REQUEST_TIMEOUT, client.watch_with(req)) => match r {
                Ok(Ok(s)) => s,
                _ => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                r = stream.next() => match r {
                    Ok(ev) => ev,
                    Err(_) => continue 'outer,
                },
            };
            let WatchEvent::Messages(msgs) = ev else {
                continue;
            };
            let mut l = ctx.ledger();
            for m in msgs {
                let Some(t) = ctx.topic_index(&m.topic) else {
                    continue;
                };
                let last = after.entry(m.topic.clone()).or_insert(0);
                if m.seq <= *last {
                    let what =
                        format!("watcher {w}: {} seq {} after seq {}", m.topic, m.seq, *last);
                    l.watch_order.push((t, m.seq, *last, what));
                }
                *last = m.seq;
                let id = m.msg_id.as_deref().map(|s| parse_id(s, ctx.probe));
                let Some(Id::Msg(k)) = id else {
                    l.conflicts.push(Conflict {
                        topic: t,
                        seq: m.seq,
                        foreign: true,
                        what: format!(
                            "watcher {w} saw {}:{} with msg id {:?}, not one of ours",
                            m.topic, m.seq, m.msg_id
                        ),
                    });
                    continue;
                };
                match l.watched.insert((t, m.seq), k) {
                    Some(before) if before != k => {
                        l.conflicts.push(Conflict {
                            topic: t,
                            seq: m.seq,
                            foreign: false,
                            what: format!(
                                "watcher {w} saw {}:{} as {:?}, an earlier watch saw another",
                                m.topic, m.seq, m.msg_id
                            ),
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Wait until the queue holds nothing (ready or unacked), as `c`'s server sees it. `Some`
/// with the queue's last state if it stopped moving for 10 s (or 3 minutes went by).
pub async fn drain(c: &Client) -> anyhow::Result<Option<mom_proto::QueueInfo>> {
    let t0 = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    loop {
        let q = match tokio::time::timeout(Duration::from_secs(30), c.queue_info(QUEUE)).await {
            Ok(Ok(q)) => q,
            Ok(Err(e)) => anyhow::bail!("queue_info {QUEUE}: {e}"),
            Err(_) => anyhow::bail!("queue_info {QUEUE}: no answer within 30 s"),
        };
        if q.lag == 0 && q.unacked == 0 {
            return Ok(None);
        }
        if q.lag + q.unacked != last.0 {
            last = (q.lag + q.unacked, Instant::now());
        }
        if last.1.elapsed() > Duration::from_secs(10) || t0.elapsed() > Duration::from_secs(180) {
            return Ok(Some(q));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
