//! momctl across a broker that is killed with `kill -9` and started again on the same data
//! dir and port: subscribers, queue consumers and workers reconnect and resume (nothing
//! twice, nothing lost) or, told not to, exit 8; a piped publish with `--reconnect` ends
//! with every line stored once, and without it exits 8 saying what was acknowledged.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, ChildStdin, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{lines, numbered_lines, wait_for, wait_timeout, Collector, Momd};

fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    match wait_timeout(child, timeout) {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {timeout:?}");
        }
    }
}

/// Connected clients named `name` that have at least one watch (subscribe, queue consumer).
fn watching_clients(m: &Momd, name: &str) -> usize {
    m.stats()["clients"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["name"] == name && c["watches"].as_u64().unwrap_or(0) >= 1)
                .count()
        })
        .unwrap_or(0)
}

fn clients_named(m: &Momd, name: &str) -> usize {
    m.stats()["clients"]
        .as_array()
        .map(|cs| cs.iter().filter(|c| c["name"] == name).count())
        .unwrap_or(0)
}

fn expect_numbers(got: &[String], from: u64, to: u64, what: &str) {
    let want: Vec<String> = (from..=to).map(|i| i.to_string()).collect();
    if got != want {
        let mut seen = HashSet::new();
        let dups: Vec<&String> = got.iter().filter(|l| !seen.insert(*l)).take(5).collect();
        let set: HashSet<&String> = got.iter().collect();
        let missing: Vec<&String> = want.iter().filter(|w| !set.contains(w)).take(5).collect();
        panic!(
            "{what}: {} lines instead of {}..={to}; repeated {dups:?}, missing {missing:?}, first {:?}",
            got.len(),
            from,
            got.iter().take(5).collect::<Vec<_>>()
        );
    }
}

/// Feeds `1\n2\n…` into a child's stdin from a thread, `pause` between lines; `written`
/// counts the lines written so far. Stops at `to` (then closes stdin) or at a write error.
fn feed(
    mut stdin: ChildStdin,
    to: u64,
    pause: Duration,
    written: Arc<AtomicU64>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for i in 1..=to {
            if writeln!(stdin, "{i}").and_then(|_| stdin.flush()).is_err() {
                return;
            }
            written.store(i, Ordering::SeqCst);
            std::thread::sleep(pause);
        }
        // stdin closes here: the publisher's input ends.
    })
}

/// Messages stored in `topic` (0 while it does not exist yet).
fn stored_count(m: &Momd, topic: &str) -> u64 {
    let out = m.ctl(&["topic", "info", topic, "--json"], None);
    if out.code != 0 {
        return 0;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["messages"].as_u64())
        .unwrap_or(0)
}

/// The number of acknowledged messages in a publish failure: `A of S lines acknowledged`
/// or `(N messages acknowledged)`.
fn acknowledged_count(stderr: &str) -> Option<u64> {
    let before = &stderr[..stderr.find(" acknowledged")?];
    let words: Vec<&str> = before.split_whitespace().collect();
    let num = |w: &str| w.trim_start_matches('(').parse::<u64>().ok();
    if let Some(i) = words.iter().rposition(|w| *w == "of") {
        if i + 3 >= words.len() {
            return num(words.get(i.checked_sub(1)?)?);
        }
    }
    num(words.get(words.len().checked_sub(2)?)?)
}

// ---------------------------------------------------------------------------------------
// 1

