//! A whole run: set up the data dir (on a tmpfs for `diskfull`), start momd and the
//! clients, run the fault cycles with checkpoints, then stop the clients, drain the queue,
//! read everything back and judge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use mom_proto::{QueueCreate, StartAt};
use momctl::client::{Client, ConnectOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::background;
use crate::disk::Mount;
use crate::hostile::{self, Case, Scale};
use crate::ledger::{Ctx, Latencies, Ledger, Shared};
use crate::momd::{spawn_rss_sampler, Momd};
use crate::opts::{Fault, Opts};
use crate::readback;
use crate::rng::Rng;
use crate::verdict::{self, Counts, Details, Scope};
use crate::workload::{self, QUEUE, TOPIC_PATTERN};

pub use crate::hostile::HostileReport;

pub struct Run {
    pub opts: Opts,
    pub seed: u64,
    pub rng: Rng,
    pub ctx: Ctx,
    pub momd: Momd,
    /// Dropped after `momd` (fields drop in order), so momd is gone before the unmount.
    pub mount: Option<Mount>,
    pub work: tempfile::TempDir,
    pub scale: Scale,
    pub fault_counts: BTreeMap<&'static str, u32>,
    /// Violations other than the data's: (kind, what).
    pub findings: Vec<(&'static str, String)>,
    pub hostile_order: Vec<Case>,
    pub hostile_next: usize,
    pub hostile_reports: Vec<HostileReport>,
    pub skipped_diskfull: u32,
    pub recoveries: Vec<Duration>,
    pub resume_times: Vec<Duration>,
    pub checkpoints: Vec<String>,
}

/// The kinds of findings, in the order the verdict names them.
pub const FINDING_KINDS: [&str; 7] = [
    "crashes",
    "stalls",
    "errors",
    "admin-lost",
    "diskfull-failures",
    "store-failures",
    "rss-over",
];

/// The clients of the workload, stopped in steps at the end.
struct Tasks {
    publishers: Vec<JoinHandle<()>>,
    others: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    stop_publishing: CancellationToken,
    give_up: CancellationToken,
    stop_others: CancellationToken,
    stop_consumers: CancellationToken,
}

impl Run {
    pub fn finding(&mut self, kind: &'static str, what: String) {
        eprintln!("momcheck: {kind}: {what}");
        self.findings.push((kind, what));
    }

    pub async fn setup(opts: Opts, seed: u64) -> anyhow::Result<Run> {
        let mut rng = Rng::new(seed);
        let fd_limit = hostile::raise_fd_limit();
        let work = tempfile::Builder::new()
            .prefix("momcheck-")
            .tempdir()
            .context("creating the work dir")?;
        let faults = opts.fault_list();
        let mut mount = None;
        let mut data_root = work.path().to_path_buf();
        if faults.contains(&Fault::DiskFull) {
            let dir = work.path().join("disk");
            std::fs::create_dir_all(&dir)?;
            match Mount::tmpfs(&dir, opts.disk_size()) {
                Ok(m) => {
                    data_root = dir;
                    mount = Some(m);
                }
                Err(e) => eprintln!("momcheck: diskfull skipped: cannot mount a tmpfs for the data dir ({e:#}); it needs root on Linux"),
            }
        }
        let data = data_root.join("data");
        let momd = Momd::new(opts.momd_bin()?, data, work.path().to_path_buf())?;
        spawn_rss_sampler(momd.pid.clone(), momd.rss.clone());
        let topics = workload::run_topics(opts.topics);
        let ctx = Arc::new(Shared {
            ledger: Mutex::new(Ledger::new(opts.publishers)),
            topics,
            probe: opts.publishers,
            addr: momd.addr.clone(),
            cluster: false,
            epoch: AtomicU32::new(0),
            phases: Mutex::new(vec!["start".into()]),
            latencies: Mutex::new(Latencies::default()),
            acked: AtomicU64::new(0),
            admin_burst: AtomicBool::new(false),
        });
        let hostile_order = hostile::order(&opts.hostile_cases, &mut rng);
        let scale = Scale {
            small: opts.small,
            time: opts.hostile_time,
            fd_limit,
        };
        Ok(Run {
            opts,
            seed,
            rng,
            ctx,
            momd,
            mount,
            work,
            scale,
            fault_counts: BTreeMap::new(),
            findings: Vec::new(),
            hostile_order,
            hostile_next: 0,
            hostile_reports: Vec::new(),
            skipped_diskfull: 0,
            recoveries: Vec::new(),
            resume_times: Vec::new(),
            checkpoints: Vec::new(),
        })
    }

    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    fn spawn_clients(&mut self) -> Tasks {
        let o = &self.opts;
        let t = Tasks {
            publishers: Vec::new(),
            others: Vec::new(),
            consumers: Vec::new(),
            stop_publishing: CancellationToken::new(),
            give_up: CancellationToken::new(),
            stop_others: CancellationToken::new(),
            stop_consumers: CancellationToken::new(),
        };
        let mut t = t;
        let rate = f64::from(o.rate) / f64::from(o.publishers.max(1));
        for p in 0..o.publishers {
            t.publishers.push(tokio::spawn(workload::publisher(
                self.ctx.clone(),
                p,
                self.rng.fork(),
                rate,
                t.stop_publishing.clone(),
                t.give_up.clone(),
            )));
        }
        for c in 0..o.consumers {
            t.consumers.push(tokio::spawn(workload::consumer(
                self.ctx.clone(),
                c,
                self.rng.fork(),
                t.stop_consumers.clone(),
            )));
        }
        for w in 0..o.watchers {
            t.others.push(tokio::spawn(workload::watcher(
                self.ctx.clone(),
                w,
                t.stop_others.clone(),
            )));
        }
        t.others.push(tokio::spawn(background::probe(
            self.ctx.clone(),
            t.stop_others.clone(),
        )));
        t.others.push(tokio::spawn(background::dropper(
            self.ctx.clone(),
            self.rng.fork(),
            t.stop_others.clone(),
        )));
        t.others.push(tokio::spawn(background::admin(
            self.ctx.clone(),
            self.rng.fork(),
            t.stop_others.clone(),
        )));
        t
    }

    /// The whole run; returns the counts of the final check.
    pub async fn run(
        &mut self,
        interrupted: CancellationToken,
    ) -> anyhow::Result<(Counts, Details)> {
        self.start_momd().await.context("starting momd")?;
        let c = Client::connect(&ConnectOptions::new(self.ctx.addr(), "momcheck setup")).await?;
        c.queue_create(QueueCreate {
            queue: QUEUE.into(),
            bindings: vec![TOPIC_PATTERN.into()],
            from: StartAt::All,
            max_deliver: Some(10),
            ack_wait_ms: Some(5000),
            ..QueueCreate::default()
        })
        .await
        .context("creating the queue")?;
        workload::create_partitioned(&c).await?;
        drop(c);
        let tasks = self.spawn_clients();
        let faults = self.opts.fault_list();
        let mut order: Vec<Fault> = Vec::new();
        for i in 0..self.opts.cycles {
            if order.is_empty() {
                order = faults.clone();
                self.rng.shuffle(&mut order);
            }
            if interrupted.is_cancelled() {
                eprintln!("momcheck: interrupted after {i} cycles; checking what was done");
                break;
            }
            let fault = order.remove(0);
            let t0 = Instant::now();
            self.cycle(fault)
                .await
                .with_context(|| format!("cycle {} ({})", i + 1, fault.name()))?;
            *self.fault_counts.entry(fault.name()).or_default() += 1;
            eprintln!(
                "momcheck: cycle {}/{} {} done in {:.1?}; {} acked so far",
                i + 1,
                self.opts.cycles,
                fault.name(),
                t0.elapsed(),
                self.ctx.acked.load(Ordering::Relaxed)
            );
            let every = self.opts.checkpoint_every;
            if every > 0 && (i + 1) % every == 0 && i + 1 < self.opts.cycles {
                self.checkpoint(i + 1).await?;
            }
        }
        self.finish(tasks).await
    }

    /// Read back what was acknowledged so far and check it, while the workload goes on.
    async fn checkpoint(&mut self, cycles: u32) -> anyhow::Result<()> {
        self.ctx.set_phase("checkpoint");
        let snapshot = {
            let l = self.ctx.ledger();
            Ledger {
                sent: l.sent.clone(),
                damaged: l.damaged.clone(),
                torn: l.torn.clone(),
                destroyed: l.destroyed.clone(),
                ..Ledger::default()
            }
        };
        let c =
            Client::connect(&ConnectOptions::new(self.ctx.addr(), "momcheck checkpoint")).await?;
        let rb = readback::read_all(&self.ctx, &c).await?;
        let scope = Scope {
            queue: false,
            observations: false,
            sightings: false,
        };
        let (counts, details) = verdict::check(&snapshot, &rb, &self.ctx.topics, scope);
        let line = format!(
            "checkpoint after cycle {cycles}: acked {} lost {} duplicated {} reordered {} seq-reuse {} phantom {} damaged-reported {}",
            counts.acked, counts.lost, counts.duplicated, counts.reordered, counts.seq_reuse, counts.phantom, counts.damaged_reported
        );
        eprintln!("momcheck: {line}");
        print_details(&details);
        self.checkpoints.push(line);
        self.ctx.set_phase("steady");
        Ok(())
    }

    /// Stop publishing, let every message reach the queue's consumers, stop everything,
    /// read back and check.
    async fn finish(&mut self, t: Tasks) -> anyhow::Result<(Counts, Details)> {
        self.ctx.set_phase("final");
        let t_final = Instant::now();
        t.stop_publishing.cancel();
        if !join_all(&t.publishers, Duration::from_secs(120)).await {
            eprintln!("momcheck: publishers still re-sending after 120 s; giving up on them");
            t.give_up.cancel();
            join_all(&t.publishers, Duration::from_secs(30)).await;
        }
        t.stop_others.cancel();
        join_all(&t.others, Duration::from_secs(30)).await;
        eprintln!(
            "momcheck: final: clients stopped in {:.1?}",
            t_final.elapsed()
        );
        let c = Client::connect(&ConnectOptions::new(self.ctx.addr(), "momcheck final")).await?;
        // Drained: nothing ready or unacked. Stuck: the same for 10 s while consumers wait.
        let t0 = Instant::now();
        if let Some(q) = workload::drain(&c).await? {
            eprintln!(
                "momcheck: the queue does not drain: {} ready, {} unacked, {} dropped after {:.0?} \
                 (what it still holds is counted below if it was acknowledged and not damaged)",
                q.ready,
                q.unacked,
                q.dropped,
                t0.elapsed()
            );
        }
        t.stop_consumers.cancel();
        join_all(&t.consumers, Duration::from_secs(30)).await;
        eprintln!("momcheck: final: queue drained in {:.1?}", t0.elapsed());
        let t1 = Instant::now();
        let rb = readback::read_all(&self.ctx, &c).await?;
        eprintln!("momcheck: final: read back in {:.1?}", t1.elapsed());
        drop(c);
        let l = self.ctx.ledger();
        let (counts, details) = verdict::check(
            &l,
            &rb,
            &self.ctx.topics,
            Scope {
                queue: true,
                observations: true,
                sightings: true,
            },
        );
        let errors = l.publish_errors.clone();
        let stalls = l.probe_stalls.clone();
        let admin = l.admin_lost.clone();
        let skipped: u64 = rb.skipped.iter().sum();
        let halves = l.halves_sent;
        let refused = l.refused;
        drop(l);
        for e in errors {
            self.finding("errors", e);
        }
        for s in stalls {
            self.finding("stalls", s);
        }
        for a in admin {
            self.finding("admin-lost", a);
        }
        eprintln!(
            "momcheck: {} messages dropped mid-frame by their client; {refused} publishes refused \
             (full disk); the replay skipped {skipped} unreadable messages",
            halves
        );
        Ok((counts, details))
    }

    /// Stop momd (SIGTERM), run `momd verify` a last time.
    pub async fn shutdown(&mut self) {
        if self.momd.running() {
            let _ = self.momd.signal(libc::SIGCONT);
            if let Err(e) = self.momd.sigterm(Duration::from_secs(30)).await {
                self.finding("stalls", format!("{e:#}"));
            }
        }
    }

    /// Keep a copy of the data dir beside the logs (the tmpfs goes away at the end).
    pub fn keep_data(&self) -> Option<PathBuf> {
        self.mount.as_ref()?;
        let to = self.work.path().join("data-copy");
        copy_dir(self.momd.data(), &to).ok()?;
        Some(to)
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dst = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else {
            std::fs::copy(e.path(), dst)?;
        }
    }
    Ok(())
}

/// Wait for tasks to end, at most `limit`; true if all did.
async fn join_all(tasks: &[JoinHandle<()>], limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    for t in tasks {
        while !t.is_finished() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    true
}

pub fn print_details(d: &Details) {
    for (kind, examples) in &d.by_kind {
        for e in examples {
            eprintln!("momcheck: {kind}: {e}");
        }
    }
}
