//! The nodes of the checked cluster: three momd whose peer listeners are on 127.0.0.1,
//! 127.0.0.2 and 127.0.0.3 (clients reach each on a port of 127.0.0.1: momd takes anonymous
//! clients there only), each dialing its peers through a proxy of its own per directed link
//! (`MOMD_PEER_ROUTES`), so a link can be cut one way or both while the processes run
//! untouched; a fourth node that joins and leaves; and what `cluster_status` says about
//! them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mom_proto::{ClusterGroup, ClusterStatus};
use momcheck::proxy::{Dir, Flow, Proxy};
use momctl::client::{Client, ConnectOptions};

use crate::momd::{free_port_on, Momd};

/// The ids of the three nodes; node i's peer listener is on 127.0.0.i.
pub const TRIO: [u64; 3] = [1, 2, 3];
pub const CLUSTER_ID: &str = "momcheck";
/// The Raft group that carries the publishes (`groups[]` of `cluster_status`).
pub const DATA_GROUP: &str = "data";
/// How long a node may take to start and serve.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Node {
    pub id: u64,
    pub momd: Momd,
    pub peer_addr: SocketAddr,
    /// SIGSTOPped by a fault, not yet SIGCONTed.
    pub paused: bool,
}

pub struct Nodes {
    /// The trio first, then a node that joined, if any.
    pub nodes: Vec<Node>,
    /// (from, to) → the proxy `from` dials `to` through.
    links: BTreeMap<(u64, u64), Proxy>,
    bin: PathBuf,
    work: PathBuf,
    /// `--peers` of every node: the trio's peer addresses.
    peers: String,
    /// The data groups every node's topics spread over (`--data-groups`).
    data_groups: u16,
}

fn host(id: u64) -> String {
    format!("127.0.0.{id}")
}

/// Every data group as a status reports it: `data`, or `data.0`, `data.1`, … of several.
pub fn data_groups(st: &ClusterStatus) -> impl Iterator<Item = &ClusterGroup> {
    st.groups
        .iter()
        .filter(|g| g.name == DATA_GROUP || g.name.starts_with(&format!("{DATA_GROUP}.")))
}

/// The (first) data group as a status reports it: `data`, or `data.0` of several.
pub fn data_group(st: &ClusterStatus) -> Option<&ClusterGroup> {
    st.groups
        .iter()
        .find(|g| g.name == DATA_GROUP || g.name == format!("{DATA_GROUP}.0"))
}

impl Nodes {
    /// Start the trio and wait until each node serves.
    pub async fn start(bin: PathBuf, work: &Path, data_groups: u16) -> anyhow::Result<Nodes> {
        let mut peer_addrs: BTreeMap<u64, SocketAddr> = BTreeMap::new();
        for id in TRIO {
            let h = host(id);
            let port = free_port_on(&h)?;
            let addr: SocketAddr = format!("{h}:{port}").parse()?;
            peer_addrs.insert(id, addr);
        }
        let peers = peer_addrs
            .iter()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut links = BTreeMap::new();
        for from in TRIO {
            for to in TRIO.into_iter().filter(|to| *to != from) {
                let upstream = peer_addrs[&to];
                let proxy = Proxy::start_here(upstream)
                    .await
                    .with_context(|| format!("starting the proxy of link {from}→{to}"))?;
                links.insert((from, to), proxy);
            }
        }
        let mut nodes = Nodes {
            nodes: Vec::new(),
            links,
            bin,
            work: work.to_path_buf(),
            peers,
            data_groups,
        };
        for id in TRIO {
            let routes = TRIO
                .iter()
                .filter(|to| **to != id)
                .map(|to| format!("{to}={}", nodes.links[&(id, *to)].addr()))
                .collect::<Vec<_>>()
                .join(",");
            let node = nodes.new_node(id, peer_addrs[&id], vec![("MOMD_PEER_ROUTES", routes)])?;
            nodes.nodes.push(node);
        }
        for n in &mut nodes.nodes {
            n.momd.spawn()?;
        }
        for n in &mut nodes.nodes {
            n.momd
                .wait_ready(START_TIMEOUT)
                .await
                .with_context(|| format!("starting node {}", n.id))?;
        }
        Ok(nodes)
    }

    fn new_node(
        &self,
        id: u64,
        peer_addr: SocketAddr,
        envs: Vec<(&str, String)>,
    ) -> anyhow::Result<Node> {
        let port = free_port_on("127.0.0.1")?;
        let args = vec![
            "--cluster-id".to_string(),
            CLUSTER_ID.into(),
            "--node-id".into(),
            id.to_string(),
            "--peer-listen".into(),
            peer_addr.to_string(),
            "--peers".into(),
            self.peers.clone(),
            "--data-groups".into(),
            self.data_groups.to_string(),
        ];
        let envs: Vec<(String, String)> =
            envs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let momd = Momd::node(
            self.bin.clone(),
            self.work.join(format!("node{id}")),
            self.work.clone(),
            &format!("node{id}"),
            ("127.0.0.1", port),
            args,
            envs,
        );
        Ok(Node {
            id,
            momd,
            peer_addr,
            paused: false,
        })
    }

    /// Start a new node `id` (peers on 127.0.0.`id`) with an empty data dir (it waits to be added;
    /// it dials the trio directly, and they it).
    pub async fn start_extra(&mut self, id: u64) -> anyhow::Result<()> {
        let h = host(id);
        let peer: SocketAddr = format!("{h}:{}", free_port_on(&h)?).parse()?;
        let mut node = self.new_node(id, peer, Vec::new())?;
        node.momd.spawn()?;
        // It takes no client before it has joined and caught up (it cannot vouch for the
        // cluster's users yet): listening is what it can show.
        node.momd.wait_listening(START_TIMEOUT).await?;
        self.nodes.push(node);
        Ok(())
    }