#[test]
fn recv_follow_and_durable_subscribe_keep_up_with_ten_thousand_one_message_publishes() {
    let mut m = Momd::start();
    let n: u64 = 10_000;
    m.ctl_ok(&["queue", "create", "followq", "--bind", "x"], None);
    // recv --follow told not to reconnect; the durable subscriber reconnects (the default).
    let recv = Collector::new(m.spawn_ctl(&["recv", "followq", "--follow", "--no-reconnect"]));
    let durable = Collector::new(m.spawn_ctl(&["subscribe", "--durable", "dur", "x"]));
    wait_for(Duration::from_secs(15), "both consumers attached", || {
        (m.ctl(&["queue", "info", "dur"], None).code == 0
            && m.queue_info("followq")["consumers"] == 1
            && m.queue_info("dur")["consumers"] == 1)
            .then_some(())
    });

    // One message per publish frame, from a pipe.
    let out = m.ctl(
        &["publish", "x", "--batch", "1", "-q"],
        Some(&numbered_lines("", 1, n)),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(m.topic_info("x")["messages"], n);
    wait_for(
        Duration::from_secs(90),
        "10,000 lines at both consumers",
        || (recv.count() >= n as usize && durable.count() >= n as usize).then_some(()),
    );
    wait_for(Duration::from_secs(10), "all acked in both queues", || {
        (m.queue_info("followq")["acked"] == n && m.queue_info("dur")["acked"] == n).then_some(())
    });
    expect_numbers(&recv.lines(), 1, n, "recv --follow");
    expect_numbers(&durable.lines(), 1, n, "subscribe --durable");

    // The broker dies: --no-reconnect exits 8; the default keeps running and reconnects.
    m.kill9();
    let mut recv = recv;
    let st = wait_exit(
        &mut recv.child,
        Duration::from_secs(15),
        "recv --follow --no-reconnect",
    );
    let (_, recv_err) = recv.kill();
    assert_eq!(
        st.code(),
        Some(8),
        "recv --follow --no-reconnect after kill -9: {st}; stderr {recv_err}"
    );
    let mut durable = durable;
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        durable.try_status().is_none(),
        "subscribe --durable exited when the broker died instead of reconnecting"
    );
    m.restart();
    m.ctl_ok(&["publish", "x", "10001", "-q"], None);
    wait_for(
        Duration::from_secs(30),
        "the message after the restart",
        || (durable.count() > n as usize).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (got, err) = durable.kill();
    expect_numbers(
        &got,
        1,
        n + 1,
        &format!("subscribe --durable across the restart (stderr {err})"),
    );
}

#[test]
fn recv_follow_reconnects_by_default_and_durable_subscribe_no_reconnect_exits_8() {
    let mut m = Momd::start();
    m.ctl_ok(&["queue", "create", "rq", "--bind", "y"], None);
    let recv = Collector::new(m.spawn_ctl(&["recv", "rq", "--follow"]));
    let mut durable =
        Collector::new(m.spawn_ctl(&["subscribe", "--durable", "dq", "y", "--no-reconnect"]));
    wait_for(Duration::from_secs(15), "both consumers attached", || {
        (m.ctl(&["queue", "info", "dq"], None).code == 0
            && m.queue_info("rq")["consumers"] == 1
            && m.queue_info("dq")["consumers"] == 1)
            .then_some(())
    });
    m.ctl_ok(&["publish", "y", "-q"], Some(&numbered_lines("", 1, 100)));
    wait_for(Duration::from_secs(30), "100 lines at both", || {
        (recv.count() >= 100 && durable.count() >= 100).then_some(())
    });
    wait_for(Duration::from_secs(10), "all acked", || {
        (m.queue_info("rq")["acked"] == 100 && m.queue_info("dq")["acked"] == 100).then_some(())
    });
    m.kill9();
    let st = wait_exit(
        &mut durable.child,
        Duration::from_secs(15),
        "subscribe --durable --no-reconnect",
    );
    let (got, err) = durable.kill();
    assert_eq!(st.code(), Some(8), "{st}; stderr {err}");
    expect_numbers(&got, 1, 100, "subscribe --durable --no-reconnect");

    m.restart();
    // Published right away: the consumer may not be back yet; it still gets them.
    m.ctl_ok(&["publish", "y", "-q"], Some(&numbered_lines("", 101, 150)));
    wait_for(
        Duration::from_secs(30),
        "150 lines at recv --follow",
        || (recv.count() >= 150).then_some(()),
    );
    wait_for(Duration::from_secs(10), "150 acked", || {
        (m.queue_info("rq")["acked"] == 150).then_some(())
    });
    let (got, err) = recv.kill();
    expect_numbers(
        &got,
        1,
        150,
        &format!("recv --follow across the restart (stderr {err})"),
    );
}

// ---------------------------------------------------------------------------------------
// 5, 6

#[test]
fn piped_publish_with_reconnect_survives_broker_kill_9_every_line_stored_once() {
    let mut m = Momd::start();
    let total: u64 = 400;
    let mut child = m.spawn_ctl(&["publish", "r.t", "--reconnect", "--batch", "1", "-q"]);
    let written = Arc::new(AtomicU64::new(0));
    let feeder = feed(
        child.stdin.take().expect("stdin"),
        total,
        Duration::from_millis(4),
        written.clone(),
    );
    let err_reader = {
        let e = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut { e }, &mut s);
            s
        })
    };
    // Kill while lines are flowing, some stored already.
    wait_for(Duration::from_secs(30), "100 lines stored", || {
        (stored_count(&m, "r.t") >= 100).then_some(())
    });
    m.kill9();
    let at_kill = written.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(600));
    m.restart();
    feeder.join().expect("feeder");
    let st = wait_exit(&mut child, Duration::from_secs(60), "publish --reconnect");
    let stderr = err_reader.join().expect("stderr reader");
    eprintln!("killed at line {at_kill}; stderr:\n{stderr}");
    assert!(
        at_kill < total,
        "the broker was killed after the input ended"
    );
    assert_eq!(
        st.code(),
        Some(0),
        "publish --reconnect: {st}; stderr {stderr}"
    );
    assert!(
        stderr.contains("reconnect"),
        "stderr does not say it reconnected: {stderr}"
    );
    // Counts: what was sent again, and how much of that was stored already.
    if stderr.contains("sent again") {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("sent again") && l.chars().any(|c| c.is_ascii_digit())),
            "{stderr}"
        );
    }
    let info = m.topic_info("r.t");
    assert_eq!(info["messages"], total, "every line stored once: {info}");
    let mut stored: Vec<u64> = m
        .read_all_lines("r.t")
        .iter()
        .map(|l| l.parse().expect("a number"))
        .collect();
    stored.sort_unstable();
    assert_eq!(
        stored,
        (1..=total).collect::<Vec<_>>(),
        "lines stored are not 1..={total} once each"
    );
}

