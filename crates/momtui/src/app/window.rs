//! Which part of the broker's listings the dashboard shows. The broker sends topics, queues
//! and clients a page at a time (docs/protocol.md section 2.5); each table holds a window of
//! at most `WINDOW` of them, in the broker's order, from a cursor, and for topics and
//! queues filtered on the broker by a pattern (`:match`). `]` moves a window on, `[` back.
//! So a broker with 100,000 topics costs the dashboard a window per second, not all of
//! them, and the local filter and sort work within the window.

use mom_proto::{topic, Page};

use super::{App, Command, Pane};

/// Most rows of a table's window.
pub const WINDOW: usize = 1000;

/// One table's window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// The cursors the windows so far started after; the last is this window's. Empty: the
    /// first window. Kept as a stack so `[` goes back without the broker paging backwards.
    pub starts: Vec<String>,
    /// Only names this pattern matches (topics and queues).
    pub pattern: Option<String>,
}

impl Window {
    /// The broker page that starts this window.
    pub fn page(&self) -> Page {
        Page {
            after: self.starts.last().cloned(),
            limit: Some(WINDOW as u32),
            prefix: None,
            pattern: self.pattern.clone(),
        }
    }
}

/// The windows of the three tables, as the network task asks for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Windows {
    pub topics: Window,
    pub queues: Window,
    pub clients: Window,
}

impl App {
    pub fn window(&self, pane: Pane) -> Option<&Window> {
        match pane {
            Pane::Topics => Some(&self.windows.topics),
            Pane::Subscriptions => Some(&self.windows.queues),
            Pane::Clients => Some(&self.windows.clients),
            Pane::Stream => None,
        }
    }

    fn window_mut(&mut self, pane: Pane) -> Option<&mut Window> {
        match pane {
            Pane::Topics => Some(&mut self.windows.topics),
            Pane::Subscriptions => Some(&mut self.windows.queues),
            Pane::Clients => Some(&mut self.windows.clients),
            Pane::Stream => None,
        }
    }

    /// Where the broker's listing goes on after this pane's window, if it does.
    pub fn window_next(&self, pane: Pane) -> Option<&String> {
        let s = self.stats.as_ref()?;
        match pane {
            Pane::Topics => s.topics_next.as_ref(),
            Pane::Subscriptions => s.queues_next.as_ref(),
            Pane::Clients => s.clients_next.as_ref(),
            Pane::Stream => None,
        }
    }

    /// Does this pane show only part of what the broker holds?
    pub fn windowed(&self, pane: Pane) -> bool {
        self.window(pane)
            .is_some_and(|w| !w.starts.is_empty() || w.pattern.is_some())
            || self.window_next(pane).is_some()
    }

    /// What the pane's title says about its window: the pattern, which page, the keys.
    pub fn window_note(&self, pane: Pane) -> String {
        let Some(w) = self.window(pane) else {
            return String::new();
        };
        let mut note = match &w.pattern {
            Some(p) => format!("[match: {p}] "),
            None => String::new(),
        };
        let next = self.window_next(pane).is_some();
        let back = !w.starts.is_empty();
        if next || back {
            let keys = match (next, back) {
                (true, true) => "] next, [ back",
                (true, false) => "] next",
                _ => "[ back",
            };
            note.push_str(&format!("[page {}: {keys}] ", w.starts.len() + 1));
        }
        note
    }

    /// The count in a pane's title: the rows shown, and of how many when the window holds
    /// only part of the broker's listing (unknown under a pattern).
    pub fn count_note(&self, pane: Pane, shown: usize) -> String {
        let total = self.stats.as_ref().map(|s| match pane {
            Pane::Topics => s.totals.topics,
            Pane::Subscriptions => s.totals.queues.max(s.queues.len() as u64),
            _ => s.totals.connections,
        });
        match total {
            Some(t)
                if self.windowed(pane)
                    && self.window(pane).is_some_and(|w| w.pattern.is_none()) =>
            {
                format!("{shown} of {t}")
            }
            _ => shown.to_string(),
        }
    }

    /// `]`: the pane's next window, when the broker has more.
    pub(super) fn next_window(&mut self) -> Vec<Command> {
        let pane = self.pane;
        let Some(next) = self.window_next(pane).cloned() else {
            self.set_status("no more rows on the broker after these");
            return Vec::new();
        };
        if let Some(w) = self.window_mut(pane) {
            w.starts.push(next);
        }
        self.windows_changed(pane)
    }

    /// `[`: the pane's window before this one.
    pub(super) fn prev_window(&mut self) -> Vec<Command> {
        let pane = self.pane;
        if self.window_mut(pane).and_then(|w| w.starts.pop()).is_none() {
            self.set_status("this is the first page");
            return Vec::new();
        }
        self.windows_changed(pane)
    }

    /// `:match PATTERN`: topics (or queues) this pattern matches, filtered on the broker;
    /// an empty pattern shows all again.
    pub(super) fn set_match(&mut self, pattern: &str) -> Vec<Command> {
        let pane = match self.pane {
            Pane::Topics | Pane::Stream => Pane::Topics,
            Pane::Subscriptions => Pane::Subscriptions,
            Pane::Clients => {
                self.set_error(":match filters topics and queues; clients: use / to filter");
                return Vec::new();
            }
        };
        let pattern = pattern.trim();
        if !pattern.is_empty() {
            if let Err(e) = topic::validate_pattern(pattern) {
                self.set_error(e.to_string());
                return Vec::new();
            }
        }
        self.drill = None;
        self.pane = pane;
        if let Some(w) = self.window_mut(pane) {
            w.pattern = (!pattern.is_empty()).then(|| pattern.to_string());
            w.starts.clear();
        }
        self.windows_changed(pane)
    }

