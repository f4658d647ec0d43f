//! Queues (durable subscriptions) end to end, with the real momd and momctl and the client
//! library: a durable subscriber that was away, competing `recv --follow` workers, ack
//! deadlines and delivery counts, dead letters, `kill -9` in a consume loop, `queue rm` /
//! `recv` exit codes, request/reply, fan-out, purge / unsubscribe / `recv --bind`, and a
//! clean restart.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{json_lines, lines, numbered_lines, wait_for, wait_timeout, Collector, CtlOut, Momd};
use mom_proto::{Ack, ClientFrame, Message, MsgKey};
use tokio::task::block_in_place;

fn keys(msgs: &[Message]) -> Vec<MsgKey> {
    msgs.iter()
        .map(|m| MsgKey {
            topic: m.topic.clone(),
            seq: m.seq,
        })
        .collect()
}

fn payload(m: &Message) -> String {
    String::from_utf8_lossy(&m.payload).into_owned()
}

/// `momctl publish TOPIC MSG... --json`: the ack objects.
fn publish_json(m: &Momd, topic: &str, msgs: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["publish", topic, "-q", "--json"];
    args.extend_from_slice(msgs);
    json_lines(&m.ctl_ok(&args, None))
}

/// The `queues` count of a one-message publish.
fn queues_matched(m: &Momd, topic: &str, msg: &str) -> serde_json::Value {
    let acks = publish_json(m, topic, &[msg]);
    assert_eq!(acks.len(), 1, "one ack object for one message: {acks:?}");
    acks[0]["queues"].clone()
}

// ---------------------------------------------------------------------------------------
// 1

#[test]
fn durable_subscriber_gets_everything_published_while_away_in_order() {
    let m = Momd::start();
    let sub = |n: &str, timeout: &str| {
        m.ctl(
            &[
                "subscribe",
                "--durable",
                "billing",
                "orders.*.created",
                "-n",
                n,
                "--timeout",
                timeout,
            ],
            None,
        )
    };
    // The first run creates and binds the queue; nothing is there yet.
    let out = sub("1", "300ms");
    assert_eq!(out.code, 3, "first run on an empty queue: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let info = m.queue_info("billing");
    assert_eq!(
        info["bindings"],
        serde_json::json!(["orders.*.created"]),
        "{info}"
    );

    // While it is away: 1000 matching messages, and some that do not match.
    let input = numbered_lines("order-", 1, 1000);
    m.ctl_ok(&["publish", "orders.eu.created", "-q"], Some(&input));
    m.ctl_ok(
        &["publish", "orders.eu.shipped", "-q"],
        Some(&numbered_lines("shipped-", 1, 10)),
    );
    assert_eq!(queues_matched(&m, "orders.eu.refunded", "r"), 0);
    let info = m.queue_info("billing");
    assert_eq!(info["ready"], 1000, "{info}");

    // Back again: exactly those 1000, in publish order.
    let out = sub("1000", "30s");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout == input,
        "the durable subscriber did not get the 1000 lines in order; got {} lines, first {:?}",
        lines(&out.stdout).len(),
        lines(&out.stdout).into_iter().take(5).collect::<Vec<_>>()
    );
    // All acked: nothing comes again.
    let out = sub("1", "300ms");
    assert_eq!(
        out.code, 3,
        "a message came again after it was acked: {out:?}"
    );
    let info = m.queue_info("billing");
    assert_eq!(info["ready"], 0, "{info}");
    assert_eq!(info["unacked"], 0, "{info}");
    assert_eq!(info["acked"], 1000, "{info}");
}

// ---------------------------------------------------------------------------------------
// 2

