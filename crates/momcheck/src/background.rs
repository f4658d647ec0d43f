//! Clients that run beside the workload through every cycle: the probe (the well-behaved
//! client whose latency is reported), a client that drops its connection mid-frame, and
//! one that keeps doing topic and queue admin (so kill -9 also lands during admin).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mom_proto::{ClientFrame, ErrorCode, Publish, QueueCreate, StartAt, TopicSet, Watch};
use momctl::client::{Client, ClientError, WatchEvent, WatchStream};
use tokio_util::sync::CancellationToken;

use crate::ledger::{id_string, Ctx, Sent};
use crate::raw::{frame_bytes, hello_frame, Raw};
use crate::rng::Rng;
use crate::workload::{connect, message, note_publish_error, PROBE_TOPIC, REQUEST_TIMEOUT};

async fn probe_watch(ctx: &Ctx, last_seen: u64, stop: &CancellationToken) -> Option<WatchStream> {
    let c = connect(ctx, "momcheck probe watch", stop).await?;
    let req = Watch {
        patterns: vec![PROBE_TOPIC.into()],
        from: StartAt::New,
        after: BTreeMap::from([(PROBE_TOPIC.to_string(), last_seen)]),
        ..Watch::default()
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, c.watch_with(req)).await {
        Ok(Ok(w)) => Some(w),
        _ => None,
    }
}

