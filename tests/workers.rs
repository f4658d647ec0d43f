//! Workers on queues, through the real momctl: `recv --exec` pools sharing jobs, a worker
//! killed mid-job, failing jobs going to the dead letters and back with `queue redrive`, the
//! job's environment, `recv --follow` into a pipe nobody reads, `recv --no-ack` settled
//! later with `ack`/`nack`, and repliers sharing requests.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use common::{json_lines, lines, numbered_lines, wait_for, wait_timeout, Collector, Momd};

/// SIGTERM a process we started, by its PID.
fn sigterm(pid: u32) {
    let st = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("running kill -TERM");
    assert!(st.success(), "kill -TERM {pid} failed");
}

/// SIGKILL a process by its PID (one we started, or a child of one we started); it may
/// be gone already.
fn sigkill(pid: u32) {
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status();
}

/// The PIDs of every live descendant of `pid` (from /proc/*/stat).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // pid (comm) state ppid …; comm may hold spaces and parens: split after the last ')'.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let mut f = rest.split_whitespace();
            let _state = f.next();
            if let Some(pp) = f.next().and_then(|s| s.parse::<u32>().ok()) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

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

/// Lines of a file (empty if it does not exist yet).
fn file_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Connected clients named `name` (`momctl stats --json` → clients[].name).
fn clients_named(m: &Momd, name: &str) -> usize {
    m.stats()["clients"]
        .as_array()
        .map(|cs| cs.iter().filter(|c| c["name"] == name).count())
        .unwrap_or(0)
}

fn queue_create(m: &Momd, args: &[&str]) {
    let mut a = vec!["queue", "create"];
    a.extend_from_slice(args);
    m.ctl_ok(&a, None);
}

// ---------------------------------------------------------------------------------------

#[test]
fn three_exec_workers_share_thirty_jobs_exactly_once() {
    let m = Momd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    queue_create(&m, &["jobs", "--bind", "jobs.*"]);

    // Each worker appends the payloads of its jobs to a file of its own (one job at a time
    // per worker, so no two writers share a file), and takes a while over each.
    let mut workers: Vec<(Collector, std::path::PathBuf)> = Vec::new();
    for w in 1..=3 {
        let file = dir.path().join(format!("worker-{w}"));
        let script = format!(
            "p=$(cat); printf '%s\\n' \"$p\" >> '{}'; sleep 0.2",
            file.display()
        );
        let c = m.spawn_ctl(&["recv", "jobs", "--exec", "--", "sh", "-c", &script]);
        workers.push((Collector::new(c), file));
    }
    // Each names itself after its command.
    wait_for(
        Duration::from_secs(15),
        "three `momctl recv jobs` clients",
        || (clients_named(&m, "momctl recv jobs") == 3).then_some(()),
    );

    m.ctl_ok(
        &["publish", "jobs.build", "-q"],
        Some(&numbered_lines("job-", 1, 30)),
    );
    wait_for(Duration::from_secs(60), "30 jobs acked", || {
        let i = m.queue_info("jobs");
        (i["acked"] == 30 && i["unacked"] == 0).then_some(())
    });

    // SIGTERM: each worker finishes what runs and exits 0.
    let mut per_worker: Vec<Vec<String>> = Vec::new();
    for (mut c, file) in workers {
        sigterm(c.child.id());
        let st = wait_exit(
            &mut c.child,
            Duration::from_secs(15),
            "recv --exec after SIGTERM",
        );
        let (_, err) = c.kill();
        assert_eq!(
            st.code(),
            Some(0),
            "worker exit after SIGTERM: {st}; stderr {err}"
        );
        per_worker.push(file_lines(&file));
    }
    let counts: Vec<usize> = per_worker.iter().map(Vec::len).collect();
    eprintln!("jobs per worker: {counts:?}");
    let all: Vec<&String> = per_worker.iter().flatten().collect();
    let distinct: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        30,
        "jobs run (with repeats): {counts:?} {per_worker:?}"
    );
    assert_eq!(distinct.len(), 30, "a job ran twice: {per_worker:?}");
    let want: HashSet<String> = (1..=30).map(|i| format!("job-{i}")).collect();
    assert_eq!(
        distinct.into_iter().cloned().collect::<HashSet<_>>(),
        want,
        "the jobs run are not the ones published"
    );
    assert!(
        counts.iter().all(|&c| c > 0),
        "a worker ran no job: {counts:?}"
    );
    let i = m.queue_info("jobs");
    assert_eq!(i["ready"], 0, "{i}");
    assert_eq!(
        i["redelivered"], 0,
        "no job should have been delivered twice: {i}"
    );
}

