//! The cluster view: who answered, the nodes (role, addresses, last contact, version) and
//! each Raft group (leader, term, indexes, how far each replica is behind the leader).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::Frame;

use super::columns::{col, draw_table, grow, Spec};
use super::drill::{info_block, pairs};
use super::{uptime, Theme};
use crate::app::App;
use mom_proto::{ClusterGroup, ClusterNode, ClusterStatus};

/// Figures older than this say their age in the title.
const OLD_MS: u64 = 3_000;

pub fn cluster(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let v = &app.cluster;
    let error = v
        .error
        .as_ref()
        .map(|e| Line::styled(format!("cannot ask: {e}"), theme.fg(Color::Red)));
    let Some(st) = v.status.as_ref() else {
        let mut lines = vec![Line::from("asking the server how it sees its cluster…")];
        lines.extend(error);
        info_block(f, app, theme, area, " Cluster — Esc back ".into(), lines);
        return;
    };
    let age = app.now.saturating_sub(v.at);
    let old = if age > OLD_MS {
        format!(" (figures from {} ago)", uptime(age))
    } else {
        String::new()
    };
    if st.mode != "cluster" {
        let mut lines = vec![
            Line::styled("single node (not in cluster mode)", theme.bold()),
            Line::from(""),
            Line::from(
                "momd started with --cluster-id, --node-id, --peer-listen and --peers \
                 forms a cluster with its peers.",
            ),
        ];
        lines.extend(error);
        let title = format!(" Cluster{old} — Esc back ");
        info_block(f, app, theme, area, title, lines);
        return;
    }
    let mut lines = vec![pairs(
        &[
            ("answered by", format!("node {}", st.node_id)),
            ("nodes", roles(&st.nodes)),
        ],
        theme,
    )];
    lines.extend(error);
    // The block wraps its lines: room for each as wrapped.
    let inner = area.width.saturating_sub(2).max(1) as usize;
    let height: usize = lines.iter().map(|l| l.width().max(1).div_ceil(inner)).sum();
    let [top, nodes_area, groups_area] = Layout::vertical([
        Constraint::Length(height as u16 + 2),
        Constraint::Length(st.nodes.len() as u16 + 3),
        Constraint::Min(3),
    ])
    .areas(area);
    let title = format!(" Cluster {}{old} — Esc back ", st.cluster_id);
    info_block(f, app, theme, top, title, lines);
    nodes(f, app, theme, nodes_area, st);
    groups(f, app, theme, groups_area, &st.groups);
}

/// Roles in the order the summary names them; a role from a newer server comes last.
const ROLES: &[&str] = &[
    "leader",
    "isolated",
    "follower",
    "candidate",
    "learner",
    "unreachable",
    "unknown",
    "stopped",
];

/// `3 (leader 1, follower 2)`: how many nodes have each role.
fn roles(nodes: &[ClusterNode]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for n in nodes {
        match counts.iter_mut().find(|(r, _)| *r == n.role) {
            Some((_, c)) => *c += 1,
            None => counts.push((&n.role, 1)),
        }
    }
    counts.sort_by_key(|(r, _)| ROLES.iter().position(|x| x == r).unwrap_or(ROLES.len()));
    let each: Vec<String> = counts.iter().map(|(r, c)| format!("{r} {c}")).collect();
    format!("{} ({})", nodes.len(), each.join(", "))
}

fn role_style(role: &str, theme: &Theme) -> Style {
    match role {
        "leader" => theme.fg(Color::Green),
        "unreachable" | "stopped" | "isolated" => theme.fg(Color::Red),
        "candidate" | "unknown" => theme.fg(Color::Yellow),
        _ => Style::default(),
    }
}

/// Time since the last contact: `–` for the node asked and a node never heard from.
fn contact(ms: Option<u64>) -> String {
    match ms {
        None => "–".into(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => uptime(ms),
    }
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "?".into()
    } else {
        s.to_string()
    }
}

fn nodes(f: &mut Frame, app: &App, theme: &Theme, area: Rect, st: &ClusterStatus) {
    let plain = |s: String| (s, Style::default());
    let rows = st
        .nodes
        .iter()
        .map(|n| {
            let me = if n.id == st.node_id { "*" } else { "" };
            vec![
                plain(format!("{}{me}", n.id)),
                (n.role.clone(), role_style(&n.role, theme)),
                plain(st.leads(n.id)),
                plain(or_unknown(&n.addr)),
                plain(n.peer_addr.clone()),
                plain(if n.voter { "yes" } else { "no" }.into()),
                plain(contact(n.last_contact_ms)),
                plain(or_unknown(&n.version)),
            ]
        })
        .collect();
    let spec = Spec {
        title: format!(" Nodes ({}) — * answered ", st.nodes.len()),
        cols: vec![
            col("NODE", 4),
            col("ROLE", 6),
            col("LEADS", 4),
            grow("CLIENT ADDR", 8),
            grow("PEER ADDR", 8),
            col("VOTER", 3),
            col("LAST CONTACT", 5),
            col("VERSION", 5),
        ],
        rows,
        sort: None,
        focused: true,
        selected: None,
        stale: app.stale(),
    };
    draw_table(f, theme, area, spec);
}

fn groups(f: &mut Frame, app: &App, theme: &Theme, area: Rect, groups: &[ClusterGroup]) {
    let plain = |s: String| (s, Style::default());
    let rows = groups
        .iter()
        .map(|g| {
            let lag: Vec<String> = g
                .replicas
                .iter()
                .map(|r| match r.lag {
                    Some(l) => format!("{}:{l}", r.node),
                    None => format!("{}:?", r.node),
                })
                .collect();
            let unknown = g.replicas.iter().any(|r| r.lag.is_none());
            vec![
                plain(g.name.clone()),
                match g.leader {
                    Some(l) => plain(l.to_string()),
                    None => ("none".into(), theme.fg(Color::Yellow)),
                },
                plain(g.term.to_string()),
                plain(g.last_index.to_string()),
                plain(g.applied_index.to_string()),
                (
                    lag.join(" "),
                    if unknown {
                        theme.fg(Color::Yellow)
                    } else {
                        Style::default()
                    },
                ),
            ]
        })
        .collect();
    let spec = Spec {
        title: format!(" Raft groups ({}) ", groups.len()),
        cols: vec![
            col("GROUP", 5),
            col("LEADER", 6),
            col("TERM", 4),
            col("LAST", 4),
            col("APPLIED", 7),
            grow("REPLICA LAG (node:entries)", 8),
        ],
        rows,
        sort: None,
        focused: true,
        selected: None,
        stale: app.stale(),
    };
    draw_table(f, theme, area, spec);
}
