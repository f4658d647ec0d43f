//! What is acknowledged survives: a clean restart, `kill -9` under concurrent publishers
//! (momctl processes and the pipelined client library), and the data dir lock.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{json_lines, numbered_lines, rand_u64, wait_for, wait_timeout, Momd};

#[test]
fn replay_after_clean_restart() {
    let mut m = Momd::start();
    let input = numbered_lines("msg-", 1, 2000);
    m.ctl_ok(&["publish", "keep.me", "-q", "-H", "h=1"], Some(&input));
    m.ctl_ok(&["topic", "set", "keep.me", "--max-bytes", "1MiB"], None);
    let before = m.topic_info("keep.me");
    assert_eq!(before["messages"], 2000);

    let st = m.sigterm(Duration::from_secs(20));
    assert_eq!(
        st.code(),
        Some(0),
        "momd did not exit 0 on SIGTERM: {st}; stderr:\n{}",
        m.stderr()
    );
    m.restart();

    let after = m.topic_info("keep.me");
    for k in [
        "messages",
        "bytes",
        "first_seq",
        "last_seq",
        "last_time",
        "created",
        "limits",
    ] {
        assert_eq!(
            before[k], after[k],
            "topic info {k} changed across the restart"
        );
    }
    let out = m.ctl_ok(
        &[
            "subscribe",
            "keep.me",
            "--from",
            "all",
            "-n",
            "2000",
            "--timeout",
            "30s",
        ],
        None,
    );
    assert!(
        out == input,
        "replay after restart differs from what was published"
    );
    // Sequences go on where they stopped.
    m.ctl_ok(&["publish", "keep.me", "next", "-q"], None);
    assert_eq!(m.topic_info("keep.me")["last_seq"], 2001);
}

/// Lines that a publisher process had acknowledged (momctl exited 0 for their chunk), and
/// the lines of the chunk in flight when it stopped (outcome unknown).
#[derive(Default)]
struct PubLog {
    acked: Vec<String>,
    unknown: Vec<String>,
}

