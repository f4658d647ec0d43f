//! Keys and the mouse in the panes and drill-down views (dialogs are in `input.rs`).

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use mom_proto::StartAt;

use super::input::{Confirm, Input, Mode, PromptKind};
use super::table::{columns, msg_key};
use super::{App, Command, Drill, Pane};

/// Capital letters that are commands; the others sort by the column they start.
const BOUND_CAPITALS: &[char] = &['P', 'D', 'R', 'G', 'S'];

impl App {
    pub(super) fn key(&mut self, k: KeyEvent) -> Vec<Command> {
        if k.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return Vec::new();
        }
        let mode = std::mem::replace(&mut self.mode, Mode::Normal);
        self.key_mode(mode, k)
    }

    /// Move the cursor of what has the focus: a drill-down's list or the pane's table.
    fn move_by(&mut self, delta: isize) {
        match &mut self.drill {
            Some(Drill::Queue(q)) => {
                let n = q.peek.as_ref().map_or(0, Vec::len);
                q.sel = (q.sel as isize + delta).clamp(0, n.saturating_sub(1) as isize) as usize;
                q.sel_key = q.peek.as_ref().and_then(|p| p.get(q.sel)).map(msg_key);
            }
            Some(Drill::Client(c)) => {
                let n = self
                    .stats
                    .as_ref()
                    .and_then(|s| s.clients.iter().find(|x| x.client_id == c.id))
                    .map_or(0, |x| x.watch_patterns.len());
                c.sel = (c.sel as isize + delta).clamp(0, n.saturating_sub(1) as isize) as usize;
            }
            // A few nodes and groups, all on screen: nothing to move.
            Some(Drill::Cluster) => {}
            None => {
                let pane = self.pane;
                if pane == Pane::Stream && !self.stream.paused {
                    // Moving in a live list would open whatever passes under the cursor.
                    self.stream.paused = true;
                    self.stream.auto_paused = true;
                }
                let cur = self.selected(pane) as isize;
                self.select(pane, (cur + delta).max(0) as usize);
            }
        }
    }

    fn go_pane(&mut self, p: Pane) {
        self.drill = None;
        self.pane = p;
    }

    pub(super) fn key_normal(&mut self, k: KeyEvent) -> Vec<Command> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.mode = Mode::Help { scroll: 0 },
            KeyCode::Char(':') => {
                self.mode = Mode::Prompt {
                    kind: PromptKind::Command,
                    input: Input::default(),
                }
            }
            KeyCode::Char('s') if ctrl => self.open_save(),
            KeyCode::Tab => self.go_pane(Pane::ALL[(self.pane.index() + 1) % 4]),
            KeyCode::BackTab => self.go_pane(Pane::ALL[(self.pane.index() + 3) % 4]),
            KeyCode::Char(c @ '1'..='4') => self.go_pane(Pane::ALL[(c as usize) - ('1' as usize)]),
            KeyCode::Char('j') | KeyCode::Down => self.move_by(1),
            KeyCode::Char('k') | KeyCode::Up => self.move_by(-1),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::Char('g') | KeyCode::Home => {
                if self.drill.is_none() && self.pane == Pane::Stream {
                    self.follow_stream();
                } else {
                    self.move_by(-(isize::MAX / 2));
                }
            }
            KeyCode::Char('G') | KeyCode::End => self.move_by(isize::MAX / 2),
            KeyCode::Char('/') => {
                let f = &self.view(self.pane).filter;
                self.mode = Mode::Prompt {
                    kind: PromptKind::Filter {
                        pane: self.pane,
                        regex: f.regex,
                    },
                    input: Input::with(&f.text),
                };
            }
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left if self.drill.is_some() => {
                self.drill = None
            }
            KeyCode::Esc => {
                if !self.view(self.pane).filter.is_empty() {
                    self.set_filter(self.pane, Default::default());
                } else if self.pane == Pane::Stream {
                    self.follow_stream();
                }
            }
            KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('w') => {
                self.mode = Mode::Prompt {
                    kind: PromptKind::Watch,
                    input: Input::with(&self.stream.pattern),
                }
            }
            KeyCode::Char('p') => self.open_publish(None),
            KeyCode::Char('n') => self.toggle_cluster(),
            KeyCode::Char('c') => {
                self.mode = Mode::CreateQueue {
                    name: Input::default(),
                    binding: Input::with(&self.selected_topic().unwrap_or_default()),
                    field: 0,
                }
            }
            KeyCode::Char('s') => {
                let n = columns(self.pane).len();
                let v = &mut self.views[self.pane.index()];
                let next = (v.sort.col + 1) % n;
                v.sort_by(self.pane, next);
                self.sort_status();
            }
            KeyCode::Char('S') => {
                self.views[self.pane.index()].sort.desc ^= true;
                self.sort_status();
            }
            KeyCode::Char(c) if c.is_ascii_uppercase() && !BOUND_CAPITALS.contains(&c) => {
                if let Some(col) = columns(self.pane).iter().position(|h| h.starts_with(c)) {
                    let pane = self.pane;
                    self.views[pane.index()].sort_by(pane, col);
                    self.sort_status();
                }
            }
            KeyCode::Char('y') => {
                if let Some(m) = self.focused_message() {
                    self.copy(&m);
                }
            }
            KeyCode::Char('m') if self.pane == Pane::Stream => self.toggle_mark(),
            KeyCode::Char(']') if self.drill.is_none() && self.window(self.pane).is_some() => {
                return self.next_window()
            }
            KeyCode::Char('[') if self.drill.is_none() && self.window(self.pane).is_some() => {
                return self.prev_window()
            }
            KeyCode::Enter => return self.enter(),
            _ => return self.key_action(k),
        }
        Vec::new()
    }

    fn sort_status(&mut self) {
        if self.pane == Pane::Stream {
            self.set_status("the stream stays in arrival order (newest first)");
            return;
        }
        let s = self.view(self.pane).sort;
        let head = columns(self.pane).get(s.col).copied().unwrap_or("?");
        let dir = if s.desc { "descending" } else { "ascending" };
        self.set_status(format!("sorted by {head}, {dir}"));
    }

    /// The message under the cursor: in a queue's peek list or in the stream.
    fn focused_message(&self) -> Option<mom_proto::Message> {
        match &self.drill {
            Some(Drill::Queue(q)) => q.peek.as_ref()?.get(q.sel).cloned(),
            Some(Drill::Client(_) | Drill::Cluster) => None,
            None if self.pane == Pane::Stream => self.selected_message().cloned(),
            None => None,
        }
    }

    fn enter(&mut self) -> Vec<Command> {
        match &self.drill {
            Some(Drill::Queue(_)) => {
                if let Some(m) = self.focused_message() {
                    self.open_detail(m);
                }
                return Vec::new();
            }
            Some(Drill::Client(c)) => {
                let pattern = self
                    .stats
                    .as_ref()
                    .and_then(|s| s.clients.iter().find(|x| x.client_id == c.id))
                    .and_then(|x| x.watch_patterns.get(c.sel).cloned());
                return match pattern {
                    // One watch may hold several patterns; the stream takes the first.
                    Some(p) => {
                        let first = p.split_whitespace().next().unwrap_or(">").to_string();
                        self.watch(&first, StartAt::New, 0)
                    }
                    None => Vec::new(),
                };
            }
            Some(Drill::Cluster) => return Vec::new(),
            None => {}
        }
        match self.pane {
            Pane::Topics => {
                if let Some(t) = self.selected_topic() {
                    return self.watch(&t, StartAt::New, 0);
                }
            }
            Pane::Subscriptions => {
                if let Some(q) = self.selected_queue() {
                    return self.open_queue(q);
                }
            }
            Pane::Clients => {
                if let Some(c) = self.selected_client().map(|c| c.client_id) {
                    self.open_client(c);
                }
            }
            Pane::Stream => {
                if let Some(m) = self.selected_message().cloned() {
                    self.open_detail(m);
                }
            }
        }
        Vec::new()
    }

    /// Keys that act on the selected topic, queue or client.
    fn key_action(&mut self, k: KeyEvent) -> Vec<Command> {
        let queue = match &self.drill {
            Some(Drill::Queue(q)) => Some(q.name.clone()),
            Some(Drill::Client(_) | Drill::Cluster) => None,
            None if self.pane == Pane::Subscriptions => self.selected_queue(),
            None => None,
        };
        let topic = match (&self.drill, self.pane) {
            (None, Pane::Topics) => self.selected_topic(),
            _ => None,
        };
        let client = match &self.drill {
            Some(Drill::Client(c)) => Some(c.id),
            None if self.pane == Pane::Clients => self.selected_client().map(|c| c.client_id),
            _ => None,
        };
        let confirm = match (k.code, queue, topic, client) {
            (KeyCode::Char('P'), Some(q), _, _) => Confirm::PurgeQueue(q),
            (KeyCode::Char('P'), _, Some(t), _) => Confirm::PurgeTopic(t),
            (KeyCode::Char(c @ ('d' | 'D')), Some(name), _, _) => Confirm::DeleteQueue {
                name,
                force: c == 'D',
            },
            (KeyCode::Char(c @ ('d' | 'D')), _, Some(name), _) => Confirm::DeleteTopic {
                name,
                force: c == 'D',
            },
            (KeyCode::Char('r'), Some(q), _, _) if self.drill.is_some() => Confirm::RedriveQueue(q),
            (KeyCode::Char('v'), Some(q), _, _) if self.drill.is_some() => {
                return vec![Command::PeekQueue(q)];
            }
            (KeyCode::Char('e'), Some(_), _, _) if self.drill.is_some() => {
                self.mode = Mode::Prompt {
                    kind: PromptKind::Command,
                    input: Input::continuing("set ack_wait "),
                };
                return Vec::new();
            }
            (KeyCode::Char('x'), _, _, Some(id)) => Confirm::CloseClient {
                id,
                name: self.client_name(id),
            },
            (KeyCode::Char('r'), _, _, _) => {
                return match self.selected_topic() {
                    Some(t) => self.watch(&t, StartAt::All, 0),
                    None => {
                        self.set_status("select a topic to replay (pane 1)");
                        Vec::new()
                    }
                };
            }
            (KeyCode::Char('R'), _, _, _) => {
                match self.selected_topic() {
                    Some(t) => {
                        self.mode = Mode::Prompt {
                            kind: PromptKind::ReplayFrom(t),
                            input: Input::default(),
                        }
                    }
                    None => self.set_status("select a topic to replay (pane 1)"),
                }
                return Vec::new();
            }
            (KeyCode::Char('P' | 'd' | 'D'), ..) => {
                self.set_status("select a topic (pane 1) or a queue (pane 2) first");
                return Vec::new();
            }
            (KeyCode::Char('x'), ..) => {
                self.set_status("select a client (pane 3) to close its connection");
                return Vec::new();
            }
            _ => return Vec::new(),
        };
        self.mode = Mode::Confirm(confirm);
        Vec::new()
    }

    fn client_name(&self, id: u64) -> String {
        self.stats
            .as_ref()
            .and_then(|s| s.clients.iter().find(|c| c.client_id == id))
            .map(|c| c.name.clone())
            .unwrap_or_default()
    }

    pub(super) fn mouse(&mut self, m: MouseEvent) {
        match m.kind {
            MouseEventKind::ScrollDown => match &mut self.mode {
                Mode::Help { scroll } | Mode::Detail { scroll, .. } => {
                    *scroll = scroll.saturating_add(3)
                }
                _ => self.move_by(3),
            },
            MouseEventKind::ScrollUp => match &mut self.mode {
                Mode::Help { scroll } | Mode::Detail { scroll, .. } => {
                    *scroll = scroll.saturating_sub(3)
                }
                _ => self.move_by(-3),
            },
            MouseEventKind::Down(MouseButton::Left) if self.mode == Mode::Normal => {
                for p in Pane::ALL {
                    let a = self.areas[p.index()];
                    if a.bottom > a.top
                        && m.row >= a.top
                        && m.row < a.bottom
                        && m.column >= a.left
                        && m.column < a.right
                    {
                        self.drill = None;
                        self.pane = p;
                        let row = a.offset + (m.row - a.top) as usize;
                        if p == Pane::Stream {
                            self.stream.paused = true;
                            self.stream.auto_paused = true;
                        }
                        self.select(p, row);
                    }
                }
            }
            _ => {}
        }
    }
}
