//! The `:` command line, k9s style: jump to a pane or a queue, watch a pattern, publish,
//! replay, save; and the actions several keys share (watch, drill down, copy, save).

use mom_proto::{Message, StartAt};

use super::input::{Input, Mode, PayloadView, PromptKind};
use super::table::{columns, Filter};
use super::{App, ClientDrill, Command, Drill, Pane, QueueDrill};

/// The commands, for the help overlay and for an unknown command's error.
pub const COMMANDS: &[(&str, &str)] = &[
    (
        ":topics :queues :clients :stream",
        "switch pane (also :t :qs :c :s)",
    ),
    (":queue NAME", "open a queue's detail"),
    (":client ID", "open a client's detail"),
    (":cluster", "the cluster's nodes and groups (also n)"),
    (":watch PATTERN", "stream a pattern (e.g. orders.>)"),
    (
        ":replay TOPIC [SEQ]",
        "replay a topic from the start or a seq",
    ),
    (":publish [TOPIC]", "open the publish dialog"),
    (":filter TEXT, :regex RE", "filter the pane (empty clears)"),
    (
        ":match PATTERN",
        "topics (queues) matching it, asked of the broker (empty: all)",
    ),
    (":sort COLUMN [asc|desc]", "sort the pane by a column"),
    (":save [FILE]", "save the stream (or the marked messages)"),
    (
        ":set ack_wait 10s, :set max_deliver 3",
        "change the settings of the queue shown",
    ),
    (":help, :q", "this help; quit"),
];

impl App {
    pub(super) fn run_command_line(&mut self, line: &str) -> Vec<Command> {
        let line = line.trim().trim_start_matches(':');
        let (cmd, arg) = match line.split_once(char::is_whitespace) {
            Some((c, a)) => (c, a.trim()),
            None => (line, ""),
        };
        let pane = |p: Pane, app: &mut App| {
            app.drill = None;
            app.pane = p;
        };
        match (cmd, arg) {
            ("", _) => {}
            ("q" | "quit" | "q!" | "exit", "") => self.quit = true,
            ("help" | "h", _) => self.mode = Mode::Help { scroll: 0 },
            ("topics" | "topic" | "t" | "1", "") => pane(Pane::Topics, self),
            ("queues" | "qs" | "subscriptions" | "subs" | "2", "") => {
                pane(Pane::Subscriptions, self)
            }
            ("clients" | "c" | "3", "") => pane(Pane::Clients, self),
            ("stream" | "s" | "4", "") => pane(Pane::Stream, self),
            ("cluster" | "nodes", "") => self.drill = Some(Drill::Cluster),
            ("queue" | "q" | "queues", name) => return self.open_queue(name.to_string()),
            ("client" | "clients" | "c", id) => match id.parse::<u64>() {
                Ok(id) => {
                    self.pane = Pane::Clients;
                    self.open_client(id);
                }
                Err(_) => self.set_error(format!("{id:?} is not a client id")),
            },
            ("watch" | "w" | "sub", p) if !p.is_empty() => return self.watch(p, StartAt::New, 0),
            ("replay" | "r", args) if !args.is_empty() => {
                let mut it = args.split_whitespace();
                let topic = it.next().unwrap_or_default().to_string();
                return match it.next().map(str::parse::<u64>) {
                    None => self.watch(&topic, StartAt::All, 0),
                    Some(Ok(seq)) => self.watch(&topic, StartAt::Seq, seq),
                    Some(Err(_)) => {
                        self.set_error("usage: :replay TOPIC [SEQ]");
                        Vec::new()
                    }
                };
            }
            ("publish" | "pub" | "p", t) => {
                self.open_publish((!t.is_empty()).then(|| t.to_string()))
            }
            ("filter" | "f", text) => self.set_filter(self.pane, Filter::new(text, false)),
            ("match", p) => return self.set_match(p),
            ("regex" | "re", text) => {
                let f = Filter::new(text, true);
                if let Some(e) = &f.error {
                    self.set_error(format!("regex: {e}"));
                }
                self.set_filter(self.pane, f);
            }
            ("sort", args) => {
                let mut it = args.split_whitespace();
                let col = it.next().unwrap_or_default().to_uppercase();
                match columns(self.pane).iter().position(|c| *c == col) {
                    Some(i) if self.pane != Pane::Stream => {
                        let v = &mut self.views[self.pane.index()];
                        v.sort_by(self.pane, i);
                        match it.next() {
                            Some("asc") => v.sort.desc = false,
                            Some("desc") => v.sort.desc = true,
                            _ => {}
                        }
                    }
                    _ => {
                        self.set_error(format!("sort by one of: {}", columns(self.pane).join(" ")))
                    }
                }
            }
            ("set", args) => return self.set_queue(args),
            ("save" | "w!", "") => self.open_save(),
            ("save" | "w!", file) => return self.save(file),
            _ => {
                let known: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
                self.set_error(format!("unknown command :{line}; try {}", known.join(", ")));
            }
        }
        Vec::new()
    }