#[test]
fn piped_publish_without_reconnect_exits_8_naming_acknowledged_and_unknown_lines() {
    let mut m = Momd::start();
    let mut child = m.spawn_ctl(&["publish", "nr.t", "--batch", "1", "-q"]);
    let written = Arc::new(AtomicU64::new(0));
    let feeder = feed(
        child.stdin.take().expect("stdin"),
        100_000,
        Duration::from_millis(3),
        written.clone(),
    );
    let err_reader = {
        let e = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut { e }, &mut s);
            s
        })
    };
    wait_for(Duration::from_secs(30), "50 lines stored", || {
        (stored_count(&m, "nr.t") >= 50).then_some(())
    });
    m.kill9();
    let st = wait_exit(
        &mut child,
        Duration::from_secs(15),
        "publish without --reconnect",
    );
    // The feeder stops at the first write error once momctl is gone.
    feeder.join().expect("feeder");
    let stderr = err_reader.join().expect("stderr reader");
    eprintln!("stderr:\n{stderr}");
    assert_eq!(st.code(), Some(8), "{st}; stderr {stderr}");
    assert!(stderr.contains("acknowledged"), "{stderr}");
    assert!(
        stderr.contains("without an answer")
            || stderr.contains("nothing is waiting for an answer")
            || stderr.contains("unknown"),
        "stderr does not say which lines are unknown: {stderr}"
    );
    // "A of S lines acknowledged" (or "(N messages acknowledged)").
    let acked = acknowledged_count(&stderr)
        .unwrap_or_else(|| panic!("no count of acknowledged lines in: {stderr}"));
    assert!(
        acked >= 50,
        "at least the 50 seen stored were acknowledged: {acked}; {stderr}"
    );

    // Everything acknowledged is there after the restart, in order, as a prefix of the input.
    m.restart();
    let stored = m.read_all_lines("nr.t");
    assert!(
        stored.len() as u64 >= acked,
        "{} stored, {acked} acknowledged",
        stored.len()
    );
    expect_numbers(
        &stored,
        1,
        stored.len() as u64,
        "lines stored before the kill",
    );
}

