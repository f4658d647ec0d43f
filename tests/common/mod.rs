//! Shared harness of the end-to-end tests: start the real `momd` on a free 127.0.0.1 port in
//! a temp dir, run the real `momctl` against it, and talk raw protocol when a test needs to.
//!
//! Binaries are found next to the test executable: `target/<profile>/deps/<test>` →
//! `target/<profile>/{momd,momctl}`. `cargo test -p mom-e2e` does not build them by itself
//! (they are not dependencies of this package), so the first test that needs them runs
//! `cargo build -p momd -p momctl` once (skipped when `MOM_E2E_NO_BUILD` is set, or when the
//! tests were not started by cargo).

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod cluster;
pub mod partitions;
/// The fault proxy of a peer link lives in momcheck, whose `--cluster` mode uses it too.
pub use momcheck::proxy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mom_proto::{ClientFrame, ServerFrame};

/// How long momd may take to accept connections after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time limit of one momctl run.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Binaries

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a parent dir");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

fn bins() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = profile_dir();
        build_bins(&dir);
        let momd = dir.join("momd");
        let momctl = dir.join("momctl");
        for b in [&momd, &momctl] {
            assert!(
                b.is_file(),
                "{} is missing: run `cargo build -p momd -p momctl` (or `cargo test --workspace`) first",
                b.display()
            );
        }
        (momd, momctl)
    })
}

