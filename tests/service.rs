//! momd as a service: the config file under flags and environment, SIGHUP reload and the
//! SIGTERM drain. (The unit file, sd_notify, logs, metrics and backup are in
//! tests/operations.rs.)

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{momd_bin, wait_for, Collector, Momd};

fn write(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
}

fn check_config(config: &Path, env: &[(&str, &str)], extra: &[&str]) -> (i32, String, String) {
    // Broker flags go before the subcommand: `momd [FLAGS] check-config`.
    let mut cmd = Command::new(momd_bin());
    cmd.args(extra)
        .arg("check-config")
        .arg("--config")
        .arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .env_remove("MOMD_DATA")
        .output()
        .expect("run momd check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line_of<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key}` in check-config output:\n{out}"))
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("momd.toml");
    write(
        &cfg,
        "# test\nmax_msgs = 10\nmax_bytes = \"1MiB\"\nfsync = \"never\"\ncache_mb = 32\n",
    );
    let (code, out, err) = check_config(
        &cfg,
        &[("MOMD_MAX_BYTES", "2MiB"), ("MOMD_FSYNC", "batch=5")],
        &["--fsync", "always"],
    );
    assert_eq!(code, 0, "{err}");
    let file = cfg.display().to_string();
    assert!(
        line_of(&out, "max_msgs").contains(&format!("file {file}:2")),
        "{out}"
    );
    assert!(
        line_of(&out, "cache_mb").starts_with("cache_mb = 32"),
        "{out}"
    );
    let bytes = line_of(&out, "max_bytes");
    assert!(
        bytes.contains("\"2MiB\"") && bytes.contains("env MOMD_MAX_BYTES"),
        "{out}"
    );
    let fsync = line_of(&out, "fsync");
    assert!(
        fsync.contains("\"always\"") && fsync.ends_with("# flag"),
        "{out}"
    );
    assert!(line_of(&out, "max_frame").ends_with("# default"), "{out}");
}

#[test]
fn a_bad_key_or_value_is_named_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("momd.toml");
    write(&cfg, "listen = \"127.0.0.1:7000\"\nmax_frames = 5\n");
    let (code, _, err) = check_config(&cfg, &[], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("momd.toml:2") && err.contains("max_frames"),
        "{err}"
    );
    write(&cfg, "\n\nmax_payload = \"lots\"\n");
    let (code, _, err) = check_config(&cfg, &[], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("momd.toml:3") && err.contains("key `max_payload`"),
        "{err}"
    );
    // The broker itself refuses to start on it, with the same message.
    let out = Command::new(momd_bin())
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .expect("run momd");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("momd.toml:3") && err.contains("key `max_payload`"),
        "{err}"
    );
}