#[test]
fn two_recv_follow_workers_get_disjoint_sets_whose_union_is_everything() {
    let m = Momd::start();
    m.ctl_ok(&["queue", "create", "work", "--bind", "jobs.*"], None);
    let w1 = Collector::new(m.spawn_ctl(&["recv", "work", "--follow"]));
    let w2 = Collector::new(m.spawn_ctl(&["recv", "work", "--follow"]));
    wait_for(
        Duration::from_secs(10),
        "two consumers on queue work",
        || (m.queue_info("work")["consumers"] == 2).then_some(()),
    );

    let n = 5000usize;
    m.ctl_ok(
        &["publish", "jobs.a", "-q"],
        Some(&numbered_lines("job-", 1, n as u64)),
    );
    wait_for(
        Duration::from_secs(30),
        "5000 lines from the workers",
        || (w1.count() + w2.count() >= n).then_some(()),
    );
    // Every message written was acked after the write; wait for the last acks.
    wait_for(Duration::from_secs(10), "all 5000 acked", || {
        let i = m.queue_info("work");
        (i["acked"] == n as u64).then_some(())
    });
    let (l1, e1) = w1.kill();
    let (l2, e2) = w2.kill();
    eprintln!("worker 1 got {}, worker 2 got {}", l1.len(), l2.len());

    let s1: HashSet<&str> = l1.iter().map(String::as_str).collect();
    let s2: HashSet<&str> = l2.iter().map(String::as_str).collect();
    assert_eq!(
        s1.len(),
        l1.len(),
        "worker 1 got a message twice; stderr {e1}"
    );
    assert_eq!(
        s2.len(),
        l2.len(),
        "worker 2 got a message twice; stderr {e2}"
    );
    let both: Vec<_> = s1.intersection(&s2).take(5).collect();
    assert!(both.is_empty(), "both workers got {both:?}");
    let all: HashSet<String> = (1..=n).map(|i| format!("job-{i}")).collect();
    let union: HashSet<String> = s1.union(&s2).map(|s| s.to_string()).collect();
    assert_eq!(union, all, "the union is not everything published");
    assert!(
        !l1.is_empty() && !l2.is_empty(),
        "one worker got nothing: {} / {}",
        l1.len(),
        l2.len()
    );
    let info = m.queue_info("work");
    assert_eq!(info["ready"], 0, "{info}");
    assert_eq!(info["unacked"], 0, "{info}");
}

// ---------------------------------------------------------------------------------------
// 3

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_not_acked_in_time_comes_back_with_its_delivery_count() {
    let m = Momd::start();
    block_in_place(|| {
        m.ctl_ok(
            &[
                "queue",
                "create",
                "slowq",
                "--bind",
                "slow.>",
                "--ack-wait",
                "1s",
            ],
            None,
        );
        m.ctl_ok(&["publish", "slow.x", "job-1", "-q"], None);
    });
    let c = m.client("slow-worker").await;
    let first = c
        .fetch("slowq", 10, Duration::from_secs(5))
        .await
        .expect("fetch");
    let t0 = Instant::now();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].delivery, Some(1), "{:?}", first[0]);
    assert_eq!(payload(&first[0]), "job-1");

    // Leased: not delivered again before its deadline.
    let none = c
        .fetch("slowq", 10, Duration::from_millis(300))
        .await
        .expect("fetch");
    assert!(none.is_empty(), "redelivered before ack-wait: {none:?}");

    // Not acked: it comes back after the ack wait, the same message, delivery 2.
    let again = c
        .fetch("slowq", 10, Duration::from_secs(5))
        .await
        .expect("fetch");
    let waited = t0.elapsed();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(
        (&again[0].topic, again[0].seq),
        (&first[0].topic, first[0].seq)
    );
    assert_eq!(payload(&again[0]), "job-1");
    assert_eq!(again[0].delivery, Some(2), "{:?}", again[0]);
    assert!(
        waited >= Duration::from_millis(800),
        "redelivered after {waited:?}, before the 1 s ack wait"
    );

    // Still not acked: momctl receives it the third time, and says so in --json.
    let out = block_in_place(|| m.ctl(&["recv", "slowq", "--json", "--timeout", "5s"], None));
    assert_eq!(out.code, 0, "{out:?}");
    let got = json_lines(&out.stdout);
    assert_eq!(got.len(), 1, "{out:?}");
    assert_eq!(got[0]["seq"], first[0].seq);
    assert_eq!(got[0]["topic"], "slow.x");
    assert_eq!(got[0]["payload"], "job-1");
    assert_eq!(got[0]["delivery"], 3, "{}", got[0]);

    // momctl acked it: it does not come back, even after another ack wait.
    let none = c
        .fetch("slowq", 10, Duration::from_millis(1500))
        .await
        .expect("fetch");
    assert!(none.is_empty(), "delivered again after its ack: {none:?}");
    let info = c.queue_info("slowq").await.expect("queue info");
    assert_eq!(
        (info.ready, info.unacked, info.acked),
        (0, 0, 1),
        "{info:?}"
    );
    assert!(info.redelivered >= 2, "{info:?}");
}

