//! The live message stream, and the message detail view.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row};
use ratatui::Frame;

use super::tables::{clock, render, Spec};
use super::Theme;
use crate::app::{App, Pane};

/// One line of a payload: text as is (control characters shown as ·), or hex.
pub fn preview(payload: &[u8], max: usize) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) => s
            .chars()
            .map(|c| if c.is_control() { '·' } else { c })
            .take(max)
            .collect(),
        Err(_) => {
            let hex: String = payload
                .iter()
                .take(max / 3)
                .map(|b| format!("{b:02x} "))
                .collect();
            format!("0x {hex}")
        }
    }
}

pub fn stream(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    let topic_width = app
        .stream
        .iter()
        .map(|m| m.topic.chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, 32) as u16;
    let width = area.width.saturating_sub(36 + topic_width) as usize;
    let rows: Vec<Row> = app
        .stream_rows()
        .into_iter()
        .map(|m| {
            Row::new(vec![
                Cell::from(clock(m.time, true)),
                Cell::from(m.topic.clone()).style(theme.fg(Color::Cyan)),
                Cell::from(format!("#{}", m.seq)),
                Cell::from(format!("{}/{}", m.sender.name, m.sender.client)),
                Cell::from(preview(&m.payload, width.max(10))),
            ])
        })
        .collect();
    let state_note = if app.paused { " PAUSED" } else { "" };
    let skipped = if app.stream_skipped > 0 {
        format!(", {} skipped (too fast to show all)", app.stream_skipped)
    } else {
        String::new()
    };
    let title = format!(
        " Stream {} — {} received, {} shown{skipped}{} ",
        app.stream_pattern, app.stream_total, app.stream_shown, state_note
    );
    render(
        f,
        app,
        theme,
        Pane::Stream,
        area,
        Spec {
            title,
            header: vec!["TIME", "TOPIC", "SEQ", "SENDER", "PAYLOAD"],
            widths: vec![
                Constraint::Length(12),
                Constraint::Length(topic_width),
                Constraint::Length(8),
                Constraint::Length(12),
                Constraint::Min(10),
            ],
            rows,
        },
    );
}

/// The lines of a message's detail: who, when, headers, then the payload as text, pretty
/// JSON when it parses, or hex.
pub fn detail_lines(m: &mom_proto::Message, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = vec![
        Line::from(vec![
            Span::styled("topic   ", theme.bold()),
            Span::raw(m.topic.clone()),
        ]),
        Line::from(vec![
            Span::styled("seq     ", theme.bold()),
            Span::raw(m.seq.to_string()),
        ]),
        Line::from(vec![
            Span::styled("time    ", theme.bold()),
            Span::raw(clock(m.time, true)),
        ]),
        Line::from(vec![
            Span::styled("sender  ", theme.bold()),
            Span::raw(format!(
                "{} (client {}, {})",
                m.sender.user, m.sender.client, m.sender.name
            )),
        ]),
    ];
    if let Some(id) = &m.msg_id {
        out.push(Line::from(vec![
            Span::styled("msg id  ", theme.bold()),
            Span::raw(id.clone()),
        ]));
    }
    out.push(Line::from(Span::styled("headers", theme.bold())));
    if m.headers.is_empty() {
        out.push(Line::from("  (none)"));
    }
    for (k, v) in &m.headers {
        out.push(Line::from(format!("  {k}: {v}")));
    }
    out.push(Line::from(Span::styled(
        format!("payload ({} bytes)", m.payload.len()),
        theme.bold(),
    )));
    let body: Vec<String> = match std::str::from_utf8(&m.payload) {
        Ok(s) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v) if s.trim_start().starts_with(['{', '[']) => serde_json::to_string_pretty(&v)
                .unwrap_or_else(|_| s.to_string())
                .lines()
                .map(str::to_string)
                .collect(),
            _ => s.lines().map(str::to_string).collect(),
        },
        Err(_) => m
            .payload
            .chunks(16)
            .enumerate()
            .map(|(i, c)| {
                let hex: String = c.iter().map(|b| format!("{b:02x} ")).collect();
                let ascii: String = c
                    .iter()
                    .map(|b| {
                        if b.is_ascii_graphic() {
                            *b as char
                        } else {
                            '.'
                        }
                    })
                    .collect();
                format!("{:08x}  {hex:<48} {ascii}", i * 16)
            })
            .collect(),
    };
    out.extend(body.into_iter().map(|l| Line::from(format!("  {l}"))));
    out
}