/// Make sure momd, momctl, momtui and momcheck are built from the current sources.
fn build_bins(profile_dir: &Path) {
    if std::env::var_os("MOM_E2E_NO_BUILD").is_some() {
        return;
    }
    let (Some(cargo), Some(manifest)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return;
    };
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest).args([
        "build", "--quiet", "-p", "momd", "-p", "momctl", "-p", "momtui", "-p", "momcheck",
    ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("running cargo build");
    assert!(
        out.status.success(),
        "cargo build -p momd -p momctl failed (set MOM_E2E_NO_BUILD=1 to test the binaries already in target/):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn momd_bin() -> &'static Path {
    &bins().0
}

pub fn momctl_bin() -> &'static Path {
    &bins().1
}

pub fn momtui_bin() -> PathBuf {
    let b = momd_bin().with_file_name("momtui");
    assert!(b.is_file(), "{} is missing", b.display());
    b
}

// ---------------------------------------------------------------------------------------
// Ports

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

// ---------------------------------------------------------------------------------------
// momd

/// A running momd on 127.0.0.1 with its own temp data dir. Dropping it kills the process
/// (by its own PID) and removes the dir.
pub struct Momd {
    child: Option<Child>,
    root: tempfile::TempDir,
    port: u16,
    extra: Vec<String>,
    starts: u32,
    /// The data dir, when not `data` in the temp dir (e.g. on a small filesystem).
    data: Option<PathBuf>,
    /// Extra environment variables of every run.
    envs: Vec<(String, String)>,
}

impl Momd {
    /// Start momd with default settings.
    pub fn start() -> Momd {
        Momd::start_with(&[])
    }

    /// Start momd with extra arguments (e.g. `["--fsync", "never"]`).
    pub fn start_with(extra: &[&str]) -> Momd {
        Momd::start_in(None, extra)
    }

    /// Start momd on the data dir `data` (default: `data` in a fresh temp dir).
    pub fn start_in(data: Option<PathBuf>, extra: &[&str]) -> Momd {
        Momd::start_full(data, extra, &[])
    }

    /// Start momd with extra arguments and environment variables (kept across restarts).
    pub fn start_env(extra: &[&str], envs: &[(&str, &str)]) -> Momd {
        Momd::start_full(None, extra, envs)
    }

    fn start_full(data: Option<PathBuf>, extra: &[&str], envs: &[(&str, &str)]) -> Momd {
        let root = tempfile::Builder::new()
            .prefix("mom-e2e-")
            .tempdir()
            .expect("temp dir");
        let mut m = Momd {
            child: None,
            root,
            port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            starts: 0,
            data,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        m.launch(None);
        m
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.root.path().join("data"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("momd is not running").id()
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.root.path().join(format!("momd-{n}.log"))
    }

    /// What momd wrote to stderr in its latest run.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default()
    }

    /// Start the process; on the same port if `port` is given, else on a fresh one (a few
    /// tries, in case another test took the port between our probe and momd's bind).
    fn launch(&mut self, port: Option<u16>) {
        assert!(self.child.is_none(), "momd is already running");
        let mut last_err = String::new();
        for attempt in 0..5 {
            let port = match port {
                Some(p) if attempt < 3 => p,
                _ => free_port(),
            };
            self.starts += 1;
            let log = std::fs::File::create(self.log_path(self.starts)).expect("log file");
            let child = Command::new(momd_bin())
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data")
                .arg(self.data_dir())
                .args(&self.extra)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .envs(self.envs.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawning momd");
            self.child = Some(child);
            self.port = port;
            match self.wait_ready() {
                Ok(()) => return,
                Err(e) => {
                    last_err = e;
                    self.child = None;
                    if !last_err.contains("Address already in use") {
                        break;
                    }
                    // The old process's port may linger a moment; then try another.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        panic!("momd did not start: {last_err}");
    }

    /// Wait until momd accepts TCP connections; `Err` with its stderr if it exits first.
    ///
    /// A connection alone could reach another test's momd that took the port first, so
    /// the process must also still be running and have said it listens (or, should its log
    /// wording change, still be running a second after the port answered).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.socket_addr();
        let mut answered_at: Option<Instant> = None;
        loop {
            let child = self.child.as_mut().expect("child");
            if let Some(st) = child.try_wait().expect("try_wait") {
                return Err(format!(
                    "momd exited with {st} before accepting connections; stderr:\n{}",
                    self.stderr()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let at = *answered_at.get_or_insert_with(Instant::now);
                let listening = self.stderr().contains(&format!("listening on {addr}"));
                if listening || at.elapsed() > Duration::from_secs(1) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let child = self.child.as_mut().expect("child");
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "momd did not accept connections on {addr} within {START_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start momd again on the same data dir (and port, if it is still free). It must have
    /// been stopped with `kill9` or `sigterm`.
    pub fn restart(&mut self) {
        let port = self.port;
        self.launch(Some(port));
    }

    /// `kill -9` momd (Child::kill sends SIGKILL) and reap it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("momd is not running");
        child.kill().expect("SIGKILL momd");
        let st = child.wait().expect("wait momd");
        assert!(
            !st.success(),
            "momd killed by SIGKILL reported success: {st}"
        );
    }

    /// SIGTERM momd and wait (at most `timeout`) for it to exit; returns its exit status.
    pub fn sigterm(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("momd is not running");
        let pid = child.id();
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("running kill -TERM");
        assert!(st.success(), "kill -TERM {pid} failed");
        match wait_timeout(&mut child, timeout) {
            Some(st) => st,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "momd did not exit within {timeout:?} of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Waits at most `timeout` for momd to exit by itself; its exit status, if it did.
    pub fn exited_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("momd is not running");
        let st = wait_timeout(child, timeout)?;
        self.child = None;
        Some(st)
    }

    /// `kill -STOP` momd (by its PID): it keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// `kill -CONT` momd after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid();
        let st = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(st.success(), "kill {sig} {pid} failed");
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().expect("try_wait").is_none(),
        }
    }

    /// Resident memory of momd in bytes, from /proc/PID/status (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS line");
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("VmRSS value");
        kb * 1024
    }

    /// Run momctl against this broker (`-s ADDR` first), with optional stdin.
    pub fn ctl(&self, args: &[&str], stdin: Option<&[u8]>) -> CtlOut {
        self.ctl_timeout(args, stdin, CTL_TIMEOUT)
    }

    pub fn ctl_timeout(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> CtlOut {
        let addr = self.addr();
        let mut full = vec!["-s", addr.as_str()];
        full.extend_from_slice(args);
        momctl(&full, stdin, timeout)
    }

    /// Run momctl and require exit 0; returns stdout.
    pub fn ctl_ok(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.ctl(args, stdin);
        assert_eq!(out.code, 0, "momctl {args:?} failed: {out:?}");
        out.stdout
    }

    /// Spawn momctl in the background against this broker, with piped stdin/stdout/stderr.
    pub fn spawn_ctl(&self, args: &[&str]) -> Child {
        Command::new(momctl_bin())
            .arg("-s")
            .arg(self.addr())
            .args(args)
            .env("NO_COLOR", "1")
            .env("MOM_CONFIG_DIR", empty_config_dir())
            .env_remove("MOM_CONTEXT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning momctl")
    }

    /// `momctl topic info TOPIC --json`, parsed.
    pub fn topic_info(&self, topic: &str) -> serde_json::Value {
        let out = self.ctl_ok(&["topic", "info", topic, "--json"], None);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("topic info --json: {e}: {}", String::from_utf8_lossy(&out)))
    }

    /// `momctl stats --json`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let out = self.ctl_ok(&["stats", "--json"], None);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("stats --json: {e}: {}", String::from_utf8_lossy(&out)))
    }

    /// Everything stored in `topic`, as payload lines, via `momctl subscribe --from all -n`.
    pub fn read_all_lines(&self, topic: &str) -> Vec<String> {
        let info = self.topic_info(topic);
        let n = info["messages"].as_u64().expect("messages");
        if n == 0 {
            return Vec::new();
        }
        let n = n.to_string();
        let out = self.ctl_ok(
            &[
                "subscribe",
                topic,
                "--from",
                "all",
                "-n",
                &n,
                "--timeout",
                "30s",
            ],
            None,
        );
        lines(&out)
    }

    /// Everything stored in `topic`, as JSON objects.
    pub fn read_all_json(&self, topic: &str) -> Vec<serde_json::Value> {
        let info = self.topic_info(topic);
        let n = info["messages"].as_u64().expect("messages");
        if n == 0 {
            return Vec::new();
        }
        let n = n.to_string();
        let out = self.ctl_ok(
            &[
                "subscribe",
                topic,
                "--from",
                "all",
                "-n",
                &n,
                "--timeout",
                "30s",
                "--json",
            ],
            None,
        );
        json_lines(&out)
    }

    /// A client library connection (call from inside a tokio runtime).
    pub async fn client(&self, name: &str) -> momctl::client::Client {
        momctl::client::Client::connect(&momctl::client::ConnectOptions::new(self.addr(), name))
            .await
            .expect("client connect")
    }

    /// Check that the broker serves a new client: `momctl ping` exits 0.
    pub fn assert_serves(&self) {
        let out = self.ctl_timeout(&["ping"], None, Duration::from_secs(20));
        assert_eq!(
            out.code,
            0,
            "momd no longer serves clients: {out:?}\nmomd stderr:\n{}",
            self.stderr()
        );
    }
}

/// Spawn momctl in the background with `args` as they are (no `-s` added: a test of server
/// lists gives its own), with piped stdin/stdout/stderr and an empty config dir.
pub fn spawn_momctl(args: &[&str]) -> Child {
    Command::new(momctl_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .env("MOM_CONFIG_DIR", empty_config_dir())
        .env_remove("MOM_SERVER")
        .env_remove("MOM_CONTEXT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning momctl")
}

impl Drop for Momd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // `root` (the temp dir) is removed when it drops, after the process is gone.
    }
}

/// Wait for a child at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// momctl

/// What a momctl run produced.
pub struct CtlOut {
    /// The exit code; -1 if it was killed by a signal.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl std::fmt::Debug for CtlOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let so = String::from_utf8_lossy(&self.stdout);
        let so: String = so.chars().take(2000).collect();
        f.debug_struct("CtlOut")
            .field("code", &self.code)
            .field("stdout", &so)
            .field("stderr", &self.stderr)
            .finish()
    }
}

impl CtlOut {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Run momctl with `args` (no `-s` added), optional stdin, a time limit; a run that exceeds
/// it is killed and fails the test.
pub fn momctl(args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> CtlOut {
    momctl_env(args, stdin, timeout, &[])
}

/// An empty config dir for momctl runs that do not name their own: no saved context or
/// token of the machine's user plays a part in a test.
fn empty_config_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("mom-e2e-config-")
            .tempdir()
            .expect("temp dir")
    })
    .path()
}

/// Run momctl with extra environment variables (`MOM_USER`, `MOM_CONFIG_DIR`…).
pub fn momctl_env(
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
    envs: &[(&str, &str)],
) -> CtlOut {
    let mut cmd = Command::new(momctl_bin());
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("MOM_CONFIG_DIR", empty_config_dir());
    for v in [
        "MOM_SERVER",
        "MOM_USER",
        "MOM_PASSWORD",
        "MOM_TOKEN",
        "MOM_CONTEXT",
        "MOM_TLS_CA",
        "MOM_TLS_INSECURE",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(envs.iter().copied());
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning momctl");
    let writer = stdin.map(|data| {
        let mut w = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            // momctl may stop reading early (an error); that is not our failure.
            let _ = w.write_all(&data);
        })
    });
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let Some(st) = wait_timeout(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        panic!("momctl {args:?} did not finish within {timeout:?}; stderr so far: {stderr}");
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    CtlOut {
        code: st.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned(),
    }
}

/// Payload lines of momctl's default output.
pub fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8(out.to_vec())
        .expect("utf-8 output")
        .lines()
        .map(str::to_string)
        .collect()
}

/// One JSON value per line.
pub fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `1\n2\n…n\n` with an optional prefix on each line.
pub fn numbered_lines(prefix: &str, from: u64, to: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for i in from..=to {
        writeln!(v, "{prefix}{i}").expect("write to vec");
    }
    v
}

/// Poll `f` until it returns `Some`, or fail after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cheap pseudo-random number (no dependency): from the clock and a counter.
pub fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CTR: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut x =
        t ^ CTR.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ u64::from(std::process::id());
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

// ---------------------------------------------------------------------------------------
// Raw protocol

/// A blocking raw connection that speaks frames with `mom_proto`.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

/// What `Raw::read_frame` got.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a test helper, matched by value
pub enum Read1 {
    Frame(ServerFrame),
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Nothing within the time limit.
    Timeout,
}

impl Raw {
    pub fn connect(m: &Momd) -> Raw {
        let stream = TcpStream::connect(m.socket_addr()).expect("connect to momd");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).expect("write to momd");
    }

    /// Write bytes; the server may already have closed the connection.
    pub fn send_bytes_lossy(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b);
    }

    pub fn send(&mut self, f: &ClientFrame) {
        let mut buf = BytesMut::new();
        mom_proto::encode_frame(f, &mut buf, usize::MAX).expect("encode");
        self.send_bytes(&buf);
    }

    /// Send hello (id 1) and expect welcome.
    pub fn hello(&mut self) -> mom_proto::Welcome {
        self.send(&ClientFrame::Hello(mom_proto::Hello {
            id: 1,
            version: mom_proto::PROTOCOL_VERSION,
            client: "raw-e2e".into(),
            ..Default::default()
        }));
        match self.read_frame(Duration::from_secs(10)) {
            Read1::Frame(ServerFrame::Welcome(w)) => {
                assert_eq!(w.id, 1);
                w
            }
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Read the next frame (at most `timeout`).
    pub fn read_frame(&mut self, timeout: Duration) -> Read1 {
        let deadline = Instant::now() + timeout;
        loop {
            match mom_proto::split_frame(&mut self.buf, 64 * 1024 * 1024) {
                Ok(Some(body)) => {
                    let f = mom_proto::decode_body::<ServerFrame>(&body)
                        .unwrap_or_else(|e| panic!("server sent an undecodable frame: {e}"));
                    return Read1::Frame(f);
                }
                Ok(None) => {}
                Err(e) => panic!("server sent a bad frame: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read1::Timeout;
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "connection closed in the middle of a frame"
                    );
                    return Read1::Closed;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Read1::Closed
                }
                Err(e) => panic!("reading from momd: {e}"),
            }
        }
    }

    /// The next frame, which must come within `timeout`.
    pub fn expect_frame(&mut self, timeout: Duration) -> ServerFrame {
        match self.read_frame(timeout) {
            Read1::Frame(f) => f,
            other => panic!("expected a frame from momd, got {other:?}"),
        }
    }

    /// Expect the server to close the connection (no further frame) within `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) {
        match self.read_frame(timeout) {
            Read1::Closed => {}
            other => panic!("expected momd to close the connection, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Queues and background momctl processes

impl Momd {
    /// `momctl queue info NAME --json`, parsed.
    pub fn queue_info(&self, name: &str) -> serde_json::Value {
        let out = self.ctl_ok(&["queue", "info", name, "--json"], None);
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("queue info --json: {e}: {}", String::from_utf8_lossy(&out)))
    }
}

/// A background momctl (from `Momd::spawn_ctl`) whose stdout lines are collected by a thread
/// as they come. Dropping it kills the process (SIGKILL, by its own PID) and reaps it.
pub struct Collector {
    pub child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Collector {
    pub fn new(mut child: Child) -> Collector {
        let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let out = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines() {
                match line {
                    Ok(l) => sink.lock().expect("lock").push(l),
                    Err(_) => break,
                }
            }
        });
        let stderr = child.stderr.take().map(drain);
        Collector {
            child,
            lines,
            reader: Some(reader),
            stderr,
        }
    }

    /// How many lines came so far.
    pub fn count(&self) -> usize {
        self.lines.lock().expect("lock").len()
    }

    /// A copy of the lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// Has the process exited (and how)?
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// SIGKILL the process, reap it, and return every line it wrote and its stderr.
    pub fn kill(mut self) -> (Vec<String>, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let err = self
            .stderr
            .take()
            .map(|h| String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned())
            .unwrap_or_default();
        (self.lines(), err)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// momcheck, the fault-injection checker

pub fn momcheck_bin() -> std::path::PathBuf {
    let b = momd_bin().with_file_name("momcheck");
    assert!(b.is_file(), "{} is missing", b.display());
    b
}

/// Run momcheck; returns its exit code, its verdict line (stdout) and its stderr. A run
/// longer than `limit` is killed and fails the test.
pub fn momcheck(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut child = std::process::Command::new(momcheck_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning momcheck");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let Some(status) = status else {
        panic!("momcheck {args:?} did not finish within {limit:?}; stderr:\n{err}");
    };
    (status.code().unwrap_or(-1), out, err)
}

/// The number after `word` in a momcheck verdict.
pub fn verdict_count(words: &[&str], word: &str) -> Option<u64> {
    let i = words.iter().position(|w| *w == word)?;
    words.get(i + 1)?.parse().ok()
}

/// How many times a verdict says fault `f` ran (its `f=N` word; 0 if it has none).
pub fn fault_runs(words: &[&str], f: &str) -> u32 {
    words
        .iter()
        .find_map(|w| w.strip_prefix(f)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

/// Runs momcheck with `args` (at most `limit`) and checks its verdict passes: exit 0, it
/// starts with `prefix`, ends in PASS, counts 0 of each of `kinds` and over 1000 messages
/// acked. Returns the verdict, the stderr, and a description of the run for failure
/// messages.
pub fn momcheck_passes(
    args: &[&str],
    limit: Duration,
    prefix: &str,
    kinds: &[&str],
) -> (String, String, String) {
    let t0 = std::time::Instant::now();
    let (code, verdict, stderr) = momcheck(args, limit);
    eprintln!("{verdict}(in {:.0?})", t0.elapsed());
    let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
    let tail: String = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    let why = format!("momcheck {args:?}\nverdict: {verdict}\nstderr (end):\n{tail}");
    assert_eq!(code, 0, "{why}");
    assert!(verdict.starts_with(prefix), "{why}");
    assert!(verdict.trim_end().ends_with(" PASS"), "{why}");
    let words: Vec<&str> = verdict.split_whitespace().collect();
    for kind in kinds {
        assert_eq!(verdict_count(&words, kind), Some(0), "{kind}; {why}");
    }
    let acked = verdict_count(&words, "acked").unwrap_or(0);
    assert!(acked > 1000, "only {acked} messages acknowledged; {why}");
    (verdict, stderr, why)
}