#[test]
fn killed_worker_mid_job_loses_nothing_the_job_is_completed_by_another() {
    let m = Momd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    queue_create(&m, &["slowjobs", "--bind", "slow.*", "--ack-wait", "5s"]);

    // A job: note that it started, take a while, then record it as done with its delivery
    // count.
    let spawn_worker = |name: &str| {
        let started = dir.path().join(format!("started-{name}"));
        let done = dir.path().join(format!("done-{name}"));
        let script = format!(
            "p=$(cat); echo \"$p\" >> '{}'; sleep 1; echo \"$p $MOM_DELIVERY\" >> '{}'",
            started.display(),
            done.display()
        );
        let c = m.spawn_ctl(&["recv", "slowjobs", "--exec", "--", "sh", "-c", &script]);
        (Collector::new(c), started, done)
    };
    let (victim, victim_started, victim_done) = spawn_worker("victim");
    wait_for(
        Duration::from_secs(15),
        "the first worker connected",
        || (clients_named(&m, "momctl recv slowjobs") == 1).then_some(()),
    );
    m.ctl_ok(
        &["publish", "slow.x", "-q"],
        Some(&numbered_lines("task-", 1, 4)),
    );
    // The victim is in the middle of its first job: kill it, and the job it runs (as a
    // machine that dies would), so nothing of that job gets done there.
    let mid_job = wait_for(Duration::from_secs(15), "the victim started a job", || {
        file_lines(&victim_started).first().cloned()
    });
    let pid = victim.child.id();
    let kids = descendants(pid);
    sigkill(pid);
    for k in kids {
        sigkill(k);
    }
    let (_, victim_err) = victim.kill();
    assert!(
        file_lines(&victim_done).is_empty(),
        "the killed worker finished a job: {:?}",
        file_lines(&victim_done)
    );

    // A second worker takes over everything, the interrupted job included.
    let (rescuer, _rescuer_started, rescuer_done) = spawn_worker("rescuer");
    wait_for(
        Duration::from_secs(30),
        "all 4 tasks done by the rescuer",
        || (file_lines(&rescuer_done).len() >= 4).then_some(()),
    );
    wait_for(Duration::from_secs(10), "4 acks", || {
        let i = m.queue_info("slowjobs");
        (i["acked"] == 4).then_some(())
    });
    let (_, rescuer_err) = rescuer.kill();
    let done = file_lines(&rescuer_done);
    let by_payload: HashMap<String, String> = done
        .iter()
        .map(|l| {
            let (p, d) = l.rsplit_once(' ').expect("PAYLOAD DELIVERY");
            (p.to_string(), d.to_string())
        })
        .collect();
    assert_eq!(
        done.len(),
        4,
        "the rescuer ran jobs twice or missed some: {done:?}; stderr {rescuer_err}"
    );
    let want: HashSet<String> = (1..=4).map(|i| format!("task-{i}")).collect();
    assert_eq!(
        by_payload.keys().cloned().collect::<HashSet<_>>(),
        want,
        "{done:?}"
    );
    assert_eq!(
        by_payload[&mid_job], "2",
        "the interrupted job {mid_job} should come to the rescuer as its 2nd delivery: {done:?}; victim stderr {victim_err}"
    );
    let i = m.queue_info("slowjobs");
    assert_eq!(i["ready"], 0, "{i}");
    assert_eq!(i["unacked"], 0, "{i}");
    assert_eq!(i["dead_lettered"], 0, "{i}");
}

