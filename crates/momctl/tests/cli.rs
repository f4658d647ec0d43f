//! momctl's command line, run as a real process, in situations that need no broker. (This
//! file also makes `cargo test --workspace` build `target/debug/momctl`, which the
//! end-to-end tests in /tests use.)

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run momctl with `args` and no stdin, killing it if it runs longer than 20 s. Its output
/// is read while it runs (a completion script is bigger than a pipe's buffer).
fn momctl(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_momctl"))
        .args(args)
        .env_remove("MOM_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn momctl");
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("momctl {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// 127.0.0.1 port 1 (tcpmux) has no listener on any sane test machine.
const NOBODY: &str = "127.0.0.1:1";

#[test]
fn ping_without_broker_exits_4_with_one_line() {
    let out = momctl(&["ping", "-s", NOBODY]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "stderr is not one line: {err:?}"
    );
    assert!(
        err.contains(NOBODY),
        "stderr does not name the address: {err:?}"
    );
}

#[test]
fn invalid_topic_exits_2_without_connecting() {
    // Exit 2, not 4: the name is refused before any connection is tried.
    let out = momctl(&["publish", "bad topic", "x", "-s", NOBODY]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad topic"), "{err}");
}

#[test]
fn unknown_flag_exits_2() {
    let out = momctl(&["publish", "t", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn completions_bash_prints_a_script() {
    let out = momctl(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("complete"), "{script}");
    assert!(script.contains("momctl"), "{script}");
    assert!(script.contains("subscribe"), "{script}");
}

#[test]
fn help_lists_exit_codes() {
    let out = momctl(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exit codes"), "{text}");
    for cmd in ["publish", "subscribe", "topic", "stats", "ping"] {
        assert!(text.contains(cmd), "momctl --help does not list {cmd}");
    }
}

#[test]
fn completions_into_head_end_quietly() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} completions bash | head -1 > /dev/null",
            env!("CARGO_BIN_EXE_momctl")
        ))
        .stderr(Stdio::piped())
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}
