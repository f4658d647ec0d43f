//! `momcheck --cluster`: the workload against three momd nodes that form a Raft cluster,
//! faults of a cluster (its leader killed or paused, a node cut off, a link cut one way, a
//! node joining and leaving), then every node's copy read back and judged: every
//! acknowledged message once on every node, each publisher's order kept, and the same
//! message at the same seq on every node. Start at `ClusterRun::run`; the faults are in
//! `faults.rs`, the nodes and their links in `nodes.rs`.
//!
//! The workload is the single node's: publishers, consumers of a durable queue bound to
//! the topics (acking, nacking some), and watchers, each moving on to another node when it
//! loses its own. At the end the queue must drain, and what the consumers were given is
//! judged as on a single node (every acknowledged message delivered, delivery counts never
//! going back).

mod diskfull;
mod faults;
mod nodes;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use momctl::client::{Client, ConnectOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Ctx, Latencies, Ledger, Shared};
use crate::opts::{Fault, Opts};
use crate::readback::{self, Readback};
use crate::rng::Rng;
use crate::verdict::{self, Counts, Details, Scope};
use crate::workload::{self, QUEUE, TOPIC_PATTERN};

use nodes::{Nodes, TRIO};

/// The kinds of findings besides the data's, in the order the verdict names them.
pub const FINDING_KINDS: [&str; 5] = [
    "crashes",
    "stalls",
    "errors",
    "rss-over",
    "diskfull-failures",
];

