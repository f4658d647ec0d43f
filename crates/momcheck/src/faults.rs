//! The fault cycles: a stretch of steady workload, then one fault at a random moment, then
//! momd must serve again. Every choice comes from the run's seed.

use std::time::{Duration, Instant};

use anyhow::Context;
use mom_proto::StartAt;
use momctl::client::{Client, ConnectOptions, WatchEvent};

use crate::corrupt;
use crate::disk;
use crate::hostile;
use crate::ledger::{Destroyed, TornCut};
use crate::opts::{CorruptMode, Fault};
use crate::run::Run;

/// How long momd may take to start and serve.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const HOUR_MS: i64 = 3_600_000;

impl Run {
    /// One cycle: steady workload for a random while, then the fault.
    pub async fn cycle(&mut self, fault: Fault) -> anyhow::Result<()> {
        let steady = self.rng.range(200, 1200);
        self.ctx.set_phase("steady");
        tokio::time::sleep(Duration::from_millis(steady)).await;
        self.check_alive("steady").await?;
        if fault != Fault::Hostile {
            // (A hostile cycle names its case.)
            self.ctx.set_phase(fault.name());
        }
        match fault {
            Fault::Kill9 => self.kill9().await?,
            Fault::Pause => self.pause().await?,
            Fault::DiskFull => self.diskfull().await?,
            Fault::Corrupt => self.corrupt().await?,
            Fault::Hostile => self.hostile().await?,
            Fault::Clock => self.clock().await?,
            // `Opts::validate` keeps them for `--cluster` (cluster/faults.rs).
            f => anyhow::bail!("{} is a fault of a cluster", f.name()),
        }
        self.ensure_serving(fault.name()).await?;
        self.ctx.set_phase("steady");
        Ok(())
    }

    /// Start momd (again); note what its start-up said about damage and torn writes.
    pub async fn start_momd(&mut self) -> anyhow::Result<()> {
        let took = self.momd.start(START_TIMEOUT).await?;
        self.recoveries.push(took);
        self.after_start();
        Ok(())
    }

    /// What every start must be followed by: the instance number for acks, and the
    /// damage and torn writes its log names.
    fn after_start(&mut self) {
        let n = self.momd.starts;
        self.ctx
            .epoch
            .store(n, std::sync::atomic::Ordering::Relaxed);
        let (damaged, torn) = corrupt::parse_log(&self.ctx, &self.momd.log(n));
        let mut l = self.ctx.ledger();
        for r in damaged {
            l.add_damage(r);
        }
        let mut cuts: Vec<(u16, u64)> = Vec::new();
        for (t, s) in torn {
            match cuts.iter_mut().find(|c| c.0 == t) {
                Some(c) => c.1 = c.1.min(s),
                None => cuts.push((t, s)),
            }
        }
        for (topic, from) in cuts {
            l.torn.push(TornCut {
                topic,
                from,
                start: n,
            });
        }
    }

    /// Did momd exit on its own? Then that is a crash: noted, and momd started again.
    pub async fn check_alive(&mut self, during: &str) -> anyhow::Result<()> {
        if let Some(st) = self.momd.exited() {
            let tail = self.momd.log_tail(20);
            self.finding(
                "crashes",
                format!("momd exited by itself ({st}) during {during}; its log ends:\n{tail}"),
            );
            self.start_momd().await?;
        }
        Ok(())
    }