// ---------------------------------------------------------------------------------------
// 4

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_max_deliver_the_message_is_in_the_dead_letter_topic_with_headers() {
    let m = Momd::start();
    block_in_place(|| {
        m.ctl_ok(
            &[
                "queue",
                "create",
                "poison",
                "--bind",
                "poison.*",
                "--max-deliver",
                "3",
            ],
            None,
        );
        m.ctl_ok(
            &["publish", "poison.job", "bad-1", "-H", "trace=abc", "-q"],
            None,
        );
    });

    // A: three deliveries taken with `recv --no-ack` and failed with `momctl nack`; the
    // third used up max_deliver.
    for d in 1..=3 {
        let out = block_in_place(|| {
            m.ctl(
                &["recv", "poison", "--no-ack", "--json", "--timeout", "5s"],
                None,
            )
        });
        assert_eq!(out.code, 0, "delivery {d}: {out:?}");
        let got = json_lines(&out.stdout);
        assert_eq!(got.len(), 1, "{out:?}");
        assert_eq!(got[0]["payload"], "bad-1");
        assert_eq!(got[0]["delivery"], d, "{}", got[0]);
        let id = got[0]["delivery_id"]
            .as_str()
            .expect("delivery_id")
            .to_string();
        block_in_place(|| m.ctl_ok(&["nack", "poison", &id], None));
    }
    let dlq = |n: &str| {
        let out = block_in_place(|| {
            m.ctl(
                &[
                    "subscribe",
                    "$dlq.poison",
                    "--from",
                    "all",
                    "--json",
                    "-n",
                    n,
                    "--timeout",
                    "5s",
                ],
                None,
            )
        });
        assert_eq!(out.code, 0, "reading $dlq.poison: {out:?}");
        json_lines(&out.stdout)
    };
    let dead = dlq("1");
    let h = &dead[0]["headers"];
    eprintln!("dead letter A: {}", dead[0]);
    assert_eq!(dead[0]["topic"], "$dlq.poison");
    assert_eq!(dead[0]["payload"], "bad-1");
    assert_eq!(h["dlq-queue"], "poison", "{h}");
    assert_eq!(h["dlq-topic"], "poison.job", "{h}");
    assert_eq!(h["dlq-seq"], "1", "{h}");
    assert_eq!(h["dlq-deliveries"], "3", "{h}");
    assert!(
        h["dlq-reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{h}"
    );
    assert_eq!(h["trace"], "abc", "the original headers are kept: {h}");
    // It is gone from the queue.
    let out = block_in_place(|| m.ctl(&["recv", "poison", "--timeout", "500ms"], None));
    assert_eq!(
        out.code, 3,
        "dead-lettered message still in the queue: {out:?}"
    );

    // B: the same through the client library with nacks.
    block_in_place(|| m.ctl_ok(&["publish", "poison.job", "bad-2", "-q"], None));
    let c = m.client("nacker").await;
    for d in 1..=3u32 {
        let got = c
            .fetch("poison", 10, Duration::from_secs(5))
            .await
            .expect("fetch");
        assert_eq!(got.len(), 1, "delivery {d}: {got:?}");
        assert_eq!(payload(&got[0]), "bad-2");
        assert_eq!(got[0].delivery, Some(d), "{:?}", got[0]);
        c.nack("poison", keys(&got), Duration::ZERO)
            .await
            .expect("nack");
    }
    let dead = dlq("2");
    assert_eq!(dead.len(), 2);
    let h = &dead[1]["headers"];
    eprintln!("dead letter B: {}", dead[1]);
    assert_eq!(dead[1]["payload"], "bad-2");
    assert_eq!(h["dlq-queue"], "poison", "{h}");
    assert_eq!(h["dlq-topic"], "poison.job", "{h}");
    assert_eq!(h["dlq-seq"], "2", "{h}");
    assert_eq!(h["dlq-deliveries"], "3", "{h}");
    assert!(
        h["dlq-reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{h}"
    );
    let none = c
        .fetch("poison", 10, Duration::from_millis(300))
        .await
        .expect("fetch");
    assert!(none.is_empty(), "{none:?}");
    let info = c.queue_info("poison").await.expect("queue info");
    assert_eq!(info.dead_lettered, 2, "{info:?}");
    assert_eq!((info.ready, info.unacked), (0, 0), "{info:?}");
}

// ---------------------------------------------------------------------------------------
// 5

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_consume_loop_loses_nothing_and_redelivers_only_unacked() {
    const N: u64 = 2000;
    const QUEUE: &str = "crashq";
    let mut m = Momd::start();
    block_in_place(|| {
        m.ctl_ok(
            &[
                "queue",
                "create",
                QUEUE,
                "--bind",
                "crash.q",
                "--ack-wait",
                "3s",
            ],
            None,
        );
        m.ctl_ok(
            &["publish", "crash.q", "-q"],
            Some(&numbered_lines("c-", 1, N)),
        );
    });
    let c = m.client("crash-consumer").await;
    // Every seq delivered before the crash, and those whose ack was confirmed.
    let mut delivered: HashSet<u64> = HashSet::new();
    let mut acked: HashSet<u64> = HashSet::new();

    // Pull and ack, waiting for each ack's reply.
    while acked.len() < 600 {
        let msgs = c
            .fetch(QUEUE, 50, Duration::from_secs(5))
            .await
            .expect("fetch");
        assert!(!msgs.is_empty(), "fetch returned nothing");
        for msg in &msgs {
            assert!(delivered.insert(msg.seq), "seq {} delivered twice", msg.seq);
            assert_eq!(msg.delivery, Some(1), "{msg:?}");
            assert_eq!(payload(msg), format!("c-{}", msg.seq));
        }
        c.ack(QUEUE, keys(&msgs)).await.expect("ack");
        acked.extend(msgs.iter().map(|m| m.seq));
    }

    // A consumer with credit: take what it pushes, ack none of it…
    let mut stream = c.consume(QUEUE, 200).await.expect("consume");
    let mut held: Vec<Message> = Vec::new();
    while held.len() < 150 {
        let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("no delivery to the consumer within 10 s")
            .expect("consumer");
        for msg in &batch {
            assert!(delivered.insert(msg.seq), "seq {} delivered twice", msg.seq);
        }
        held.extend(batch);
    }
    // …except 50 of them, whose ack is sent but whose reply is not awaited: unknown outcome.
    let in_flight: Vec<u64> = held[..50].iter().map(|m| m.seq).collect();
    let msgs = keys(&held[..50]);
    let _pending = c
        .send(|id| {
            ClientFrame::Ack(Ack {
                id,
                queue: QUEUE.into(),
                msgs,
            })
        })
        .await
        .expect("send ack");

    block_in_place(|| m.kill9());
    drop(stream);
    drop(c);
    block_in_place(|| m.restart());

    // Drain everything that is left, acking as we go.
    let c = m.client("drainer").await;
    let mut drained: HashMap<u64, u32> = HashMap::new();
    let must: HashSet<u64> = (1..=N)
        .filter(|s| !acked.contains(s) && !in_flight.contains(s))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msgs = c
            .fetch(QUEUE, 500, Duration::from_millis(500))
            .await
            .expect("fetch after restart");
        for msg in &msgs {
            assert!(
                !acked.contains(&msg.seq),
                "seq {} was acked (ack confirmed) before kill -9 and is delivered again (delivery {:?})",
                msg.seq,
                msg.delivery
            );
            assert_eq!(payload(msg), format!("c-{}", msg.seq));
            let d = msg.delivery.unwrap_or(0);
            assert!(d >= 1, "{msg:?}");
            assert!(
                drained.insert(msg.seq, d).is_none(),
                "seq {} delivered twice while draining",
                msg.seq
            );
        }
        if !msgs.is_empty() {
            c.ack(QUEUE, keys(&msgs)).await.expect("ack");
        }
        if msgs.is_empty() && must.iter().all(|s| drained.contains_key(s)) {
            let info = c.queue_info(QUEUE).await.expect("queue info");
            if info.ready == 0 && info.unacked == 0 {
                break;
            }
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = must
                .iter()
                .filter(|s| !drained.contains_key(s))
                .take(10)
                .collect();
            let info = c.queue_info(QUEUE).await;
            panic!(
                "after kill -9, {} unacked messages were not delivered again within 20 s \
                 (e.g. seqs {missing:?}); queue info {info:?}",
                must.iter().filter(|s| !drained.contains_key(s)).count()
            );
        }
    }
    let held_counts: Vec<u32> = held[50..]
        .iter()
        .filter_map(|m| drained.get(&m.seq).copied())
        .collect();
    let in_flight_back = in_flight.iter().filter(|s| drained.contains_key(s)).count();
    eprintln!(
        "kill -9: {} acked, {} held unacked, {} acks in flight ({} of them came back); \
         {} drained; delivery counts of held messages after restart: min {:?} max {:?}",
        acked.len(),
        held.len() - 50,
        in_flight.len(),
        in_flight_back,
        drained.len(),
        held_counts.iter().min(),
        held_counts.iter().max()
    );
    let info = c.queue_info(QUEUE).await.expect("queue info");
    assert_eq!((info.ready, info.unacked), (0, 0), "{info:?}");
}

// ---------------------------------------------------------------------------------------
// 6

#[test]
fn queue_rm_and_recv_exit_codes() {
    let m = Momd::start();
    // recv on a missing queue: 6, at once.
    let t = Instant::now();
    let out = m.ctl(&["recv", "nosuch", "--timeout", "10s"], None);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(!out.stderr.is_empty(), "{out:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let out = m.ctl(&["queue", "rm", "nosuch"], None);
    assert_eq!(out.code, 6, "{out:?}");

    // recv on an empty queue with --timeout: 3, after the timeout.
    m.ctl_ok(&["queue", "create", "empty", "--bind", "empty.*"], None);
    let t = Instant::now();
    let out = m.ctl(&["recv", "empty", "--timeout", "500ms"], None);
    let took = t.elapsed();
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(10),
        "recv --timeout 500ms took {took:?}"
    );
    // An empty queue is removed without --force.
    let out = m.ctl(&["queue", "rm", "empty"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(m.ctl(&["queue", "info", "empty"], None).code, 6);

    // A non-empty one: 7, and it is still there with its messages.
    m.ctl_ok(&["queue", "create", "full", "--bind", "full.*"], None);
    m.ctl_ok(&["publish", "full.a", "x", "y", "z", "-q"], None);
    let out = m.ctl(&["queue", "rm", "full"], None);
    assert_eq!(out.code, 7, "{out:?}");
    assert!(!out.stderr.is_empty(), "{out:?}");
    assert_eq!(m.queue_info("full")["ready"], 3);
    // --force deletes it.
    let out = m.ctl(&["queue", "rm", "full", "--force"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(m.ctl(&["queue", "info", "full"], None).code, 6);
    assert_eq!(m.ctl(&["recv", "full", "--timeout", "500ms"], None).code, 6);
    let ls = json_lines(&m.ctl_ok(&["queue", "ls", "--json"], None));
    assert!(ls.iter().all(|q| q["name"] != "full"), "{ls:?}");
    // The topic's messages are not touched by removing a queue.
    assert_eq!(m.topic_info("full.a")["messages"], 3);
}

// ---------------------------------------------------------------------------------------
// 7

#[test]
fn request_reply_round_trip() {
    let m = Momd::start();
    let mut replier = Collector::new(m.spawn_ctl(&["reply", "svc.time", "--", "cat"]));
    // Until the replier watches, a request meets no responder; retry within a deadline.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = replier.try_status() {
            let (_, err) = replier.kill();
            panic!("`momctl reply svc.time -- cat` exited with {st}: {err}");
        }
        let out = m.ctl(&["request", "svc.time", "ping", "--timeout", "2s"], None);
        if out.code == 0 {
            assert_eq!(out.stdout_str().trim_end_matches('\n'), "ping", "{out:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reply from `momctl reply svc.time -- cat` within 15 s: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = m.ctl(&["request", "svc.time", "hello", "--timeout", "5s"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout_str().trim_end_matches('\n'), "hello", "{out:?}");

    // Concurrent requests each get their own answer (correlation).
    let addr = m.addr();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let msg = format!("question-{i}");
                let out = common::momctl(
                    &["-s", &addr, "request", "svc.time", &msg, "--timeout", "10s"],
                    None,
                    Duration::from_secs(30),
                );
                (msg, out)
            })
        })
        .collect();
    for t in threads {
        let (msg, out) = t.join().expect("request thread");
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.stdout_str().trim_end_matches('\n'), msg, "{out:?}");
    }
    let (_, err) = replier.kill();
    eprintln!("replier stderr: {err}");
}

#[test]
fn request_without_responder_fails_at_once_and_a_silent_one_times_out() {
    let m = Momd::start();
    let t = Instant::now();
    let out = m.ctl(&["request", "svc.nobody", "hi", "--timeout", "10s"], None);
    let took = t.elapsed();
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("no responders"), "{out:?}");
    assert!(
        took < Duration::from_secs(3),
        "no-responder error took {took:?} (timeout was 10 s)"
    );

    // A queue bound to the topic is a responder that may answer later: the request waits
    // and times out with exit 3.
    m.ctl_ok(&["queue", "create", "parked", "--bind", "svc.parked"], None);
    let t = Instant::now();
    let out = m.ctl(&["request", "svc.parked", "hi", "--timeout", "500ms"], None);
    let took = t.elapsed();
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        took >= Duration::from_millis(450),
        "timed out after {took:?}"
    );
    // The request is in the queue, with a reply-to and a correlation id.
    let out = m.ctl(&["recv", "parked", "--json", "--timeout", "5s"], None);
    assert_eq!(out.code, 0, "{out:?}");
    let got = json_lines(&out.stdout);
    assert_eq!(got[0]["payload"], "hi");
    assert!(got[0]["headers"]["reply-to"].is_string(), "{}", got[0]);
    assert!(
        got[0]["headers"]["correlation-id"].is_string(),
        "{}",
        got[0]
    );
}

