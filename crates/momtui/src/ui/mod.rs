//! Drawing: a pure function of the app state (plus the table areas it records for mouse
//! clicks). One file per pane; this one lays them out with the header, tabs, footer and
//! overlays.

mod overlays;
mod stream;
mod tables;
#[cfg(test)]
mod tests;

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Tabs};
use ratatui::Frame;

use crate::app::{App, Conn, Mode, Pane};

/// Colours, or none under NO_COLOR.
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    pub fn selected(&self) -> Style {
        if self.color {
            Style::default().bg(Color::Blue).fg(Color::White)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }

    pub fn bold(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }
}

pub fn draw(f: &mut Frame, app: &mut App) {
    let theme = Theme { color: app.color };
    let area = f.area();
    let [header, tabs, body, footer] = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(2),
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(area);
    draw_header(f, app, &theme, header);
    draw_tabs(f, app, &theme, tabs);
    app.areas = Default::default();
    // Wide screens show the stream beside the selected table.
    if body.width >= 150 && app.pane != Pane::Stream {
        let [left, right] = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(58), Constraint::Percentage(42)])
            .areas(body);
        draw_pane(f, app, &theme, app.pane, left);
        draw_pane(f, app, &theme, Pane::Stream, right);
    } else {
        draw_pane(f, app, &theme, app.pane, body);
    }
    draw_footer(f, app, &theme, footer);
    overlays::draw(f, app, &theme, area);
}

fn draw_pane(f: &mut Frame, app: &mut App, theme: &Theme, pane: Pane, area: Rect) {
    match pane {
        Pane::Topics => tables::topics(f, app, theme, area),
        Pane::Subscriptions => tables::subscriptions(f, app, theme, area),
        Pane::Clients => tables::clients(f, app, theme, area),
        Pane::Stream => stream::stream(f, app, theme, area),
    }
}

fn draw_header(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let (state, state_style) = match &app.conn {
        Conn::Connecting => ("connecting…".to_string(), theme.fg(Color::Yellow)),
        Conn::Connected { .. } => ("connected".to_string(), theme.fg(Color::Green)),
        Conn::Reconnecting { attempt, reason } => (
            format!("reconnecting (attempt {attempt}): {reason}"),
            theme.fg(Color::Red),
        ),
    };
    let mut first = vec![
        Span::styled("mom ", theme.bold()),
        Span::raw(app.server.clone()),
        Span::raw("  "),
        Span::styled(state, state_style),
    ];
    if let Conn::Connected { welcome } = &app.conn {
        first.push(Span::raw(format!(
            "  server {}  momd {}",
            welcome.server_id, welcome.server_version
        )));
    }
    let second = match &app.stats {
        Some(s) => {
            let t = &s.totals;
            Line::from(format!(
                "up {}  {} topics  {} msgs  {}  {} queues  {} clients  {}/s in  {}/s out",
                uptime(s.uptime_ms),
                t.topics,
                t.messages,
                bytes(t.bytes),
                s.queues.len(),
                t.connections,
                rate(t.in_rate),
                rate(t.out_rate)
            ))
        }
        None => Line::from("waiting for the first stats…"),
    };
    f.render_widget(Paragraph::new(vec![Line::from(first), second]), area);
}

fn draw_tabs(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let titles: Vec<Line> = Pane::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| Line::from(format!("{} {}", i + 1, p.title())))
        .collect();
    let tabs = Tabs::new(titles)
        .select(app.pane.index())
        .highlight_style(theme.selected())
        .divider("│");
    f.render_widget(tabs, area);
}

fn draw_footer(f: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let hint = match &app.mode {
        Mode::Filter(i) => format!("filter: {}▏ (Enter keep, Esc clear)", i.text),
        Mode::WatchPattern(i) => format!("watch pattern: {}▏ (Enter watch, Esc cancel)", i.text),
        Mode::ReplayFrom(i) => format!("replay from seq: {}▏ (Enter replay, Esc cancel)", i.text),
        _ if !app.status.is_empty() => app.status.clone(),
        _ => "q quit ? help Tab panes j/k move / filter Enter open p publish space pause".into(),
    };
    let style = if app.status.starts_with("error") {
        theme.fg(Color::Red)
    } else {
        Style::default()
    };
    f.render_widget(Paragraph::new(Line::styled(hint, style)), area);
}

/// A bordered block with a title.
pub fn block(title: String, focused: bool, theme: &Theme) -> Block<'static> {
    let b = Block::default().borders(Borders::ALL).title(title);
    if focused {
        b.border_style(theme.fg(Color::Cyan))
    } else {
        b
    }
}

pub use momctl::human::bytes;

/// An uptime in its two largest units: 3d4h, 1h2m, 5m3s, 42s.
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{}s", s % 60)
    } else {
        format!("{s}s")
    }
}

pub fn rate(r: f64) -> String {
    if r >= 1_000_000.0 {
        format!("{:.1}M", r / 1_000_000.0)
    } else if r >= 1000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

/// A sparkline as text, from eighth blocks.
pub fn sparkline(values: impl Iterator<Item = u64> + Clone) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.clone().max().unwrap_or(0).max(1);
    values.map(|v| BARS[((v * 7) / max) as usize]).collect()
}
