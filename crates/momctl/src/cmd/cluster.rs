//! `momctl cluster status`: the nodes and Raft groups as the server asked sees them.

use mom_proto::ClusterStatus;
use momctl::client::{Client, ConnectOptions};

use super::CmdResult;
use crate::cli::ClusterCmd;
use crate::output;

pub async fn run(opts: &ConnectOptions, cmd: ClusterCmd, json: bool) -> CmdResult {
    let client = Client::connect(opts).await?;
    let st = match cmd {
        ClusterCmd::Status => client.cluster_status().await?,
        ClusterCmd::Join { id, peer_addr } => client.cluster_join(id, &peer_addr).await?,
        ClusterCmd::Leave { id } => client.cluster_leave(id).await?,
    };
    if json {
        output::print_json(&st)?;
    } else {
        for line in render(&st) {
            outln!("{line}");
        }
    }
    Ok(())
}

fn contact(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{ms} ms"),
        Some(ms) => format!("{:.0} s", ms as f64 / 1000.0),
    }
}

/// The human form: one line per node, then one per group.
pub fn render(st: &ClusterStatus) -> Vec<String> {
    if st.mode != "cluster" {
        return vec!["not in cluster mode: a single node".into()];
    }
    let mut out = vec![format!(
        "cluster {}, as node {} sees it",
        st.cluster_id, st.node_id
    )];
    let aw = st
        .nodes
        .iter()
        .map(|n| n.addr.len().max(n.peer_addr.len()))
        .max()
        .unwrap_or(0)
        .max(11);
    // Wide enough for what a node leads (several data groups: `meta,data.0,data.2`).
    let lw = st
        .nodes
        .iter()
        .map(|n| st.leads(n.id).len())
        .max()
        .unwrap_or(0)
        .max(9);
    out.push(format!(
        "{:>4}  {:<11}  {:<lw$}  {:<aw$}  {:<aw$}  {:<5}  {:>12}  VERSION",
        "NODE", "ROLE", "LEADS", "CLIENT ADDR", "PEER ADDR", "VOTER", "LAST CONTACT"
    ));
    for n in &st.nodes {
        let me = if n.id == st.node_id { "*" } else { " " };
        out.push(format!(
            "{:>3}{me}  {:<11}  {:<lw$}  {:<aw$}  {:<aw$}  {:<5}  {:>12}  {}",
            n.id,
            n.role,
            st.leads(n.id),
            if n.addr.is_empty() { "?" } else { &n.addr },
            n.peer_addr,
            if n.voter { "yes" } else { "no" },
            contact(n.last_contact_ms),
            if n.version.is_empty() {
                "?"
            } else {
                &n.version
            },
        ));
    }
    out.push(format!(
        "{:<8}  {:>6}  {:>6}  {:>8}  {:>8}  REPLICA LAG (node:entries)",
        "GROUP", "LEADER", "TERM", "LAST", "APPLIED"
    ));
    for g in &st.groups {
        let lag: Vec<String> = g
            .replicas
            .iter()
            .map(|r| match r.lag {
                Some(l) => format!("{}:{l}", r.node),
                None => format!("{}:?", r.node),
            })
            .collect();
        out.push(format!(
            "{:<8}  {:>6}  {:>6}  {:>8}  {:>8}  {}",
            g.name,
            g.leader.map_or("none".to_string(), |l| l.to_string()),
            g.term,
            g.last_index,
            g.applied_index,
            lag.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mom_proto::{ClusterGroup, ClusterNode};

    fn status(meta: Option<u64>, data: Option<u64>) -> ClusterStatus {
        let node = |id: u64, role: &str| ClusterNode {
            id,
            addr: format!("127.0.0.1:780{id}"),
            peer_addr: format!("127.0.0.1:790{id}"),
            voter: true,
            role: role.into(),
            last_contact_ms: None,
            version: "0.1.0".into(),
        };
        let group = |name: &str, leader| ClusterGroup {
            name: name.into(),
            leader,
            ..Default::default()
        };
        ClusterStatus {
            mode: "cluster".into(),
            cluster_id: "demo".into(),
            node_id: 2,
            nodes: vec![
                node(1, "follower"),
                node(2, "follower"),
                node(
                    3,
                    if meta == Some(3) {
                        "leader"
                    } else {
                        "follower"
                    },
                ),
            ],
            groups: vec![group("meta", meta), group("data", data)],
            ..Default::default()
        }
    }

    /// The LEADS column of each node's row, by node id.
    fn leads(lines: &[String]) -> Vec<(String, String)> {
        lines[2..5]
            .iter()
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w[0].trim_end_matches('*').to_string(), w[2].to_string())
            })
            .collect()
    }

    #[test]
    fn leads_names_each_groups_leader_apart() {
        let lines = render(&status(Some(3), Some(1)));
        assert!(lines[1].contains("ROLE         LEADS"), "{lines:?}");
        let want = [("1", "data"), ("2", "-"), ("3", "meta")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(leads(&lines), want);
        let both = leads(&render(&status(Some(3), Some(3))));
        assert_eq!(both[2].1, "meta,data");
        let none = leads(&render(&status(None, None)));
        assert!(none.iter().all(|(_, l)| l == "-"), "{none:?}");
    }

    #[test]
    fn a_node_leading_several_data_groups_keeps_the_columns_in_line() {
        let mut st = status(Some(3), Some(1));
        st.groups = ["meta", "data.0", "data.1", "data.2"]
            .iter()
            .zip([Some(3), Some(1), Some(2), Some(3)])
            .map(|(name, leader)| ClusterGroup {
                name: name.to_string(),
                leader,
                ..Default::default()
            })
            .collect();
        let lines = render(&st);
        assert_eq!(leads(&lines)[2].1, "meta,data.2");
        let at = lines[1].find("CLIENT ADDR").expect("the header");
        for l in &lines[2..5] {
            assert_eq!(l.find("127.0.0.1:780"), Some(at), "{lines:#?}");
        }
    }
}