// ---------------------------------------------------------------------------------------
// 8

#[test]
fn fan_out_each_of_three_queues_gets_every_message_stored_once() {
    let m = Momd::start();
    for (q, p) in [("fan1", "fan.x"), ("fan2", "fan.*"), ("fan3", "fan.>")] {
        m.ctl_ok(&["queue", "create", q, "--bind", p], None);
    }
    let n = 500u64;
    let input = numbered_lines("f-", 1, n);
    let acks = json_lines(&m.ctl_ok(&["publish", "fan.x", "-q", "--json"], Some(&input)));
    // One ack object per message.
    assert_eq!(acks.len() as u64, n);
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a["queues"], 3, "publish ack: {a}");
        assert_eq!(a["seq"], i as u64 + 1, "publish ack: {a}");
        assert_eq!(a["line"], i as u64 + 1, "publish ack: {a}");
    }
    // Stored once: the topic holds N messages, as many bytes as the same lines in a topic
    // that no queue is bound to.
    m.ctl_ok(&["publish", "plain.x", "-q"], Some(&input));
    let fan = m.topic_info("fan.x");
    let plain = m.topic_info("plain.x");
    assert_eq!(fan["messages"], n, "{fan}");
    assert_eq!(fan["bytes"], plain["bytes"], "{fan} vs {plain}");
    // No copy in another topic (the broker's own `$` topics aside).
    let topics = json_lines(&m.ctl_ok(&["topic", "ls", "--json"], None));
    let names: Vec<&str> = topics.iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(
        names
            .iter()
            .all(|t| t.starts_with('$') || *t == "fan.x" || *t == "plain.x"),
        "unexpected topics: {names:?}"
    );

    for q in ["fan1", "fan2", "fan3"] {
        assert_eq!(m.queue_info(q)["ready"], n, "{q}");
        let out = m.ctl(&["recv", q, "-n", "500", "--timeout", "20s"], None);
        assert_eq!(out.code, 0, "{q}: {out:?}");
        assert!(
            out.stdout == input,
            "{q} did not deliver the 500 lines in order"
        );
        let info = m.queue_info(q);
        assert_eq!(info["delivered"], n, "{info}");
        assert_eq!(info["acked"], n, "{info}");
        assert_eq!(info["ready"], 0, "{info}");
    }
    assert_eq!(m.topic_info("fan.x")["messages"], n);
}

