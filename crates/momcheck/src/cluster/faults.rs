//! The fault cycles of a cluster: a stretch of steady workload, then one fault (the data
//! group's leader killed or paused, any node killed, a node cut off, one direction of a
//! link cut, a fourth node joining and leaving), then everything healed and the nodes
//! agreeing on a leader again. Every choice comes from the run's seed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use mom_proto::ErrorCode;
use momctl::client::{Client, ClientError, ConnectOptions};

use super::nodes::{data_groups, TRIO};
use super::ClusterRun;
use crate::ledger::Ledger;
use crate::opts::Fault;
use crate::readback;
use crate::verdict::{self, Scope};

/// How long a membership change may take before it counts as an error.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a failover may take before momcheck stops watching for it.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

impl ClusterRun {
    /// One cycle: steady workload for a random while, then the fault, then healed.
    pub(super) async fn cycle(&mut self, fault: Fault) -> anyhow::Result<()> {
        let steady = self.rng.range(300, 1500);
        self.ctx.set_phase("steady");
        tokio::time::sleep(Duration::from_millis(steady)).await;
        self.check_alive("steady").await?;
        self.ctx.set_phase(fault.name());
        match fault {
            Fault::LeaderKill9 => self.kill9(true).await?,
            Fault::Kill9 => self.kill9(false).await?,
            Fault::LeaderPause => self.leader_pause().await?,
            Fault::Isolate => self.isolate().await?,
            Fault::OneWay => self.one_way().await?,
            Fault::JoinLeave => self.join_leave().await?,
            Fault::Hostile => self.hostile().await?,
            Fault::DiskFull => self.diskfull().await?,
            // `Opts::validate` keeps them for one momd (faults.rs).
            f => anyhow::bail!("{} is a fault of one momd", f.name()),
        }
        self.nodes.heal();
        self.settle(fault.name()).await?;
        self.ctx.set_phase("steady");
        Ok(())
    }

    /// The data group's leader among the trio; a random node if none is known.
    async fn leader_or_any(&mut self) -> u64 {
        match self.nodes.data_leader(&TRIO).await {
            Some(l) if TRIO.contains(&l) => l,
            _ => TRIO[self.rng.below(3) as usize],
        }
    }