#[test]
fn failing_job_is_nacked_redelivered_then_dead_lettered_and_redrive_brings_it_back() {
    let m = Momd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    queue_create(&m, &["flaky", "--bind", "flaky.*", "--max-deliver", "3"]);
    m.ctl_ok(&["publish", "flaky.t", "poison", "-q"], None);

    // Fails every time: nacked, delivered again, three times in all, then dead-lettered.
    let tries = dir.path().join("tries");
    let script = format!(
        "p=$(cat); echo \"$p $MOM_DELIVERY\" >> '{}'; exit 1",
        tries.display()
    );
    let mut w =
        Collector::new(m.spawn_ctl(&["recv", "flaky", "--exec", "--", "sh", "-c", &script]));
    let info = wait_for(Duration::from_secs(30), "the message dead-lettered", || {
        let i = m.queue_info("flaky");
        (i["dead_lettered"] == 1).then_some(i)
    });
    assert_eq!(info["ready"], 0, "{info}");
    assert_eq!(info["unacked"], 0, "{info}");
    assert_eq!(info["acked"], 0, "{info}");
    sigterm(w.child.id());
    let st = wait_exit(
        &mut w.child,
        Duration::from_secs(15),
        "recv --exec after SIGTERM",
    );
    let (_, err) = w.kill();
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(
        file_lines(&tries),
        vec!["poison 1", "poison 2", "poison 3"],
        "the job should run once per delivery, 3 deliveries; stderr {err}"
    );
    assert!(err.contains("nacked"), "a failed job is reported: {err}");

    let dlq = m.topic_info("$dlq.flaky");
    assert_eq!(dlq["messages"], 1, "{dlq}");
    let dead = json_lines(&m.ctl_ok(
        &[
            "subscribe",
            "$dlq.flaky",
            "--from",
            "all",
            "-n",
            "1",
            "--timeout",
            "10s",
            "--json",
        ],
        None,
    ));
    assert_eq!(dead[0]["payload"], "poison", "{dead:?}");

    // Redrive: back in the queue, delivered again with a fresh count, and this time it
    // succeeds.
    let out = m.ctl(&["queue", "redrive", "flaky"], None);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains('1'), "redrive says how many: {out:?}");
    let i = m.queue_info("flaky");
    assert_eq!(i["ready"], 1, "{i}");
    let ok = dir.path().join("ok");
    let script = format!("p=$(cat); echo \"$p $MOM_DELIVERY\" >> '{}'", ok.display());
    let out = m.ctl(
        &[
            "recv",
            "flaky",
            "--exec",
            "-n",
            "1",
            "--timeout",
            "20s",
            "--",
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(file_lines(&ok), vec!["poison 1"]);
    let i = m.queue_info("flaky");
    assert_eq!(i["acked"], 1, "{i}");
    assert_eq!(i["ready"], 0, "{i}");
}

#[test]
fn exec_job_gets_payload_on_stdin_and_message_in_its_environment() {
    let m = Momd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    queue_create(&m, &["envq", "--bind", "env.*"]);
    m.ctl_ok(
        &[
            "publish",
            "env.a",
            "first",
            "-q",
            "-H",
            "trace-id=abc",
            "-H",
            "a.b=x y",
            "--id",
            "msg-7",
        ],
        None,
    );
    let out_file = dir.path().join("env");
    let payload_file = dir.path().join("payload");
    let script = format!(
        "cat > '{}'; env | grep '^MOM_' | sort > '{}'",
        payload_file.display(),
        out_file.display()
    );
    let out = m.ctl(
        &[
            "recv",
            "envq",
            "--exec",
            "-n",
            "1",
            "--timeout",
            "20s",
            "--",
            "sh",
            "-c",
            &script,
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read(&payload_file).expect("payload file"),
        b"first"
    );
    let env: HashMap<String, String> = file_lines(&out_file)
        .into_iter()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    assert_eq!(
        env.get("MOM_TOPIC").map(String::as_str),
        Some("env.a"),
        "{env:?}"
    );
    assert_eq!(env.get("MOM_SEQ").map(String::as_str), Some("1"), "{env:?}");
    assert_eq!(
        env.get("MOM_DELIVERY").map(String::as_str),
        Some("1"),
        "{env:?}"
    );
    assert_eq!(
        env.get("MOM_DELIVERY_ID").map(String::as_str),
        Some("env.a:1"),
        "{env:?}"
    );
    assert_eq!(
        env.get("MOM_MSG_ID").map(String::as_str),
        Some("msg-7"),
        "{env:?}"
    );
    assert_eq!(
        env.get("MOM_H_TRACE_ID").map(String::as_str),
        Some("abc"),
        "{env:?}"
    );
    assert_eq!(
        env.get("MOM_H_A_B").map(String::as_str),
        Some("x y"),
        "{env:?}"
    );
    let time: u64 = env
        .get("MOM_TIME")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("MOM_TIME is not a number: {env:?}"));
    let msgs = m.read_all_json("env.a");
    assert_eq!(msgs[0]["time"], time, "MOM_TIME is the message's time");
    assert_eq!(m.queue_info("envq")["acked"], 1);
}

#[test]
fn recv_follow_into_a_pipe_acks_only_what_the_reader_took_out() {
    let m = Momd::start();
    queue_create(&m, &["piped", "--bind", "pipe.*"]);
    m.ctl_ok(
        &["publish", "pipe.t", "-q"],
        Some(&numbered_lines("m-", 1, 20)),
    );
    // Nobody reads the pipe yet.
    let mut child = m.spawn_ctl(&["recv", "piped", "--follow", "--prefetch", "2"]);
    wait_for(Duration::from_secs(15), "the worker took messages", || {
        let i = m.queue_info("piped");
        (i["delivered"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(700));
    let i = m.queue_info("piped");
    assert_eq!(i["acked"], 0, "acked although nobody read the pipe: {i}");
    assert!(
        i["ready"].as_u64().unwrap_or(0) >= 17,
        "a pipe nobody reads swallowed the queue (prefetch 2): {i}"
    );

    // Read everything: now it is acked, in order, once each.
    let out = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut got = Vec::new();
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            got.push(l);
            if got.len() == 20 {
                break;
            }
        }
        got
    });
    wait_for(Duration::from_secs(30), "20 acks", || {
        (m.queue_info("piped")["acked"] == 20).then_some(())
    });
    let got = reader.join().expect("reader");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got, lines(&numbered_lines("m-", 1, 20)));
    let i = m.queue_info("piped");
    assert_eq!(i["redelivered"], 0, "{i}");
}

