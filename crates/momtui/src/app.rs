//! The dashboard's state and how events change it. Pure: no terminal, no network. Events
//! come in (keys, mouse, ticks, what the network task saw); commands for the network task
//! come out. Drawing (`ui/`) only reads this state.

use std::collections::{HashMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use mom_proto::{Headers, Message, StartAt, Stats, Welcome};

/// The panes, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Topics,
    Subscriptions,
    Clients,
    Stream,
}

impl Pane {
    pub const ALL: [Pane; 4] = [
        Pane::Topics,
        Pane::Subscriptions,
        Pane::Clients,
        Pane::Stream,
    ];

    pub fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    pub fn title(self) -> &'static str {
        match self {
            Pane::Topics => "Topics",
            Pane::Subscriptions => "Subscriptions",
            Pane::Clients => "Clients",
            Pane::Stream => "Stream",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Conn {
    Connecting,
    Connected { welcome: Box<Welcome> },
    Reconnecting { attempt: u32, reason: String },
}

/// A text field being edited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub text: String,
}

impl Input {
    pub fn with(text: &str) -> Self {
        Input {
            text: text.to_string(),
        }
    }

    /// Apply an editing key; true if the key was used.
    fn edit(&mut self, key: &KeyEvent) -> bool {
        match key.code {
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.text.push(c);
                true
            }
            KeyCode::Backspace => {
                self.text.pop();
                true
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PublishForm {
    pub topic: Input,
    pub headers: Input,
    pub payload: Input,
    /// 0 topic, 1 headers, 2 payload.
    pub field: usize,
}

/// What a confirmation is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    PurgeQueue(String),
    DeleteQueue { name: String, force: bool },
}

/// What the screen is doing besides showing the panes.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Filter(Input),
    WatchPattern(Input),
    ReplayFrom(Input),
    Publish(PublishForm),
    CreateQueue {
        name: Input,
        binding: Input,
        field: usize,
    },
    Confirm(Confirm),
    Detail(Box<Message>),
    Help,
}

/// What the network task reports.
#[derive(Debug, Clone)]
pub enum NetEvent {
    Connected(Box<Welcome>),
    Disconnected {
        attempt: u32,
        reason: String,
    },
    Stats(Box<Stats>),
    /// A sample of the stream's messages, how many arrived in all since the last one, and
    /// how many the broker skipped for this dashboard because it could not keep up.
    Messages {
        sample: Vec<Message>,
        total: u64,
        skipped: u64,
    },
    /// The stream now watches this pattern.
    Watching(String),
    /// The outcome of a command, for the status line.
    Done(Result<String, String>),
}

/// What the dashboard asks the network task to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Watch {
        pattern: String,
        from: StartAt,
        at: u64,
    },
    Publish {
        topic: String,
        headers: Headers,
        payload: String,
    },
    CreateQueue {
        name: String,
        binding: String,
    },
    PurgeQueue(String),
    DeleteQueue {
        name: String,
        force: bool,
    },
}

#[derive(Debug, Clone)]
pub enum Event {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Tick,
    Net(NetEvent),
}

/// Rows of each table as last drawn, so a mouse click can be mapped to a row.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TableArea {
    pub top: u16,
    pub bottom: u16,
    pub left: u16,
    pub right: u16,
    /// Index of the first row shown.
    pub offset: usize,
}

pub const SPARK_LEN: usize = 30;

#[derive(Debug)]
pub struct App {
    pub server: String,
    pub conn: Conn,
    pub stats: Option<Stats>,
    /// Per topic, messages in per second, oldest first (for the sparkline).
    pub history: HashMap<String, VecDeque<u64>>,
    pub pane: Pane,
    pub selected: [usize; 4],
    pub filter: String,
    pub stream: VecDeque<Message>,
    pub stream_cap: usize,
    pub stream_pattern: String,
    /// Messages the stream received in all, and those shown (a sample at high rates).
    pub stream_total: u64,
    pub stream_shown: u64,
    pub stream_skipped: u64,
    pub paused: bool,
    pub mode: Mode,
    pub status: String,
    pub quit: bool,
    pub color: bool,
    pub areas: [TableArea; 4],
}

impl App {
    pub fn new(server: &str, stream_cap: usize, color: bool) -> Self {
        App {
            server: server.to_string(),
            conn: Conn::Connecting,
            stats: None,
            history: HashMap::new(),
            pane: Pane::Topics,
            selected: [0; 4],
            filter: String::new(),
            stream: VecDeque::new(),
            stream_cap: stream_cap.max(1),
            stream_pattern: ">".into(),
            stream_total: 0,
            stream_shown: 0,
            stream_skipped: 0,
            paused: false,
            mode: Mode::Normal,
            status: String::new(),
            quit: false,
            color,
            areas: [TableArea::default(); 4],
        }
    }

