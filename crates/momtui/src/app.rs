//! The dashboard's state and how events change it. Pure: no terminal, no network, no
//! clock (ticks bring the time). Events come in (keys, mouse, ticks, what the network task
//! saw); commands for the network task come out. Drawing (`ui/`) only reads this state.
//!
//! `table` holds what each table shows (filter, sort, selection), `stream` the live
//! stream, `keys` the keys of the panes, `input` the dialogs and prompts, `command_line`
//! the `:` commands, `cluster` the cluster view.

mod cluster;
mod command_line;
mod input;
mod keys;
mod stream;
mod table;
mod window;

use std::collections::{HashMap, VecDeque};

use crossterm::event::{KeyEvent, MouseEvent};
use mom_proto::{ClusterStatus, Headers, Message, StartAt, Stats, Welcome};

pub use cluster::ClusterView;
pub use command_line::COMMANDS;
pub use input::{Mode, PayloadView, PromptKind, PublishForm};
pub use stream::{Sampler, StreamState};
pub use table::{msg_key, Sort, View};
pub use window::{Windows, WINDOW};

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
    /// To `server`, one of the list momtui was given.
    Connected {
        welcome: Box<Welcome>,
        server: String,
    },
    Reconnecting {
        attempt: u32,
        reason: String,
    },
}

/// A queue's detail: its figures come from stats; its next messages from a peek.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueDrill {
    pub name: String,
    /// The messages it would deliver next (none asked yet: `None`).
    pub peek: Option<Vec<Message>>,
    pub sel: usize,
    /// The selected peeked message, so the cursor stays on it when the peek is renewed.
    pub sel_key: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientDrill {
    pub id: u64,
    /// The selected watch.
    pub sel: usize,
}

/// A drill-down view over the pane (Esc goes back).
#[derive(Debug, Clone, PartialEq)]
pub enum Drill {
    Queue(QueueDrill),
    Client(ClientDrill),
    /// The cluster's nodes and groups (`App::cluster`).
    Cluster,
}

/// Messages a queue's detail peeks at.
pub const PEEK: u32 = 20;

/// What the network task reports.
#[derive(Debug, Clone)]
pub enum NetEvent {
    Connected {
        welcome: Box<Welcome>,
        /// Which server of the list answered.
        server: String,
    },
    Disconnected {
        attempt: u32,
        reason: String,
    },
    Stats(Box<Stats>),
    /// A sample of the stream's messages (the newest), how many arrived in all since the
    /// last one, and how many the broker skipped for this dashboard because it could not
    /// keep up.
    Messages {
        sample: Vec<Message>,
        total: u64,
        skipped: u64,
    },
    /// The stream now watches this pattern (its previous watch is gone).
    Watching(String),
    Peeked {
        queue: String,
        result: Result<Vec<Message>, String>,
    },
    Published(Result<String, String>),
    /// The outcome of a command, for the status line.
    Done(Result<String, String>),
    /// An answer to `cluster_status`, or why there is none.
    Cluster(Result<Box<ClusterStatus>, String>),
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
        msg_id: Option<String>,
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
    RedriveQueue(String),
    PeekQueue(String),
    /// Change a queue's settings; `None` keeps one.
    SetQueue {
        name: String,
        max_deliver: Option<u32>,
        ack_wait_ms: Option<u64>,
    },
    PurgeTopic(String),
    DeleteTopic {
        name: String,
        force: bool,
    },
    CloseClient(u64),
    /// Show these windows of the broker's listings from now on.
    Windows(Windows),
    /// Write these lines to a file.
    Save {
        path: String,
        lines: Vec<String>,
    },
    /// Ask for `cluster_status` every second from now on (true), or stop (false).
    Cluster(bool),
}

#[derive(Debug, Clone)]
pub enum Event {
    Key(KeyEvent),
    Mouse(MouseEvent),
    /// The time now, ms since the epoch.
    Tick(u64),
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

/// A line for the footer, until `until` (ms since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub text: String,
    pub error: bool,
    pub until: u64,
}

const STATUS_MS: u64 = 5_000;
const ERROR_MS: u64 = 10_000;

/// A client's message rates, from the change of its counters between two stats.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientRate {
    pub in_rate: f64,
    pub out_rate: f64,
    msgs_in: u64,
    msgs_out: u64,
    at: u64,
}

pub const SPARK_LEN: usize = 30;