    /// After a fault: momd is alive and answers a ping on a fresh connection within 30 s;
    /// otherwise that is noted and momd is killed and started again.
    pub async fn ensure_serving(&mut self, after: &str) -> anyhow::Result<()> {
        self.check_alive(after).await?;
        let mut opts = ConnectOptions::new(self.ctx.addr(), "momcheck check");
        opts.connect_timeout = Duration::from_secs(30);
        let ping = async {
            let c = Client::connect(&opts).await?;
            c.ping().await
        };
        match tokio::time::timeout(Duration::from_secs(30), ping).await {
            Ok(Ok(_)) => Ok(()),
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer".into(),
                };
                self.finding(
                    "stalls",
                    format!("momd did not answer a ping within 30 s after {after}: {why}"),
                );
                self.momd.kill9();
                self.start_momd().await
            }
        }
    }

    async fn kill9(&mut self) -> anyhow::Result<()> {
        match self.rng.below(4) {
            0 => {
                self.momd.kill9();
            }
            1 => {
                // During topic and queue admin.
                self.ctx
                    .admin_burst
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(self.rng.range(5, 40))).await;
                self.momd.kill9();
                self.ctx
                    .admin_burst
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
            2 => {
                // During recovery: killed again soon after each start, once or twice.
                self.momd.kill9();
                for _ in 0..self.rng.range(1, 2) {
                    self.momd.spawn()?;
                    tokio::time::sleep(Duration::from_millis(self.rng.range(0, 400))).await;
                    self.momd.kill9();
                }
            }
            _ => {
                // Just after it serves again: clients reconnect, queues redeliver.
                self.momd.kill9();
                self.start_momd().await?;
                tokio::time::sleep(Duration::from_millis(self.rng.range(0, 300))).await;
                self.momd.kill9();
            }
        }
        self.start_momd().await
    }

    async fn pause(&mut self) -> anyhow::Result<()> {
        let ms = self.rng.range(100, 3000);
        self.momd.signal(libc::SIGSTOP)?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.momd.signal(libc::SIGCONT)
    }

    /// Stop momd, by kill -9 or SIGTERM; says which.
    async fn stop_momd(&mut self) -> &'static str {
        if self.rng.chance(0.5) {
            self.momd.kill9();
            "kill -9"
        } else {
            if let Err(e) = self.momd.sigterm(Duration::from_secs(30)).await {
                self.finding("stalls", format!("{e:#}"));
            }
            "SIGTERM"
        }
    }

    async fn clock(&mut self) -> anyhow::Result<()> {
        let offset = if self.rng.chance(0.2) {
            0
        } else {
            let h = self.rng.range(1, 12) as i64 * HOUR_MS;
            if self.rng.chance(0.5) {
                h
            } else {
                -h
            }
        };
        let how = self.stop_momd().await;
        eprintln!(
            "momcheck: clock: stopped by {how}, momd's clock jumps from {:+} h to {:+} h",
            self.momd.clock_offset_ms() / HOUR_MS,
            offset / HOUR_MS
        );
        self.momd.set_clock_offset_ms(offset);
        self.start_momd().await
    }

    async fn corrupt(&mut self) -> anyhow::Result<()> {
        let how = self.stop_momd().await;
        eprintln!("momcheck: corrupt: momd stopped by {how}");
        let after_start = self.momd.starts;
        let modes = &self.opts.corrupt;
        let flip = modes.contains(&CorruptMode::Flip);
        let truncate = modes.contains(&CorruptMode::Truncate);
        for _ in 0..self.rng.range(1, 2) {
            // Read again each time: the last damage may have changed a file.
            let segs = corrupt::segments(&self.ctx, self.momd.data())?;
            if segs.is_empty() {
                eprintln!(
                    "momcheck: corrupt: no segment file of the workload yet; nothing damaged"
                );
                break;
            }
            let seg = &segs[self.rng.below(segs.len() as u64) as usize];
            let probe_topic = self.ctx.topics.len().saturating_sub(1) as u16;
            for d in corrupt::damage(
                seg,
                &mut self.rng,
                &self.ctx.topics,
                probe_topic,
                flip,
                truncate,
            )? {
                eprintln!("momcheck: corrupt: {}", d.what);
                self.ctx.ledger().destroyed.push(Destroyed {
                    range: d.range,
                    truncated: d.truncated,
                    after_start,
                });
            }
        }
        let (code, out, err) = self.momd.offline("verify").await?;
        for r in corrupt::parse_verify(&self.ctx, &out) {
            self.ctx.ledger().add_damage(r);
        }
        match code {
            0 | 1 => {}
            _ => self.finding(
                "store-failures",
                format!("momd verify could not check the data dir (exit {code}): {err}{out}"),
            ),
        }
        if self.rng.chance(1.0 / 3.0) {
            let (code, out, err) = self.momd.offline("repair").await?;
            if code != 0 {
                self.finding(
                    "store-failures",
                    format!("momd repair failed (exit {code}): {err}{out}"),
                );
            } else {
                let (code, out, _) = self.momd.offline("verify").await?;
                if code != 0 {
                    self.finding(
                        "store-failures",
                        format!("momd verify after momd repair still finds damage (exit {code}):\n{out}"),
                    );
                }
            }
        }
        self.start_momd().await
    }

    async fn diskfull(&mut self) -> anyhow::Result<()> {
        let Some(dir) = self.mount.as_ref().map(|m| m.path().to_path_buf()) else {
            self.skipped_diskfull += 1;
            return Ok(());
        };
        let leave = if self.rng.chance(0.3) {
            self.rng.range(8, 64) * 1024
        } else {
            0
        };
        let (filler, size) = disk::fill(&dir, leave)?;
        let hold = Duration::from_millis(self.rng.range(1000, 3000));
        let t0 = Instant::now();
        // Reads, new connections and admin go on while the disk is full.
        let reads = async {
            let c = Client::connect(&ConnectOptions::new(
                self.ctx.addr(),
                "momcheck diskfull read",
            ))
            .await?;
            let topic = &self.ctx.topics[0];
            let info = c.topic_info(topic).await?;
            if info.messages > 0 {
                let mut w = c.watch(vec![topic.clone()], StartAt::Last, 5).await?;
                loop {
                    if let WatchEvent::Messages(_) = w.next().await? {
                        break;
                    }
                }
            }
            c.queue_info(crate::workload::QUEUE).await.map(|_| ())
        };
        match tokio::time::timeout(Duration::from_secs(10), reads).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.finding(
                "diskfull-failures",
                format!("on a full disk ({leave} bytes left), a new reader failed: {e}"),
            ),
            Err(_) => self.finding(
                "diskfull-failures",
                format!(
                    "on a full disk ({leave} bytes left), a new reader got nothing within 10 s"
                ),
            ),
        }
        tokio::time::sleep(hold.saturating_sub(t0.elapsed())).await;
        let restart_full = self.rng.chance(0.25);
        if restart_full {
            // A crash on a full disk, and a start while it is still full.
            self.momd.kill9();
            if let Err(e) = self.start_momd().await {
                self.finding(
                    "diskfull-failures",
                    format!("momd does not start on a full disk ({leave} bytes left): {e:#}"),
                );
                self.momd.kill9();
            }
        }
        std::fs::remove_file(&filler).context("removing the filler file")?;
        eprintln!(
            "momcheck: diskfull: {:.0} MB filler for {:.1?}{}, freed",
            size as f64 / 1e6,
            hold,
            if restart_full {
                ", kill -9 and start while full"
            } else {
                ""
            }
        );
        if !self.momd.running() {
            self.start_momd().await.context(
                "momd does not start after a start attempt on a full disk, even with space back",
            )?;
        }
        // Publishes resume on their own once there is space.
        let freed = Instant::now();
        let mut n = 0u64;
        let mut last_err;
        loop {
            n += 1;
            let id = format!("resume.{}.{n}", self.momd.starts);
            let addr = self.ctx.addr();
            let attempt = async {
                let c =
                    Client::connect(&ConnectOptions::new(addr, "momcheck diskfull resume")).await?;
                let msg = momctl::client::message("resume", Default::default(), Some(id));
                c.publish("mc.resume", vec![msg]).await
            };
            match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => last_err = e.to_string(),
                Err(_) => last_err = "no answer in 10 s".into(),
            }
            if freed.elapsed() > Duration::from_secs(30) {
                self.finding(
                    "diskfull-failures",
                    format!(
                        "publishes still fail 30 s after the disk has space again ({last_err}); \
                         restarting momd"
                    ),
                );
                self.momd.kill9();
                return self.start_momd().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.resume_times.push(freed.elapsed());
        Ok(())
    }

    async fn hostile(&mut self) -> anyhow::Result<()> {
        let case = self.hostile_order[self.hostile_next % self.hostile_order.len()];
        self.hostile_next += 1;
        let phase = format!("hostile:{}", case.name());
        self.ctx.set_phase(&phase);
        let addr = self.ctx.addr();
        let rss = self.momd.rss.clone();
        let report = hostile::measured(case, &addr, self.scale, &mut self.rng, &rss).await;
        eprintln!("momcheck: hostile {}: {}", report.case, report.line());
        self.hostile_reports.push(report);
        self.check_alive(&phase).await
    }
}
