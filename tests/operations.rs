//! momd in operation: the systemd unit and sd_notify, JSON logs with connection spans,
//! Prometheus metrics, backup/restore and the data format. (Config, reload and drain are in
//! tests/service.rs.)

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{momd_bin, wait_for, Momd};

/// A momd started by hand, killed (by its PID) if the test fails before it stops it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/momd.service"))
        .expect("dist/momd.service");
    // verify checks that ExecStart exists: point it at the binary under test.
    let bin = momd_bin().to_str().expect("utf-8 binary path");
    assert!(unit.contains("ExecStart=/usr/local/bin/momd\n"));
    let path = dir.path().join("momd.service");
    write(
        &path,
        &unit.replace("ExecStart=/usr/local/bin/momd", &format!("ExecStart={bin}")),
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze verify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{err}"
    );
    assert!(
        !err.contains("momd.service"),
        "systemd-analyze verify warned about the unit:\n{err}"
    );
}

#[test]
fn sd_notify_says_ready_then_stopping_and_pings_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("temp dir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("read timeout");
    let port = common::free_port();
    // systemd sets WATCHDOG_PID to momd's PID: `exec` keeps the shell's.
    let child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(momd_bin())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn momd");
    let mut child = KillOnDrop(child);
    let mut got = Vec::<String>::new();
    let recv_until = |want: &str, got: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                got.push(msg.clone());
                if msg.lines().any(|l| l == want) {
                    return;
                }
            }
        }
        panic!("no {want} from momd; got {got:?}");
    };
    recv_until("READY=1", &mut got);
    // READY means the listener accepts.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("momd accepts after READY=1");
    recv_until("WATCHDOG=1", &mut got);
    let st = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(st.success());
    recv_until("STOPPING=1", &mut got);
    let st = common::wait_timeout(&mut child.0, Duration::from_secs(15)).expect("momd exits");
    assert_eq!(st.code(), Some(0));
}

/// GET http://addr/metrics with a plain HTTP/1.1 request; the body.
fn scrape(addr: &str) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to --metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("text/plain; version=0.0.4"), "{resp}");
    let body = resp.split_once("\r\n\r\n").expect("headers end").1;
    body.to_string()
}

/// Prometheus text: every sample line is `name{labels} value`, with a `# TYPE` for its
/// family before it. Returns (name, labels, value) per sample.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut typed = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().expect("type name");
            let kind = it.next().expect("type kind");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad TYPE line {line}"
            );
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("labels close")),
            None => (series, ""),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name {name}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "no TYPE for {name}");
        samples.push((name.to_string(), labels.to_string(), value));
    }
    samples
}

#[test]
fn metrics_are_prometheus_text_with_bounded_topic_labels() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    // Three labels: $sys.events (connect and disconnect events, the most bytes), then busy
    // and medium; the five rare topics are summed under `other`.
    let m = Momd::start_with(&["--metrics", &addr, "--metrics-topics", "3"]);
    m.ctl_ok(&["queue", "create", "work", "--bind", "busy"], None);
    m.ctl_ok(
        &["publish", "busy", "-q"],
        Some(&common::numbered_lines("b", 1, 50)),
    );
    m.ctl_ok(
        &["publish", "medium", "-q"],
        Some(&common::numbered_lines("m", 1, 20)),
    );
    for i in 0..5 {
        m.ctl_ok(&["publish", &format!("rare.{i}"), "-q", "x"], None);
    }
    m.ctl_ok(&["recv", "work", "-n", "10"], None);
    let samples = parse_prometheus(&scrape(&addr));
    let get = |name: &str, labels: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}}"))
    };
    let in_series: Vec<_> = samples
        .iter()
        .filter(|(n, _, _)| n == "mom_messages_in_total")
        .collect();
    assert_eq!(in_series.len(), 4, "{in_series:?}");
    assert_eq!(get("mom_messages_in_total", "topic=\"busy\""), 50.0);
    assert_eq!(get("mom_messages_in_total", "topic=\"medium\""), 20.0);
    assert_eq!(get("mom_messages_in_total", "topic=\"other\""), 5.0);
    assert!(get("mom_bytes_in_total", "topic=\"busy\"") >= 50.0 * 2.0);
    assert_eq!(get("mom_messages_out_total", "topic=\"busy\""), 10.0);
    assert_eq!(get("mom_queue_ready", "queue=\"work\""), 40.0);
    assert_eq!(get("mom_queue_unacked", "queue=\"work\""), 0.0);
    assert_eq!(get("mom_queue_lag", "queue=\"work\""), 40.0);
    assert_eq!(get("mom_queue_redelivered_total", "queue=\"work\""), 0.0);
    assert!(get("mom_flush_seconds_count", "") >= 1.0);
    assert!(get("mom_group_commit_batch_size_count", "") >= 1.0);
    assert!(get("process_resident_memory_bytes", "") > 1e6);
    assert!(get("process_start_time_seconds", "") > 1.7e9);
    assert!(get("mom_disk_bytes", "") > 0.0);
    assert!(get("mom_connections", "") >= 0.0);
    // Later traffic on a new topic goes to `other`: the labelled set stays.
    m.ctl_ok(
        &["publish", "late", "-q"],
        Some(&common::numbered_lines("l", 1, 100)),
    );
    let again = parse_prometheus(&scrape(&addr));
    let other = again
        .iter()
        .find(|(n, l, _)| n == "mom_messages_in_total" && l == "topic=\"other\"")
        .expect("other")
        .2;
    assert_eq!(other, 105.0);
}

