//! A server list (`momctl -s a,b,c`): connecting tries the servers in order and moves on
//! from one that cannot serve, while a refused password or protocol version is the answer;
//! when all fail, one line names each (exit 4); a bad list is a usage error (exit 2).
//! Commands that reconnect move on through the list from the server they lost, and a
//! publish stream never sends an unanswered message to a broker that cannot tell whether
//! it was stored.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use mom_proto::{ErrorCode, ServerFrame};

const T: Duration = Duration::from_secs(60);
const PW: &str = "root-secret-51e";

/// An address where nothing listens: a port bound a moment ago, then let go.
fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// How a [`Fake`] server answers a connection.
enum Answer {
    /// Closes it at once (a server that fails the hello handshake).
    Close,
    /// Holds it and says nothing (a server that never answers the hello).
    Silent,
    /// Reads the hello and sends this frame.
    Frame(Box<ServerFrame>),
}

/// A stand-in server on 127.0.0.1 that counts the connections it gets.
struct Fake {
    addr: String,
    connections: Arc<AtomicUsize>,
}

impl Fake {
    fn start(answer: Answer) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr").to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        // Lives as long as the test process: it only ever blocks in accept.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                match &answer {
                    Answer::Close => drop(conn),
                    Answer::Silent => held.push(conn),
                    Answer::Frame(f) => {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                        let _ = conn.read(&mut [0u8; 4096]);
                        let mut out = BytesMut::new();
                        mom_proto::encode_frame(&**f, &mut out, usize::MAX).expect("encode");
                        let _ = conn.write_all(&out);
                    }
                }
            }
        });
        Fake { addr, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Connected clients named `name` that watch something (a subscriber).
fn watching(m: &Momd, name: &str) -> usize {
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

/// Messages stored in `topic` (0 while it does not exist).
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

fn numbers(lines: &[String]) -> Vec<u64> {
    let mut n: Vec<u64> = lines.iter().map(|l| l.parse().expect("a number")).collect();
    n.sort_unstable();
    n
}

fn write_lines(stdin: &mut ChildStdin, from: u64, to: u64) {
    for i in from..=to {
        writeln!(stdin, "{i}").expect("write to the publisher");
    }
    stdin.flush().expect("flush");
}

fn stderr_of(child: &mut Child) -> JoinHandle<String> {
    let mut e = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        s
    })
}

fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    wait_timeout(child, T).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not exit within {T:?}");
    })
}

/// Stop a broker without closing its connections (`kill -STOP`, by its own PID): what is
/// sent to it goes unanswered.
fn pause(m: &Momd) {
    let st = Command::new("kill")
        .arg("-STOP")
        .arg(m.pid().to_string())
        .status()
        .expect("running kill -STOP");
    assert!(st.success(), "kill -STOP failed");
}

/// A server without users given an admin `root`, then refusing anyone else.
fn add_root(m: &Momd) {
    let out = m.ctl(
        &["user", "add", "root", "--admin", "--password-stdin"],
        Some(format!("{PW}\n").as_bytes()),
    );
    assert_eq!(out.code, 0, "{out:?}");
}

// ---------------------------------------------------------------------------------------
// Connecting

#[test]
fn a_dead_first_server_gives_way_to_the_next_and_publish_exits_0() {
    let m = Momd::start();
    let list = format!("{},{}", dead_addr(), m.addr());

    let out = momctl(&["-s", &list, "publish", "orders.eu", "more"], None, T);
    assert_eq!(out.code, 0, "{out:?}");
    let out = momctl(&["-s", &list, "publish", "orders.eu"], Some(b"a\nb\n"), T);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(m.read_all_lines("orders.eu"), ["more", "a", "b"]);

    // The same list from the environment; ping names the server that answered.
    let out = momctl_env(&["ping"], None, T, &[("MOM_SERVER", &list)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout_str()
            .starts_with(&format!("pong from {} ", m.addr())),
        "{out:?}"
    );
}

#[test]
fn servers_that_close_or_never_answer_the_hello_give_way_too() {
    let m = Momd::start();
    let closes = Fake::start(Answer::Close);
    let silent = Fake::start(Answer::Silent);
    let list = format!("{},{},{}", closes.addr, silent.addr, m.addr());
    let out = momctl(&["-s", &list, "ping", "--json"], None, T);
    assert_eq!(out.code, 0, "{out:?}");
    let pong = &json_lines(&out.stdout)[0];
    assert_eq!(pong["server"], m.addr().as_str(), "{out:?}");
    assert_eq!(closes.connections(), 1);
    assert_eq!(silent.connections(), 1);
}

#[test]
fn every_server_down_exits_4_with_one_line_naming_each() {
    let (a, b, c) = (dead_addr(), dead_addr(), dead_addr());
    let list = format!("{a},{b},{c}");
    for cmd in [
        &["ping"][..],
        &["publish", "orders.eu", "more"],
        &["subscribe", "orders.>"],
    ] {
        let mut args = vec!["-s", list.as_str()];
        args.extend_from_slice(cmd);
        let out = momctl(&args, None, T);
        assert_eq!(out.code, 4, "{cmd:?}: {out:?}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:?}");
        let line = out.stderr.trim();
        assert!(line.contains("any of 3 servers"), "{line}");
        for addr in [&a, &b, &c] {
            assert!(
                line.contains(&format!("{addr}: connection refused")),
                "{addr} and its reason: {line}"
            );
        }
        assert!(!line.contains("os error"), "compact reasons: {line}");
    }
    // One server alone says what it always said.
    let out = momctl(&["-s", &a, "ping"], None, T);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains(&format!("cannot connect to {a}: ")),
        "{out:?}"
    );
}