// ---------------------------------------------------------------------------------------
// 9

#[test]
fn purge_unsubscribe_and_recv_bind() {
    let m = Momd::start();
    // recv --bind creates the queue.
    assert_eq!(m.ctl(&["queue", "info", "auto"], None).code, 6);
    let out = m.ctl(
        &["recv", "auto", "--bind", "auto.*", "--timeout", "300ms"],
        None,
    );
    assert_eq!(out.code, 3, "{out:?}");
    let info = m.queue_info("auto");
    assert_eq!(info["bindings"], serde_json::json!(["auto.*"]), "{info}");
    m.ctl_ok(&["publish", "auto.a", "one", "-q"], None);
    let out = m.ctl(
        &["recv", "auto", "--bind", "auto.*", "--timeout", "5s"],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout_str(), "one\n");

    // purge empties it.
    m.ctl_ok(
        &["publish", "auto.a", "-q"],
        Some(&numbered_lines("p-", 1, 100)),
    );
    assert_eq!(m.queue_info("auto")["ready"], 100);
    let purged: serde_json::Value =
        serde_json::from_slice(&m.ctl_ok(&["queue", "purge", "auto", "--json"], None))
            .expect("purge --json");
    assert_eq!(purged["ready"], 0, "{purged}");
    assert_eq!(m.queue_info("auto")["ready"], 0);
    let out = m.ctl(&["recv", "auto", "--timeout", "300ms"], None);
    assert_eq!(out.code, 3, "a purged message was delivered: {out:?}");
    // The queue still works after a purge.
    m.ctl_ok(&["publish", "auto.a", "after", "-q"], None);
    let out = m.ctl(&["recv", "auto", "--timeout", "5s"], None);
    assert_eq!(out.stdout_str(), "after\n", "{out:?}");

    // unsubscribe one pattern, then all.
    m.ctl_ok(
        &["queue", "create", "dur", "--bind", "u.a", "--bind", "u.b"],
        None,
    );
    assert_eq!(queues_matched(&m, "u.a", "a1"), 1);
    assert_eq!(queues_matched(&m, "u.b", "b1"), 1);
    let out = m.ctl(&["recv", "dur", "-n", "2", "--timeout", "5s"], None);
    assert_eq!(out.code, 0, "{out:?}");
    let mut got = lines(&out.stdout);
    got.sort();
    assert_eq!(got, ["a1", "b1"]);

    m.ctl_ok(&["unsubscribe", "dur", "u.a"], None);
    assert_eq!(m.queue_info("dur")["bindings"], serde_json::json!(["u.b"]));
    assert_eq!(queues_matched(&m, "u.a", "a2"), 0);
    assert_eq!(queues_matched(&m, "u.b", "b2"), 1);
    let out = m.ctl(&["recv", "dur", "-n", "2", "--timeout", "500ms"], None);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(lines(&out.stdout), ["b2"], "{out:?}");

    m.ctl_ok(&["unsubscribe", "dur"], None);
    assert_eq!(m.queue_info("dur")["bindings"], serde_json::json!([]));
    assert_eq!(queues_matched(&m, "u.b", "b3"), 0);
    let out = m.ctl(&["recv", "dur", "--timeout", "300ms"], None);
    assert_eq!(out.code, 3, "a message came after unsubscribe: {out:?}");
}