    /// Names shown in a pane after the filter, in order.
    pub fn topics(&self) -> Vec<&mom_proto::TopicInfo> {
        self.stats
            .as_ref()
            .map(|s| s.topics.iter().filter(|t| self.matches(&t.name)).collect())
            .unwrap_or_default()
    }

    pub fn queues(&self) -> Vec<&mom_proto::QueueInfo> {
        self.stats
            .as_ref()
            .map(|s| {
                s.queues
                    .iter()
                    .filter(|q| self.matches(&q.name) || q.bindings.iter().any(|b| self.matches(b)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn clients(&self) -> Vec<&mom_proto::ClientInfo> {
        self.stats
            .as_ref()
            .map(|s| {
                s.clients
                    .iter()
                    .filter(|c| {
                        self.matches(&c.name)
                            || self.matches(&c.addr)
                            || self.matches(&c.client_id.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn stream_rows(&self) -> Vec<&Message> {
        self.stream
            .iter()
            .rev()
            .filter(|m| {
                self.pane != Pane::Stream
                    || self.filter.is_empty()
                    || m.topic.contains(&self.filter)
                    || String::from_utf8_lossy(&m.payload).contains(&self.filter)
            })
            .collect()
    }

    fn matches(&self, s: &str) -> bool {
        self.filter.is_empty() || s.contains(&self.filter)
    }

    fn rows(&self, pane: Pane) -> usize {
        match pane {
            Pane::Topics => self.topics().len(),
            Pane::Subscriptions => self.queues().len(),
            Pane::Clients => self.clients().len(),
            Pane::Stream => self.stream_rows().len(),
        }
    }

    pub fn selected(&self, pane: Pane) -> usize {
        let n = self.rows(pane);
        self.selected[pane.index()].min(n.saturating_sub(1))
    }

    fn select(&mut self, pane: Pane, i: usize) {
        let n = self.rows(pane);
        self.selected[pane.index()] = i.min(n.saturating_sub(1));
    }

    fn move_by(&mut self, delta: isize) {
        let cur = self.selected(self.pane) as isize;
        let next = (cur + delta).max(0) as usize;
        self.select(self.pane, next);
    }

    pub fn selected_topic(&self) -> Option<String> {
        self.topics()
            .get(self.selected(Pane::Topics))
            .map(|t| t.name.clone())
    }

    pub fn selected_queue(&self) -> Option<String> {
        self.queues()
            .get(self.selected(Pane::Subscriptions))
            .map(|q| q.name.clone())
    }

    /// Apply one event; return what the network task should do.
    pub fn update(&mut self, ev: Event) -> Vec<Command> {
        match ev {
            Event::Key(k) => self.key(k),
            Event::Mouse(m) => {
                self.mouse(m);
                Vec::new()
            }
            Event::Tick => Vec::new(),
            Event::Net(n) => {
                self.net(n);
                Vec::new()
            }
        }
    }

    fn net(&mut self, n: NetEvent) {
        match n {
            NetEvent::Connected(w) => {
                self.status = format!("connected to {} (server {})", self.server, w.server_id);
                self.conn = Conn::Connected { welcome: w };
            }
            NetEvent::Disconnected { attempt, reason } => {
                self.conn = Conn::Reconnecting { attempt, reason };
            }
            NetEvent::Stats(s) => {
                for t in &s.topics {
                    let h = self.history.entry(t.name.clone()).or_default();
                    h.push_back(t.in_rate.round() as u64);
                    while h.len() > SPARK_LEN {
                        h.pop_front();
                    }
                }
                let names: std::collections::HashSet<&str> =
                    s.topics.iter().map(|t| t.name.as_str()).collect();
                self.history.retain(|k, _| names.contains(k.as_str()));
                self.stats = Some(*s);
            }
            NetEvent::Messages {
                sample,
                total,
                skipped,
            } => {
                // Counters keep moving while paused; only the list stands still.
                self.stream_total += total;
                self.stream_skipped += skipped;
                if !self.paused {
                    self.stream_shown += sample.len() as u64;
                    for m in sample {
                        self.stream.push_back(m);
                    }
                    while self.stream.len() > self.stream_cap {
                        self.stream.pop_front();
                    }
                }
            }
            NetEvent::Watching(p) => {
                self.stream_pattern = p;
                self.stream.clear();
                self.stream_total = 0;
                self.stream_shown = 0;
                self.stream_skipped = 0;
                self.selected[Pane::Stream.index()] = 0;
            }
            NetEvent::Done(Ok(s)) => self.status = s,
            NetEvent::Done(Err(s)) => self.status = format!("error: {s}"),
        }
    }

    fn key(&mut self, k: KeyEvent) -> Vec<Command> {
        if k.kind == crossterm::event::KeyEventKind::Release {
            return Vec::new();
        }
        if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return Vec::new();
        }
        let mode = std::mem::replace(&mut self.mode, Mode::Normal);
        match mode {
            Mode::Normal => self.key_normal(k),
            Mode::Help | Mode::Detail(_) => {
                // Any of these closes the overlay; other keys leave it open.
                if !matches!(
                    k.code,
                    KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char('?')
                ) {
                    self.mode = mode;
                }
                Vec::new()
            }
            Mode::Filter(mut input) => {
                match k.code {
                    KeyCode::Esc => self.filter.clear(),
                    KeyCode::Enter => {}
                    _ => {
                        input.edit(&k);
                        self.filter = input.text.clone();
                        self.mode = Mode::Filter(input);
                    }
                }
                Vec::new()
            }
            Mode::WatchPattern(mut input) => match k.code {
                KeyCode::Esc => Vec::new(),
                KeyCode::Enter if !input.text.is_empty() => {
                    self.pane = Pane::Stream;
                    vec![Command::Watch {
                        pattern: input.text,
                        from: StartAt::New,
                        at: 0,
                    }]
                }
                _ => {
                    input.edit(&k);
                    self.mode = Mode::WatchPattern(input);
                    Vec::new()
                }
            },
            Mode::ReplayFrom(mut input) => match k.code {
                KeyCode::Esc => Vec::new(),
                KeyCode::Enter => {
                    let Some(topic) = self.selected_topic() else {
                        return Vec::new();
                    };
                    match input.text.trim().parse::<u64>() {
                        Ok(seq) => {
                            self.pane = Pane::Stream;
                            vec![Command::Watch {
                                pattern: topic,
                                from: StartAt::Seq,
                                at: seq,
                            }]
                        }
                        Err(_) => {
                            self.status = format!("error: {:?} is not a seq number", input.text);
                            Vec::new()
                        }
                    }
                }
                _ => {
                    input.edit(&k);
                    self.mode = Mode::ReplayFrom(input);
                    Vec::new()
                }
            },
            Mode::Publish(mut form) => match k.code {
                KeyCode::Esc => Vec::new(),
                KeyCode::Tab | KeyCode::Down => {
                    form.field = (form.field + 1) % 3;
                    self.mode = Mode::Publish(form);
                    Vec::new()
                }
                KeyCode::BackTab | KeyCode::Up => {
                    form.field = (form.field + 2) % 3;
                    self.mode = Mode::Publish(form);
                    Vec::new()
                }
                KeyCode::Enter => match parse_headers(&form.headers.text) {
                    Ok(headers) if !form.topic.text.is_empty() => vec![Command::Publish {
                        topic: form.topic.text,
                        headers,
                        payload: form.payload.text,
                    }],
                    Ok(_) => {
                        self.status = "error: the topic is empty".into();
                        self.mode = Mode::Publish(form);
                        Vec::new()
                    }
                    Err(e) => {
                        self.status = format!("error: {e}");
                        self.mode = Mode::Publish(form);
                        Vec::new()
                    }
                },
                _ => {
                    let f = match form.field {
                        0 => &mut form.topic,
                        1 => &mut form.headers,
                        _ => &mut form.payload,
                    };
                    f.edit(&k);
                    self.mode = Mode::Publish(form);
                    Vec::new()
                }
            },
            Mode::CreateQueue {
                mut name,
                mut binding,
                field,
            } => match k.code {
                KeyCode::Esc => Vec::new(),
                KeyCode::Tab | KeyCode::BackTab | KeyCode::Down | KeyCode::Up => {
                    self.mode = Mode::CreateQueue {
                        name,
                        binding,
                        field: 1 - field,
                    };
                    Vec::new()
                }
                KeyCode::Enter if !name.text.is_empty() && !binding.text.is_empty() => {
                    vec![Command::CreateQueue {
                        name: name.text,
                        binding: binding.text,
                    }]
                }
                _ => {
                    if field == 0 {
                        name.edit(&k);
                    } else {
                        binding.edit(&k);
                    }
                    self.mode = Mode::CreateQueue {
                        name,
                        binding,
                        field,
                    };
                    Vec::new()
                }
            },
            Mode::Confirm(c) => match k.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => match c {
                    Confirm::PurgeQueue(q) => vec![Command::PurgeQueue(q)],
                    Confirm::DeleteQueue { name, force } => {
                        vec![Command::DeleteQueue { name, force }]
                    }
                },
                _ => {
                    self.status = "cancelled".into();
                    Vec::new()
                }
            },
        }
    }

    fn key_normal(&mut self, k: KeyEvent) -> Vec<Command> {
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Tab => self.pane = Pane::ALL[(self.pane.index() + 1) % 4],
            KeyCode::BackTab => self.pane = Pane::ALL[(self.pane.index() + 3) % 4],
            KeyCode::Char(c @ '1'..='4') => self.pane = Pane::ALL[(c as usize) - ('1' as usize)],
            KeyCode::Char('j') | KeyCode::Down => self.move_by(1),
            KeyCode::Char('k') | KeyCode::Up => self.move_by(-1),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::Char('g') | KeyCode::Home => self.select(self.pane, 0),
            KeyCode::Char('G') | KeyCode::End => self.select(self.pane, usize::MAX),
            KeyCode::Char('/') => self.mode = Mode::Filter(Input::with(&self.filter)),
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char(' ') => {
                self.paused = !self.paused;
                self.status = if self.paused {
                    "stream paused"
                } else {
                    "stream resumed"
                }
                .into();
            }
            KeyCode::Char('w') => self.mode = Mode::WatchPattern(Input::with(&self.stream_pattern)),
            KeyCode::Char('p') => {
                self.mode = Mode::Publish(PublishForm {
                    topic: Input::with(&self.selected_topic().unwrap_or_default()),
                    headers: Input::default(),
                    payload: Input::default(),
                    field: 2,
                })
            }
            KeyCode::Char('c') => {
                self.mode = Mode::CreateQueue {
                    name: Input::default(),
                    binding: Input::with(&self.selected_topic().unwrap_or_default()),
                    field: 0,
                }
            }
            KeyCode::Enter => match self.pane {
                Pane::Topics => {
                    if let Some(t) = self.selected_topic() {
                        self.pane = Pane::Stream;
                        return vec![Command::Watch {
                            pattern: t,
                            from: StartAt::New,
                            at: 0,
                        }];
                    }
                }
                Pane::Stream => {
                    let i = self.selected(Pane::Stream);
                    if let Some(m) = self.stream_rows().get(i) {
                        self.mode = Mode::Detail(Box::new((*m).clone()));
                    }
                }
                Pane::Subscriptions | Pane::Clients => {}
            },
            KeyCode::Char('r') => {
                if let Some(t) = self.selected_topic() {
                    self.pane = Pane::Stream;
                    return vec![Command::Watch {
                        pattern: t,
                        from: StartAt::All,
                        at: 0,
                    }];
                }
                self.status = "select a topic to replay (pane 1)".into();
            }
            KeyCode::Char('R') => {
                if self.selected_topic().is_some() {
                    self.mode = Mode::ReplayFrom(Input::default());
                } else {
                    self.status = "select a topic to replay (pane 1)".into();
                }
            }
            KeyCode::Char('P') => match self.selected_queue() {
                Some(q) if self.pane == Pane::Subscriptions => {
                    self.mode = Mode::Confirm(Confirm::PurgeQueue(q))
                }
                _ => self.status = "select a queue to purge (pane 2)".into(),
            },
            KeyCode::Char('d') | KeyCode::Char('D') => match self.selected_queue() {
                Some(name) if self.pane == Pane::Subscriptions => {
                    self.mode = Mode::Confirm(Confirm::DeleteQueue {
                        name,
                        force: k.code == KeyCode::Char('D'),
                    })
                }
                _ => self.status = "select a queue to delete (pane 2)".into(),
            },
            _ => {}
        }
        Vec::new()
    }

    fn mouse(&mut self, m: MouseEvent) {
        match m.kind {
            MouseEventKind::ScrollDown => self.move_by(3),
            MouseEventKind::ScrollUp => self.move_by(-3),
            MouseEventKind::Down(MouseButton::Left) => {
                for p in Pane::ALL {
                    let a = self.areas[p.index()];
                    if a.bottom > a.top
                        && m.row >= a.top
                        && m.row < a.bottom
                        && m.column >= a.left
                        && m.column < a.right
                    {
                        self.pane = p;
                        let row = a.offset + (m.row - a.top) as usize;
                        self.select(p, row);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `k=v,k2=v2` to headers.
pub fn parse_headers(s: &str) -> Result<Headers, String> {
    let mut h = Headers::new();
    for kv in s.split(',').map(str::trim).filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                h.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(format!("header {kv:?}: expected key=value")),
        }
    }
    Ok(h)
}

#[cfg(test)]
pub mod tests;