/// The well-behaved client: publishes one message at a time to its own topic and waits
/// until its watch (on another connection) delivers it; every tenth round it also pings
/// on a fresh connection. Each round's time, from the first send to the delivery (retries
/// after lost connections or refusals included), is the latency of the phases it spanned.
pub async fn probe(ctx: Ctx, stop: CancellationToken) {
    let p = ctx.probe;
    let topic = (ctx.topics.len() - 1) as u16;
    let mut publ: Option<Client> = None;
    let mut watch: Option<WatchStream> = None;
    let mut last_seen = 0u64;
    for n in 0u64.. {
        if stop.is_cancelled() {
            return;
        }
        ctx.ledger().sent[p as usize].push(Sent {
            topic,
            ..Sent::default()
        });
        let id = id_string(p, p, n);
        let start = Instant::now();
        let mark = ctx.phase_mark();
        let mut acked = false;
        loop {
            if stop.is_cancelled() {
                return;
            }
            let Some(w) = watch.as_mut() else {
                watch = probe_watch(&ctx, last_seen, &stop).await;
                if watch.is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            };
            if !acked {
                let c = match &publ {
                    Some(c) if !c.is_closed() => c.clone(),
                    _ => match connect(&ctx, "momcheck probe", &stop).await {
                        Some(c) => {
                            publ = Some(c.clone());
                            c
                        }
                        None => return,
                    },
                };
                let msgs = vec![message(&ctx, p, n, false)];
                match tokio::time::timeout(REQUEST_TIMEOUT, c.publish(PROBE_TOPIC, msgs)).await {
                    Ok(Ok(ok)) if ok.seqs.len() == 1 => {
                        let epoch = ctx.epoch.load(Ordering::Relaxed);
                        let mut l = ctx.ledger();
                        let s = &mut l.sent[p as usize][n as usize];
                        s.seq = ok.seqs[0];
                        s.epoch = epoch;
                        acked = true;
                    }
                    Ok(Ok(_)) => publ = None,
                    Ok(Err(e)) => {
                        note_publish_error(&ctx, "probe", &e);
                        publ = publ.filter(|c| !c.is_closed());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(_) => {
                        let s = format!(
                            "probe: no publish_ok within {REQUEST_TIMEOUT:?} (phase {})",
                            ctx.phase()
                        );
                        ctx.ledger().probe_stalls.push(s);
                        publ = None;
                        continue;
                    }
                }
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, w.next()).await {
                Ok(Ok(WatchEvent::Messages(msgs))) => {
                    let mut seen = false;
                    for m in msgs {
                        last_seen = last_seen.max(m.seq);
                        seen |= m.msg_id.as_deref() == Some(id.as_str());
                    }
                    if seen {
                        break;
                    }
                }
                Ok(Ok(WatchEvent::Notice(_))) => {}
                Ok(Err(_)) => watch = None,
                Err(_) => {
                    let s = format!(
                        "probe: acknowledged {id} not delivered to its watch within \
                         {REQUEST_TIMEOUT:?} (phase {})",
                        ctx.phase()
                    );
                    ctx.ledger().probe_stalls.push(s);
                    watch = None;
                }
            }
        }
        ctx.latency(mark, start.elapsed());
        if n % 10 == 9 {
            let t0 = Instant::now();
            let mark = ctx.phase_mark();
            let fresh = async {
                let c = connect(&ctx, "momcheck probe ping", &stop).await?;
                c.ping().await.ok()
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, fresh).await {
                Ok(_) => ctx.latency(mark, t0.elapsed()),
                Err(_) => ctx.ledger().probe_stalls.push(format!(
                    "probe: no pong on a fresh connection within {REQUEST_TIMEOUT:?} (phase {})",
                    ctx.phase()
                )),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// A client that drops its connection in the middle of a frame: of its hello, of a
/// publish's length prefix, or of a publish's body. The half-sent messages (`half.N`) must
/// never be stored.
pub async fn dropper(ctx: Ctx, mut rng: Rng, stop: CancellationToken) {
    let mut k = 0u64;
    let workload_topics = ctx.topics.len() as u64 - 1;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(rng.range(100, 400))) => {}
        }
        let Ok(mut raw) = Raw::connect(&ctx.addr()).await else {
            continue;
        };
        let variant = rng.below(3);
        if variant == 0 {
            let hello = frame_bytes(&hello_frame("momcheck dropper"));
            let cut = rng.range(1, hello.len() as u64 - 1) as usize;
            let _ = raw.send_bytes(&hello[..cut]).await;
            continue;
        }
        if raw.hello("momcheck dropper").await.is_err() {
            continue;
        }
        let count = rng.range(1, 8);
        let msgs = (k..k + count)
            .map(|i| {
                let id = format!("half.{i}");
                mom_proto::PubMsg {
                    payload: crate::ledger::payload(&id).into(),
                    headers: Default::default(),
                    msg_id: Some(id),
                    key: None,
                }
            })
            .collect();
        k += count;
        let topic = ctx.topics[rng.below(workload_topics) as usize].clone();
        let bytes = frame_bytes(&ClientFrame::Publish(Publish {
            id: 2,
            topic,
            msgs,
            no_ack: false,
        }));
        let cut = if variant == 1 {
            rng.range(1, 3)
        } else {
            rng.range(4, bytes.len() as u64 - 1)
        } as usize;
        if raw.send_bytes(&bytes[..cut]).await.is_ok() {
            ctx.ledger().halves_sent += count;
        }
    }
}

/// What the admin client believes momd holds: only what was acknowledged, and nothing of
/// requests whose answer never came.
#[derive(Default)]
struct Model {
    queues: BTreeMap<String, bool>,
    topics: BTreeMap<String, bool>,
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Server {
            code: ErrorCode::NotFound,
            ..
        }
    )
}

/// After a restart: is every acknowledged create and delete still so?
async fn check_model(ctx: &Ctx, c: &Client, m: &mut Model) -> Result<(), ClientError> {
    for (name, exists) in m.queues.iter() {
        let r = tokio::time::timeout(REQUEST_TIMEOUT, c.queue_info(name)).await;
        let found = match r {
            Ok(Ok(_)) => true,
            Ok(Err(e)) if is_not_found(&e) => false,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClientError::Timeout(REQUEST_TIMEOUT)),
        };
        if found != *exists {
            ctx.ledger().admin_lost.push(format!(
                "queue {name}: {} was acknowledged, but after restart {} it {}",
                if *exists {
                    "queue_create"
                } else {
                    "queue_delete"
                },
                ctx.epoch.load(Ordering::Relaxed),
                if found { "exists" } else { "does not exist" }
            ));
        }
    }
    for (name, exists) in m.topics.iter() {
        let r = tokio::time::timeout(REQUEST_TIMEOUT, c.topic_info(name)).await;
        let found = match r {
            Ok(Ok(_)) => true,
            Ok(Err(e)) if is_not_found(&e) => false,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClientError::Timeout(REQUEST_TIMEOUT)),
        };
        if found != *exists {
            ctx.ledger().admin_lost.push(format!(
                "topic {name}: {} was acknowledged, but after restart {} it {}",
                if *exists { "topic_set" } else { "topic_rm" },
                ctx.epoch.load(Ordering::Relaxed),
                if found { "exists" } else { "does not exist" }
            ));
        }
    }
    // What was checked gone stays gone; keep the map small.
    m.queues.retain(|_, e| *e);
    m.topics.retain(|_, e| *e);
    Ok(())
}