// ---------------------------------------------------------------------------------------
// 10

#[test]
fn queue_state_survives_a_clean_restart() {
    let mut m = Momd::start();
    m.ctl_ok(
        &[
            "queue",
            "create",
            "keep",
            "--bind",
            "keep.*",
            "--bind",
            "other.x",
            "--max-deliver",
            "7",
            "--ack-wait",
            "45s",
        ],
        None,
    );
    let input = numbered_lines("k-", 1, 300);
    m.ctl_ok(&["publish", "keep.a", "-q"], Some(&input));
    let out = m.ctl(&["recv", "keep", "-n", "100", "--timeout", "10s"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(lines(&out.stdout), lines(&numbered_lines("k-", 1, 100)));
    let before = m.queue_info("keep");
    assert_eq!(before["ready"], 200, "{before}");

    let st = m.sigterm(Duration::from_secs(20));
    assert_eq!(
        st.code(),
        Some(0),
        "momd exit on SIGTERM: {st}; {}",
        m.stderr()
    );
    m.restart();

    let after = m.queue_info("keep");
    for k in [
        "name",
        "owner",
        "created",
        "bindings",
        "max_deliver",
        "ack_wait_ms",
        "ready",
        "unacked",
    ] {
        assert_eq!(
            before[k], after[k],
            "queue info {k} changed: {before} -> {after}"
        );
    }
    assert_eq!(after["consumers"], 0, "{after}");
    // The rest, in order, and the bindings still route.
    let out = m.ctl(&["recv", "keep", "-n", "200", "--timeout", "10s"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(lines(&out.stdout), lines(&numbered_lines("k-", 101, 300)));
    assert_eq!(queues_matched(&m, "other.x", "o"), 1);
    assert_eq!(queues_matched(&m, "keep.b", "b"), 1);
    let out = m.ctl(&["recv", "keep", "-n", "2", "--timeout", "5s"], None);
    assert_eq!(out.code, 0, "{out:?}");
    let mut got = lines(&out.stdout);
    got.sort();
    assert_eq!(got, ["b", "o"]);
}

/// Wait until a request on `topic` is answered (the replier watches), returning its output.
fn first_answer(m: &Momd, topic: &str) -> CtlOut {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = m.ctl(&["request", topic, "ping", "--timeout", "2s"], None);
        if out.code != 6 {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "no responder on {topic}: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn big_requests_and_failing_repliers() {
    let m = Momd::start();
    let cat = Collector::new(m.spawn_ctl(&["reply", "svc.cat", "--", "cat"]));
    let fail =
        Collector::new(m.spawn_ctl(&["reply", "svc.fail", "--", "sh", "-c", "echo oops; exit 3"]));
    assert_eq!(first_answer(&m, "svc.cat").code, 0);
    // A request bigger than a pipe's buffer goes through a command that echoes it.
    let big = vec![b'a'; 300_000];
    let out = m.ctl(&["request", "svc.cat", "--timeout", "10s"], Some(&big));
    assert_eq!(out.code, 0, "{:?}", out.stderr);
    assert_eq!(out.stdout.len(), big.len() + 1, "the payload and a newline");
    // ...and the replier still answers afterwards.
    let out = m.ctl(&["request", "svc.cat", "small", "--timeout", "5s"], None);
    assert_eq!(out.stdout_str().trim(), "small");
    // A replier whose command fails makes the request fail, after showing its output.
    let out = first_answer(&m, "svc.fail");
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout_str().trim(), "oops");
    assert!(out.stderr.contains("status 3"), "{out:?}");
    cat.kill();
    fail.kill();
}

#[test]
fn a_worker_ends_when_its_queue_is_deleted() {
    let m = Momd::start();
    m.ctl_ok(&["queue", "create", "gone", "--bind", "gone.>"], None);
    let mut worker = m.spawn_ctl(&["recv", "gone", "--follow"]);
    wait_for(Duration::from_secs(10), "the worker to attach", || {
        (m.queue_info("gone")["consumers"] == 1).then_some(())
    });
    m.ctl_ok(&["queue", "rm", "gone"], None);
    let status = wait_timeout(&mut worker, Duration::from_secs(10)).expect("the worker ends");
    assert_eq!(
        status.code(),
        Some(6),
        "exit 6: the queue is not found any more"
    );
}

#[test]
fn a_late_ack_still_settles_the_message() {
    let m = Momd::start();
    m.ctl_ok(
        &[
            "queue",
            "create",
            "slow",
            "--bind",
            "slow.t",
            "--ack-wait",
            "300ms",
        ],
        None,
    );
    m.ctl_ok(&["publish", "slow.t", "job", "-q"], None);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c = m.client("late-acker").await;
        let got = c
            .fetch("slow", 1, Duration::from_secs(5))
            .await
            .expect("fetch");
        assert_eq!(got.len(), 1);
        // Past the deadline: the message waits to be delivered again...
        tokio::time::sleep(Duration::from_millis(800)).await;
        let keys = vec![mom_proto::MsgKey {
            topic: "slow.t".into(),
            seq: got[0].seq,
        }];
        // ...but the ack settles it: it is never delivered again.
        c.ack("slow", keys).await.expect("ack");
        let again = c
            .fetch("slow", 1, Duration::from_millis(500))
            .await
            .expect("fetch");
        assert!(again.is_empty(), "delivered after its ack: {again:?}");
    });
    let q = m.queue_info("slow");
    assert_eq!(
        (q["acked"].as_u64(), q["ready"].as_u64()),
        (Some(1), Some(0))
    );
}
