//! Dialogs and overlays drawn over the panes: help, message detail, publish, create queue,
//! confirmations.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::{block, stream::detail_lines, Theme};
use crate::app::{App, Confirm, Mode};

/// Every key, for the help overlay (and the README).
pub const KEYS: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit"),
    ("?", "this help"),
    ("Tab, Shift-Tab, 1-4", "switch pane"),
    ("j/k, ↓/↑, PgDn/PgUp", "move"),
    ("g/G, Home/End", "first / last row"),
    ("mouse", "click a row, scroll"),
    ("/", "filter the table (Esc clears)"),
    ("Enter", "Topics: stream this topic; Stream: message detail"),
    ("w", "stream any pattern (e.g. orders.>)"),
    ("space", "pause / resume the stream (counters go on)"),
    ("r", "replay the selected topic from the start"),
    ("R", "replay the selected topic from a seq"),
    ("p", "publish (topic, headers k=v,…, payload)"),
    ("c", "create a queue"),
    ("P", "purge the selected queue (asks first)"),
    (
        "d / D",
        "delete the selected queue / even if not empty (asks first)",
    ),
    ("Esc", "close a dialog"),
];

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    r
}

fn field(label: &str, value: &str, active: bool, theme: &Theme) -> Line<'static> {
    let cursor = if active { "▏" } else { "" };
    Line::from(vec![
        Span::styled(format!("{label:<9}"), theme.bold()),
        Span::styled(
            format!("{value}{cursor}"),
            if active {
                theme.fg(Color::Yellow)
            } else {
                ratatui::style::Style::default()
            },
        ),
    ])
}

pub fn draw(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    match &app.mode {
        Mode::Help => {
            let r = centered(area, 72, KEYS.len() as u16 + 4);
            let mut lines: Vec<Line> = KEYS
                .iter()
                .map(|(k, d)| {
                    Line::from(vec![
                        Span::styled(format!("{k:<22}"), theme.bold()),
                        Span::raw(*d),
                    ])
                })
                .collect();
            lines.push(Line::from(""));
            lines.push(Line::from("Esc or ? closes this help."));
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines).block(block(" Keys ".into(), true, theme)),
                r,
            );
        }
        Mode::Detail(m) => {
            let r = centered(
                area,
                area.width.saturating_sub(4),
                area.height.saturating_sub(2),
            );
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(detail_lines(m, theme))
                    .wrap(Wrap { trim: false })
                    .block(block(" Message (Esc closes) ".into(), true, theme)),
                r,
            );
        }
        Mode::Publish(form) => {
            let r = centered(area, 70, 7);
            let lines = vec![
                field("topic", &form.topic.text, form.field == 0, theme),
                field("headers", &form.headers.text, form.field == 1, theme),
                field("payload", &form.payload.text, form.field == 2, theme),
                Line::from(""),
                Line::from("Tab next field · Enter publish · Esc cancel"),
            ];
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines).block(block(" Publish ".into(), true, theme)),
                r,
            );
        }
        Mode::CreateQueue {
            name,
            binding,
            field: active,
        } => {
            let r = centered(area, 70, 6);
            let lines = vec![
                field("queue", &name.text, *active == 0, theme),
                field("binding", &binding.text, *active == 1, theme),
                Line::from(""),
                Line::from("Tab next field · Enter create · Esc cancel"),
            ];
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines).block(block(" Create queue ".into(), true, theme)),
                r,
            );
        }
        Mode::Confirm(c) => {
            let text = match c {
                Confirm::PurgeQueue(q) => format!("Purge every waiting message of queue {q}?"),
                Confirm::DeleteQueue { name, force: false } => format!("Delete queue {name}?"),
                Confirm::DeleteQueue { name, force: true } => {
                    format!("Delete queue {name} even if messages wait in it?")
                }
            };
            let r = centered(area, (text.len() as u16 + 6).max(30), 5);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(vec![
                    Line::from(text),
                    Line::from(""),
                    Line::from("y yes · any other key no"),
                ])
                .block(block(" Confirm ".into(), true, theme)),
                r,
            );
        }
        _ => {}
    }
}