/// How long the nodes may take to agree on a leader after a fault is healed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to catch up at the end.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ClusterRun {
    pub opts: Opts,
    pub seed: u64,
    rng: Rng,
    pub ctx: Ctx,
    /// Declared before `work`: the nodes are gone before their dirs.
    nodes: Nodes,
    /// The trio's data dirs as filesystems of their own, for `diskfull` (none without
    /// root): unmounted after the nodes are gone, before `work` is removed.
    mounts: Vec<crate::disk::Mount>,
    /// `diskfull` cycles that did nothing, for want of the mounts.
    pub skipped_diskfull: u32,
    pub work: tempfile::TempDir,
    pub fault_counts: BTreeMap<&'static str, u32>,
    /// Violations other than the data's: (kind, what).
    pub findings: Vec<(&'static str, String)>,
    /// How long the data group had no leader the surviving nodes agreed on, after a fault
    /// that took its leader out: (fault, time until another node led).
    pub failovers: Vec<(&'static str, Duration)>,
    /// The next id of a node that joins.
    next_extra: u64,
    /// Joined nodes checked, and what their checks found.
    pub joins_checked: u32,
    join_counts: Counts,
    join_details: Details,
    /// The hostile cases in the order they come, the next one, and their scale.
    hostile_order: Vec<crate::hostile::Case>,
    hostile_next: usize,
    scale: crate::hostile::Scale,
    pub hostile_reports: Vec<crate::hostile::HostileReport>,
}

/// The clients of the workload.
struct Tasks {
    publishers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
    watchers: Vec<JoinHandle<()>>,
    stop_publishing: CancellationToken,
    give_up: CancellationToken,
    stop_consumers: CancellationToken,
    stop_watchers: CancellationToken,
}

/// What the final check found.
pub struct Outcome {
    /// Summed over the nodes (a message lost on two nodes counts twice); what clients noted
    /// on the way (a watcher seeing seqs go back) counts once.
    pub counts: Counts,
    /// Seqs whose message is not the same on every node (or missing from some).
    pub diverged: u64,
    pub details: Details,
}

impl Outcome {
    pub fn violations(&self) -> u64 {
        self.counts.violations() + self.diverged
    }
}

/// Run the cluster check and print its verdict; the process's exit code.
pub async fn check(opts: Opts, seed: u64) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let json = opts.json;
    let keep = opts.keep;
    let faults: Vec<&str> = opts.fault_list().iter().map(|f| f.name()).collect();
    eprintln!(
        "momcheck: cluster of 3 nodes, seed {seed}: {} cycles of {} (re-run: --cluster --seed {seed})",
        opts.cycles,
        faults.join(",")
    );
    let mut run = ClusterRun::setup(opts, seed).await?;
    eprintln!(
        "momcheck: work dir (data, node logs) {}",
        run.work.path().display()
    );
    let interrupted = CancellationToken::new();
    let on_signal = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("momcheck: interrupted; finishing the current cycle, then checking");
            on_signal.cancel();
        }
    });
    let result = run.run(interrupted).await;
    run.nodes.stop_all().await;
    for (id, peak) in run.rss_peaks() {
        if peak > run.opts.max_rss {
            run.finding(
                "rss-over",
                format!(
                    "node {id}'s peak RSS {} MiB is over the bound of {} MiB",
                    peak >> 20,
                    run.opts.max_rss >> 20
                ),
            );
        }
    }
    let took = started.elapsed();
    let (outcome, why) = match &result {
        Ok(o) => {
            crate::run::print_details(&o.details);
            (Some(o), None)
        }
        Err(e) => {
            eprintln!("momcheck: the run stopped: {e:#}");
            (None, Some(format!("{e:#}").replace('\n', " ")))
        }
    };
    let failed = why.is_some() || report::failed(&run, outcome);
    if json {
        println!("{}", report::json(&run, outcome, took, why.as_deref()));
    } else {
        println!("{}", report::line(&run, outcome, took, why.as_deref()));
    }
    if failed && (keep || why.is_some()) {
        run.work.disable_cleanup(true);
        eprintln!("momcheck: kept {}", run.work.path().display());
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

impl ClusterRun {
    /// Each node's highest VmHWM over the run (its restarts included).
    pub fn rss_peaks(&self) -> Vec<(u64, u64)> {
        self.nodes
            .nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    n.momd.rss.peak.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }

    pub fn finding(&mut self, kind: &'static str, what: String) {
        eprintln!("momcheck: {kind}: {what}");
        self.findings.push((kind, what));
    }

    async fn setup(opts: Opts, seed: u64) -> anyhow::Result<ClusterRun> {
        let work = tempfile::Builder::new()
            .prefix("momcheck-cluster-")
            .tempdir()
            .context("creating the work dir")?;
        // Idle-connection cases need many files (the nodes inherit the limit).
        let fd_limit = crate::hostile::raise_fd_limit();
        let mounts = if opts.fault_list().contains(&Fault::DiskFull) {
            diskfull::mount_all(work.path(), opts.disk_size()).unwrap_or_else(|e| {
                eprintln!(
                    "momcheck: diskfull skipped: cannot mount a tmpfs for each node's data dir \
                     ({e}); it needs root on Linux"
                );
                Vec::new()
            })
        } else {
            Vec::new()
        };
        let nodes = Nodes::start(opts.momd_bin()?, work.path(), opts.data_groups)
            .await
            .context("starting the nodes")?;
        for n in &nodes.nodes {
            crate::momd::spawn_rss_sampler(n.momd.pid.clone(), n.momd.rss.clone());
        }
        let mut rng = Rng::new(seed);
        let hostile_order = crate::hostile::order(&opts.hostile_cases, &mut rng);
        let scale = crate::hostile::Scale {
            small: opts.small,
            time: opts.hostile_time,
            fd_limit,
        };
        // The probe's topic stays empty here (publish latencies are the publishers'); it is
        // kept so the ledger has the shape the verdict knows.
        let topics = workload::run_topics(opts.topics);
        let ctx = Arc::new(Shared {
            ledger: Mutex::new(Ledger::new(opts.publishers)),
            topics,
            probe: opts.publishers,
            addr: Arc::new(RwLock::new(nodes.servers())),
            cluster: true,
            epoch: AtomicU32::new(0),
            phases: Mutex::new(vec!["start".into()]),
            latencies: Mutex::new(Latencies::default()),
            acked: AtomicU64::new(0),
            admin_burst: AtomicBool::new(false),
        });
        Ok(ClusterRun {
            rng,
            opts,
            seed,
            ctx,
            nodes,
            work,
            fault_counts: BTreeMap::new(),
            findings: Vec::new(),
            failovers: Vec::new(),
            next_extra: 4,
            mounts,
            skipped_diskfull: 0,
            joins_checked: 0,
            join_counts: Counts::default(),
            join_details: Details::default(),
            hostile_order,
            hostile_next: 0,
            scale,
            hostile_reports: Vec::new(),
        })
    }

    fn spawn_clients(&mut self) -> Tasks {
        let mut t = Tasks {
            publishers: Vec::new(),
            consumers: Vec::new(),
            watchers: Vec::new(),
            stop_publishing: CancellationToken::new(),
            give_up: CancellationToken::new(),
            stop_consumers: CancellationToken::new(),
            stop_watchers: CancellationToken::new(),
        };
        let rate = f64::from(self.opts.rate) / f64::from(self.opts.publishers.max(1));
        for p in 0..self.opts.publishers {
            t.publishers.push(tokio::spawn(workload::publisher(
                self.ctx.clone(),
                p,
                self.rng.fork(),
                rate,
                t.stop_publishing.clone(),
                t.give_up.clone(),
            )));
        }
        let consumers = if self.queued() {
            self.opts.consumers
        } else {
            0
        };
        for c in 0..consumers {
            t.consumers.push(tokio::spawn(workload::consumer(
                self.ctx.clone(),
                c,
                self.rng.fork(),
                t.stop_consumers.clone(),
            )));
        }
        for w in 0..self.opts.watchers {
            t.watchers.push(tokio::spawn(workload::watcher(
                self.ctx.clone(),
                w,
                t.stop_watchers.clone(),
            )));
        }
        t
    }

    /// Whether the workload has its queue: not with several data groups, which do not
    /// carry queues yet.
    fn queued(&self) -> bool {
        self.opts.data_groups <= 1
    }

    async fn run(&mut self, interrupted: CancellationToken) -> anyhow::Result<Outcome> {
        self.settle("start").await?;
        let c = Client::connect(&ConnectOptions::with_servers(
            self.ctx.servers(0),
            "momcheck setup",
        ))
        .await?;
        if self.queued() {
            c.queue_create(mom_proto::QueueCreate {
                queue: QUEUE.into(),
                bindings: vec![TOPIC_PATTERN.into()],
                from: mom_proto::StartAt::All,
                max_deliver: Some(10),
                ack_wait_ms: Some(5000),
                ..mom_proto::QueueCreate::default()
            })
            .await
            .context("creating the queue")?;
        }
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
        }
        self.finish(tasks).await
    }

    /// Did a node exit by itself? Then that is a crash: noted, and the node started again.
    async fn check_alive(&mut self, during: &str) -> anyhow::Result<()> {
        let mut crashed = Vec::new();
        for n in &mut self.nodes.nodes {
            if let Some(st) = n.momd.exited() {
                crashed.push((n.id, st, n.momd.log_tail(20)));
            }
        }
        for (id, st, tail) in crashed {
            self.finding(
                "crashes",
                format!("node {id} exited by itself ({st}) during {during}; its log ends:\n{tail}"),
            );
        }
        self.nodes.revive_all().await
    }

    /// Wait until every node has applied the data group's whole log (or note a stall).
    async fn caught_up(&mut self) {
        let t0 = Instant::now();
        loop {
            if let Some((_, true)) = self.nodes.agreement(&TRIO).await {
                break;
            }
            if t0.elapsed() > CATCH_UP_TIMEOUT {
                self.finding(
                    "stalls",
                    format!(
                        "the nodes had not caught up with the data group's leader \
                         {CATCH_UP_TIMEOUT:?} after the last publish (their copies are checked \
                         as they are)"
                    ),
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("momcheck: final: nodes caught up in {:.1?}", t0.elapsed());
    }

    /// Let the consumers take and settle everything the queue holds (healed, every node
    /// running), then stop them. A queue that stops moving for 10 s is left as it is: what
    /// it still holds of the acknowledged messages is counted as never delivered.
    async fn drain(&mut self, t: &Tasks) -> anyhow::Result<()> {
        if !self.queued() {
            return Ok(());
        }
        let c = Client::connect(&ConnectOptions::with_servers(
            self.ctx.servers(0),
            "momcheck final",
        ))
        .await?;
        let t0 = Instant::now();
        if let Some(q) = workload::drain(&c).await? {
            self.finding(
                "stalls",
                format!(
                    "the queue does not drain: {} ready, {} unacked after {:.0?}",
                    q.ready,
                    q.unacked,
                    t0.elapsed()
                ),
            );
        }
        t.stop_consumers.cancel();
        join_all(&t.consumers, Duration::from_secs(30)).await;
        eprintln!("momcheck: final: queue drained in {:.1?}", t0.elapsed());
        Ok(())
    }

    /// Every node runs, and the trio agrees on the data group's leader (within
    /// `SETTLE_TIMEOUT`, else that is a stall).
    async fn settle(&mut self, after: &str) -> anyhow::Result<()> {
        self.check_alive(after).await?;
        let t0 = Instant::now();
        loop {
            if self.nodes.agreement(&TRIO).await.is_some() {
                return Ok(());
            }
            if t0.elapsed() > SETTLE_TIMEOUT {
                self.finding(
                    "stalls",
                    format!(
                        "the nodes did not agree on a leader of the data group within \
                         {SETTLE_TIMEOUT:?} after {after}"
                    ),
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stop publishing, heal everything, wait until every node has caught up, read every
    /// node's copy and judge.
    async fn finish(&mut self, t: Tasks) -> anyhow::Result<Outcome> {
        self.ctx.set_phase("final");
        let t_final = Instant::now();
        t.stop_publishing.cancel();
        if !join_all(&t.publishers, Duration::from_secs(120)).await {
            eprintln!("momcheck: publishers still re-sending after 120 s; giving up on them");
            t.give_up.cancel();
            join_all(&t.publishers, Duration::from_secs(30)).await;
        }
        t.stop_watchers.cancel();
        join_all(&t.watchers, Duration::from_secs(30)).await;
        eprintln!(
            "momcheck: final: clients stopped in {:.1?}",
            t_final.elapsed()
        );
        self.nodes.heal();
        self.settle("final").await?;
        self.caught_up().await;
        // Every node has applied every publish: the queue a node shows holds them all.
        self.drain(&t).await?;
        self.caught_up().await;
        let mut copies = Vec::new();
        for id in TRIO {
            copies.push((id, self.read_node(id).await?));
        }
        let l = self.ctx.ledger();
        // What clients noted on the way is checked with the first copy only.
        let queued = self.queued();
        let scope = |first: bool| Scope {
            queue: first && queued,
            observations: true,
            sightings: first,
        };
        let mut counts = Counts::default();
        let mut details = Details::default();
        for (id, rb) in &copies {
            let (c, d) = verdict::check(&l, rb, &self.ctx.topics, scope(*id == TRIO[0]));
            if counts.acked == 0 {
                counts.acked = c.acked;
                counts.unacked = c.unacked;
            }
            eprintln!(
                "momcheck: node {id}: lost {} duplicated {} reordered {} seq-reuse {} phantom {}",
                c.lost, c.duplicated, c.reordered, c.seq_reuse, c.phantom
            );
            counts.add(&c);
            details.merge(d, &format!("node {id}: "));
        }
        let errors = l.publish_errors.clone();
        let refused = l.refused;
        drop(l);
        let diverged = diverged(&copies, &self.ctx.topics, &mut details);
        counts.add(&self.join_counts);
        details.merge(std::mem::take(&mut self.join_details), "");
        for e in errors {
            self.finding("errors", e);
        }
        if counts.acked == 0 {
            self.finding(
                "errors",
                format!(
                    "no publish was acknowledged in the whole run ({refused} answered unavailable)"
                ),
            );
        }
        eprintln!("momcheck: {refused} publishes answered unavailable (then sent again)");
        Ok(Outcome {
            counts,
            diverged,
            details,
        })
    }

    /// Every topic of the run as node `id` holds it.
    async fn read_node(&self, id: u64) -> anyhow::Result<Readback> {
        let addr = self
            .nodes
            .addr(id)
            .with_context(|| format!("no node {id}"))?;
        let t0 = Instant::now();
        let c = Client::connect(&ConnectOptions::new(&addr, "momcheck read back"))
            .await
            .with_context(|| format!("connecting to node {id} ({addr}) to read its copy"))?;
        let rb = readback::read_topics(&self.ctx, &c)
            .await
            .with_context(|| format!("reading node {id}'s copy"))?;
        eprintln!(
            "momcheck: node {id}: {} messages read back in {:.1?}",
            rb.topics.iter().map(|t| t.len()).sum::<usize>(),
            t0.elapsed()
        );
        Ok(rb)
    }
}

/// Seqs whose message is not the same on every node: a message at a seq on one node and
/// another message, or none, at that seq on another.
fn diverged(copies: &[(u64, Readback)], topics: &[String], d: &mut Details) -> u64 {
    let mut n = 0;
    for (t, name) in topics.iter().enumerate() {
        let seqs: BTreeSet<u64> = copies
            .iter()
            .filter_map(|(_, rb)| rb.topics.get(t))
            .flat_map(|m| m.keys().copied())
            .collect();
        for seq in seqs {
            let held: Vec<Option<Option<u64>>> = copies
                .iter()
                .map(|(_, rb)| rb.topics.get(t).and_then(|m| m.get(&seq)).map(|s| s.key))
                .collect();
            if held.windows(2).all(|w| w[0] == w[1]) {
                continue;
            }
            n += 1;
            let each: Vec<String> = copies
                .iter()
                .zip(&held)
                .map(|((id, _), h)| match h {
                    None => format!("node {id} nothing"),
                    Some(None) => format!("node {id} a foreign message"),
                    Some(Some(k)) => {
                        let (p, i) = crate::ledger::key_parts(*k);
                        format!("node {id} p{p}.{i}")
                    }
                })
                .collect();
            d.add("diverged", format!("{name}:{seq}: {}", each.join(", ")));
        }
    }
    n
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