    /// A window moved: the selection starts over, the rows of the old window go (rather
    /// than show under the new one's title until the broker answers), and the network task
    /// asks for it.
    fn windows_changed(&mut self, pane: Pane) -> Vec<Command> {
        let v = &mut self.views[pane.index()];
        v.key = None;
        v.index = 0;
        if let Some(s) = &mut self.stats {
            match pane {
                Pane::Topics => (s.topics.clear(), s.topics_next = None),
                Pane::Subscriptions => (s.queues.clear(), s.queues_next = None),
                Pane::Clients => (s.clients.clear(), s.clients_next = None),
                Pane::Stream => ((), ()),
            };
        }
        vec![Command::Windows(self.windows.clone())]
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::super::tests::sample_stats;
    use super::super::{Event, NetEvent};
    use super::*;

    fn press(a: &mut App, c: KeyCode) -> Vec<Command> {
        a.update(Event::Key(KeyEvent::new(c, KeyModifiers::NONE)))
    }

    fn command(a: &mut App, line: &str) -> Vec<Command> {
        press(a, KeyCode::Char(':'));
        for c in line.chars() {
            press(a, KeyCode::Char(c));
        }
        press(a, KeyCode::Enter)
    }

    /// A broker with 100,000 topics: the window holds the first ones, more follow.
    fn big() -> App {
        let mut a = App::new("127.0.0.1:7878", 5, false);
        let mut s = sample_stats();
        s.totals.topics = 100_000;
        s.topics_next = Some("orders.eu".into());
        a.update(Event::Net(NetEvent::Stats(Box::new(s))));
        a
    }

    fn windows(cmds: &[Command]) -> &Windows {
        match cmds {
            [Command::Windows(w)] => w,
            other => panic!("expected one Windows command, got {other:?}"),
        }
    }

    #[test]
    fn a_table_the_broker_holds_more_of_moves_a_page_at_a_time() {
        let mut a = big();
        assert_eq!(a.count_note(Pane::Topics, 3), "3 of 100000");
        assert_eq!(a.window_note(Pane::Topics), "[page 1: ] next] ");
        press(&mut a, KeyCode::Down);
        let w = windows(&press(&mut a, KeyCode::Char(']'))).clone();
        assert_eq!(w.topics.starts, vec!["orders.eu".to_string()]);
        assert_eq!(w.topics.page().after.as_deref(), Some("orders.eu"));
        assert_eq!(a.view(Pane::Topics).index, 0, "the selection starts over");
        assert!(
            a.topics().is_empty(),
            "the old page's rows are gone until the new come"
        );
        // The broker's answer for that window: the last page.
        let mut s = sample_stats();
        s.totals.topics = 100_000;
        a.update(Event::Net(NetEvent::Stats(Box::new(s))));
        assert_eq!(a.window_note(Pane::Topics), "[page 2: [ back] ");
        assert!(
            press(&mut a, KeyCode::Char(']')).is_empty(),
            "nothing after it"
        );
        let w = windows(&press(&mut a, KeyCode::Char('['))).clone();
        assert!(w.topics.starts.is_empty());
        assert!(
            press(&mut a, KeyCode::Char('[')).is_empty(),
            "the first page"
        );
        // Other panes keep their own windows; the stream has none.
        assert_eq!(a.windows.queues, Window::default());
        press(&mut a, KeyCode::Char('4'));
        assert!(press(&mut a, KeyCode::Char(']')).is_empty());
    }

    #[test]
    fn match_asks_the_broker_for_the_topics_or_queues_of_a_pattern() {
        let mut a = big();
        let w = windows(&command(&mut a, "match orders.>")).clone();
        assert_eq!(w.topics.pattern.as_deref(), Some("orders.>"));
        assert_eq!(a.window_note(Pane::Topics), "[match: orders.>] ");
        // The broker's answer: a first page of matching topics, more after it.
        let mut s = sample_stats();
        s.topics_next = Some("orders.eu".into());
        a.update(Event::Net(NetEvent::Stats(Box::new(s))));
        assert_eq!(
            a.window_note(Pane::Topics),
            "[match: orders.>] [page 1: ] next] "
        );
        assert_eq!(
            a.count_note(Pane::Topics, 3),
            "3",
            "of how many is not known"
        );
        // A bad pattern is refused here, before the broker would.
        assert!(command(&mut a, "match orders.>.x").is_empty());
        assert!(a.status.as_ref().is_some_and(|s| s.error));
        // Queues have their own; clients have none.
        press(&mut a, KeyCode::Char('2'));
        let w = windows(&command(&mut a, "match billing.*")).clone();
        assert_eq!(w.queues.pattern.as_deref(), Some("billing.*"));
        assert_eq!(w.topics.pattern.as_deref(), Some("orders.>"));
        press(&mut a, KeyCode::Char('3'));
        assert!(command(&mut a, "match x").is_empty());
        // An empty pattern shows all again.
        press(&mut a, KeyCode::Char('1'));
        let w = windows(&command(&mut a, "match")).clone();
        assert_eq!(w.topics, Window::default());
    }
}
