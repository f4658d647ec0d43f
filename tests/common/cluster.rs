//! Three cluster nodes whose peer links all go through fault proxies (`momcheck::proxy`), and what
//! `momctl cluster status --json` says about them.
//!
//! Node i listens for peers on 127.0.0.i and dials node j through the proxy of link i→j
//! (`MOMD_PEER_ROUTES`), so a test can cut, stall or reset any direction between any two
//! nodes while the processes run untouched.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::proxy::{Dir, Flow, Proxy};
use super::{free_port, lines, wait_for, Momd};

/// The node ids of a trio.
pub const TRIO: [u64; 3] = [1, 2, 3];

/// Three nodes of cluster `t` with a proxy on each directed link.
pub struct ProxiedTrio {
    // Declared first so the nodes are killed before their links close.
    nodes: Vec<Momd>,
    links: BTreeMap<(u64, u64), Proxy>,
}

impl ProxiedTrio {
    pub fn start() -> ProxiedTrio {
        let peers: BTreeMap<u64, SocketAddr> = TRIO
            .iter()
            .map(|&i| (i, SocketAddr::from(([127, 0, 0, i as u8], free_port()))))
            .collect();
        let list = peers
            .iter()
            .map(|(i, a)| format!("{i}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut links = BTreeMap::new();
        for from in TRIO {
            for to in TRIO.into_iter().filter(|to| *to != from) {
                links.insert(
                    (from, to),
                    Proxy::start(peers[&to]).expect("starting a link proxy"),
                );
            }
        }
        let nodes = TRIO
            .iter()
            .map(|&id| {
                let routes = TRIO
                    .iter()
                    .filter(|to| **to != id)
                    .map(|to| format!("{to}={}", links[&(id, *to)].addr()))
                    .collect::<Vec<_>>()
                    .join(",");
                let node_id = id.to_string();
                let peer = peers[&id].to_string();
                let args = [
                    "--cluster-id",
                    "t",
                    "--node-id",
                    &node_id,
                    "--peer-listen",
                    &peer,
                    "--peers",
                    &list,
                ];
                Momd::start_env(&args, &[("MOMD_PEER_ROUTES", &routes)])
            })
            .collect();
        ProxiedTrio { nodes, links }
    }

    pub fn node(&self, id: u64) -> &Momd {
        &self.nodes[id as usize - 1]
    }

    /// Node `id`, to kill or restart.
    pub fn node_mut(&mut self, id: u64) -> &mut Momd {
        &mut self.nodes[id as usize - 1]
    }

    /// The proxy `from` dials `to` through.
    pub fn link(&self, from: u64, to: u64) -> &Proxy {
        &self.links[&(from, to)]
    }

    /// Nothing `from` sends reaches `to` (its requests, and its answers to `to`'s requests);
    /// the other way is untouched.
    pub fn cut(&self, from: u64, to: u64) {
        self.link(from, to).set(Dir::Forward, Flow::Drop);
        self.link(to, from).set(Dir::Back, Flow::Drop);
    }

    /// Nothing gets to or from `id`.
    pub fn isolate(&self, id: u64) {
        for other in TRIO.into_iter().filter(|o| *o != id) {
            self.cut(id, other);
            self.cut(other, id);
        }
    }

    /// Every link of `id`: close its connections and refuse new ones (`true`), or take
    /// them again.
    pub fn reset(&self, id: u64, on: bool) {
        for ((from, to), link) in &self.links {
            if *from == id || *to == id {
                link.reset(on);
            }
        }
    }

    /// Every link passes again.
    pub fn heal(&self) {
        for link in self.links.values() {
            link.heal();
        }
    }

    /// `momctl cluster status --json` of node `id`; `None` if it did not answer.
    pub fn status(&self, id: u64) -> Option<Status> {
        let out = self.node(id).ctl_timeout(
            &["cluster", "status", "--json"],
            None,
            Duration::from_secs(10),
        );
        if out.code != 0 {
            return None;
        }
        let raw: Value = serde_json::from_slice(&out.stdout).ok()?;
        let groups = raw["groups"]
            .as_array()?
            .iter()
            .map(|g| {
                Some(Group {
                    name: g["name"].as_str()?.to_string(),
                    leader: g["leader"].as_u64(),
                    term: g["term"].as_u64()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let meta = groups.first().filter(|g| g.name == "meta")?;
        Some(Status {
            node: raw["node_id"].as_u64()?,
            leader: meta.leader,
            term: meta.term,
            groups,
            raw,
        })
    }
}

/// One node's `cluster status`: the Raft groups as it sees them.
#[derive(Debug, Clone)]
pub struct Status {
    /// The node that answered.
    pub node: u64,
    /// The metadata group's leader and term (the roles of `nodes` are about this group).
    pub leader: Option<u64>,
    pub term: u64,
    /// Every group, the metadata group first.
    pub groups: Vec<Group>,
    pub raw: Value,
}

/// One Raft group as a node sees it.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub leader: Option<u64>,
    pub term: u64,
}

impl Status {
    fn member(&self, id: u64) -> Option<&Value> {
        self.raw["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"].as_u64() == Some(id))
    }

    /// The role it gives node `id` (its own, for itself).
    pub fn role(&self, id: u64) -> &str {
        self.member(id)
            .and_then(|n| n["role"].as_str())
            .unwrap_or("")
    }

    /// How far behind the metadata group's leader node `id`'s log is; known when the
    /// leader answered.
    pub fn lag(&self, id: u64) -> Option<u64> {
        self.lag_in(0, id)
    }

    /// The same in the group at `slot` of `groups`.
    pub fn lag_in(&self, slot: usize, id: u64) -> Option<u64> {
        self.raw["groups"][slot]["replicas"]
            .as_array()?
            .iter()
            .find(|r| r["node"].as_u64() == Some(id))?["lag"]
            .as_u64()
    }

    /// Has every node of `ids` told the group where clients reach it?
    pub fn announced(&self, ids: &[u64]) -> bool {
        ids.iter().all(|id| {
            self.member(*id)
                .and_then(|n| n["addr"].as_str())
                .is_some_and(|a| !a.is_empty())
        })
    }
}

/// `wait_for` at a pace that leaves the cores to the nodes: each try runs momctl.
pub fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    wait_for(timeout, what, || {
        let r = f();
        if r.is_none() {
            std::thread::sleep(Duration::from_millis(250));
        }
        r
    })
}

/// Every (group, term, leader) any node reported. Raft elects at most one leader per term,
/// so a second leader for a group's term already seen fails the test.
#[derive(Debug, Default)]
pub struct Elections {
    /// (group, term) → (leader, the node that first reported it)
    seen: BTreeMap<(String, u64), (u64, u64)>,
}

impl Elections {
    pub fn record(&mut self, st: &Status) {
        for g in &st.groups {
            let Some(leader) = g.leader else { continue };
            let key = (g.name.clone(), g.term);
            let (first, by) = *self.seen.entry(key).or_insert((leader, st.node));
            assert_eq!(
                first, leader,
                "two leaders of group {} in term {}: node {by} reported node {first}, node {} \
                 reports node {leader}",
                g.name, g.term, st.node
            );
        }
    }

    /// The statuses of `ids`, each recorded; `None` if one did not answer.
    pub fn statuses(&mut self, trio: &ProxiedTrio, ids: &[u64]) -> Option<Vec<Status>> {
        let all: Vec<Status> = ids
            .iter()
            .map(|id| trio.status(*id))
            .collect::<Option<_>>()?;
        for st in &all {
            self.record(st);
        }
        Some(all)
    }

    /// The metadata group's leader and term, once every node of `ids` reports the same
    /// leader, one of `ids`, in the same term for every group, and every node of `ids` has
    /// announced its client address.
    pub fn agreed(&mut self, trio: &ProxiedTrio, ids: &[u64]) -> Option<(u64, u64)> {
        let all = self.statuses(trio, ids)?;
        let first = all.first()?;
        let same = |slot: usize, g: &Group| {
            g.leader.is_some_and(|l| ids.contains(&l))
                && all.iter().all(|s| {
                    s.groups
                        .get(slot)
                        .is_some_and(|h| (h.leader, h.term) == (g.leader, g.term))
                })
        };
        let agree = first.groups.iter().enumerate().all(|(i, g)| same(i, g));
        (agree && first.announced(ids)).then_some((first.leader?, first.term))
    }
}

/// Peer addresses of `n` nodes (node i on 127.0.0.i) and the `--peers` list of them.
pub fn peer_list(n: u64) -> (String, Vec<String>) {
    let addrs: Vec<String> = (1..=n)
        .map(|i| format!("127.0.0.{i}:{}", free_port()))
        .collect();
    let list = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    (list, addrs)
}

/// The cluster flags of node `id` of cluster `t`.
pub fn cluster_args(id: u64, peer: &str, list: &str) -> Vec<String> {
    [
        "--cluster-id",
        "t",
        "--node-id",
        &id.to_string(),
        "--peer-listen",
        peer,
        "--peers",
        list,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `momctl cluster status --json` on `m`, if it answers.
pub fn status(m: &Momd) -> Option<Value> {
    let out = m.ctl_timeout(
        &["cluster", "status", "--json"],
        None,
        Duration::from_secs(10),
    );
    if out.code != 0 {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The meta group's leader as `m` sees it, once every node has announced its address.
pub fn leader(m: &Momd, among: &[u64]) -> Option<u64> {
    let st = status(m)?;
    let l = st["groups"][0]["leader"].as_u64()?;
    let announced = st["nodes"]
        .as_array()?
        .iter()
        .filter(|n| among.contains(&n["id"].as_u64().unwrap_or(0)))
        .all(|n| !n["addr"].as_str().unwrap_or("").is_empty());
    (among.contains(&l) && announced).then_some(l)
}

/// Every message of `topic` on `m` (up to `want`), one per line.
/// Every message of `pattern` on `m`, as `subscribe --json` prints them (topic, seq, time,
/// sender, key, payload …), once it holds `want` (None before).
pub fn json_messages(m: &Momd, pattern: &str, want: usize) -> Option<Vec<Value>> {
    let n = want.to_string();
    let out = m.ctl_timeout(
        &[
            "subscribe",
            pattern,
            "--from",
            "all",
            "--count",
            &n,
            "--timeout",
            "5s",
            "--json",
        ],
        None,
        Duration::from_secs(30),
    );
    let got: Vec<Value> = lines(&out.stdout)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (got.len() == want).then_some(got)
}

pub fn all_lines(m: &Momd, topic: &str, want: usize) -> Vec<String> {
    let n = want.to_string();
    let out = m.ctl_timeout(
        &[
            "subscribe",
            topic,
            "--from",
            "all",
            "--count",
            &n,
            "--timeout",
            "10s",
        ],
        None,
        Duration::from_secs(30),
    );
    lines(&out.stdout)
}
