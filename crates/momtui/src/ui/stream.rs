//! The live message stream, and the lines of the message detail.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use super::columns::{col, draw_pane_table, grow, Rows};
use super::tables::clock;
use super::Theme;
use crate::app::{msg_key, App, Pane, PayloadView};

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
            format!("0x {}", hex.trim_end())
        }
    }
}

pub fn stream(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    // Longer than any screen: the table cuts it with an ellipsis.
    let max = area.width as usize + 1;
    let rows: Vec<Vec<(String, Style)>> = app
        .stream_rows()
        .into_iter()
        .map(|m| {
            let mark = if app.stream.marked.contains(&msg_key(m)) {
                "*"
            } else {
                " "
            };
            vec![
                (format!("{mark}{}", clock(m.time, true)), Style::default()),
                (m.topic.clone(), theme.fg(Color::Cyan)),
                (format!("#{}", m.seq), Style::default()),
                (
                    format!("{}/{}", m.sender.name, m.sender.client),
                    Style::default(),
                ),
                (preview(&m.payload, max), Style::default()),
            ]
        })
        .collect();
    let s = &app.stream;
    let skipped = if s.skipped > 0 {
        format!(", {} skipped (too fast to show all)", s.skipped)
    } else {
        String::new()
    };
    let marked = match s.marked.len() {
        0 => String::new(),
        n => format!("[{n} marked] "),
    };
    let title = format!(
        " Stream {} — {} received, {} shown{skipped} {}{}{marked}",
        s.pattern,
        s.total,
        s.shown,
        s.note(),
        app.view(Pane::Stream).filter.note()
    );
    // A seq is never cut; spare width goes to the payload.
    let seq_w = rows
        .iter()
        .map(|r| r[2].0.chars().count() as u16)
        .max()
        .unwrap_or(3);
    let cols = vec![
        col("TIME", 13),
        col("TOPIC", 8),
        col("SEQ", seq_w),
        col("SENDER", 8),
        grow("PAYLOAD", 10),
    ];
    draw_pane_table(
        f,
        app,
        theme,
        Pane::Stream,
        area,
        Rows { title, cols, rows },
    );
}

fn field(name: &str, value: String, theme: &Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<9}"), theme.bold()),
        Span::raw(value),
    ])
}

/// The lines of a message's detail: who, when, headers, then the payload as `view` says:
/// pretty JSON (keys in their order), text or hex (16 bytes a line, or 8 when `width` is
/// too narrow for 16).
pub fn detail_lines(
    m: &mom_proto::Message,
    view: PayloadView,
    width: u16,
    theme: &Theme,
) -> Vec<Line<'static>> {
    let mut out = vec![
        field("topic", m.topic.clone(), theme),
        field("seq", m.seq.to_string(), theme),
        field("time", clock(m.time, true), theme),
        field(
            "sender",
            format!(
                "{} (client {}, {})",
                m.sender.user, m.sender.client, m.sender.name
            ),
            theme,
        ),
    ];
    if let Some(id) = &m.msg_id {
        out.push(field("msg id", id.clone(), theme));
    }
    if let Some(k) = &m.key {
        out.push(field("key", k.clone(), theme));
    }
    if let Some(d) = m.delivery {
        out.push(field("delivery", d.to_string(), theme));
    }
    out.push(Line::from(Span::styled("headers", theme.bold())));
    if m.headers.is_empty() {
        out.push(Line::from("  (none)"));
    }
    for (k, v) in &m.headers {
        out.push(Line::from(format!("  {k}: {v}")));
    }
    let text = std::str::from_utf8(&m.payload).ok();
    let json = text
        .filter(|s| s.trim_start().starts_with(['{', '[']))
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
    let (shown, body): (&str, Vec<String>) = match (view, text, json) {
        (PayloadView::Auto, _, Some(v)) => (
            "pretty JSON",
            serde_json::to_string_pretty(&v)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect(),
        ),
        (PayloadView::Auto, Some(s), None) => ("text", s.lines().map(str::to_string).collect()),
        (PayloadView::Text, _, _) => (
            "text",
            String::from_utf8_lossy(&m.payload)
                .lines()
                .map(str::to_string)
                .collect(),
        ),
        (PayloadView::Auto, None, _) | (PayloadView::Hex, _, _) => {
            ("hex", hexdump(&m.payload, if width >= 79 { 16 } else { 8 }))
        }
    };
    out.push(Line::from(Span::styled(
        format!("payload ({} bytes, {shown})", m.payload.len()),
        theme.bold(),
    )));
    out.extend(body.into_iter().map(|l| Line::from(format!("  {l}"))));
    out
}

fn hexdump(p: &[u8], per_line: usize) -> Vec<String> {
    p.chunks(per_line)
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
            format!("{:08x}  {hex:<w$} {ascii}", i * per_line, w = per_line * 3)
        })
        .collect()
}
