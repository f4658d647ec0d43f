//! Drill-down views: a queue's detail (settings, figures, the messages it would deliver
//! next) and a client's (identity, traffic, watches).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::columns::{col, draw_table, fit, grow, Spec};
use super::stream::preview;
use super::tables::clock;
use super::{block, bytes, rate, Theme};
use crate::app::{App, ClientDrill, QueueDrill};

pub(super) fn pairs(items: &[(&str, String)], theme: &Theme) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, (k, v)) in items.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw("   "));
        }
        spans.push(Span::styled(format!("{k} "), theme.bold()));
        spans.push(Span::raw(v.clone()));
    }
    Line::from(spans)
}

pub(super) fn info_block(
    f: &mut Frame,
    app: &App,
    theme: &Theme,
    area: Rect,
    title: String,
    lines: Vec<Line<'static>>,
) {
    let mut p = Paragraph::new(lines)
        .wrap(ratatui::widgets::Wrap { trim: false })
        .block(block(
            fit(&title, area.width.saturating_sub(2)),
            true,
            theme,
        ));
    if app.stale() {
        p = p.style(Style::default().add_modifier(Modifier::DIM));
    }
    f.render_widget(p, area);
}

fn ms(ms: u64) -> String {
    if (ms / 1000) * 1000 == ms {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

pub fn queue(f: &mut Frame, app: &App, theme: &Theme, area: Rect, d: &QueueDrill) {
    let q = app
        .stats
        .as_ref()
        .and_then(|s| s.queues.iter().find(|q| q.name == d.name));
    let [top, bottom] = Layout::vertical([Constraint::Length(9), Constraint::Min(3)]).areas(area);
    let title = format!(
        " Queue {} — Esc back · v peek · e settings · P purge · r redrive · d/D delete ",
        d.name
    );
    let width = top.width.saturating_sub(2);
    let lines = match q {
        None => vec![Line::from(format!(
            "queue {} is not in the broker's stats (yet, or any more)",
            d.name
        ))],
        Some(q) => {
            let r = |x: f64| if app.stale() { "–".into() } else { rate(x) };
            vec![
                pairs(
                    &[(
                        "bindings",
                        fit(&q.bindings.join(" "), width.saturating_sub(9)),
                    )],
                    theme,
                ),
                pairs(
                    &[
                        ("owner", q.owner.clone()),
                        (
                            "created",
                            if q.created == 0 {
                                "–".into()
                            } else {
                                clock(q.created, false)
                            },
                        ),
                    ],
                    theme,
                ),
                pairs(
                    &[
                        ("ack wait", ms(q.ack_wait_ms)),
                        (
                            "max deliver",
                            if q.max_deliver == 0 {
                                "never dead-letter".into()
                            } else {
                                q.max_deliver.to_string()
                            },
                        ),
                        ("dead letters", format!("$dlq.{}", q.name)),
                    ],
                    theme,
                ),
                pairs(
                    &[
                        ("consumers", q.consumers.to_string()),
                        ("ready", q.ready.to_string()),
                        ("unacked", q.unacked.to_string()),
                        ("lag", q.lag.to_string()),
                    ],
                    theme,
                ),
                pairs(
                    &[
                        ("delivered", q.delivered.to_string()),
                        ("acked", q.acked.to_string()),
                        ("redelivered", q.redelivered.to_string()),
                    ],
                    theme,
                ),
                pairs(
                    &[
                        ("dead-lettered", q.dead_lettered.to_string()),
                        ("dropped", q.dropped.to_string()),
                    ],
                    theme,
                ),
                pairs(
                    &[
                        ("in", format!("{}/s", r(q.in_rate))),
                        ("out", format!("{}/s", r(q.out_rate))),
                    ],
                    theme,
                ),
            ]
        }
    };
    info_block(f, app, theme, top, title, lines);

    let max = bottom.width as usize + 1;
    let rows: Vec<Vec<(String, Style)>> = d
        .peek
        .iter()
        .flatten()
        .map(|m| {
            vec![
                (m.topic.clone(), theme.fg(Color::Cyan)),
                (format!("#{}", m.seq), Style::default()),
                (m.delivery.unwrap_or(0).to_string(), Style::default()),
                (clock(m.time, true), Style::default()),
                (bytes(m.payload.len() as u64), Style::default()),
                (preview(&m.payload, max), Style::default()),
            ]
        })
        .collect();
    let title = match (&d.error, &d.peek) {
        (Some(e), _) => format!(" Next messages: {e} "),
        (None, None) => " Next messages (peeking…) ".into(),
        (None, Some(p)) => format!(
            " Next messages: {} (peek, nothing is delivered) — Enter detail · y copy ",
            p.len()
        ),
    };
    let n = rows.len();
    draw_table(
        f,
        theme,
        bottom,
        Spec {
            title,
            cols: vec![
                col("TOPIC", 8),
                col("SEQ", 4),
                col("DELIV", 5),
                col("TIME", 12),
                col("SIZE", 4),
                grow("PAYLOAD", 10),
            ],
            rows,
            sort: None,
            focused: true,
            selected: (n > 0).then_some(d.sel.min(n.saturating_sub(1))),
            stale: app.stale(),
        },
    );
}

pub fn client(f: &mut Frame, app: &App, theme: &Theme, area: Rect, d: &ClientDrill) {
    let c = app
        .stats
        .as_ref()
        .and_then(|s| s.clients.iter().find(|c| c.client_id == d.id));
    let [top, bottom] = Layout::vertical([Constraint::Length(7), Constraint::Min(3)]).areas(area);
    let Some(c) = c else {
        info_block(
            f,
            app,
            theme,
            area,
            format!(" Client {} — Esc back ", d.id),
            vec![Line::from(format!(
                "client {} is not connected (any more)",
                d.id
            ))],
        );
        return;
    };
    let r = app
        .client_rates
        .get(&c.client_id)
        .copied()
        .unwrap_or_default();
    let rt = |x: f64| if app.stale() { "–".into() } else { rate(x) };
    let lines = vec![
        pairs(
            &[
                ("user", c.user.clone()),
                ("address", c.addr.clone()),
                ("connected since", clock(c.since, false)),
            ],
            theme,
        ),
        pairs(
            &[
                ("published", format!("{} ({}/s)", c.msgs_in, rt(r.in_rate))),
                ("received", format!("{} ({}/s)", c.msgs_out, rt(r.out_rate))),
            ],
            theme,
        ),
        pairs(&[("watches", c.watches.to_string())], theme),
        pairs(
            &[(
                "consumes",
                if c.consumers.is_empty() {
                    "no queue".to_string()
                } else {
                    c.consumers.join(", ")
                },
            )],
            theme,
        ),
    ];
    info_block(
        f,
        app,
        theme,
        top,
        format!(
            " Client {} {} — Esc back · x close connection ",
            c.client_id, c.name
        ),
        lines,
    );
    let rows: Vec<Vec<(String, Style)>> = c
        .watch_patterns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![
                ((i + 1).to_string(), Style::default()),
                (p.clone(), Style::default()),
            ]
        })
        .collect();
    let n = rows.len();
    draw_table(
        f,
        theme,
        bottom,
        Spec {
            title: format!(" Watches ({n}) — Enter streams the pattern here "),
            cols: vec![col("#", 1), grow("PATTERNS", 8)],
            rows,
            sort: None,
            focused: true,
            selected: (n > 0).then_some(d.sel.min(n.saturating_sub(1))),
            stale: app.stale(),
        },
    );
}