// ---------------------------------------------------------------------------------------
// 7

#[test]
fn subscribe_across_a_broker_restart_prints_every_message_once_in_order() {
    let mut m = Momd::start();
    let sub = Collector::new(m.spawn_ctl(&["subscribe", "s.t"]));
    let mut quitter = Collector::new(m.spawn_ctl(&["subscribe", "s.t", "--no-reconnect"]));
    wait_for(Duration::from_secs(15), "two watches", || {
        (watching_clients(&m, "momctl subscribe s.t") == 2).then_some(())
    });
    m.ctl_ok(&["publish", "s.t", "-q"], Some(&numbered_lines("", 1, 200)));
    wait_for(Duration::from_secs(30), "200 lines", || {
        (sub.count() >= 200 && quitter.count() >= 200).then_some(())
    });
    m.kill9();
    let st = wait_exit(
        &mut quitter.child,
        Duration::from_secs(15),
        "subscribe --no-reconnect",
    );
    let (q_lines, q_err) = quitter.kill();
    assert_eq!(
        st.code(),
        Some(8),
        "subscribe --no-reconnect: {st}; stderr {q_err}"
    );
    expect_numbers(&q_lines, 1, 200, "subscribe --no-reconnect");

    m.restart();
    // Published at once, before the subscriber is necessarily back: it resumes after the
    // last message it printed.
    m.ctl_ok(
        &["publish", "s.t", "-q"],
        Some(&numbered_lines("", 201, 300)),
    );
    wait_for(Duration::from_secs(30), "300 lines", || {
        (sub.count() >= 300).then_some(())
    });
    wait_for(Duration::from_secs(10), "the subscriber back", || {
        (watching_clients(&m, "momctl subscribe s.t") == 1).then_some(())
    });
    m.ctl_ok(
        &["publish", "s.t", "-q"],
        Some(&numbered_lines("", 301, 400)),
    );
    wait_for(Duration::from_secs(30), "400 lines", || {
        (sub.count() >= 400).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (got, err) = sub.kill();
    expect_numbers(
        &got,
        1,
        400,
        &format!("subscribe across the restart (stderr {err})"),
    );
}

#[test]
fn exec_worker_carries_on_after_a_broker_restart() {
    let mut m = Momd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    m.ctl_ok(&["queue", "create", "wq", "--bind", "w.*"], None);
    let done = dir.path().join("done");
    let script = format!("cat >> '{}'; echo >> '{}'", done.display(), done.display());
    let w = Collector::new(m.spawn_ctl(&["recv", "wq", "--exec", "--", "sh", "-c", &script]));
    let done_lines = || lines(&std::fs::read(&done).unwrap_or_default());
    wait_for(Duration::from_secs(15), "the worker connected", || {
        (clients_named(&m, "momctl recv wq") == 1).then_some(())
    });
    m.ctl_ok(&["publish", "w.a", "-q"], Some(&numbered_lines("", 1, 10)));
    wait_for(Duration::from_secs(30), "10 jobs done", || {
        (done_lines().len() >= 10).then_some(())
    });
    wait_for(Duration::from_secs(10), "10 acked", || {
        (m.queue_info("wq")["acked"] == 10).then_some(())
    });
    m.kill9();
    std::thread::sleep(Duration::from_millis(300));
    m.restart();
    m.ctl_ok(&["publish", "w.a", "-q"], Some(&numbered_lines("", 11, 20)));
    wait_for(Duration::from_secs(30), "20 jobs done", || {
        (done_lines().len() >= 20).then_some(())
    });
    wait_for(Duration::from_secs(10), "20 acked", || {
        (m.queue_info("wq")["acked"] == 20).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (_, err) = w.kill();
    let mut got: Vec<u64> = done_lines()
        .iter()
        .map(|l| l.parse().expect("number"))
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=20).collect::<Vec<_>>(),
        "jobs done across the restart; stderr {err}"
    );
}

#[test]
fn reconnect_for_gives_up_with_exit_8_when_the_broker_stays_down() {
    let mut m = Momd::start();
    let mut sub = Collector::new(m.spawn_ctl(&["subscribe", "gone.t", "--reconnect-for", "1s"]));
    wait_for(Duration::from_secs(15), "the watch", || {
        (watching_clients(&m, "momctl subscribe gone.t") == 1).then_some(())
    });
    m.kill9();
    let st = wait_exit(
        &mut sub.child,
        Duration::from_secs(20),
        "subscribe --reconnect-for 1s",
    );
    let (_, err) = sub.kill();
    assert_eq!(st.code(), Some(8), "{st}; stderr {err}");
    assert!(
        err.contains("reconnecting"),
        "it tried to reconnect first: {err}"
    );
    assert!(err.contains("gave up"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Found in review: reconnecting must not outlive what the user asked for.

#[test]
fn timeout_bounds_reconnecting_and_a_worker_stops_on_sigterm_while_reconnecting() {
    let mut m = Momd::start();
    m.ctl_ok(&["queue", "create", "tk", "--bind", "tk.*"], None);
    let mut sub = m.spawn_ctl(&["subscribe", "hx.*", "-n", "5", "--timeout", "3s"]);
    let mut worker = m.spawn_ctl(&["recv", "tk", "--exec", "--", "cat"]);
    wait_for(Duration::from_secs(10), "both to connect", || {
        (clients_named(&m, "momctl recv tk") == 1
            && watching_clients(&m, "momctl subscribe hx.*") == 1)
            .then_some(())
    });
    m.kill9();
    let st = wait_exit(&mut sub, Duration::from_secs(15), "subscribe --timeout 3s");
    assert_eq!(st.code(), Some(3), "timed out while reconnecting: exit 3");
    let pid = worker.id();
    std::thread::sleep(Duration::from_millis(500));
    let st = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill -TERM");
    assert!(st.success());
    let st = wait_exit(
        &mut worker,
        Duration::from_secs(10),
        "recv --exec after SIGTERM",
    );
    assert_eq!(
        st.code(),
        Some(8),
        "stopped while reconnecting: connection lost"
    );
}

#[test]
fn subscribe_prints_a_topic_removed_and_created_again_from_its_start() {
    let mut m = Momd::start();
    let sub = Collector::new(m.spawn_ctl(&["subscribe", "u.*", "-v"]));
    wait_for(Duration::from_secs(10), "the watch", || {
        (watching_clients(&m, "momctl subscribe u.*") == 1).then_some(())
    });
    m.ctl_ok(&["publish", "u.x", "x1", "x2", "x3", "-q"], None);
    m.ctl_ok(&["topic", "rm", "u.x"], None);
    m.ctl_ok(&["publish", "u.x", "y1", "y2", "y3", "y4", "-q"], None);
    wait_for(Duration::from_secs(10), "7 lines", || {
        (sub.count() >= 7).then_some(())
    });
    // And across a restart: removed and created again while the subscriber was away.
    m.kill9();
    m.restart();
    m.ctl_ok(&["topic", "rm", "u.x"], None);
    m.ctl_ok(&["publish", "u.x", "z1", "z2", "-q"], None);
    wait_for(Duration::from_secs(20), "9 lines", || {
        (sub.count() >= 9).then_some(())
    });
    // Removed while the subscriber was away, and created again only once it watches
    // again: it resumed with the topic absent, so the new topic's seqs are not skipped.
    m.kill9();
    m.restart();
    m.ctl_ok(&["topic", "rm", "u.x"], None);
    wait_for(Duration::from_secs(20), "the watch again", || {
        (watching_clients(&m, "momctl subscribe u.*") == 1).then_some(())
    });
    m.ctl_ok(&["publish", "u.x", "w1", "-q"], None);
    wait_for(Duration::from_secs(20), "10 lines", || {
        (sub.count() >= 10).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let (got, err) = sub.kill();
    let want: Vec<String> = ["x1", "x2", "x3", "y1", "y2", "y3", "y4", "z1", "z2", "w1"]
        .iter()
        .map(|p| format!("u.x {p}"))
        .collect();
    assert_eq!(got, want, "stderr: {err}");
}
