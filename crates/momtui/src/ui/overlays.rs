//! Dialogs and overlays drawn over the panes: help, message detail, publish, create queue,
//! confirmations. The help and the detail scroll; each sizes itself to its text.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::{block, stream::detail_lines, Theme};
use crate::app::{App, Mode, PublishForm, COMMANDS};

/// Every key, for the help overlay (and the README).
pub const KEYS: &[(&str, &str)] = &[
    ("q, Ctrl-C, :q", "quit"),
    ("?", "this help (j/k scroll)"),
    ("Tab, Shift-Tab, 1-4", "switch pane"),
    (
        "n",
        "the cluster: nodes, roles, each group's leader, term and lag",
    ),
    ("j/k, ↓/↑, PgDn/PgUp", "move (in the stream this pauses it)"),
    (
        "g/G, Home/End",
        "first / last row (g in the stream: follow the newest)",
    ),
    ("mouse", "click a row, scroll"),
    ("/", "filter this pane (Ctrl-R regex; Esc clears)"),
    (
        "] / [",
        "next / previous page of a table (the broker holds more)",
    ),
    ("s / S", "sort by the next column / reverse the order"),
    (
        "Shift+letter",
        "sort by the column starting with it (again: reverse)",
    ),
    (
        "Enter",
        "open: topic → stream, queue or client → detail, message → detail",
    ),
    ("Esc", "back from a detail; clear the pane's filter"),
    (
        ":",
        "command line (:queue jobs, :watch orders.>, :publish t)",
    ),
    ("w", "stream any pattern (replaces the stream's watch)"),
    ("space", "pause / resume the stream (counters go on)"),
    (
        "r / R",
        "replay the selected topic from the start / from a seq",
    ),
    ("y", "copy the selected message's payload (OSC 52)"),
    (
        "m, Ctrl-S",
        "mark a message in the stream; save the stream (or the marked)",
    ),
    ("p", "publish (topic, headers k=v,…, msg id, payload)"),
    ("c", "create a queue"),
    ("P", "purge the selected topic or queue (asks first)"),
    (
        "d / D",
        "delete the selected topic or queue / even if not empty (asks)",
    ),
    (
        "v, r (queue detail)",
        "peek again; redrive its dead letters (asks)",
    ),
    (
        "e (queue detail)",
        "change its settings (:set ack_wait 10s, :set max_deliver 3)",
    ),
    ("x (client)", "close the client's connection (asks first)"),
    (
        "v, y (message detail)",
        "payload as auto / text / hex; copy it",
    ),
];

const KEY_WIDTH: usize = 24;

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

/// The help's lines for a box `width` wide: a description that does not fit goes on
/// under itself, word by word.
pub fn help_lines(theme: &Theme, width: u16) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut row = |k: &str, d: &str, kw: usize| {
        let room = (width as usize).saturating_sub(kw).max(12);
        for (i, part) in words(d, room).into_iter().enumerate() {
            let k = if i == 0 { k } else { "" };
            lines.push(Line::from(vec![
                Span::styled(format!("{k:<kw$}"), theme.bold()),
                Span::raw(part),
            ]));
        }
    };
    for (k, d) in KEYS {
        row(k, d, KEY_WIDTH);
    }
    row("", "", 0);
    row("Commands", "", 0);
    for (k, d) in COMMANDS {
        if k.len() + 1 > KEY_WIDTH {
            row(k, "", 0);
            row("", d, KEY_WIDTH);
        } else {
            row(k, d, KEY_WIDTH);
        }
    }
    lines
}