#[test]
fn acked_publish_survives_kill_9() {
    let mut m = Momd::start();
    let publishers = 4;
    let chunk = 1000u64;
    let stop = Arc::new(AtomicBool::new(false));
    let acked_chunks = Arc::new(Mutex::new(0u64));
    let logs: Vec<Arc<Mutex<PubLog>>> = (0..publishers).map(|_| Arc::default()).collect();
    let addr = m.addr();

    let threads: Vec<_> = (0..publishers)
        .map(|p| {
            let (stop, acked_chunks, log, addr) = (
                stop.clone(),
                acked_chunks.clone(),
                logs[p].clone(),
                addr.clone(),
            );
            std::thread::spawn(move || {
                let mut next = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    let lines: Vec<String> = (next..next + chunk)
                        .map(|i| format!("p{p}-{i:07}"))
                        .collect();
                    let mut input = lines.join("\n").into_bytes();
                    input.push(b'\n');
                    let out = common::momctl(
                        &["-s", &addr, "publish", "crash", "-q"],
                        Some(&input),
                        Duration::from_secs(60),
                    );
                    let mut log = log.lock().unwrap();
                    if out.code == 0 {
                        log.acked.extend(lines);
                        *acked_chunks.lock().unwrap() += 1;
                        next += chunk;
                    } else {
                        // The broker is gone: this chunk may be stored in whole, in part or
                        // not at all. Stop here.
                        log.unknown = lines;
                        return out;
                    }
                }
                common::CtlOut {
                    code: 0,
                    stdout: Vec::new(),
                    stderr: String::new(),
                }
            })
        })
        .collect();

    // Let some chunks be acknowledged, then kill at a random moment mid-stream.
    wait_for(Duration::from_secs(60), "acknowledged chunks", || {
        (*acked_chunks.lock().unwrap() >= publishers as u64).then_some(())
    });
    std::thread::sleep(Duration::from_millis(rand_u64() % 400));
    m.kill9();
    let at_kill = *acked_chunks.lock().unwrap();
    let outs: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("publisher thread"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    for out in &outs {
        assert_ne!(
            out.code, 0,
            "a publisher survived the broker's death: {out:?}"
        );
    }

    m.restart();
    let stored = m.read_all_lines("crash");
    let info = m.topic_info("crash");
    assert_eq!(info["messages"], stored.len() as u64);
    assert_eq!(
        info["last_seq"],
        stored.len() as u64,
        "seqs are not contiguous from 1: {info}"
    );

    let mut seen = HashSet::new();
    for l in &stored {
        assert!(seen.insert(l.as_str()), "{l} is stored twice");
    }
    // Per publisher, seq order is line order.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for l in &stored {
        let (p, n) = l.split_once('-').expect("publisher prefix");
        let n: u64 = n.parse().expect("line number");
        if let Some(prev) = last.insert(p, n) {
            assert!(n > prev, "{p}: line {n} stored after line {prev}");
        }
    }
    let mut acked_total = 0;
    for log in &logs {
        let log = log.lock().unwrap();
        acked_total += log.acked.len();
        for l in &log.acked {
            assert!(
                seen.contains(l.as_str()),
                "acknowledged line {l} is lost after kill -9"
            );
        }
        // Nothing was stored that no one published.
        let known: HashSet<&str> = log
            .acked
            .iter()
            .chain(&log.unknown)
            .map(String::as_str)
            .collect();
        let prefix = log
            .acked
            .first()
            .or(log.unknown.first())
            .map(|l| l.split_once('-').unwrap().0.to_string());
        if let Some(prefix) = prefix {
            for l in stored
                .iter()
                .filter(|l| l.starts_with(&format!("{prefix}-")))
            {
                assert!(
                    known.contains(l.as_str()),
                    "{l} is stored but was never published"
                );
            }
        }
    }
    eprintln!(
        "kill -9 with {at_kill} chunks acked; {acked_total} lines acked, {} stored",
        stored.len()
    );
    assert!(acked_total as u64 >= at_kill * chunk);
    assert!(stored.len() >= acked_total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_pipelined_publish_survives_kill_9() {
    let mut m = Momd::start();
    let client = m.client("pipelined").await;
    let mut publisher = client.publisher("lib.crash", 8);
    // The seqs of every acknowledged message.
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let batch = 200u64;

    let acked2 = acked.clone();
    let task = tokio::spawn(async move {
        let record = |n: usize, ok: mom_proto::PublishOk| {
            assert_eq!(ok.seqs.len(), n, "publish_ok has one seq per message");
            acked2.lock().unwrap().extend(ok.seqs);
        };
        let mut next = 0u64;
        loop {
            let msgs: Vec<_> = (next..next + batch)
                .map(|i| {
                    momctl::client::message(format!("m{i}").into_bytes(), Default::default(), None)
                })
                .collect();
            next += batch;
            match publisher.send(msgs).await {
                Ok(Some((n, ok))) => record(n, ok),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        // Collect the acks that arrived before the connection was lost.
        loop {
            match publisher.next_ack().await {
                Ok(Some((n, ok))) => record(n, ok),
                Ok(None) => break,
                Err(_) => {}
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 5 * batch as usize {
        assert!(Instant::now() < deadline, "no acks");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(rand_u64() % 300)).await;
    m.kill9();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("publisher did not notice the broker's death")
        .expect("publisher task");
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());

    tokio::task::block_in_place(|| m.restart());
    let stored = tokio::task::block_in_place(|| m.read_all_json("lib.crash"));
    // One connection, one topic: what is stored is m0, m1, … at seqs 1, 2, … — in order,
    // with no gap and no duplicate.
    for (i, v) in stored.iter().enumerate() {
        assert_eq!(v["seq"], i as u64 + 1, "seqs are not contiguous");
        assert_eq!(
            v["payload"],
            format!("m{i}"),
            "order broken at seq {}",
            i + 1
        );
    }
    eprintln!(
        "kill -9: {} messages acked, {} stored",
        acked.len(),
        stored.len()
    );
    // And every acknowledged seq is among them.
    let mut uniq = HashSet::new();
    for seq in &acked {
        assert!(uniq.insert(*seq), "seq {seq} acknowledged twice");
        assert!(
            *seq >= 1 && *seq <= stored.len() as u64,
            "acknowledged seq {seq} is lost after kill -9 ({} stored)",
            stored.len()
        );
    }
}

#[test]
fn second_momd_on_same_dir_is_refused() {
    let m = Momd::start();
    let dir = m.data_dir();
    let port = common::free_port();
    let mut child = std::process::Command::new(common::momd_bin())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn second momd");
    let st = wait_timeout(&mut child, Duration::from_secs(10));
    let Some(st) = st else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("a second momd on the same data dir kept running");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!st.success(), "second momd exited 0: {err}");
    assert!(
        err.contains(&dir.display().to_string()),
        "stderr does not name the dir: {err}"
    );
    assert!(
        err.contains(&m.pid().to_string()),
        "stderr does not name the first momd's PID {}: {err}",
        m.pid()
    );
    // The first one is unharmed.
    m.assert_serves();
    assert!(json_lines(&m.ctl_ok(&["topic", "ls", "--json"], None))
        .iter()
        .all(|t| t["name"].is_string()));
}

/// A delivery's count is on disk before the delivery leaves (DESIGN.md, Queue): a crash
/// right after it can never hand the message out again as a lower delivery, so
/// `max_deliver` holds across kill -9.
#[test]
fn delivery_counts_survive_kill_9_and_max_deliver_holds() {
    let mut m = Momd::start();
    m.ctl_ok(
        &[
            "queue",
            "create",
            "dc",
            "--bind",
            "dc.*",
            "--max-deliver",
            "3",
        ],
        None,
    );
    m.ctl_ok(&["publish", "dc.a", "poison", "-q"], None);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for expected in 1..=3u32 {
        let got = rt.block_on(async {
            let c = m.client("dc-test").await;
            c.fetch("dc", 1, Duration::from_secs(5))
                .await
                .expect("fetch")
        });
        assert_eq!(got.len(), 1, "delivery {expected}");
        assert_eq!(got[0].delivery, Some(expected), "{:?}", got[0]);
        // Killed the moment the delivery arrived: nothing more was flushed after it.
        m.kill9();
        m.restart();
    }
    // Three deliveries used up max_deliver 3: the message is a dead letter now.
    let again = rt.block_on(async {
        let c = m.client("dc-test").await;
        c.fetch("dc", 1, Duration::from_millis(500))
            .await
            .expect("fetch")
    });
    assert!(again.is_empty(), "delivered a 4th time: {again:?}");
    let dlq = m.topic_info("$dlq.dc");
    assert_eq!(dlq["messages"], 1, "{dlq}");
}

/// Requests (messages with `reply-to`) are acknowledged before any flush (README, "Request
/// and reply"). Killed right after, momd gets back from the segment files what its index
/// had not written: messages, counters and msg ids, and says so.
#[test]
fn requests_acked_before_the_index_was_written_survive_kill_9() {
    let mut m = Momd::start();
    m.ctl_ok(&["publish", "fresh", "first", "-q"], None);
    let mut stored: Vec<String> = vec!["first".into()];
    // The kill lands before the next index flush but for a few ms in 250 (more often on
    // a loaded machine): try again then.
    let mut reindexed = false;
    for round in 0..12 {
        let lines_in: Vec<String> = (1..=300).map(|i| format!("r{round}-{i:03}")).collect();
        let input: Vec<u8> = lines_in
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect();
        // Ids r<round>-1 … r<round>-300, one publish request per message.
        let prefix = format!("r{round}");
        m.ctl_ok(
            &[
                "publish",
                "fresh",
                "-q",
                "--id",
                &prefix,
                "--batch",
                "1",
                "-H",
                "reply-to=$inbox.0.test",
            ],
            Some(&input),
        );
        stored.extend(lines_in);
        m.kill9();
        m.restart();
        assert_eq!(m.read_all_lines("fresh"), stored, "after round {round}");
        let info = m.topic_info("fresh");
        assert_eq!(info["last_seq"], stored.len(), "{info}");
        // Their msg ids came back too: publishing one again is reported as a duplicate.
        let id = format!("r{round}-150");
        let out = m.ctl(&["publish", "fresh", "again", "--id", &id, "--json"], None);
        let ack: serde_json::Value = serde_json::from_slice(&out.stdout).expect("publish --json");
        assert_eq!(ack["duplicate"], true, "{ack}");
        if m.stderr()
            .contains("indexed records written after the index was last flushed")
        {
            reindexed = true;
            break;
        }
    }
    assert!(
        reindexed,
        "no restart had records to index again:\n{}",
        m.stderr()
    );
}
