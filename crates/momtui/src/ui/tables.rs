//! The Topics, Subscriptions and Clients tables.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::Frame;

use super::columns::{col, draw_pane_table, draw_table, grow, Rows, Spec};
use super::{bytes, rate, sparkline, Theme};
use crate::app::{App, Pane};

fn plain(s: impl Into<String>) -> (String, Style) {
    (s.into(), Style::default())
}

/// A rate, or a dash when the figures are stale (an old rate would look live).
fn live_rate(app: &App, r: f64) -> (String, Style) {
    plain(if app.stale() { "–".into() } else { rate(r) })
}

pub fn topics(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    let rows: Vec<Vec<(String, Style)>> = app
        .topics()
        .into_iter()
        .map(|t| {
            let spark = if app.stale() {
                String::new()
            } else {
                app.history
                    .get(&t.name)
                    .map(|h| sparkline(h.iter().copied()))
                    .unwrap_or_default()
            };
            vec![
                plain(t.name.clone()),
                plain(t.messages.to_string()),
                plain(bytes(t.bytes)),
                plain(format!("{}..{}", t.first_seq, t.last_seq)),
                live_rate(app, t.in_rate),
                (spark, theme.fg(Color::Green)),
                plain(app.watchers(t).to_string()),
                plain(t.queues.to_string()),
            ]
        })
        .collect();
    let title = format!(
        " Topics ({}) {}{}",
        app.count_note(Pane::Topics, rows.len()),
        app.window_note(Pane::Topics),
        app.view(Pane::Topics).filter.note()
    );
    // A seq range is never cut: it would read as another range.
    let seq_w = rows
        .iter()
        .map(|r| r[3].0.chars().count() as u16)
        .max()
        .unwrap_or(3);
    let cols = vec![
        grow("TOPIC", 8),
        col("MSGS", 4),
        col("BYTES", 5),
        col("SEQ", seq_w),
        col("IN/S", 4),
        col("RATE", 5),
        col("WATCH", 5),
        col("QUEUES", 6),
    ];
    draw_pane_table(
        f,
        app,
        theme,
        Pane::Topics,
        area,
        Rows { title, cols, rows },
    );
}

pub fn subscriptions(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    // Queues on top, the live watches of every client under them.
    let me = match &app.conn {
        crate::app::Conn::Connected { welcome, .. } => Some(welcome.client_id),
        _ => None,
    };
    let watches: Vec<Vec<(String, Style)>> = app
        .stats
        .as_ref()
        .map(|s| {
            s.clients
                .iter()
                .flat_map(|c| {
                    c.watch_patterns.iter().map(move |p| {
                        let name = if Some(c.client_id) == me {
                            format!("{} (this dashboard)", c.name)
                        } else {
                            c.name.clone()
                        };
                        vec![
                            plain(c.client_id.to_string()),
                            plain(name),
                            plain(c.addr.clone()),
                            plain(p.clone()),
                        ]
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let watch_height = (watches.len() as u16 + 3).clamp(4, area.height / 3 + 1);
    let [top, bottom] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(watch_height)]).areas(area);
    let n = watches.len();
    draw_table(
        f,
        theme,
        bottom,
        Spec {
            title: format!(" Live watches ({n}) "),
            cols: vec![
                col("CLIENT", 6),
                col("NAME", 6),
                col("ADDRESS", 9),
                grow("PATTERNS", 8),
            ],
            rows: watches,
            sort: None,
            focused: false,
            selected: None,
            stale: app.stale(),
        },
    );
    queues(f, app, theme, top);
}

fn queues(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    let rows: Vec<Vec<(String, Style)>> = app
        .queues()
        .into_iter()
        .map(|q| {
            vec![
                plain(q.name.clone()),
                plain(q.bindings.join(" ")),
                plain(q.consumers.to_string()),
                plain(q.ready.to_string()),
                plain(q.unacked.to_string()),
                plain(q.redelivered.to_string()),
                if q.dead_lettered > 0 {
                    (q.dead_lettered.to_string(), theme.fg(Color::Red))
                } else {
                    plain("0")
                },
                plain(q.lag.to_string()),
                plain(q.owner.clone()),
            ]
        })
        .collect();
    let title = format!(
        " Subscriptions: {} queues {}{}",
        app.count_note(Pane::Subscriptions, rows.len()),
        app.window_note(Pane::Subscriptions),
        app.view(Pane::Subscriptions).filter.note()
    );
    let cols = vec![
        grow("QUEUE", 6),
        grow("BINDINGS", 8),
        col("CONS", 4),
        col("READY", 5),
        col("UNACK", 5),
        col("REDELIV", 7),
        col("DLQ", 3),
        col("LAG", 3),
        col("OWNER", 5),
    ];
    draw_pane_table(
        f,
        app,
        theme,
        Pane::Subscriptions,
        area,
        Rows { title, cols, rows },
    );
}

pub fn clients(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    let rows: Vec<Vec<(String, Style)>> = app
        .clients()
        .into_iter()
        .map(|c| {
            let r = app
                .client_rates
                .get(&c.client_id)
                .copied()
                .unwrap_or_default();
            vec![
                plain(c.client_id.to_string()),
                plain(c.name.clone()),
                plain(c.user.clone()),
                plain(c.addr.clone()),
                plain(since(c.since)),
                plain(c.msgs_in.to_string()),
                plain(c.msgs_out.to_string()),
                live_rate(app, r.in_rate),
                live_rate(app, r.out_rate),
                plain(c.watches.to_string()),
            ]
        })
        .collect();
    let title = format!(
        " Clients ({}) {}{}",
        app.count_note(Pane::Clients, rows.len()),
        app.window_note(Pane::Clients),
        app.view(Pane::Clients).filter.note()
    );
    let cols = vec![
        col("ID", 2),
        grow("NAME", 6),
        col("USER", 4),
        col("ADDRESS", 9),
        col("SINCE", 8),
        col("IN", 2),
        col("OUT", 3),
        col("IN/S", 4),
        col("OUT/S", 5),
        col("WATCHES", 7),
    ];
    draw_pane_table(
        f,
        app,
        theme,
        Pane::Clients,
        area,
        Rows { title, cols, rows },
    );
}

/// Clock time of a ms timestamp (UTC).
pub fn since(ms: u64) -> String {
    clock(ms, false)
}

pub fn clock(ms: u64, millis: bool) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    if millis {
        format!("{h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}