/// `s` in lines of at most `w` characters, broken between words.
fn words(s: &str, w: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    for word in s.split(' ') {
        let cur = out.last_mut().expect("never empty");
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > w {
            out.push(word.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    out
}

/// Draw `lines` in a box sized to them (within `area`), scrolled by `scroll` (clamped and
/// written back).
fn scrolled(
    f: &mut Frame,
    theme: &Theme,
    area: Rect,
    title: &str,
    lines: Vec<Line<'static>>,
    scroll: &mut u16,
    full: bool,
) {
    let text_w = lines.iter().map(Line::width).max().unwrap_or(0) as u16;
    let (w, h) = if full {
        (area.width.saturating_sub(4), area.height.saturating_sub(2))
    } else {
        (
            (text_w + 2).max(title.chars().count() as u16 + 6),
            lines.len() as u16 + 2,
        )
    };
    let r = centered(area, w, h);
    // Long lines are wrapped here, not by the paragraph, so the scroll counts the lines
    // on screen and reaches the last one.
    let lines = if full {
        wrap(lines, r.width.saturating_sub(2))
    } else {
        lines
    };
    let inner_h = r.height.saturating_sub(2);
    let max = (lines.len() as u16).saturating_sub(inner_h);
    *scroll = (*scroll).min(max);
    let title = if max > 0 {
        let last = (*scroll + inner_h).min(lines.len() as u16);
        format!(" {title} ({}-{last} of {}) ", *scroll + 1, lines.len())
    } else {
        format!(" {title} ")
    };
    f.render_widget(Clear, r);
    let p = Paragraph::new(lines)
        .block(block(title, true, theme))
        .scroll((*scroll, 0));
    f.render_widget(p, r);
}

/// Lines wider than `w` cut into lines of `w` characters (their styles dropped).
fn wrap(lines: Vec<Line<'static>>, w: u16) -> Vec<Line<'static>> {
    let w = w.max(1) as usize;
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        if l.width() <= w {
            out.push(l);
            continue;
        }
        let text: String = l.spans.iter().map(|s| s.content.as_ref()).collect();
        let chars: Vec<char> = text.chars().collect();
        out.extend(
            chars
                .chunks(w)
                .map(|c| Line::from(c.iter().collect::<String>())),
        );
    }
    out
}

pub fn draw(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    let mut mode = std::mem::replace(&mut app.mode, Mode::Normal);
    match &mut mode {
        Mode::Help { scroll } => scrolled(
            f,
            theme,
            area,
            "Keys — j/k scroll, Esc closes",
            help_lines(theme, area.width.saturating_sub(2)),
            scroll,
            false,
        ),
        Mode::Detail { msg, scroll, view } => {
            let title = format!(
                "{}#{} — v view: {}, y copy, j/k scroll, Esc closes",
                msg.topic,
                msg.seq,
                view.name()
            );
            let lines = detail_lines(msg, *view, area.width.saturating_sub(6), theme);
            scrolled(f, theme, area, &title, lines, scroll, true);
        }
        Mode::Publish(form) => publish(f, theme, area, form),
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
            let text = c.question();
            let r = centered(area, (text.chars().count() as u16 + 4).max(30), 5);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(vec![
                    Line::from(text),
                    Line::from(""),
                    Line::from("y yes · any other key no"),
                ])
                .wrap(Wrap { trim: false })
                .block(block(" Confirm ".into(), true, theme)),
                r,
            );
        }
        Mode::Normal | Mode::Prompt { .. } => {}
    }
    app.mode = mode;
}

fn publish(f: &mut Frame, theme: &Theme, area: Rect, form: &PublishForm) {
    let mut lines = vec![
        field("topic", &form.topic.text, form.field == 0, theme),
        field("headers", &form.headers.text, form.field == 1, theme),
        field("msg id", &form.msg_id.text, form.field == 2, theme),
        field("payload", &form.payload.text, form.field == 3, theme),
        Line::from(""),
    ];
    if let Some(e) = &form.error {
        lines.push(Line::styled(format!("refused: {e}"), theme.fg(Color::Red)));
    }
    lines.push(Line::from(
        "Tab next field · Enter publish · Esc cancel (fields but the payload are kept)",
    ));
    let r = centered(area, 84, lines.len() as u16 + 2);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(" Publish ".into(), true, theme)),
        r,
    );
}