    /// Stop and forget a node that is not of the trio.
    pub async fn remove_extra(&mut self, id: u64) {
        if TRIO.contains(&id) {
            return;
        }
        if let Some(i) = self.nodes.iter().position(|n| n.id == id) {
            let mut n = self.nodes.remove(i);
            if n.momd.sigterm(Duration::from_secs(30)).await.is_err() {
                n.momd.kill9();
            }
        }
    }

    /// The trio's client addresses, `a,b,c`.
    pub fn servers(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| TRIO.contains(&n.id))
            .map(|n| n.momd.client_addr())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn get(&mut self, id: u64) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id)
    }

    pub fn addr(&self, id: u64) -> Option<String> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.momd.client_addr())
    }

    /// `cluster_status` as node `id` sees it; `None` if it does not answer within 5 s.
    pub async fn status(&self, id: u64) -> Option<ClusterStatus> {
        let n = self.nodes.iter().find(|n| n.id == id)?;
        if !n.momd.running() || n.paused {
            return None;
        }
        let mut opts = ConnectOptions::new(n.momd.client_addr(), "momcheck status");
        opts.connect_timeout = Duration::from_secs(2);
        let ask = async {
            let c = Client::connect(&opts).await.ok()?;
            c.cluster_status().await.ok()
        };
        tokio::time::timeout(Duration::from_secs(5), ask)
            .await
            .ok()
            .flatten()
    }

    /// The data group's leader as the running nodes of `among` report it: of the reports
    /// that name one, the one of the highest term (a deposed leader that has not heard of
    /// the new term still names itself).
    pub async fn data_leader(&self, among: &[u64]) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for id in among {
            let Some(st) = self.status(*id).await else {
                continue;
            };
            let Some(g) = data_group(&st) else { continue };
            if let Some(l) = g.leader {
                if best.is_none_or(|(term, _)| g.term > term) {
                    best = Some((g.term, l));
                }
            }
        }
        best.map(|(_, l)| l)
    }

    /// Once every node of `ids` names the same leader (one of `ids`) of each data group, in
    /// the same term: the first data group's leader, and whether every node has applied each
    /// group's whole log and each leader sees each of them 0 entries behind.
    pub async fn agreement(&self, ids: &[u64]) -> Option<(u64, bool)> {
        let mut all = Vec::new();
        for id in ids {
            all.push(self.status(*id).await?);
        }
        let names: Vec<String> = data_groups(all.first()?).map(|g| g.name.clone()).collect();
        let group = |st: &'_ ClusterStatus, name: &str| -> Option<ClusterGroup> {
            st.groups.iter().find(|g| g.name == name).cloned()
        };
        let mut done = true;
        let mut first_leader = None;
        for name in &names {
            let first = group(all.first()?, name)?;
            let leader = first.leader.filter(|l| ids.contains(l))?;
            first_leader.get_or_insert(leader);
            let agree = all.iter().all(|st| {
                group(st, name).is_some_and(|g| (g.leader, g.term) == (first.leader, first.term))
            });
            if !agree {
                return None;
            }
            let lead = all.iter().find(|st| st.node_id == leader)?;
            let lg = group(lead, name)?;
            let lag_zero = ids.iter().all(|id| {
                lg.replicas
                    .iter()
                    .any(|r| r.node == *id && r.lag == Some(0))
            });
            let applied = all
                .iter()
                .all(|st| group(st, name).is_some_and(|g| g.applied_index >= lg.last_index));
            done &= lag_zero && applied;
        }
        Some((first_leader?, done))
    }

    /// Nothing `from` sends reaches `to` (its requests, and its answers to `to`'s
    /// requests); the other way is untouched.
    pub fn cut(&self, from: u64, to: u64) {
        if let Some(l) = self.links.get(&(from, to)) {
            l.set(Dir::Forward, Flow::Drop);
        }
        if let Some(l) = self.links.get(&(to, from)) {
            l.set(Dir::Back, Flow::Drop);
        }
    }

    /// Nothing gets to or from `id` (among the trio).
    pub fn isolate(&self, id: u64) {
        for other in TRIO.into_iter().filter(|o| *o != id) {
            self.cut(id, other);
            self.cut(other, id);
        }
    }

    /// Every link passes again.
    pub fn heal(&self) {
        for l in self.links.values() {
            l.heal();
        }
    }

    /// Every node runs and is not paused: a paused one is resumed, one that is down is
    /// started again.
    pub async fn revive_all(&mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            if n.paused {
                let _ = n.momd.signal(libc::SIGCONT);
                n.paused = false;
            }
        }
        for n in &mut self.nodes {
            if !n.momd.running() {
                n.momd.spawn()?;
                n.momd
                    .wait_ready(START_TIMEOUT)
                    .await
                    .with_context(|| format!("restarting node {}", n.id))?;
            }
        }
        Ok(())
    }

    /// SIGCONT and SIGTERM to every node.
    pub async fn stop_all(&mut self) {
        for n in &mut self.nodes {
            if n.momd.running() {
                let _ = n.momd.signal(libc::SIGCONT);
                if n.momd.sigterm(Duration::from_secs(30)).await.is_err() {
                    n.momd.kill9();
                }
            }
        }
    }
}