    /// `:set ack_wait 10s` or `:set max_deliver 3` in a queue's detail.
    fn set_queue(&mut self, args: &str) -> Vec<Command> {
        let Some(Drill::Queue(q)) = &self.drill else {
            self.set_error(":set changes a queue's settings: open the queue first (:queue NAME)");
            return Vec::new();
        };
        let name = q.name.clone();
        let mut it = args.split_whitespace();
        let (key, value) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
        let cmd = match key.replace('-', "_").as_str() {
            "ack_wait" => parse_ms(value).map(|ms| Command::SetQueue {
                name,
                max_deliver: None,
                ack_wait_ms: Some(ms),
            }),
            "max_deliver" => value.parse::<u32>().ok().map(|n| Command::SetQueue {
                name,
                max_deliver: Some(n),
                ack_wait_ms: None,
            }),
            _ => None,
        };
        match cmd {
            Some(c) => vec![c],
            None => {
                self.set_error(
                    "usage: :set ack_wait 30s (or 500ms, 2m) | :set max_deliver N (0: never)",
                );
                Vec::new()
            }
        }
    }

    /// Stream `pattern` (replacing the stream's watch) and show the Stream pane.
    pub fn watch(&mut self, pattern: &str, from: StartAt, at: u64) -> Vec<Command> {
        self.drill = None;
        self.pane = Pane::Stream;
        vec![Command::Watch {
            pattern: pattern.to_string(),
            from,
            at,
        }]
    }

    pub fn open_queue(&mut self, name: String) -> Vec<Command> {
        if name.is_empty() {
            self.set_error("usage: :queue NAME");
            return Vec::new();
        }
        self.pane = Pane::Subscriptions;
        self.drill = Some(Drill::Queue(QueueDrill {
            name: name.clone(),
            ..QueueDrill::default()
        }));
        vec![Command::PeekQueue(name)]
    }

    pub fn open_client(&mut self, id: u64) {
        self.drill = Some(Drill::Client(ClientDrill { id, sel: 0 }));
    }

    pub fn open_detail(&mut self, m: Message) {
        self.mode = Mode::Detail {
            msg: Box::new(m),
            scroll: 0,
            view: PayloadView::Auto,
        };
    }

    /// Copy a message's payload to the terminal's clipboard (OSC 52; main writes it).
    pub fn copy(&mut self, m: &Message) {
        self.clipboard = Some(String::from_utf8_lossy(&m.payload).into_owned());
        self.set_status(format!(
            "copied {}#{} ({} bytes) to the clipboard",
            m.topic,
            m.seq,
            m.payload.len()
        ));
    }

    pub(super) fn open_save(&mut self) {
        let name = format!(
            "momtui-{}-{}.jsonl",
            self.stream.pattern.replace(['>', '*', '/'], "_"),
            self.now / 1000
        );
        self.mode = Mode::Prompt {
            kind: PromptKind::Save,
            input: Input::with(&name),
        };
    }

    pub(super) fn save(&mut self, path: &str) -> Vec<Command> {
        let lines = self.save_lines();
        if lines.is_empty() {
            self.set_error("nothing to save: the stream shows no message");
            return Vec::new();
        }
        vec![Command::Save {
            path: path.to_string(),
            lines,
        }]
    }
}

/// `500ms`, `30s`, `2m`, or plain seconds.
fn parse_ms(v: &str) -> Option<u64> {
    let (num, mult) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000)
    } else {
        (v, 1000)
    };
    num.parse::<u64>()
        .ok()?
        .checked_mul(mult)
        .filter(|ms| *ms > 0)
}
