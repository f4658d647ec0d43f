//! The HTTP API (`momd --http`, docs/http.md) end to end: the real momd, driven with the real
//! `curl`, checked against what the broker holds (read back over HTTP and with momctl).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_for, Collector, Momd};
use serde_json::Value;

/// A momd with the HTTP API on a free port.
struct Http {
    m: Momd,
    base: String,
}

impl Http {
    fn start(extra: &[&str]) -> Http {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["--http", addr.as_str()];
        args.extend_from_slice(extra);
        let m = Momd::start_with(&args);
        wait_for(Duration::from_secs(10), "the HTTP API", || {
            m.stderr()
                .contains(&format!("HTTP API on {addr}"))
                .then_some(())
        });
        Http {
            m,
            base: format!("http://{addr}"),
        }
    }

    /// `curl -s ARGS URL`: the status and the body.
    fn curl(&self, args: &[&str], path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "30"])
            .args(args)
            .arg(format!("{}{path}", self.base))
            .stdin(Stdio::null())
            .output()
            .expect("running curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("curl wrote the status");
        (code.trim().parse().expect("a status"), body.to_string())
    }

    /// `curl` that must answer `status`, with a JSON body.
    fn json(&self, status: u16, args: &[&str], path: &str) -> Value {
        let (code, body) = self.curl(args, path);
        assert_eq!(code, status, "{args:?} {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
    }

    fn ok(&self, args: &[&str], path: &str) -> Value {
        self.json(200, args, path)
    }
}

/// An error answer: the status, and the JSON shape `{"error": {"code", "message"}}`.
fn error_code(h: &Http, status: u16, args: &[&str], path: &str) -> String {
    let v = h.json(status, args, path);
    let e = &v["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a message: {v}"
    );
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "only error: {v}");
    e["code"].as_str().expect("a code").to_string()
}