#[test]
fn a_bad_server_list_is_a_usage_error() {
    let cfg = tempfile::tempdir().expect("temp dir");
    let cfg_dir = cfg.path().to_string_lossy().into_owned();
    for bad in [
        "127.0.0.1:1,,127.0.0.1:2",
        "127.0.0.1:1,",
        ",127.0.0.1:1",
        "127.0.0.1:1,127.0.0.1:notaport",
        "127.0.0.1:1,bad host",
        "127.0.0.1:1,127.0.0.1:1",
    ] {
        let out = momctl(&["-s", bad, "publish", "orders.eu", "more"], None, T);
        assert_eq!(out.code, 2, "-s {bad}: {out:?}");
        assert!(out.stderr.contains("server list"), "-s {bad}: {out:?}");
        let out = momctl_env(&["ping"], None, T, &[("MOM_SERVER", bad)]);
        assert_eq!(out.code, 2, "MOM_SERVER={bad}: {out:?}");
        let out = Command::new(momtui_bin())
            .args(["-s", bad])
            .stdin(Stdio::null())
            .output()
            .expect("running momtui");
        assert_eq!(out.status.code(), Some(2), "momtui -s {bad}: {out:?}");
        // A context whose list was written by hand.
        let contexts = serde_json::json!({
            "current": "bad",
            "contexts": { "bad": { "server": bad } },
        });
        std::fs::write(cfg.path().join("contexts.json"), contexts.to_string())
            .expect("write contexts.json");
        let out = momctl_env(&["ping"], None, T, &[("MOM_CONFIG_DIR", &cfg_dir)]);
        assert_eq!(out.code, 2, "context with {bad}: {out:?}");
        assert!(out.stderr.contains("server list"), "{out:?}");
    }
}

#[test]
fn a_refused_password_or_protocol_version_is_the_answer_not_a_reason_to_go_on() {
    let m = Momd::start();
    add_root(&m);
    // Reached only if a refusal were taken as a reason to try the next server.
    let next = Fake::start(Answer::Close);
    let list = format!("{},{},{}", dead_addr(), m.addr(), next.addr);
    let wrong = [("MOM_USER", "root"), ("MOM_PASSWORD", "not-the-password")];
    let out = momctl_env(&["-s", &list, "ping"], None, T, &wrong);
    assert_eq!(out.code, 5, "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:?}");
    assert_eq!(next.connections(), 0, "the next server was tried: {out:?}");
    let right = [("MOM_USER", "root"), ("MOM_PASSWORD", PW)];
    let out = momctl_env(&["-s", &list, "ping"], None, T, &right);
    assert_eq!(out.code, 0, "{out:?}");

    let old = Fake::start(Answer::Frame(Box::new(ServerFrame::error(
        Some(0),
        ErrorCode::BadRequest,
        "protocol version 1 is not supported; this server speaks version 9",
    ))));
    let list = format!("{},{}", old.addr, next.addr);
    let out = momctl(&["-s", &list, "ping"], None, T);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("protocol version"), "{out:?}");
    assert_eq!(old.connections(), 1);
    assert_eq!(next.connections(), 0, "the next server was tried: {out:?}");
}