#[test]
fn json_logs_carry_the_connection_span() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.path().join("momd.log");
    let child = Command::new(momd_bin())
        .args([
            "--listen",
            &addr,
            "--log-format",
            "json",
            "--log-level",
            "info,momd::server=debug",
        ])
        .arg("--data")
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn momd");
    let mut child = KillOnDrop(child);
    wait_for(Duration::from_secs(20), "momd listening", || {
        std::net::TcpStream::connect(&addr).ok()
    });
    let out = common::momctl(
        &["-s", &addr, "publish", "t", "-q", "x"],
        None,
        Duration::from_secs(20),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let closed = wait_for(
        Duration::from_secs(10),
        "the connection's close logged",
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                // The readiness probe above closed without a hello: no client id on it.
                .find(|v| {
                    v["fields"]["message"] == "connection closed"
                        && !v["span"]["client_id"].is_null()
                })
        },
    );
    let span = &closed["span"];
    assert_eq!(span["name"], "conn", "{closed}");
    assert!(
        span["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{closed}"
    );
    assert!(span["client_id"].as_u64().is_some(), "{closed}");
    assert_eq!(span["user"], "anonymous", "{closed}");
    let st = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    assert!(st.expect("kill -TERM").success());
    let st = common::wait_timeout(&mut child.0, Duration::from_secs(15)).expect("momd exits");
    assert_eq!(st.code(), Some(0));
    // Every line is one JSON object.
    for line in std::fs::read_to_string(&log).expect("log").lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_publishing_restores_exactly_the_acknowledged_state() {
    let m = Momd::start();
    tokio::task::block_in_place(|| {
        m.ctl_ok(&["queue", "create", "bq", "--bind", "bk"], None);
        m.ctl_ok(
            &["publish", "bk", "-q"],
            Some(&common::numbered_lines("pre", 1, 300)),
        );
        // 100 consumed and acked: the queue's state the backup must keep.
        let got = m.ctl_ok(&["recv", "bq", "-n", "100"], None);
        assert_eq!(common::lines(&got).len(), 100);
    });
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = m.client("backup-storm").await;
    let task = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let msgs = (0..20)
                    .map(|j| {
                        momctl::client::message(
                            format!("m{}", i + j).into_bytes(),
                            Default::default(),
                            None,
                        )
                    })
                    .collect();
                i += 20;
                match client.publish("bk", msgs).await {
                    Ok(ok) => acked.lock().expect("lock").extend(ok.seqs),
                    Err(e) => panic!("publish failed during the backup: {e}"),
                }
            }
        })
    };
    while acked.lock().expect("lock").len() < 1000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let backup = root.path().join("backup");
    let before: HashSet<u64> = acked.lock().expect("lock").iter().copied().collect();
    let out = tokio::task::block_in_place(|| {
        Command::new(momd_bin())
            .arg("backup")
            .arg(&backup)
            .arg("--data")
            .arg(m.data_dir())
            .output()
            .expect("momd backup")
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backup failed: {err}");
    assert!(err.contains("running"), "{err}");
    let after: HashSet<u64> = acked.lock().expect("lock").iter().copied().collect();
    // The broker kept serving during the backup.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    task.await.expect("publisher");
    assert!(
        acked.lock().expect("lock").len() > after.len(),
        "no publish was acknowledged after the backup"
    );

    let restored = root.path().join("restored");
    let out = Command::new(momd_bin())
        .arg("restore")
        .arg(&backup)
        .arg("--data")
        .arg(&restored)
        .output()
        .expect("momd restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = Command::new(momd_bin())
        .args(["info", "--data"])
        .arg(&restored)
        .output()
        .expect("momd info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success() && text.contains("state:     stopped"),
        "{text}"
    );
    assert!(text.contains("queue bq"), "{text}");

    let r = tokio::task::block_in_place(|| Momd::start_in(Some(restored.clone()), &[]));
    let t = tokio::task::block_in_place(|| r.topic_info("bk"));
    let last = t["last_seq"].as_u64().expect("last_seq");
    assert_eq!(
        t["messages"].as_u64(),
        Some(last),
        "a gap in the restored topic"
    );
    // Every message acknowledged before the backup began is there; nothing is there that
    // was not acknowledged by the time it ended (seqs 1..=300 came from momctl).
    for seq in &before {
        assert!(
            *seq <= last,
            "seq {seq}, acked before the backup, is missing"
        );
    }
    for seq in 301..=last {
        assert!(
            after.contains(&seq),
            "seq {seq} restored but never acknowledged"
        );
    }
    let q = tokio::task::block_in_place(|| r.queue_info("bq"));
    assert_eq!(q["acked"], 100, "{q}");
    assert_eq!(q["lag"].as_u64(), Some(last - 100), "{q}");
    let next = tokio::task::block_in_place(|| r.ctl_ok(&["recv", "bq", "-n", "1"], None));
    assert_eq!(common::lines(&next), vec!["pre101".to_string()]);
}

#[test]
fn a_newer_data_format_is_refused() {
    let mut m = Momd::start();
    m.sigterm(Duration::from_secs(15));
    let format = m.data_dir().join("FORMAT");
    assert_eq!(
        std::fs::read_to_string(&format)
            .expect("FORMAT written")
            .trim(),
        "mom-data 3"
    );
    write(&format, "mom-data 99\n");
    let out = Command::new(momd_bin())
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(m.data_dir())
        .output()
        .expect("run momd");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("format 99") && err.contains("newer momd"),
        "{err}"
    );
    // A data dir from before formats were written is upgraded.
    std::fs::remove_file(&format).expect("rm FORMAT");
    m.restart();
    assert_eq!(
        std::fs::read_to_string(&format)
            .expect("FORMAT written")
            .trim(),
        "mom-data 3"
    );
}