#[test]
fn dist_momd_toml_is_valid() {
    let dist = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/momd.toml");
    let (code, out, err) = check_config(Path::new(dist), &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(line_of(&out, "listen").contains("file "), "{out}");
}

/// A config file in the test's temp dir, started with `--config`.
fn start_with_config(dir: &Path, text: &str, extra: &[&str]) -> (Momd, std::path::PathBuf) {
    let cfg = dir.join("momd.toml");
    write(&cfg, text);
    let mut args = vec!["--config", cfg.to_str().expect("utf-8 temp path")];
    args.extend_from_slice(extra);
    (Momd::start_with(&args), cfg)
}

fn sighup(m: &Momd) {
    let st = Command::new("kill")
        .args(["-HUP", &m.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(st.success());
}

#[test]
fn sighup_changes_a_limit_live_without_dropping_a_watcher() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (m, cfg) = start_with_config(dir.path(), "max_payload = 1000\nfsync = \"always\"\n", &[]);
    let watcher = Collector::new(m.spawn_ctl(&["subscribe", "reload.t"]));
    wait_for(Duration::from_secs(10), "the watcher", || {
        (m.stats()["totals"]["watches"].as_u64()? >= 1).then_some(())
    });
    let big = vec![b'x'; 2000];
    let out = m.ctl(&["publish", "reload.t", "--whole"], Some(&big));
    assert_ne!(out.code, 0, "a 2000-byte payload passed max_payload 1000");
    m.ctl_ok(&["publish", "reload.t", "small-1"], None);

    write(&cfg, "max_payload = 4096\nfsync = \"never\"\n");
    sighup(&m);
    wait_for(Duration::from_secs(10), "the reload", || {
        m.stderr().contains("reload done").then_some(())
    });
    let err = m.stderr();
    assert!(err.contains("max_payload"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("needs a restart") && l.contains("fsync")),
        "the fsync change was not reported as needing a restart:\n{err}"
    );
    m.ctl_ok(&["publish", "reload.t", "--whole"], Some(&big));
    m.ctl_ok(&["publish", "reload.t", "small-2"], None);
    let lines = wait_for(Duration::from_secs(10), "the watcher's lines", || {
        let l = watcher.lines();
        (l.len() >= 3).then_some(l)
    });
    assert_eq!(lines[0], "small-1");
    assert_eq!(lines[1].len(), 2000);
    assert_eq!(lines[2], "small-2");
    let mut watcher = watcher;
    assert!(
        watcher.try_status().is_none(),
        "the watcher's connection ended"
    );
}

#[test]
fn a_bad_reload_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (m, cfg) = start_with_config(dir.path(), "max_payload = 1000\n", &[]);
    write(&cfg, "max_payload = \"huge\"\n");
    sighup(&m);
    wait_for(Duration::from_secs(10), "the refused reload", || {
        m.stderr().contains("reload refused").then_some(())
    });
    assert!(m.stderr().contains("key `max_payload`"), "{}", m.stderr());
    let out = m.ctl(&["publish", "t", "--whole"], Some(&[b'x'; 2000]));
    assert_ne!(out.code, 0);
    m.assert_serves();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_publish_storm_exits_0_and_keeps_every_ack() {
    let mut m = Momd::start();
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..4 {
        let client = m.client(&format!("storm-{p}")).await;
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut publisher = client.publisher("storm", 8);
            let record = |ok: mom_proto::PublishOk| acked.lock().expect("lock").extend(ok.seqs);
            let mut i = 0u64;
            loop {
                let msgs = (0..50)
                    .map(|j| {
                        momctl::client::message(
                            format!("p{p}-{}", i + j).into_bytes(),
                            Default::default(),
                            None,
                        )
                    })
                    .collect();
                i += 50;
                match publisher.send(msgs).await {
                    Ok(Some((_, ok))) => record(ok),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            while let Ok(Some((_, ok))) = publisher.next_ack().await {
                record(ok);
            }
        }));
    }
    let mut idle = tokio::task::block_in_place(|| common::Raw::connect(&m));
    tokio::task::block_in_place(|| idle.hello());
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 2000 {
        assert!(Instant::now() < deadline, "no acks");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = Instant::now();
    let st = tokio::task::block_in_place(|| m.sigterm(Duration::from_secs(10)));
    assert_eq!(
        st.code(),
        Some(0),
        "exit status {st}; stderr:\n{}",
        m.stderr()
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    // An idle client is told why its connection ends.
    let frame = tokio::task::block_in_place(|| idle.expect_frame(Duration::from_secs(5)));
    match frame {
        mom_proto::ServerFrame::Error(e) => {
            assert_eq!(e.code, mom_proto::ErrorCode::Unavailable);
            assert!(e.message.contains("shutting down"), "{}", e.message);
        }
        other => panic!("expected an unavailable error, got {other:?}"),
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("publisher ended")
            .expect("publisher task");
    }
    let acked = acked.lock().expect("lock").clone();
    tokio::task::block_in_place(|| m.restart());
    let stored = tokio::task::block_in_place(|| m.topic_info("storm"));
    let last = stored["last_seq"].as_u64().expect("last_seq");
    let mut seen = HashSet::new();
    for seq in &acked {
        assert!(seen.insert(*seq), "seq {seq} acked twice");
        assert!(*seq <= last, "acked seq {seq} lost (last stored {last})");
    }
    assert_eq!(stored["messages"].as_u64(), Some(last));
}
