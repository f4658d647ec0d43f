//! The `diskfull` fault of a cluster: each node's data dir is a tmpfs of its own
//! (`--disk-size`, mounted by momcheck, which needs root), and one node's is filled up.
//!
//! What a cluster promises then (README, "A cluster"): the node cannot write its Raft log
//! or its store, and Raft does not go on after a failed write, so the node stops with the
//! reason (exit 1, not a crash), while the other two go on taking publishes; once there is
//! room again it is started (what systemd's `Restart=on-failure` does), rejoins and catches
//! up. A node that stays up on a full disk is fine too, as long as it serves again once
//! there is room. The workload's acknowledged messages are checked at the end as always.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use momctl::client::{Client, ConnectOptions};

use super::nodes::TRIO;
use super::ClusterRun;
use crate::disk::{self, Mount};

/// How long the two others may take to acknowledge a publish while the third's disk is full.
const OTHERS_ANSWER: Duration = Duration::from_secs(20);

/// Mount a tmpfs of `size` bytes over each of the trio's data dirs (under `work`): all of
/// them, or none (with the reason).
pub(super) fn mount_all(work: &std::path::Path, size: u64) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for id in TRIO {
        let dir = work.join(format!("node{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        mounts.push(Mount::tmpfs(&dir, size).map_err(|e| format!("{e:#}"))?);
    }
    Ok(mounts)
}

impl ClusterRun {
    pub(super) async fn diskfull(&mut self) -> anyhow::Result<()> {
        let id = TRIO[self.rng.below(3) as usize];
        let Some(dir) = self.disk_of(id) else {
            self.skipped_diskfull += 1;
            return Ok(());
        };
        let (filler, size) = disk::fill(&dir, 0)?;
        let t0 = Instant::now();
        eprintln!(
            "momcheck: diskfull: node {id}'s disk filled ({:.0} MB filler)",
            size as f64 / 1e6
        );
        // The others take publishes meanwhile.
        let others: Vec<String> = TRIO
            .into_iter()
            .filter(|o| *o != id)
            .filter_map(|o| self.nodes.addr(o))
            .collect();
        let n = self.fault_counts.get("diskfull").copied().unwrap_or(0);
        let probe = async {
            let c = Client::connect(&ConnectOptions::with_servers(
                others,
                "momcheck diskfull probe",
            ))
            .await?;
            let msg = momctl::client::message(
                "while full",
                Default::default(),
                Some(format!("diskfull.{n}")),
            );
            c.publish("mc.diskfull", vec![msg]).await
        };
        match tokio::time::timeout(OTHERS_ANSWER, probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.finding(
                "diskfull-failures",
                format!("node {id}'s disk full: a publish through the others failed: {e}"),
            ),
            Err(_) => self.finding(
                "diskfull-failures",
                format!(
                    "node {id}'s disk full: a publish through the others got no answer in \
                     {OTHERS_ANSWER:?}"
                ),
            ),
        }
        let hold = Duration::from_millis(self.rng.range(1000, 3000));
        tokio::time::sleep(hold.saturating_sub(t0.elapsed())).await;
        let exited = self.nodes.get(id).and_then(|n| n.momd.exited());
        let how = self.judge_exit(id, exited, "on a full disk");
        // Sometimes a start while the disk is still full (systemd restarts a node that
        // stopped): it may stop again with the reason, or run; it must not crash.
        let mut again = "";
        if exited.is_some() && self.rng.chance(0.3) {
            if let Some(n) = self.nodes.get(id) {
                n.momd.spawn()?;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let st = self.nodes.get(id).and_then(|n| n.momd.exited());
            again = match self.judge_exit(id, st, "started on a full disk") {
                "it stayed up" => "; started again while full, it runs",
                "it stopped (exit 1)" => "; started again while full, it stopped (exit 1)",
                _ => "; started again while full, it crashed",
            };
        }
        std::fs::remove_file(&filler)?;
        eprintln!("momcheck: diskfull: node {id}'s disk freed after {hold:.1?}; {how}{again}");
        // Started again once there is room, as systemd would; it rejoins and catches up.
        self.nodes.revive_all().await
    }

    /// What an exit of node `id` (`when`) says: a stop with the reason (exit 1) is what is
    /// promised; a signal or a panic is a crash, noted.
    fn judge_exit(
        &mut self,
        id: u64,
        exited: Option<std::process::ExitStatus>,
        when: &str,
    ) -> &'static str {
        match exited {
            // A stop with the reason is what is promised; a signal or a panic is a crash.
            Some(st) if st.code() == Some(1) => "it stopped (exit 1)",
            Some(st) => {
                let tail = self
                    .nodes
                    .get(id)
                    .map(|n| n.momd.log_tail(20))
                    .unwrap_or_default();
                self.finding(
                    "crashes",
                    format!("node {id} {when} ended with {st}, not exit 1; its log ends:\n{tail}"),
                );
                "it crashed"
            }
            None => "it stayed up",
        }
    }

    /// The data dir of node `id`, when it is a tmpfs of its own.
    fn disk_of(&self, id: u64) -> Option<PathBuf> {
        self.mounts
            .iter()
            .map(|m| m.path().to_path_buf())
            .find(|p| p.ends_with(format!("node{id}")))
    }
}
