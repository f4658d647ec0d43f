//! Drawing: a pure function of the app state (plus the table areas it records for mouse
//! clicks, and the scroll of overlays it clamps). One file per pane; `columns` draws any
//! table; this one lays them out with the header, tabs, footer and overlays.

mod cluster;
mod columns;
mod drill;
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

use crate::app::{App, Conn, Drill, Mode, Pane, PromptKind};

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
    // Wide screens show the stream beside the selected table or detail.
    if body.width >= 150 && (app.pane != Pane::Stream || app.drill.is_some()) {
        let [left, right] = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(58), Constraint::Percentage(42)])
            .areas(body);
        draw_main(f, app, &theme, left);
        draw_pane(f, app, &theme, Pane::Stream, right);
    } else {
        draw_main(f, app, &theme, body);
    }
    draw_footer(f, app, &theme, footer);
    overlays::draw(f, app, &theme, area);
}

/// The selected pane, or the detail drilled into from it.
fn draw_main(f: &mut Frame, app: &mut App, theme: &Theme, area: Rect) {
    match app.drill.clone() {
        Some(Drill::Queue(q)) => drill::queue(f, app, theme, area, &q),
        Some(Drill::Client(c)) => drill::client(f, app, theme, area, &c),
        Some(Drill::Cluster) => cluster::cluster(f, app, theme, area),
        None => draw_pane(f, app, theme, app.pane, area),
    }
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
        Conn::Reconnecting { attempt, .. } => (
            format!("reconnecting (attempt {attempt})"),
            theme.fg(Color::Red),
        ),
    };
    let mut first = vec![
        Span::styled("mom ", theme.bold()),
        Span::raw(match &app.conn {
            Conn::Connected { server, .. } => server.clone(),
            _ => app.server.clone(),
        }),
        Span::raw("  "),
        Span::styled(state, state_style),
    ];
    if app.stale() {
        let age = app.now.saturating_sub(app.stats_at) / 1000;
        first.push(Span::styled(
            format!("  figures from {} ago", uptime(age * 1000)),
            theme.fg(Color::Yellow),
        ));
    }
    match &app.conn {
        Conn::Connected { welcome, .. } => first.push(Span::raw(format!(
            "  server {}  momd {}",
            welcome.server_id, welcome.server_version
        ))),
        Conn::Reconnecting { reason, .. } => {
            first.push(Span::styled(format!(" — {reason}"), theme.fg(Color::Red)))
        }
        Conn::Connecting => {}
    }
    let second = match &app.stats {
        Some(s) => {
            let t = &s.totals;
            let (rin, rout) = if app.stale() {
                ("–".to_string(), "–".to_string())
            } else {
                (rate(t.in_rate), rate(t.out_rate))
            };
            let mut spans = vec![Span::raw(format!(
                "up {}  {} topics  {} msgs  {}  {} queues  {} clients  {rin}/s in  {rout}/s out",
                uptime(s.uptime_ms),
                t.topics,
                t.messages,
                bytes(t.bytes),
                // A broker from before paging counts no queues in its totals.
                t.queues.max(s.queues.len() as u64),
                t.connections,
            ))];
            if t.damaged > 0 {
                spans.push(Span::styled(
                    format!("  {} damaged on disk", t.damaged),
                    theme.fg(Color::Red),
                ));
            }
            let line = Line::from(spans);
            if app.stale() {
                line.style(Style::default().add_modifier(Modifier::DIM))
            } else {
                line
            }
        }
        None => Line::from("waiting for the first stats…"),
    };
    let first = fit_spans(first, area.width);
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
    let prompt = |label: &str, text: &str, help: &str| format!("{label}{text}▏ {help}");
    let (text, style) = match &app.mode {
        Mode::Prompt { kind, input } => {
            let t = &input.text;
            let line = match kind {
                PromptKind::Filter { pane, regex } => {
                    let what = if *regex { "regex" } else { "filter" };
                    let err = app
                        .view(*pane)
                        .filter
                        .error
                        .as_ref()
                        .map(|e| format!(" [{e}]"))
                        .unwrap_or_default();
                    prompt(
                        &format!("{} {what}: ", pane.title()),
                        t,
                        &format!("{err}(Enter keep, Esc clear, Ctrl-R regex)"),
                    )
                }
                PromptKind::Watch => prompt("watch pattern: ", t, "(Enter watch, Esc cancel)"),
                PromptKind::ReplayFrom(topic) => prompt(
                    &format!("replay {topic} from seq: "),
                    t,
                    "(Enter replay, Esc cancel)",
                ),
                PromptKind::Command => prompt(":", t, "(Enter run, Esc cancel, :help lists)"),
                PromptKind::Save => prompt("save to: ", t, "(Enter save, Esc cancel)"),
            };
            (line, theme.fg(Color::Yellow))
        }
        _ => match &app.status {
            Some(s) if s.error => (s.text.clone(), theme.fg(Color::Red)),
            Some(s) => (s.text.clone(), Style::default()),
            None => (hints(app).into(), theme.fg(Color::DarkGray)),
        },
    };
    let text = columns::fit(&text, area.width);
    f.render_widget(Paragraph::new(Line::styled(text, style)), area);
}

/// The key hints for what has the focus.
fn hints(app: &App) -> &'static str {
    match (&app.drill, app.pane) {
        (Some(Drill::Queue(_)), _) => {
            "Esc back  j/k move  Enter message  v peek  e settings  P purge  r redrive  d delete  y copy  ? help"
        }
        (Some(Drill::Client(_)), _) => "Esc back  j/k move  Enter stream watch  x close connection  ? help",
        (Some(Drill::Cluster), _) => "Esc or n back  (asked again every second)  ? help  q quit",
        (None, Pane::Stream) => {
            "q quit  ? help  j/k move (pauses)  g newest  Enter detail  space pause  / filter  w watch  y copy  : cmd"
        }
        (None, Pane::Topics) => {
            "q quit  ? help  Enter stream  r replay  s/S sort  / filter  p publish  P purge  d delete  : cmd"
        }
        (None, Pane::Subscriptions) => {
            "q quit  ? help  Enter detail  s/S sort  / filter  c create  P purge  d delete  : cmd"
        }
        (None, Pane::Clients) => "q quit  ? help  Enter detail  x close  s/S sort  / filter  : cmd",
    }
}

/// Spans cut to `w` columns in all, the cut one ending in `…`.
fn fit_spans(spans: Vec<Span<'static>>, w: u16) -> Vec<Span<'static>> {
    let mut left = w as usize;
    let mut out = Vec::new();
    for s in spans {
        let n = s.content.chars().count();
        if n <= left {
            left -= n;
            out.push(s);
            continue;
        }
        if left > 0 {
            out.push(Span::styled(columns::fit(&s.content, left as u16), s.style));
        }
        break;
    }
    out
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