/// Topic and queue admin all the time: create queues and topics, delete them. After every
/// restart of momd, checks that what was acknowledged held.
pub async fn admin(ctx: Ctx, mut rng: Rng, stop: CancellationToken) {
    let mut model = Model::default();
    let mut checked = ctx.epoch.load(Ordering::Relaxed);
    let mut k = 0u64;
    loop {
        let Some(c) = connect(&ctx, "momcheck admin", &stop).await else {
            return;
        };
        loop {
            if stop.is_cancelled() {
                return;
            }
            let epoch = ctx.epoch.load(Ordering::Relaxed);
            if epoch != checked {
                if check_model(&ctx, &c, &mut model).await.is_err() {
                    break;
                }
                checked = epoch;
            }
            k += 1;
            let live_q: Vec<String> = model
                .queues
                .iter()
                .filter(|(_, e)| **e)
                .map(|(n, _)| n.clone())
                .collect();
            let (name, is_queue, create) = if rng.chance(0.5) {
                if live_q.len() < 6 || rng.chance(0.5) {
                    (format!("mc.adm.q{k}"), true, true)
                } else {
                    (
                        live_q[rng.below(live_q.len() as u64) as usize].clone(),
                        true,
                        false,
                    )
                }
            } else {
                let live_t: Vec<&String> = model
                    .topics
                    .iter()
                    .filter(|(_, e)| **e)
                    .map(|(n, _)| n)
                    .collect();
                if live_t.len() < 6 || rng.chance(0.5) {
                    (format!("mc.adm.t{k}"), false, true)
                } else {
                    (
                        live_t[rng.below(live_t.len() as u64) as usize].clone(),
                        false,
                        false,
                    )
                }
            };
            let r: Result<(), ClientError> = match (is_queue, create) {
                (true, true) => c
                    .queue_create(QueueCreate {
                        queue: name.clone(),
                        bindings: vec![format!("mc.adm.x{k}.>")],
                        ..QueueCreate::default()
                    })
                    .await
                    .map(|_| ()),
                (true, false) => c.queue_delete(&name, true).await,
                (false, true) => c
                    .topic_set(TopicSet {
                        topic: name.clone(),
                        max_msgs: Some(10),
                        ..TopicSet::default()
                    })
                    .await
                    .map(|_| ()),
                (false, false) => c.topic_rm(&name, true).await,
            };
            let map = if is_queue {
                &mut model.queues
            } else {
                &mut model.topics
            };
            match r {
                Ok(()) => {
                    map.insert(name, create);
                }
                Err(e) if !create && is_not_found(&e) => {
                    ctx.ledger().admin_lost.push(format!(
                        "{name}: acknowledged as created, then not found when deleted"
                    ));
                    map.remove(&name);
                }
                Err(e) => {
                    // Unknown outcome (lost connection, full disk): believe nothing of it.
                    map.remove(&name);
                    if c.is_closed() || e.is_connection_lost() {
                        break;
                    }
                }
            }
            let pause = if ctx.admin_burst.load(Ordering::Relaxed) {
                rng.below(2)
            } else {
                rng.range(10, 60)
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}