#[test]
fn recv_no_ack_prints_delivery_ids_settled_later_by_ack_and_nack() {
    let m = Momd::start();
    queue_create(&m, &["later", "--bind", "later.*"]);
    m.ctl_ok(&["publish", "later.t", "a", "b", "c", "-q"], None);

    let out = m.ctl(
        &[
            "recv",
            "later",
            "-n",
            "3",
            "--timeout",
            "10s",
            "--no-ack",
            "--json",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let msgs = json_lines(&out.stdout);
    let ids: Vec<&str> = msgs
        .iter()
        .map(|v| v["delivery_id"].as_str().expect("delivery_id"))
        .collect();
    assert_eq!(ids, vec!["later.t:1", "later.t:2", "later.t:3"], "{msgs:?}");
    let i = m.queue_info("later");
    assert_eq!(i["unacked"], 3, "nothing acked by --no-ack: {i}");
    assert_eq!(i["acked"], 0, "{i}");

    // Two acked as arguments, one from stdin: wait, nack the third.
    m.ctl_ok(&["ack", "later", "later.t:1"], None);
    m.ctl_ok(&["ack", "later"], Some(b"later.t:2\n"));
    m.ctl_ok(&["nack", "later", "later.t:3", "--delay", "0s"], None);
    let i = m.queue_info("later");
    assert_eq!(i["acked"], 2, "{i}");
    let out = m.ctl(
        &["recv", "later", "-n", "1", "--timeout", "10s", "--json"],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let again = json_lines(&out.stdout);
    assert_eq!(again[0]["payload"], "c", "{again:?}");
    assert_eq!(again[0]["delivery"], 2, "{again:?}");
    let i = m.queue_info("later");
    assert_eq!(i["acked"], 3, "{i}");
    assert_eq!(i["ready"], 0, "{i}");
    assert_eq!(i["unacked"], 0, "{i}");
}

#[test]
fn unsettled_no_ack_delivery_comes_back_without_counting_as_a_failure() {
    let m = Momd::start();
    // One failed delivery would dead-letter it at once.
    queue_create(
        &m,
        &[
            "lease",
            "--bind",
            "lease.*",
            "--max-deliver",
            "1",
            "--ack-wait",
            "1s",
        ],
    );
    m.ctl_ok(&["publish", "lease.t", "keep-me", "-q"], None);
    let out = m.ctl(
        &[
            "recv",
            "lease",
            "-n",
            "1",
            "--timeout",
            "10s",
            "--no-ack",
            "--json",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    // Not settled by its deadline: delivered again, not dead-lettered.
    let t0 = Instant::now();
    let out = m.ctl(
        &["recv", "lease", "-n", "1", "--timeout", "15s", "--json"],
        None,
    );
    assert_eq!(
        out.code,
        0,
        "the lapsed delivery did not come back: {out:?}; {}",
        m.queue_info("lease")
    );
    let msgs = json_lines(&out.stdout);
    assert_eq!(msgs[0]["payload"], "keep-me", "{msgs:?}");
    eprintln!("came back after {:?}", t0.elapsed());
    let i = m.queue_info("lease");
    assert_eq!(i["dead_lettered"], 0, "{i}");
    assert_eq!(i["acked"], 1, "{i}");
}

// ---------------------------------------------------------------------------------------
// Request / reply

#[test]
fn two_repliers_share_a_hundred_requests_each_answered_once() {
    let m = Momd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut repliers = Vec::new();
    for r in ["r1", "r2"] {
        let log = dir.path().join(r);
        let script = format!(
            "p=$(cat); echo \"$p\" >> '{}'; printf '%s:%s' {r} \"$p\"",
            log.display()
        );
        repliers.push((
            Collector::new(m.spawn_ctl(&["reply", "svc.echo", "--", "sh", "-c", &script])),
            log,
        ));
    }
    wait_for(Duration::from_secs(15), "two repliers watching", || {
        let s = m.stats();
        let n = s["clients"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter(|c| {
                        c["name"] == "momctl reply svc.echo" && c["watches"].as_u64() >= Some(1)
                    })
                    .count()
            })
            .unwrap_or(0);
        (n == 2).then_some(())
    });

    let mut answered_by: HashMap<&str, usize> = HashMap::new();
    for i in 1..=100 {
        let req = format!("req-{i}");
        let out = m.ctl(&["request", "svc.echo", &req, "--timeout", "10s"], None);
        assert_eq!(out.code, 0, "request {i}: {out:?}");
        let reply = out.stdout_str();
        let (who, what) = reply
            .trim_end()
            .split_once(':')
            .unwrap_or_else(|| panic!("reply {reply:?}"));
        assert_eq!(what, req, "request {i} got another's reply");
        *answered_by
            .entry(if who == "r1" { "r1" } else { "r2" })
            .or_default() += 1;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut per: Vec<usize> = Vec::new();
    for (c, log) in repliers {
        let (_, err) = c.kill();
        let l = file_lines(&log);
        eprintln!("{} answered {}; stderr {err}", log.display(), l.len());
        per.push(l.len());
        seen.extend(l);
    }
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        seen.len(),
        100,
        "requests run by the repliers, repeats included: {per:?}"
    );
    assert_eq!(distinct.len(), 100, "a request was answered twice");
    assert!(
        per.iter().all(|&n| n > 0),
        "one replier answered nothing: {per:?} {answered_by:?}"
    );
}

#[test]
fn reply_all_makes_every_replier_answer_and_request_gathers_replies() {
    let m = Momd::start();
    let r1 = Collector::new(m.spawn_ctl(&[
        "reply",
        "svc.all",
        "--all",
        "--",
        "sh",
        "-c",
        "cat >/dev/null; printf one",
    ]));
    let r2 = Collector::new(m.spawn_ctl(&[
        "reply",
        "svc.all",
        "--all",
        "--",
        "sh",
        "-c",
        "cat >/dev/null; printf two",
    ]));
    wait_for(Duration::from_secs(15), "two repliers watching", || {
        let n = m.stats()["clients"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter(|c| {
                        c["name"] == "momctl reply svc.all" && c["watches"].as_u64() >= Some(1)
                    })
                    .count()
            })
            .unwrap_or(0);
        (n == 2).then_some(())
    });
    let out = m.ctl(
        &[
            "request",
            "svc.all",
            "x",
            "--replies",
            "2",
            "--timeout",
            "10s",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let got: HashSet<String> = lines(&out.stdout).into_iter().collect();
    assert_eq!(
        got,
        ["one", "two"].iter().map(|s| s.to_string()).collect(),
        "{out:?}"
    );

    // A third reply never comes: exit 3, with the two that came printed.
    let out = m.ctl(
        &[
            "request",
            "svc.all",
            "y",
            "--replies",
            "3",
            "--timeout",
            "1500ms",
        ],
        None,
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(lines(&out.stdout).len(), 2, "{out:?}");

    // --json: the reply as a message object.
    let out = m.ctl(
        &["request", "svc.all", "z", "--json", "--timeout", "10s"],
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let v = json_lines(&out.stdout);
    assert_eq!(v.len(), 1, "{out:?}");
    let p = v[0]["payload"].as_str().unwrap_or_default();
    assert!(p == "one" || p == "two", "{v:?}");
    assert!(
        v[0]["topic"]
            .as_str()
            .unwrap_or_default()
            .starts_with("$inbox."),
        "{v:?}"
    );
    assert!(v[0]["headers"].get("correlation-id").is_some(), "{v:?}");
    drop(r1);
    drop(r2);
}

// ---------------------------------------------------------------------------------------
// Found in review: what a worker must not do.

#[test]
fn exec_with_a_command_that_cannot_run_takes_nothing_and_exits_2() {
    let m = Momd::start();
    queue_create(&m, &["typo", "--bind", "typo.*"]);
    m.ctl_ok(
        &["publish", "typo.a", "-q"],
        Some(&numbered_lines("j", 1, 20)),
    );
    let out = m.ctl(
        &[
            "recv",
            "typo",
            "--exec",
            "--timeout",
            "3s",
            "--",
            "./no-such-script.sh",
        ],
        None,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no-such-script.sh"), "{out:?}");
    let q = m.queue_info("typo");
    assert_eq!(q["ready"], 20, "nothing taken: {q}");
    assert_eq!(q["delivered"], 0, "{q}");
    assert_eq!(q["dead_lettered"], 0, "{q}");
}

#[test]
fn exec_worker_stopped_by_sigterm_runs_no_new_job() {
    let m = Momd::start();
    queue_create(&m, &["stq", "--bind", "stq.*"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let script = format!(
        "cat >> {}; echo >> {}; sleep 2",
        out.display(),
        out.display()
    );
    let mut w = m.spawn_ctl(&["recv", "stq", "--exec", "--", "sh", "-c", &script]);
    wait_for(Duration::from_secs(10), "the worker to pull", || {
        m.stats()["clients"]
            .as_array()
            .expect("clients")
            .iter()
            .any(|c| c["name"] == "momctl recv stq")
            .then_some(())
    });
    m.ctl_ok(&["publish", "stq.a", "job1", "-q"], None);
    wait_for(Duration::from_secs(10), "job1 to start", || {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|s| s.contains("job1"))
    });
    sigterm(w.id());
    // While it finishes job1, a new job comes: it must not run here.
    m.ctl_ok(&["publish", "stq.a", "job2", "-q"], None);
    let st = wait_timeout(&mut w, Duration::from_secs(15)).expect("the worker stops");
    assert_eq!(
        st.code(),
        Some(0),
        "SIGTERM: finish the running job, exit 0"
    );
    let ran = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        ran.contains("job1") && !ran.contains("job2"),
        "ran: {ran:?}"
    );
    let q = m.queue_info("stq");
    assert_eq!(q["acked"], 1, "job1 acked: {q}");
    assert_eq!(q["ready"], 1, "job2 waits for another worker: {q}");
    // Given back unopened: its first delivery is still delivery 1.
    let got = json_lines(&m.ctl_ok(&["recv", "stq", "--json", "--timeout", "5s"], None));
    assert_eq!(got[0]["payload"], "job2");
    assert_eq!(got[0]["delivery"], 1, "{got:?}");
}

#[test]
fn a_pipe_reader_that_goes_away_gives_its_unread_messages_back_uncounted() {
    let m = Momd::start();
    queue_create(&m, &["gone", "--bind", "gone.*", "--max-deliver", "1"]);
    m.ctl_ok(
        &["publish", "gone.a", "-q"],
        Some(&numbered_lines("m", 1, 5)),
    );
    // `recv … | head -1`: head reads one line and goes.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -s {} recv gone --follow --prefetch 3 | head -1",
            common::momctl_bin().display(),
            m.addr()
        ))
        .output()
        .expect("run the pipeline");
    assert_eq!(lines(&out.stdout), vec!["m1"], "{out:?}");
    let q = m.queue_info("gone");
    assert_eq!(
        q["dead_lettered"], 0,
        "max-deliver 1 and nothing counted: {q}"
    );
    // head may have read more than the line it printed out of the pipe (those are acked:
    // the reader took them). When head is gone before momctl saw the pipe drain, momctl
    // cannot tell read from unread and gives everything back (at least once, never lost).
    // What it gave back is ready again, as a first delivery.
    let acked = q["acked"].as_u64().expect("acked");
    let ready = q["ready"].as_u64().expect("ready");
    assert!(acked <= 3, "{q}");
    assert_eq!(acked + ready, 5, "nothing lost, nothing still out: {q}");
    let n = ready.to_string();
    let got = json_lines(&m.ctl_ok(
        &["recv", "gone", "-n", &n, "--timeout", "5s", "--json"],
        None,
    ));
    assert_eq!(got.len() as u64, ready);
    assert!(got.iter().all(|v| v["delivery"] == 1), "{got:?}");
}

#[test]
fn recv_n_into_a_pipe_prints_and_acks_exactly_n() {
    let m = Momd::start();
    queue_create(&m, &["p5", "--bind", "p5.*"]);
    m.ctl_ok(&["publish", "p5.a", "-q"], Some(&numbered_lines("", 1, 6)));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -s {} recv p5 -n 5 --timeout 5s | cat",
            common::momctl_bin().display(),
            m.addr()
        ))
        .output()
        .expect("run the pipeline");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&out.stdout), vec!["1", "2", "3", "4", "5"]);
    let q = m.queue_info("p5");
    assert_eq!(q["acked"], 5, "{q}");
    assert_eq!(q["ready"], 1, "{q}");
    assert_eq!(q["unacked"], 0, "{q}");
}

#[test]
fn ack_of_a_delivery_the_queue_does_not_hold_exits_6() {
    let m = Momd::start();
    queue_create(&m, &["q3", "--bind", "q3.*"]);
    m.ctl_ok(&["publish", "q3.a", "x", "-q"], None);
    let out = m.ctl(&["ack", "q3", "q3.a:99"], None);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(out.stderr.contains("q3.a#99"), "{out:?}");
    // A real one, then the same again.
    let got = json_lines(&m.ctl_ok(&["recv", "q3", "--no-ack", "--json"], None));
    let id = got[0]["delivery_id"]
        .as_str()
        .expect("delivery_id")
        .to_string();
    m.ctl_ok(&["ack", "q3", &id], None);
    assert_eq!(m.ctl(&["ack", "q3", &id], None).code, 6);
    assert_eq!(m.ctl(&["nack", "q3", &id], None).code, 6);
}
