//! momd's command line, run as a real process. (This file also makes `cargo test
//! --workspace` build `target/debug/momd`, which the end-to-end tests in /tests use.)

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run momd with `args` and no stdin, killing it if it runs longer than 20 s.
fn momd(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_momd"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn momd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("momd {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("momd output")
}

#[test]
fn help_exits_0_and_documents_fsync() {
    let out = momd(&["--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--fsync",
        "--listen",
        "--data",
        "--max-payload",
        "--watch-buffer",
    ] {
        assert!(
            text.contains(flag),
            "momd --help does not mention {flag}:\n{text}"
        );
    }
}

#[test]
fn version_exits_0() {
    let out = momd(&["--version"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_fsync_value_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = momd(&[
        "--fsync",
        "sometimes",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sometimes"),
        "stderr does not name the bad value: {err}"
    );
    assert!(
        !data.exists(),
        "momd created its data dir despite a usage error"
    );
}
