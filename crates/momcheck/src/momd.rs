//! The momd under test: start it on 127.0.0.1 (a cluster node on its own 127.0.0.x), wait
//! until it serves, signal it by its own PID (SIGKILL, SIGSTOP/SIGCONT, SIGTERM), run its
//! offline `verify` and `repair`, read its logs, and poll its memory.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use momctl::client::{Client, ConnectOptions};

/// Where clients connect; changes only if momd's port had to change.
pub type Addr = Arc<RwLock<String>>;

pub fn addr_of(a: &Addr) -> String {
    a.read().map(|s| s.clone()).unwrap_or_default()
}

/// momd's memory, polled from /proc.
#[derive(Debug, Default)]
pub struct Rss {
    /// The highest VmHWM of any momd process of the run.
    pub peak: AtomicU64,
    /// The highest VmRSS since the last `reset_window`.
    pub window: AtomicU64,
    /// The latest VmRSS.
    pub now: AtomicU64,
}

impl Rss {
    pub fn reset_window(&self) -> u64 {
        let now = self.now.load(Ordering::Relaxed);
        self.window.store(now, Ordering::Relaxed);
        now
    }
}

/// (VmHWM, VmRSS) of a process in bytes.
pub fn read_rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Poll the running momd's memory every 50 ms until the process ends.
pub fn spawn_rss_sampler(pid: Arc<AtomicU32>, rss: Arc<Rss>) {
    tokio::spawn(async move {
        loop {
            let p = pid.load(Ordering::Relaxed);
            if p != 0 {
                if let Some((hwm, now)) = read_rss(p) {
                    rss.peak.fetch_max(hwm, Ordering::Relaxed);
                    rss.window.fetch_max(now, Ordering::Relaxed);
                    rss.now.store(now, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

pub struct Momd {
    bin: PathBuf,
    data: PathBuf,
    logs: PathBuf,
    /// Its log files are `<name>-<start>.log`.
    name: String,
    host: String,
    port: u16,
    /// Flags after `--listen` and `--data` (a cluster node's), and the environment.
    args: Vec<String>,
    envs: Vec<(String, String)>,
    pub addr: Addr,
    child: Option<Child>,
    /// How many times momd was started; the number of the running instance.
    pub starts: u32,
    clock_offset_ms: i64,
    pub pid: Arc<AtomicU32>,
    pub rss: Arc<Rss>,
}

fn free_port() -> anyhow::Result<u16> {
    free_port_on("127.0.0.1")
}

/// A port of `host` that was free a moment ago.
pub fn free_port_on(host: &str) -> anyhow::Result<u16> {
    let l = TcpListener::bind((host, 0)).with_context(|| format!("binding {host}:0"))?;
    Ok(l.local_addr()?.port())
}

impl Momd {
    pub fn new(bin: PathBuf, data: PathBuf, logs: PathBuf) -> anyhow::Result<Momd> {
        let port = free_port()?;
        Ok(Momd {
            bin,
            data,
            logs,
            name: "momd".into(),
            host: "127.0.0.1".into(),
            port,
            args: Vec::new(),
            envs: Vec::new(),
            addr: Arc::new(RwLock::new(format!("127.0.0.1:{port}"))),
            child: None,
            starts: 0,
            clock_offset_ms: 0,
            pid: Arc::new(AtomicU32::new(0)),
            rss: Arc::new(Rss::default()),
        })
    }

    /// A cluster node: clients reach it at `host:port`, `args` are its cluster flags, and
    /// its logs are `<name>-<start>.log`.
    pub fn node(
        bin: PathBuf,
        data: PathBuf,
        logs: PathBuf,
        name: &str,
        (host, port): (&str, u16),
        args: Vec<String>,
        envs: Vec<(String, String)>,
    ) -> Momd {
        Momd {
            bin,
            data,
            logs,
            name: name.into(),
            host: host.into(),
            port,
            args,
            envs,
            addr: Arc::new(RwLock::new(format!("{host}:{port}"))),
            child: None,
            starts: 0,
            clock_offset_ms: 0,
            pid: Arc::new(AtomicU32::new(0)),
            rss: Arc::new(Rss::default()),
        }
    }

    /// Where clients reach it.
    pub fn client_addr(&self) -> String {
        addr_of(&self.addr)
    }

    pub fn data(&self) -> &Path {
        &self.data
    }

    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms
    }

    /// The clock offset of the next starts (`MOMD_FAULT_CLOCK_OFFSET_MS`).
    pub fn set_clock_offset_ms(&mut self, ms: i64) {
        self.clock_offset_ms = ms;
    }

    pub fn log_path(&self, n: u32) -> PathBuf {
        self.logs.join(format!("{}-{n}.log", self.name))
    }

    /// What the instance number `n` wrote to stderr.
    pub fn log(&self, n: u32) -> String {
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    /// The last lines of the current instance's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log(self.starts);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Start the process, without waiting until it serves.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "momd is already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path(self.starts)).context("momd log file")?;
        let child = Command::new(&self.bin)
            // Its own process group: a Ctrl-C meant for momcheck does not stop momd too.
            .process_group(0)
            .arg("--listen")
            .arg(format!("{}:{}", self.host, self.port))
            .arg("--data")
            .arg(&self.data)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env(
                "MOMD_FAULT_CLOCK_OFFSET_MS",
                self.clock_offset_ms.to_string(),
            )
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("MOMD_DATA")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.pid.store(child.id(), Ordering::Relaxed);
        self.child = Some(child);
        Ok(())
    }

    /// Start momd and wait until it answers a `hello`. A momd that cannot bind its port
    /// (something else took it) is started again on another one.
    pub async fn start(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        for _ in 0..3 {
            self.spawn()?;
            match self.wait_ready(timeout).await {
                Ok(()) => return Ok(t0.elapsed()),
                Err(e) if self.log(self.starts).contains("listening on") => {
                    eprintln!(
                        "momcheck: momd could not listen on port {}: {e:#}; trying another",
                        self.port
                    );
                    self.port = free_port_on(&self.host)?;
                    if let Ok(mut a) = self.addr.write() {
                        *a = format!("{}:{}", self.host, self.port);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        bail!("momd could not listen on a free port in 3 tries")
    }

    /// Wait until the running momd answers a `hello`; fails if it exits or takes longer
    /// than `timeout`.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let addr = self.addr.clone();
        self.wait_until(timeout, "serve", || {
            let at = addr_of(&addr);
            async move {
                let mut opts = ConnectOptions::new(at, "momcheck ready");
                opts.connect_timeout = Duration::from_secs(1);
                Client::connect(&opts).await.is_ok()
            }
        })
        .await
    }

    /// Wait until the running momd accepts connections on its client port (not that it
    /// answers a `hello`); fails if it exits or takes longer than `timeout`.
    pub async fn wait_listening(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let addr = self.addr.clone();
        self.wait_until(timeout, "listen", || {
            let at = addr_of(&addr);
            async move { tokio::net::TcpStream::connect(at).await.is_ok() }
        })
        .await
    }

    async fn wait_until<F, Fut>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut ready: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                bail!(
                    "momd (start {}) exited during start-up ({st}); its log ends:\n{}",
                    self.starts,
                    self.log_tail(15)
                );
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "momd (start {}) did not {what} within {timeout:?}; its log ends:\n{}",
                    self.starts,
                    self.log_tail(15)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Has the process exited? Then it is reaped and its status returned.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.pid.store(0, Ordering::Relaxed);
        Some(st)
    }

    pub fn sample_rss(&self) {
        let p = self.pid.load(Ordering::Relaxed);
        if let Some((hwm, _)) = read_rss(p) {
            self.rss.peak.fetch_max(hwm, Ordering::Relaxed);
        }
    }

    /// SIGKILL by PID and reap. Returns the status (None if it was not running).
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        self.sample_rss();
        let mut child = self.child.take()?;
        self.pid.store(0, Ordering::Relaxed);
        let _ = child.kill();
        child.wait().ok()
    }

    /// Send a signal to the running momd (by its PID).
    pub fn signal(&self, sig: libc::c_int) -> anyhow::Result<()> {
        let Some(child) = &self.child else {
            bail!("momd is not running")
        };
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: kill(2) with a PID we spawned and have not reaped.
        let r = unsafe { libc::kill(pid, sig) };
        anyhow::ensure!(
            r == 0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// SIGTERM and wait up to `timeout`; a momd that does not stop in time is killed and
    /// that is returned as an error.
    pub async fn sigterm(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.sample_rss();
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                self.kill9();
                bail!("momd did not stop within {timeout:?} of SIGTERM; killed it");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Run `momd verify` or `momd repair` on the stopped momd's data dir: (exit code,
    /// stdout, stderr).
    pub async fn offline(&self, what: &str) -> anyhow::Result<(i32, String, String)> {
        let out = tokio::process::Command::new(&self.bin)
            .arg(what)
            .arg("--data")
            .arg(&self.data)
            .env_remove("MOMD_DATA")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running momd {what}"))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

impl Drop for Momd {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused momd must be woken to die cleanly for its parent's wait.
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        }
        self.kill9();
    }
}