#[test]
fn publish_then_read_back_with_headers_batches_and_dedupe() {
    let h = Http::start(&[]);
    let first = h.ok(
        &[
            "-X",
            "POST",
            "-H",
            "Mom-Msg-Id: o-42",
            "-H",
            "Mom-Header-Kind: created",
            "--data-binary",
            r#"{"id":42}"#,
        ],
        "/v1/topics/orders.eu/messages",
    );
    assert_eq!(first["seq"], 1);
    assert_eq!(first["duplicate"], false);
    // The same msg_id again: acknowledged with the first seq, not stored twice.
    let again = h.ok(
        &[
            "-X",
            "POST",
            "-H",
            "Mom-Msg-Id: o-42",
            "--data-binary",
            "other",
        ],
        "/v1/topics/orders.eu/messages",
    );
    assert_eq!(again["seq"], 1);
    assert_eq!(again["duplicate"], true);

    let ndjson = concat!(
        r#"{"payload":"two","msg_id":"o-43"}"#,
        "\n",
        r#"{"payload":{"n":3},"headers":{"kind":"json"}}"#,
        "\n\n",
        r#"{"payload_base64":"AP8="}"#,
        "\n",
        r#"{"payload":"two again","msg_id":"o-43"}"#,
        "\n",
    );
    let batch = h.ok(
        &["-X", "POST", "--data-binary", ndjson],
        "/v1/topics/orders.eu/batch",
    );
    assert_eq!(batch["seqs"], serde_json::json!([2, 3, 4, 2]), "{batch}");
    assert_eq!(batch["duplicates"], 1);
    assert_eq!(batch["duplicate_indexes"], serde_json::json!([3]));

    // The envelope form of a single publish.
    let env = h.ok(
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/vnd.mom.message+json",
            "--data-binary",
            r#"{"payload":"five","headers":{"k":"v"}}"#,
        ],
        "/v1/topics/orders.eu/messages",
    );
    assert_eq!(env["seq"], 5);

    // Paged: two, then the rest.
    let page = h.ok(&[], "/v1/topics/orders.eu/messages?from=1&limit=2");
    let msgs = page["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["payload"], r#"{"id":42}"#);
    assert_eq!(msgs[0]["msg_id"], "o-42");
    assert_eq!(msgs[0]["headers"]["kind"], "created");
    assert_eq!(msgs[1]["payload"], "two");
    assert_eq!(page["next"], 3);
    let rest = h.ok(&[], "/v1/topics/orders.eu/messages?from=3&limit=100");
    let msgs = rest["messages"].as_array().expect("messages");
    let seqs: Vec<u64> = msgs.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(msgs[0]["payload"], r#"{"n":3}"#);
    assert_eq!(msgs[1]["payload_base64"], "AP8=");
    assert!(msgs[1].get("payload").is_none());
    assert_eq!(msgs[2]["headers"]["k"], "v");
    assert_eq!(rest["next"], Value::Null);
    // By count and by time.
    let last = h.ok(&[], "/v1/topics/orders.eu/messages?last=1");
    assert_eq!(last["messages"][0]["seq"], 5);
    let t = msgs[2]["time"].as_u64().expect("time");
    let since = h.ok(&[], &format!("/v1/topics/orders.eu/messages?since={t}"));
    assert_eq!(since["messages"][0]["seq"], 5);

    // The TCP protocol sees the same log.
    let out = h.m.ctl_ok(
        &[
            "subscribe",
            "orders.eu",
            "--from",
            "all",
            "-n",
            "5",
            "--timeout",
            "30s",
        ],
        None,
    );
    assert_eq!(out, b"{\"id\":42}\ntwo\n{\"n\":3}\n\x00\xff\nfive\n");
    let info = h.ok(&[], "/v1/topics/orders.eu");
    assert_eq!(info["messages"], 5);
    assert_eq!(info["last_seq"], 5);
    let listed = h.ok(&[], "/v1/topics?prefix=orders.&limit=10");
    let names: Vec<&str> = listed["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["orders.eu"], "{listed}");
}

#[test]
fn fetch_ack_and_nack_redeliver_through_a_queue() {
    let h = Http::start(&[]);
    let q = h.ok(
        &["-X", "PUT", "--data-binary", r#"{"bindings":["jobs.>"]}"#],
        "/v1/queues/jobs",
    );
    assert_eq!(q["bindings"], serde_json::json!(["jobs.>"]));
    for p in ["a", "b"] {
        let r = h.ok(
            &["-X", "POST", "--data-binary", p],
            "/v1/topics/jobs.x/messages",
        );
        assert_eq!(r["queues"], 1);
    }
    let got = h.ok(&["-X", "POST"], "/v1/queues/jobs/fetch?max=10&wait=2s");
    let msgs = got["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2, "{got}");
    assert_eq!(msgs[0]["payload"], "a");
    assert_eq!(msgs[0]["delivery"], 1);
    h.ok(
        &[
            "-X",
            "POST",
            "--data-binary",
            r#"{"deliveries":[{"topic":"jobs.x","seq":1}]}"#,
        ],
        "/v1/queues/jobs/ack",
    );
    h.ok(
        &[
            "-X",
            "POST",
            "--data-binary",
            r#"{"deliveries":[{"topic":"jobs.x","seq":2}]}"#,
        ],
        "/v1/queues/jobs/nack",
    );
    // The nacked one comes back, counted as a second delivery; the acked one never.
    let again = h.ok(&["-X", "POST"], "/v1/queues/jobs/fetch?max=10&wait=2s");
    let msgs = again["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 1, "{again}");
    assert_eq!(msgs[0]["payload"], "b");
    assert_eq!(msgs[0]["delivery"], 2);
    h.ok(
        &[
            "-X",
            "POST",
            "--data-binary",
            r#"{"deliveries":[{"topic":"jobs.x","seq":2}]}"#,
        ],
        "/v1/queues/jobs/ack",
    );
    let empty = h.ok(&["-X", "POST"], "/v1/queues/jobs/fetch?max=10&wait=300ms");
    assert_eq!(empty["messages"], serde_json::json!([]));
    let info = h.ok(&[], "/v1/queues/jobs");
    assert_eq!(info["acked"], 2);
    assert_eq!(info["redelivered"], 1);
    assert_eq!(info["unacked"], 0);
    // Acking what the queue does not hold: not_found, as in the protocol.
    assert_eq!(
        error_code(
            &h,
            404,
            &[
                "-X",
                "POST",
                "--data-binary",
                r#"{"deliveries":[{"topic":"jobs.x","seq":9}]}"#
            ],
            "/v1/queues/jobs/ack"
        ),
        "not_found"
    );
    // momctl sees the queue HTTP made.
    let ls = String::from_utf8_lossy(&h.m.ctl_ok(&["queue", "ls"], None)).into_owned();
    assert!(ls.contains("jobs"), "{ls}");
    h.ok(&["-X", "DELETE"], "/v1/queues/jobs");
    assert_eq!(error_code(&h, 404, &[], "/v1/queues/jobs"), "not_found");
}

#[test]
fn request_reply_reaches_a_momctl_responder() {
    let h = Http::start(&[]);
    // No responder: 503 at once.
    assert_eq!(
        error_code(
            &h,
            503,
            &["-X", "POST", "--data-binary", "now"],
            "/v1/request/svc.echo?timeout=2s"
        ),
        "unavailable"
    );
    let replier = Collector::new(h.m.spawn_ctl(&[
        "reply",
        "svc.echo",
        "--",
        "sh",
        "-c",
        "printf 'echo:'; cat",
    ]));
    wait_for(Duration::from_secs(10), "the replier's watch", || {
        (h.m.topic_info("svc.echo")["watchers"].as_u64() == Some(1)).then_some(())
    });
    let (code, body) = h.curl(
        &["-X", "POST", "--data-binary", "ping"],
        "/v1/request/svc.echo?timeout=5s",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "echo:ping");
    drop(replier);
}

/// The message events of an SSE capture: (id, topic, seq, payload).
fn sse_messages(lines: &[String]) -> Vec<(String, String, u64, String)> {
    let mut out = Vec::new();
    let mut id = None;
    for l in lines {
        if let Some(i) = l.strip_prefix("id: ") {
            id = Some(i.to_string());
        } else if let Some(d) = l.strip_prefix("data: ") {
            if let (Some(i), Ok(v)) = (id.take(), serde_json::from_str::<Value>(d)) {
                out.push((
                    i,
                    v["topic"].as_str().unwrap_or("").to_string(),
                    v["seq"].as_u64().unwrap_or(0),
                    v["payload"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

fn curl_stream(h: &Http, last_id: Option<&str>) -> Collector {
    let mut cmd = Command::new("curl");
    cmd.args(["-sN", "--max-time", "60"]);
    if let Some(id) = last_id {
        cmd.arg("-H").arg(format!("Last-Event-ID: {id}"));
    }
    cmd.arg(format!("{}/v1/stream?pattern=orders.%3E", h.base))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Collector::new(cmd.spawn().expect("curl"))
}

#[test]
fn sse_stream_resumed_with_last_event_id_misses_and_repeats_nothing_across_topics() {
    let h = Http::start(&[]);
    let publish = |topic: &str, payload: &str| {
        h.ok(
            &["-X", "POST", "--data-binary", payload],
            &format!("/v1/topics/{topic}/messages"),
        );
    };
    // Before the stream: not part of it.
    publish("orders.eu", "before");
    let first = curl_stream(&h, None);
    wait_for(Duration::from_secs(10), "the stream's watch", || {
        first
            .lines()
            .iter()
            .any(|l| l.starts_with(": watch"))
            .then_some(())
    });
    let mut sent = Vec::new();
    for i in 0..6 {
        let topic = if i % 3 == 0 { "orders.us" } else { "orders.eu" };
        let p = format!("{topic}-{i}");
        publish(topic, &p);
        sent.push(p);
    }
    wait_for(Duration::from_secs(10), "six events", || {
        (sse_messages(&first.lines()).len() == 6).then_some(())
    });
    let (lines, _) = first.kill();
    let got = sse_messages(&lines);
    // Disconnected after the fourth event: the client has four.
    let kept = &got[..4];
    let last_id = kept[3].0.clone();
    assert!(
        last_id.contains("orders.eu:") && last_id.contains("orders.us:"),
        "the id names both topics: {last_id}"
    );
    // While away: both topics and a topic the stream never carried.
    for (topic, p) in [
        ("orders.us", "away-us"),
        ("orders.asia", "away-asia"),
        ("orders.eu", "away-eu"),
    ] {
        publish(topic, p);
        sent.push(p.to_string());
    }
    let second = curl_stream(&h, Some(&last_id));
    wait_for(Duration::from_secs(10), "the replay", || {
        second
            .lines()
            .iter()
            .any(|l| l == "event: live")
            .then_some(())
    });
    publish("orders.us", "live-us");
    sent.push("live-us".into());
    wait_for(Duration::from_secs(10), "the live message", || {
        sse_messages(&second.lines())
            .iter()
            .any(|m| m.3 == "live-us")
            .then_some(())
    });
    let (lines2, _) = second.kill();
    let resumed = sse_messages(&lines2);
    let mut all: Vec<String> = kept.iter().map(|m| m.3.clone()).collect();
    all.extend(resumed.iter().map(|m| m.3.clone()));
    let mut want = sent.clone();
    want.sort();
    let mut have = all.clone();
    have.sort();
    assert_eq!(have, want, "each message exactly once: {all:?}");
    // Per topic, in seq order.
    for topic in ["orders.eu", "orders.us", "orders.asia"] {
        let seqs: Vec<u64> = kept
            .iter()
            .chain(resumed.iter())
            .filter(|m| m.1 == topic)
            .map(|m| m.2)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{topic}: {seqs:?}");
    }
}

#[test]
fn users_tokens_permissions_and_error_codes() {
    let h = Http::start(&["--max-payload", "4096"]);
    let cfg = tempfile::tempdir().expect("config dir");
    let cfg_s = cfg.path().to_string_lossy().into_owned();
    // No users yet: a local client is the admin anonymous; it adds the users.
    for (args, pw) in [
        (
            vec!["user", "add", "root", "--admin", "--password-stdin"],
            "root-pw-71x",
        ),
        (
            vec![
                "user",
                "add",
                "alice",
                "--publish",
                "orders.>",
                "--subscribe",
                "orders.>",
                "--password-stdin",
            ],
            "alice-pw-82y",
        ),
    ] {
        let addr = h.m.addr();
        let mut full = vec!["-s", addr.as_str()];
        full.extend_from_slice(&args);
        let env = if args.contains(&"root") {
            vec![("MOM_CONFIG_DIR", cfg_s.as_str())]
        } else {
            vec![
                ("MOM_CONFIG_DIR", cfg_s.as_str()),
                ("MOM_USER", "root"),
                ("MOM_PASSWORD", "root-pw-71x"),
            ]
        };
        let out = common::momctl_env(
            &full,
            Some(format!("{pw}\n").as_bytes()),
            common::CTL_TIMEOUT,
            &env,
        );
        assert_eq!(out.code, 0, "{out:?}");
    }
    // Users exist: no credentials, wrong ones, a bad header: 401.
    assert_eq!(error_code(&h, 401, &[], "/v1/stats"), "unauthorized");
    assert_eq!(error_code(&h, 401, &[], "/v1/cluster"), "unauthorized");
    assert_eq!(
        error_code(&h, 401, &["-u", "alice:wrong"], "/v1/stats"),
        "unauthorized"
    );
    assert_eq!(
        error_code(&h, 401, &["-H", "Authorization: Bearer nope"], "/v1/stats"),
        "unauthorized"
    );
    // Login: a token, as momctl login gets; Bearer works with it, so does Basic.
    let t = h.ok(
        &[
            "-X",
            "POST",
            "--data-binary",
            r#"{"user":"alice","password":"alice-pw-82y"}"#,
        ],
        "/v1/login",
    );
    assert_eq!(t["user"], "alice");
    let token = t["token"].as_str().expect("token").to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let r = h.ok(
        &["-X", "POST", "-H", &bearer, "--data-binary", "hi"],
        "/v1/topics/orders.a/messages",
    );
    assert_eq!(r["seq"], 1);
    let msgs = h.ok(
        &["-u", "alice:alice-pw-82y"],
        "/v1/topics/orders.a/messages",
    );
    assert_eq!(msgs["messages"][0]["sender"]["user"], "alice");
    // Every user may read the cluster's state, as on TCP.
    let cluster = h.ok(&["-H", &bearer], "/v1/cluster");
    assert_eq!(cluster["mode"], "single", "{cluster}");
    // The same token works on the TCP protocol.
    let out = common::momctl_env(
        &["-s", &h.m.addr(), "stats"],
        None,
        common::CTL_TIMEOUT,
        &[
            ("MOM_CONFIG_DIR", cfg_s.as_str()),
            ("MOM_TOKEN", token.as_str()),
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    // Permissions: outside alice's patterns, and a topic root owns.
    assert_eq!(
        error_code(
            &h,
            403,
            &["-X", "POST", "-H", &bearer, "--data-binary", "x"],
            "/v1/topics/billing.a/messages"
        ),
        "forbidden"
    );
    h.ok(
        &["-X", "POST", "-u", "root:root-pw-71x", "--data-binary", "r"],
        "/v1/topics/orders.root/messages",
    );
    assert_eq!(
        error_code(
            &h,
            403,
            &["-X", "DELETE", "-H", &bearer],
            "/v1/topics/orders.root"
        ),
        "forbidden"
    );
    assert_eq!(
        error_code(&h, 403, &["-H", &bearer], "/v1/stream?pattern=billing.%3E"),
        "forbidden"
    );
    h.ok(&["-X", "DELETE", "-H", &bearer], "/v1/topics/orders.a");
    // Limits and malformed requests.
    let big = "x".repeat(5000);
    assert_eq!(
        error_code(
            &h,
            413,
            &["-X", "POST", "-H", &bearer, "--data-binary", &big],
            "/v1/topics/orders.big/messages"
        ),
        "too_large"
    );
    assert_eq!(
        error_code(
            &h,
            400,
            &["-X", "POST", "-H", &bearer, "--data-binary", "{not json"],
            "/v1/topics/orders.a/batch"
        ),
        "bad_request"
    );
    assert_eq!(
        error_code(
            &h,
            400,
            &["-H", &bearer],
            "/v1/topics/orders.a/messages?limit=x"
        ),
        "bad_request"
    );
    assert_eq!(
        error_code(&h, 404, &["-H", &bearer], "/v1/topics/orders.none"),
        "not_found"
    );
    assert_eq!(error_code(&h, 404, &[], "/v1/nothing-here"), "not_found");
    // Ownership: root's queue is not alice's to delete.
    h.ok(
        &[
            "-X",
            "PUT",
            "-u",
            "root:root-pw-71x",
            "--data-binary",
            r#"{"bindings":["orders.>"]}"#,
        ],
        "/v1/queues/root-q",
    );
    assert_eq!(
        error_code(
            &h,
            403,
            &["-X", "DELETE", "-H", &bearer],
            "/v1/queues/root-q"
        ),
        "forbidden"
    );
    // The OpenAPI document is served and names every path.
    let api = h.ok(&[], "/v1/openapi.json");
    assert_eq!(api["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    assert!(api["paths"]["/v1/stream"].is_object());
    assert!(api["paths"]["/v1/cluster"].is_object());
}

#[test]
fn https_with_the_brokers_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let (c, k) = (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let m = Momd::start_with(&["--http", &addr, "--tls-cert", &c, "--tls-key", &k]);
    wait_for(Duration::from_secs(10), "the HTTPS API", || {
        m.stderr()
            .contains(&format!("HTTPS API on {addr}"))
            .then_some(())
    });
    let out = Command::new("curl")
        .args(["-s", "--cacert", &c, "-X", "POST", "--data-binary", "tls"])
        .arg(format!("https://{addr}/v1/topics/secure.t/messages"))
        .output()
        .expect("curl");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON over TLS");
    assert_eq!(v["seq"], 1, "{v}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://{addr}/v1/stats"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");
}

#[test]
fn a_stream_that_does_not_read_gets_the_slow_consumer_event() {
    let h = Http::start(&["--watch-buffer", "64KiB", "--fsync", "never"]);
    let mut cmd = Command::new("curl");
    cmd.args(["-sN", "--max-time", "60"])
        .arg(format!("{}/v1/stream?pattern=bulk.%3E", h.base))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let reader = Collector::new(cmd.spawn().expect("curl"));
    wait_for(Duration::from_secs(10), "the stream's watch", || {
        reader
            .lines()
            .iter()
            .any(|l| l.starts_with(": watch"))
            .then_some(())
    });
    // The reader stops reading: the socket buffers fill, then the watch's budget.
    let pid = reader.child.id().to_string();
    let signal = |sig: &str| {
        let st = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(st.success());
    };
    signal("-STOP");
    let line = format!("{{\"payload\":\"{}\"}}\n", "x".repeat(60_000));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("batch.ndjson");
    std::fs::write(&file, line.repeat(100)).expect("write the batch");
    let at_file = format!("@{}", file.display());
    for _ in 0..8 {
        h.ok(
            &["-X", "POST", "--data-binary", &at_file],
            "/v1/topics/bulk.a/batch",
        );
    }
    signal("-CONT");
    let notice = wait_for(Duration::from_secs(30), "the slow_consumer event", || {
        let lines = reader.lines();
        let at = lines.iter().position(|l| l == "event: slow_consumer")?;
        lines.get(at + 1).cloned()
    });
    let data: Value = serde_json::from_str(notice.trim_start_matches("data: ")).expect("JSON");
    let skipped = data["skipped"].as_u64().expect("skipped");
    let received = sse_messages(&reader.lines()).len() as u64;
    assert!(skipped > 0, "{data}");
    assert!(
        received < 800,
        "the stream was bounded: {received} received"
    );
    // The broker's memory was not spent on it: what was skipped is still stored.
    assert_eq!(h.ok(&[], "/v1/topics/bulk.a")["messages"], 800);
}

#[test]
fn without_users_only_local_clients_are_anonymous_admins() {
    // momd will not serve HTTP where others could reach it as admin...
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(common::momd_bin())
        .args(["--http", &format!("127.0.0.2:{}", free_port()), "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data")
        .arg(dir.path().join("d"))
        .stdin(Stdio::null())
        .output()
        .expect("momd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing --http 127.0.0.2"), "{err}");
    // ...and a client from another address than 127.0.0.1 is refused, as on TCP.
    let h = Http::start(&[]);
    let (code, body) = h.curl(&["--interface", "127.0.0.2"], "/v1/stats");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("127.0.0.1"), "{body}");
    assert_eq!(h.curl(&[], "/v1/stats").0, 200);
}

#[test]
fn get_cluster_on_a_single_node_says_mode_single() {
    let h = Http::start(&[]);
    let v = h.ok(&[], "/v1/cluster");
    assert_eq!(v["mode"], "single", "{v}");
    assert_eq!(v["nodes"], serde_json::json!([]), "{v}");
    assert_eq!(v["groups"], serde_json::json!([]), "{v}");
    // The reply's fields in the reply's order, without the protocol's `id` and `type`.
    let keys: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        ["mode", "cluster_id", "node_id", "nodes", "groups"],
        "{v}"
    );
}

/// Three cluster nodes, each with the HTTP API: node i's peer listener on 127.0.0.i.
fn http_trio() -> Vec<Http> {
    let peers: Vec<String> = (1..=3)
        .map(|i| format!("127.0.0.{i}:{}", free_port()))
        .collect();
    let list = peers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    (1..=3)
        .map(|id: usize| {
            let node = id.to_string();
            Http::start(&[
                "--cluster-id",
                "h",
                "--node-id",
                &node,
                "--peer-listen",
                &peers[id - 1],
                "--peers",
                &list,
            ])
        })
        .collect()
}

#[test]
fn get_cluster_on_three_nodes_shows_the_leader_and_every_node() {
    let trio = http_trio();
    // Ask node 3: once a leader is elected and every node has announced its address.
    let v = wait_for(Duration::from_secs(30), "a leader of three nodes", || {
        let (code, body) = trio[2].curl(&[], "/v1/cluster");
        let v: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        let leader = v["groups"][0]["leader"].as_u64()?;
        let nodes = v["nodes"].as_array()?;
        let announced = nodes
            .iter()
            .all(|n| !n["addr"].as_str().unwrap_or("").is_empty());
        if nodes.len() == 3 && (1..=3).contains(&leader) && announced {
            Some(v)
        } else {
            std::thread::sleep(Duration::from_millis(250));
            None
        }
    });
    assert_eq!(v["mode"], "cluster", "{v}");
    assert_eq!(v["cluster_id"], "h", "{v}");
    assert_eq!(v["node_id"], 3, "{v}");
    assert!(v.get("id").is_none() && v.get("type").is_none(), "{v}");
    let leader = v["groups"][0]["leader"].as_u64().expect("a leader");
    assert_eq!(v["groups"][0]["name"], "meta", "{v}");
    assert!(v["groups"][0]["term"].as_u64() >= Some(1), "{v}");
    for (i, n) in v["nodes"].as_array().expect("nodes").iter().enumerate() {
        assert_eq!(n["id"], i as u64 + 1, "{v}");
        assert_eq!(n["addr"].as_str(), Some(trio[i].m.addr().as_str()), "{v}");
        assert!(!n["version"].as_str().unwrap_or("").is_empty(), "{v}");
        if n["id"] == leader {
            assert_eq!(n["role"], "leader", "{v}");
        }
    }
    // Each replica's lag, known from the leader, whichever node is asked.
    wait_for(Duration::from_secs(10), "every replica's lag", || {
        let v = trio[0].ok(&[], "/v1/cluster");
        let replicas = v["groups"][0]["replicas"].as_array()?.clone();
        if replicas.len() == 3 && replicas.iter().all(|r| r["lag"].is_u64()) {
            Some(())
        } else {
            std::thread::sleep(Duration::from_millis(250));
            None
        }
    });
}
