//! The Topics, Subscriptions and Clients tables.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Color;
use ratatui::widgets::{Cell, Row, Table, TableState};
use ratatui::Frame;

use super::{block, bytes, rate, sparkline, Theme};
use crate::app::{App, Pane, TableArea};

/// One table to draw: its title, column heads and widths, and rows.
pub(super) struct Spec {
    pub title: String,
    pub header: Vec<&'static str>,
    pub widths: Vec<Constraint>,
    pub rows: Vec<Row<'static>>,
}

pub(super) fn render(
    f: &mut Frame,
    app: &mut App,
    theme: &Theme,
    pane: Pane,
    area: Rect,
    spec: Spec,
) {
    let Spec {
        title,
        header,
        widths,
        rows,
    } = spec;
    let focused = app.pane == pane;
    let selected = app.selected(pane);
    let n = rows.len();
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.bold()))
        .block(block(title, focused, theme))
        .row_highlight_style(if focused {
            theme.selected()
        } else {
            theme.bold()
        });
    let mut state = TableState::default().with_selected(if n == 0 { None } else { Some(selected) });
    f.render_stateful_widget(table, area, &mut state);
    // Rows start under the border and the header line.
    app.areas[pane.index()] = TableArea {
        top: area.y + 2,
        bottom: area.y + area.height.saturating_sub(1),
        left: area.x,
        right: area.x + area.width,
        offset: state.offset(),
    };
}

pub fn topics(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    let rows: Vec<Row> = app
        .topics()
        .into_iter()
        .map(|t| {
            let spark = app
                .history
                .get(&t.name)
                .map(|h| sparkline(h.iter().copied()))
                .unwrap_or_default();
            Row::new(vec![
                Cell::from(t.name.clone()),
                Cell::from(t.messages.to_string()),
                Cell::from(bytes(t.bytes)),
                Cell::from(format!("{}..{}", t.first_seq, t.last_seq)),
                Cell::from(rate(t.in_rate)),
                Cell::from(spark).style(theme.fg(Color::Green)),
                Cell::from(t.watchers.to_string()),
                Cell::from(t.queues.to_string()),
            ])
        })
        .collect();
    let title = format!(" Topics ({}) {}", rows.len(), filter_note(app));
    render(
        f,
        app,
        theme,
        Pane::Topics,
        area,
        Spec {
            title,
            header: vec![
                "TOPIC", "MSGS", "BYTES", "SEQ", "IN/S", "RATE", "WATCH", "QUEUES",
            ],
            widths: vec![
                Constraint::Min(14),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Length(13),
                Constraint::Length(7),
                Constraint::Length(12),
                Constraint::Length(5),
                Constraint::Length(6),
            ],
            rows,
        },
    );
}

pub fn subscriptions(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    // Queues on top, the live watches of every client under them.
    let watches: Vec<Row> = app
        .stats
        .as_ref()
        .map(|s| {
            s.clients
                .iter()
                .flat_map(|c| {
                    c.watch_patterns.iter().map(move |p| {
                        Row::new(vec![
                            c.client_id.to_string(),
                            c.name.clone(),
                            c.addr.clone(),
                            p.clone(),
                        ])
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let watch_height = (watches.len() as u16 + 3).clamp(4, area.height / 3 + 1);
    let [top, bottom] =
        ratatui::layout::Layout::vertical([Constraint::Min(5), Constraint::Length(watch_height)])
            .areas(area);
    let n = watches.len();
    let table = Table::new(
        watches,
        [
            Constraint::Length(6),
            Constraint::Length(12),
            Constraint::Length(21),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(vec!["CLIENT", "NAME", "ADDRESS", "PATTERNS"]).style(theme.bold()))
    .block(block(format!(" Live watches ({n}) "), false, theme));
    f.render_widget(table, bottom);
    queues(f, app, theme, top);
}

fn queues(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    let rows: Vec<Row> = app
        .queues()
        .into_iter()
        .map(|q| {
            Row::new(vec![
                q.name.clone(),
                q.bindings.join(" "),
                q.consumers.to_string(),
                q.ready.to_string(),
                q.unacked.to_string(),
                q.redelivered.to_string(),
                q.dead_lettered.to_string(),
                q.lag.to_string(),
                q.owner.clone(),
            ])
        })
        .collect();
    let title = format!(" Subscriptions: {} queues {}", rows.len(), filter_note(app));
    render(
        f,
        app,
        theme,
        Pane::Subscriptions,
        area,
        Spec {
            title,
            header: vec![
                "QUEUE", "BINDINGS", "CONS", "READY", "UNACK", "REDELIV", "DLQ", "LAG", "OWNER",
            ],
            widths: vec![
                Constraint::Min(10),
                Constraint::Min(12),
                Constraint::Length(4),
                Constraint::Length(7),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(5),
                Constraint::Length(7),
                Constraint::Length(10),
            ],
            rows,
        },
    );
}

pub fn clients(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    let rows: Vec<Row> = app
        .clients()
        .into_iter()
        .map(|c| {
            Row::new(vec![
                c.client_id.to_string(),
                c.name.clone(),
                c.user.clone(),
                c.addr.clone(),
                since(c.since),
                c.msgs_in.to_string(),
                c.msgs_out.to_string(),
                c.watches.to_string(),
            ])
        })
        .collect();
    let title = format!(" Clients ({}) {}", rows.len(), filter_note(app));
    render(
        f,
        app,
        theme,
        Pane::Clients,
        area,
        Spec {
            title,
            header: vec![
                "ID", "NAME", "USER", "ADDRESS", "SINCE", "IN", "OUT", "WATCHES",
            ],
            widths: vec![
                Constraint::Length(6),
                Constraint::Min(10),
                Constraint::Length(10),
                Constraint::Length(21),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(7),
            ],
            rows,
        },
    );
}

fn filter_note(app: &App) -> String {
    if app.filter.is_empty() {
        String::new()
    } else {
        format!("[filter: {}] ", app.filter)
    }
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