#[derive(Debug)]
pub struct App {
    /// The server, or the list of servers, momtui connects to.
    pub server: String,
    pub conn: Conn,
    /// The summary and the windows of the listings last received.
    pub stats: Option<Stats>,
    /// Which part of each listing the tables show.
    pub windows: Windows,
    /// When the last stats arrived (ms since the epoch, by this machine's clock).
    pub stats_at: u64,
    /// The time of the last tick.
    pub now: u64,
    /// Per topic, messages in per second, oldest first (for the sparkline).
    pub history: HashMap<String, VecDeque<u64>>,
    pub client_rates: HashMap<u64, ClientRate>,
    pub cluster: ClusterView,
    pub pane: Pane,
    pub views: [View; 4],
    pub drill: Option<Drill>,
    pub stream: StreamState,
    pub mode: Mode,
    pub status: Option<Status>,
    /// The publish dialog's fields as last used (topic, headers, msg id).
    pub publish_memory: PublishForm,
    /// The publish on its way, reopened with its text if the broker refuses it.
    pending_publish: Option<PublishForm>,
    /// Text to put on the terminal's clipboard (taken by main, sent as OSC 52).
    pub clipboard: Option<String>,
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
            windows: Windows::default(),
            stats_at: 0,
            now: 0,
            history: HashMap::new(),
            client_rates: HashMap::new(),
            cluster: ClusterView::default(),
            pane: Pane::Topics,
            views: Default::default(),
            drill: None,
            stream: StreamState::new(stream_cap),
            mode: Mode::Normal,
            status: None,
            publish_memory: PublishForm::default(),
            pending_publish: None,
            clipboard: None,
            quit: false,
            color,
            areas: [TableArea::default(); 4],
        }
    }

    pub fn connected(&self) -> bool {
        matches!(self.conn, Conn::Connected { .. })
    }

    /// The figures on screen are old: the connection is down (or stats stopped coming).
    pub fn stale(&self) -> bool {
        self.stats.is_some()
            && (!self.connected() || self.now.saturating_sub(self.stats_at) > 5_000)
    }

    pub fn set_status(&mut self, s: impl Into<String>) {
        self.status = Some(Status {
            text: s.into(),
            error: false,
            until: self.now + STATUS_MS,
        });
    }

    pub fn set_error(&mut self, s: impl Into<String>) {
        self.status = Some(Status {
            text: format!("error: {}", s.into()),
            error: true,
            until: self.now + ERROR_MS,
        });
    }

    /// Apply one event; return what the network task should do.
    pub fn update(&mut self, ev: Event) -> Vec<Command> {
        let mut cmds = match ev {
            Event::Key(k) => self.key(k),
            Event::Mouse(m) => {
                self.mouse(m);
                Vec::new()
            }
            Event::Tick(now) => {
                self.now = now;
                if self.status.as_ref().is_some_and(|s| now >= s.until) {
                    self.status = None;
                }
                Vec::new()
            }
            Event::Net(n) => self.net(n),
        };
        cmds.extend(self.sync_cluster_polling());
        cmds
    }

    fn net(&mut self, n: NetEvent) -> Vec<Command> {
        match n {
            NetEvent::Connected { welcome, server } => {
                self.set_status(format!(
                    "connected to {server} (server {})",
                    welcome.server_id
                ));
                self.conn = Conn::Connected { welcome, server };
            }
            NetEvent::Disconnected { attempt, reason } => {
                self.conn = Conn::Reconnecting { attempt, reason };
            }
            NetEvent::Stats(s) => return self.stats(*s),
            NetEvent::Messages {
                sample,
                total,
                skipped,
            } => self.stream.add(sample, total, skipped),
            NetEvent::Watching(p) => {
                self.stream.restart(p);
                self.views[Pane::Stream.index()].key = None;
                self.views[Pane::Stream.index()].index = 0;
            }
            NetEvent::Peeked { queue, result } => {
                if let Some(Drill::Queue(q)) = &mut self.drill {
                    if q.name == queue {
                        match result {
                            Ok(msgs) => {
                                q.sel = q
                                    .sel_key
                                    .as_ref()
                                    .and_then(|k| msgs.iter().position(|m| msg_key(m) == *k))
                                    .unwrap_or(q.sel)
                                    .min(msgs.len().saturating_sub(1));
                                q.peek = Some(msgs);
                                q.error = None;
                            }
                            Err(e) => q.error = Some(e),
                        }
                    }
                }
            }
            NetEvent::Published(Ok(s)) => {
                self.pending_publish = None;
                self.set_status(s);
            }
            NetEvent::Published(Err(e)) => {
                // Refused: the dialog comes back with what was typed and the reason.
                let mut form = self.pending_publish.take().unwrap_or_default();
                form.error = Some(e.clone());
                if self.mode == Mode::Normal {
                    self.mode = Mode::Publish(form);
                }
                self.set_error(e);
            }
            NetEvent::Done(Ok(s)) => {
                self.set_status(s);
                if let Some(Drill::Queue(q)) = &self.drill {
                    return vec![Command::PeekQueue(q.name.clone())];
                }
            }
            NetEvent::Done(Err(s)) => self.set_error(s),
            NetEvent::Cluster(r) => self.cluster_reply(r.map(|st| *st)),
        }
        Vec::new()
    }

    fn stats(&mut self, s: Stats) -> Vec<Command> {
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
        for c in &s.clients {
            let r = self.client_rates.entry(c.client_id).or_default();
            if r.at > 0 && s.time > r.at {
                let dt = (s.time - r.at) as f64 / 1000.0;
                r.in_rate = c.msgs_in.saturating_sub(r.msgs_in) as f64 / dt;
                r.out_rate = c.msgs_out.saturating_sub(r.msgs_out) as f64 / dt;
            }
            (r.msgs_in, r.msgs_out, r.at) = (c.msgs_in, c.msgs_out, s.time);
        }
        let ids: std::collections::HashSet<u64> = s.clients.iter().map(|c| c.client_id).collect();
        self.client_rates.retain(|k, _| ids.contains(k));
        self.stats = Some(s);
        self.stats_at = self.now;
        // A queue's detail keeps its peek fresh with the figures.
        match &self.drill {
            Some(Drill::Queue(q)) => vec![Command::PeekQueue(q.name.clone())],
            _ => Vec::new(),
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