#[test]
fn login_and_contexts_keep_the_server_list() {
    let m = Momd::start();
    add_root(&m);
    let cfg = tempfile::tempdir().expect("temp dir");
    let cfg_dir = cfg.path().to_string_lossy().into_owned();
    let env = [("MOM_CONFIG_DIR", cfg_dir.as_str())];
    // Written loosely; kept in canonical form.
    let dead = dead_addr();
    let list = format!("{dead}, {}", m.addr());
    let canonical = format!("{dead},{}", m.addr());

    let out = momctl_env(
        &["-s", &list, "--user", "root", "login", "--password-stdin"],
        Some(format!("{PW}\n").as_bytes()),
        T,
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
    // The token saved for the list is used with it.
    let out = momctl_env(&["-s", &canonical, "whoami"], None, T, &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout_str()
            .starts_with(&format!("root at {} ", m.addr())),
        "{out:?}"
    );

    let out = momctl_env(
        &["-s", &list, "--user", "root", "context", "add", "pair"],
        None,
        T,
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = momctl_env(&["context", "show", "pair", "--json"], None, T, &env);
    assert_eq!(json_lines(&out.stdout)[0]["server"], canonical.as_str());
    let out = momctl_env(&["--context", "pair", "ping"], None, T, &env);
    assert_eq!(out.code, 0, "{out:?}");
}

// ---------------------------------------------------------------------------------------
// Reconnecting

#[test]
fn subscribe_moves_to_the_next_server_when_its_broker_is_killed_and_keeps_printing() {
    let mut a = Momd::start();
    let b = Momd::start();
    let list = format!("{},{}", a.addr(), b.addr());
    let name = "momctl subscribe fo.>";
    let sub = Collector::new(spawn_momctl(&["-s", &list, "subscribe", "fo.>"]));
    wait_for(Duration::from_secs(15), "the subscriber on a", || {
        (watching(&a, name) == 1).then_some(())
    });
    a.ctl_ok(&["publish", "fo.a", "a1", "a2", "a3", "-q"], None);
    wait_for(Duration::from_secs(15), "3 lines", || {
        (sub.count() >= 3).then_some(())
    });

    a.kill9();
    wait_for(Duration::from_secs(15), "the subscriber on b", || {
        (watching(&b, name) == 1).then_some(())
    });
    b.ctl_ok(&["publish", "fo.b", "b1", "b2", "b3", "-q"], None);
    wait_for(Duration::from_secs(15), "6 lines", || {
        (sub.count() >= 6).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let (lines, stderr) = sub.kill();
    assert_eq!(lines, ["a1", "a2", "a3", "b1", "b2", "b3"], "{stderr}");
    assert!(
        stderr.contains(&format!("reconnected to {}", b.addr())),
        "{stderr}"
    );
}

#[test]
fn a_reconnect_starts_with_the_server_after_the_one_lost() {
    let mut a = Momd::start();
    let mut b = Momd::start();
    let c = Momd::start();
    let a_addr = a.addr();
    let list = format!("{a_addr},{},{}", b.addr(), c.addr());
    let name = "momctl subscribe ro.>";
    // a is down when the subscriber starts: it connects to b.
    a.kill9();
    let sub = Collector::new(spawn_momctl(&["-s", &list, "subscribe", "ro.>"]));
    wait_for(Duration::from_secs(15), "the subscriber on b", || {
        (watching(&b, name) == 1).then_some(())
    });
    // a, first in the list, serves again; b goes away: the next one is c, not a.
    a.restart();
    assert_eq!(a.addr(), a_addr, "a came back on another port");
    b.kill9();
    wait_for(Duration::from_secs(15), "the subscriber on c", || {
        (watching(&c, name) == 1).then_some(())
    });
    assert_eq!(
        watching(&a, name),
        0,
        "it went back to the start of the list"
    );
    c.ctl_ok(&["publish", "ro.c", "c1", "-q"], None);
    wait_for(Duration::from_secs(15), "a line", || {
        (sub.count() >= 1).then_some(())
    });
    let (lines, stderr) = sub.kill();
    assert_eq!(lines, ["c1"], "{stderr}");
}

#[test]
fn publish_reconnect_with_nothing_unanswered_carries_on_at_the_next_server() {
    let mut a = Momd::start();
    let b = Momd::start();
    let list = format!("{},{}", a.addr(), b.addr());
    let mut child = spawn_momctl(&[
        "-s",
        &list,
        "publish",
        "pf.t",
        "--reconnect",
        "--batch",
        "1",
        "-q",
        "--json",
    ]);
    let mut stdin = child.stdin.take().expect("stdin");
    let errs = stderr_of(&mut child);
    let mut acks = Collector::new(child);
    write_lines(&mut stdin, 1, 50);
    // Every line acknowledged: nothing is waiting for an answer when a goes.
    wait_for(Duration::from_secs(30), "50 acks", || {
        (acks.count() >= 50).then_some(())
    });
    a.kill9();
    wait_for(Duration::from_secs(15), "the publisher on b", || {
        (clients_named(&b, "momctl publish pf.t") == 1).then_some(())
    });
    write_lines(&mut stdin, 51, 100);
    drop(stdin);
    let st = wait_for(T, "the publisher to exit", || acks.try_status());
    let stderr = errs.join().expect("stderr");
    let (lines, _) = acks.kill();
    assert_eq!(st.code(), Some(0), "{stderr}");
    assert_eq!(lines.len(), 100, "an ack per line: {stderr}");
    assert!(
        stderr.contains(&format!("reconnected to {}", b.addr())),
        "{stderr}"
    );
    a.restart();
    assert_eq!(
        numbers(&a.read_all_lines("pf.t")),
        (1..=50).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(&b.read_all_lines("pf.t")),
        (51..=100).collect::<Vec<_>>()
    );
}

#[test]
fn publish_reconnect_never_sends_unanswered_lines_to_another_broker() {
    let mut a = Momd::start();
    let b = Momd::start();
    let list = format!("{},{}", a.addr(), b.addr());
    let mut child = spawn_momctl(&[
        "-s",
        &list,
        "publish",
        "pu.t",
        "--reconnect",
        "--batch",
        "1",
        "-q",
    ]);
    let mut stdin = child.stdin.take().expect("stdin");
    let errs = stderr_of(&mut child);
    write_lines(&mut stdin, 1, 20);
    wait_for(Duration::from_secs(30), "20 lines stored", || {
        (stored_count(&a, "pu.t") >= 20).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    // a takes what comes next into its socket and answers nothing; then it is gone.
    pause(&a);
    write_lines(&mut stdin, 21, 40);
    std::thread::sleep(Duration::from_millis(500));
    a.kill9();
    let st = wait_exit(&mut child, "publish --reconnect");
    drop(stdin);
    let stderr = errs.join().expect("stderr");
    assert_eq!(st.code(), Some(8), "{stderr}");
    assert!(stderr.contains("not sent again"), "{stderr}");
    assert!(
        stderr.contains(&b.addr()),
        "names where it came back: {stderr}"
    );
    assert!(
        stderr.contains("sent without an answer"),
        "names the unknown lines: {stderr}"
    );
    assert_eq!(stored_count(&b, "pu.t"), 0, "b got lines: {stderr}");
    // a holds a prefix of the input, each line once.
    a.restart();
    let stored = numbers(&a.read_all_lines("pu.t"));
    let n = stored.len() as u64;
    assert!(n >= 20, "{stored:?}");
    assert_eq!(stored, (1..=n).collect::<Vec<_>>(), "{stderr}");
}

#[test]
fn publish_reconnect_sends_unanswered_lines_again_to_the_same_broker_by_another_name_storing_each_once(
) {
    let mut a = Momd::start();
    let a_addr = a.addr();
    let port = a.socket_addr().port();
    // Two names of one broker: the reconnect moves on to the second.
    let other = format!("localhost:{port}");
    let list = format!("{a_addr},{other}");
    let mut child = spawn_momctl(&[
        "-s",
        &list,
        "publish",
        "pl.t",
        "--reconnect",
        "--batch",
        "1",
        "-q",
    ]);
    let mut stdin = child.stdin.take().expect("stdin");
    let errs = stderr_of(&mut child);
    write_lines(&mut stdin, 1, 20);
    wait_for(Duration::from_secs(30), "20 lines stored", || {
        (stored_count(&a, "pl.t") >= 20).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    pause(&a);
    write_lines(&mut stdin, 21, 40);
    std::thread::sleep(Duration::from_millis(500));
    a.kill9();
    std::thread::sleep(Duration::from_millis(300));
    a.restart();
    assert_eq!(a.addr(), a_addr, "a came back on another port");
    write_lines(&mut stdin, 41, 60);
    drop(stdin);
    let st = wait_exit(&mut child, "publish --reconnect");
    let stderr = errs.join().expect("stderr");
    assert_eq!(st.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("reconnected to {other}")),
        "{stderr}"
    );
    assert!(stderr.contains("sent again"), "{stderr}");
    assert_eq!(stored_count(&a, "pl.t"), 60, "{stderr}");
    assert_eq!(
        numbers(&a.read_all_lines("pl.t")),
        (1..=60).collect::<Vec<_>>(),
        "each line once: {stderr}"
    );
}