    /// Watch the nodes of `others` every 100 ms, for `hold` at most, until they name a
    /// data leader other than `old`; the time since `t0` it took.
    async fn new_leader_within(
        &self,
        old: u64,
        others: &[u64],
        t0: Instant,
        hold: Duration,
    ) -> Option<Duration> {
        loop {
            if let Some(l) = self.nodes.data_leader(others).await {
                if l != old && others.contains(&l) {
                    return Some(t0.elapsed());
                }
            }
            if t0.elapsed() >= hold {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn note_failover(&mut self, fault: &'static str, took: Option<Duration>, old: u64) {
        match took {
            Some(d) => {
                eprintln!("momcheck: {fault}: node {old} led the data group; another leads {d:.1?} later");
                self.failovers.push((fault, d));
            }
            None => eprintln!("momcheck: {fault}: node {old} led the data group; no other node took over while it was out"),
        }
    }

    /// kill -9 of the data group's leader (`leader`) or of a random node, a moment down
    /// (sometimes none), then started again.
    async fn kill9(&mut self, leader: bool) -> anyhow::Result<()> {
        let was_leader = self.nodes.data_leader(&TRIO).await;
        let id = if leader {
            self.leader_or_any().await
        } else {
            TRIO[self.rng.below(3) as usize]
        };
        let name = if leader { "leader-kill9" } else { "kill9" };
        let t0 = Instant::now();
        if let Some(n) = self.nodes.get(id) {
            n.momd.kill9();
        }
        eprintln!("momcheck: {name}: node {id} killed");
        if was_leader == Some(id) {
            let others: Vec<u64> = TRIO.into_iter().filter(|o| *o != id).collect();
            let took = self
                .new_leader_within(id, &others, t0, FAILOVER_LIMIT)
                .await;
            self.note_failover(name, took, id);
        }
        let down = self.rng.below(2000);
        tokio::time::sleep(Duration::from_millis(down)).await;
        if let Some(n) = self.nodes.get(id) {
            n.momd.spawn()?;
            n.momd
                .wait_ready(super::nodes::START_TIMEOUT)
                .await
                .with_context(|| format!("restarting node {id}"))?;
        }
        Ok(())
    }

    /// SIGSTOP of the data group's leader for 0.5 to 5 s, then SIGCONT.
    async fn leader_pause(&mut self) -> anyhow::Result<()> {
        let id = self.leader_or_any().await;
        let hold = Duration::from_millis(self.rng.range(500, 5000));
        let t0 = Instant::now();
        if let Some(n) = self.nodes.get(id) {
            n.momd.signal(libc::SIGSTOP)?;
            n.paused = true;
        }
        eprintln!("momcheck: leader-pause: node {id} paused for {hold:.1?}");
        let others: Vec<u64> = TRIO.into_iter().filter(|o| *o != id).collect();
        let took = self.new_leader_within(id, &others, t0, hold).await;
        self.note_failover("leader-pause", took, id);
        if let Some(rest) = hold.checked_sub(t0.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        if let Some(n) = self.nodes.get(id) {
            n.momd.signal(libc::SIGCONT)?;
            n.paused = false;
        }
        Ok(())
    }

    /// One node cut off from both others, both ways, for 1 to 6 s: the leader half the
    /// time, else a random node.
    async fn isolate(&mut self) -> anyhow::Result<()> {
        let leader = self.nodes.data_leader(&TRIO).await;
        let id = match leader {
            Some(l) if self.rng.chance(0.5) => l,
            _ => TRIO[self.rng.below(3) as usize],
        };
        let hold = Duration::from_millis(self.rng.range(1000, 6000));
        let t0 = Instant::now();
        self.nodes.isolate(id);
        eprintln!("momcheck: isolate: node {id} cut off for {hold:.1?}");
        if leader == Some(id) {
            let others: Vec<u64> = TRIO.into_iter().filter(|o| *o != id).collect();
            let took = self.new_leader_within(id, &others, t0, hold).await;
            self.note_failover("isolate", took, id);
        }
        if let Some(rest) = hold.checked_sub(t0.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        self.nodes.heal();
        Ok(())
    }

    /// What the leader sends one other node is lost (or what that node sends the leader),
    /// the other way still passes, for 1 to 6 s.
    async fn one_way(&mut self) -> anyhow::Result<()> {
        let l = self.leader_or_any().await;
        let others: Vec<u64> = TRIO.into_iter().filter(|o| *o != l).collect();
        let o = others[self.rng.below(others.len() as u64) as usize];
        let (from, to) = if self.rng.chance(0.5) { (l, o) } else { (o, l) };
        let hold = Duration::from_millis(self.rng.range(1000, 6000));
        self.nodes.cut(from, to);
        eprintln!("momcheck: one-way: node {from} → node {to} cut for {hold:.1?} (node {l} led)");
        tokio::time::sleep(hold).await;
        self.nodes.heal();
        Ok(())
    }

    /// A fourth node (a new id each time, an empty data dir) joins; once it has applied
    /// what the leader held, its copy must hold every message acknowledged before, each
    /// once and in order; then it leaves and is stopped.
    async fn join_leave(&mut self) -> anyhow::Result<()> {
        let id = self.next_extra;
        self.next_extra += 1;
        self.nodes.start_extra(id).await?;
        let peer = self
            .nodes
            .nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.peer_addr.to_string())
            .unwrap_or_default();
        let r = self.joined_and_checked(id, &peer).await;
        if let Err(e) = r {
            self.finding("errors", format!("join-leave of node {id}: {e:#}"));
            // Not left behind as a member that is gone.
            if let Ok(c) = self.admin().await {
                let _ = tokio::time::timeout(CHANGE_TIMEOUT, c.cluster_leave(id)).await;
            }
        }
        self.nodes.remove_extra(id).await;
        Ok(())
    }

    async fn admin(&self) -> anyhow::Result<Client> {
        let servers = self.ctx.servers(self.rng_turn());
        let mut opts = ConnectOptions::with_servers(servers, "momcheck admin");
        opts.connect_timeout = Duration::from_secs(5);
        Ok(Client::connect(&opts).await?)
    }

    fn rng_turn(&self) -> usize {
        self.fault_counts.values().sum::<u32>() as usize
    }

    async fn joined_and_checked(&mut self, id: u64, peer: &str) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let c = self.admin().await?;
        // A node that must replay a long log stays a learner past the join's wait; momd
        // says so (`unavailable`) and that the join is to be run again, as an operator would.
        for attempt in 1.. {
            let r = tokio::time::timeout(CHANGE_TIMEOUT, c.cluster_join(id, peer))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("no answer to cluster_join within {CHANGE_TIMEOUT:?}")
                })?;
            match r {
                Ok(_) => break,
                Err(ClientError::Server {
                    code: ErrorCode::Unavailable,
                    message,
                }) if attempt < 10 && message.contains("run the join again") => {
                    eprintln!("momcheck: join-leave: node {id}: {message}");
                }
                Err(e) => return Err(e).context("cluster_join"),
            }
        }
        eprintln!(
            "momcheck: join-leave: node {id} joined in {:.1?}",
            t0.elapsed()
        );
        // Acknowledged before `snapshot`, so in the leader's log before `target`.
        let snapshot = {
            let l = self.ctx.ledger();
            Ledger {
                sent: l.sent.clone(),
                ..Ledger::default()
            }
        };
        // Of each data group: the new node must apply its leader's log up to there.
        let targets = self.leader_last_indexes().await?;
        let t1 = Instant::now();
        loop {
            let applied: BTreeMap<String, u64> = match self.nodes.status(id).await {
                Some(st) => data_groups(&st)
                    .map(|g| (g.name.clone(), g.applied_index))
                    .collect(),
                None => BTreeMap::new(),
            };
            let behind: Vec<String> = targets
                .iter()
                .filter(|(g, t)| applied.get(*g).is_none_or(|a| a < *t))
                .map(|(g, t)| format!("{g} at {:?} of {t}", applied.get(g)))
                .collect();
            if behind.is_empty() {
                break;
            }
            if t1.elapsed() > Duration::from_secs(60) {
                anyhow::bail!(
                    "60 s after it joined, node {id} had not applied its data groups' logs: {}",
                    behind.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let applied_in = t1.elapsed();
        let t_read = Instant::now();
        let addr = self.nodes.addr(id).unwrap_or_default();
        let nc = Client::connect(&ConnectOptions::new(&addr, "momcheck read back")).await?;
        let rb = readback::read_topics(&self.ctx, &nc).await?;
        let scope = Scope {
            queue: false,
            observations: false,
            sightings: false,
        };
        let (counts, details) = verdict::check(&snapshot, &rb, &self.ctx.topics, scope);
        eprintln!(
            "momcheck: join-leave: node {id} caught up in {:.1?} (its data groups' logs applied; \
             then read back in {:.1?}): acked {} lost {} duplicated {} reordered {} seq-reuse {} \
             phantom {}",
            applied_in,
            t_read.elapsed(),
            counts.acked,
            counts.lost,
            counts.duplicated,
            counts.reordered,
            counts.seq_reuse,
            counts.phantom
        );
        self.join_counts.add(&counts);
        self.join_details
            .merge(details, &format!("node {id} (joined): "));
        self.joins_checked += 1;
        let wait = self.rng.below(1000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let t2 = Instant::now();
        tokio::time::timeout(CHANGE_TIMEOUT, c.cluster_leave(id))
            .await
            .map_err(|_| anyhow::anyhow!("no answer to cluster_leave within {CHANGE_TIMEOUT:?}"))?
            .context("cluster_leave")?;
        eprintln!(
            "momcheck: join-leave: node {id} left in {:.1?}",
            t2.elapsed()
        );
        Ok(())
    }

    /// The last index of the data group's log on its leader.
    /// The last index of each data group's log, as its leader has it.
    async fn leader_last_indexes(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        'try_again: for _ in 0..50 {
            let mut any = None;
            for id in TRIO {
                any = self.nodes.status(id).await;
                if any.is_some() {
                    break;
                }
            }
            if let Some(st) = any {
                let mut out = BTreeMap::new();
                for g in data_groups(&st) {
                    let Some(l) = g.leader else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'try_again;
                    };
                    let last = match self.nodes.status(l).await {
                        Some(ls) => ls
                            .groups
                            .iter()
                            .find(|x| x.name == g.name && x.leader == Some(l))
                            .map(|x| x.last_index),
                        None => None,
                    };
                    let Some(last) = last else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'try_again;
                    };
                    out.insert(g.name.clone(), last);
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("no leader of each data group answered in 10 s")
    }

    /// One hostile client case against a node chosen at random, the workload going on
    /// through every node; the node's memory around it is reported.
    async fn hostile(&mut self) -> anyhow::Result<()> {
        let Some(&case) = self
            .hostile_order
            .get(self.hostile_next % self.hostile_order.len().max(1))
        else {
            return Ok(());
        };
        self.hostile_next += 1;
        let id = TRIO[self.rng.below(3) as usize];
        let (Some(addr), Some(rss)) = (
            self.nodes.addr(id),
            self.nodes.get(id).map(|n| n.momd.rss.clone()),
        ) else {
            anyhow::bail!("node {id} is not known");
        };
        self.ctx.set_phase(&format!("hostile:{}", case.name()));
        let report = crate::hostile::measured(case, &addr, self.scale, &mut self.rng, &rss).await;
        eprintln!(
            "momcheck: hostile {} against node {id}: {}",
            report.case,
            report.line()
        );
        self.hostile_reports.push(report);
        self.check_alive(&format!("hostile:{}", case.name())).await
    }
}
