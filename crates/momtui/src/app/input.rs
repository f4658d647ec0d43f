//! Everything typed into: text fields, prompts (filter, watch pattern, replay seq, the `:`
//! command line, a file name), the publish and create-queue dialogs, confirmations and the
//! scrollable overlays — and how each key changes them.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mom_proto::{Message, StartAt};

use super::table::Filter;
use super::{App, Command, Pane};

/// A text field being edited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub text: String,
    /// The text was put there for the user (the current filter, the last topic): like
    /// selected text, the first character typed replaces it; any other edit keeps it.
    pub offered: bool,
}

impl Input {
    pub fn with(text: &str) -> Self {
        Input {
            text: text.to_string(),
            offered: !text.is_empty(),
        }
    }

    /// Text the user goes on typing after (a command's start), not one offered to replace.
    pub fn continuing(text: &str) -> Self {
        Input {
            text: text.to_string(),
            offered: false,
        }
    }

    /// Apply an editing key; true if the key was used.
    pub fn edit(&mut self, key: &KeyEvent) -> bool {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if std::mem::take(&mut self.offered) {
            if let KeyCode::Char(_) = key.code {
                if !ctrl {
                    self.text.clear();
                }
            }
        }
        match key.code {
            KeyCode::Char('u') if ctrl => self.text.clear(),
            KeyCode::Char('w') if ctrl => {
                let t = self.text.trim_end();
                let cut = t.rfind(' ').map_or(0, |i| i + 1);
                self.text.truncate(cut);
            }
            KeyCode::Char(c) if !ctrl => self.text.push(c),
            KeyCode::Backspace => {
                self.text.pop();
            }
            _ => return false,
        }
        true
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishForm {
    pub topic: Input,
    pub headers: Input,
    pub msg_id: Input,
    pub payload: Input,
    /// 0 topic, 1 headers, 2 msg id, 3 payload.
    pub field: usize,
    /// Why the last try was refused (the typed text stays).
    pub error: Option<String>,
}

pub const PUBLISH_FIELDS: usize = 4;

/// What a confirmation is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    PurgeQueue(String),
    DeleteQueue { name: String, force: bool },
    RedriveQueue(String),
    PurgeTopic(String),
    DeleteTopic { name: String, force: bool },
    CloseClient { id: u64, name: String },
}

impl Confirm {
    pub fn question(&self) -> String {
        match self {
            Confirm::PurgeQueue(q) => format!("Purge every waiting message of queue {q}?"),
            Confirm::DeleteQueue { name, force: false } => format!("Delete queue {name}?"),
            Confirm::DeleteQueue { name, force: true } => {
                format!("Delete queue {name} even if messages wait in it?")
            }
            Confirm::RedriveQueue(q) => {
                format!("Move the dead letters of $dlq.{q} back into queue {q}?")
            }
            Confirm::PurgeTopic(t) => format!("Remove every stored message of topic {t}?"),
            Confirm::DeleteTopic { name, force: false } => format!("Delete topic {name}?"),
            Confirm::DeleteTopic { name, force: true } => {
                format!("Delete topic {name} even if queues still hold its messages?")
            }
            Confirm::CloseClient { id, name } => {
                format!("Close the connection of client {id} ({name})?")
            }
        }
    }

    fn command(self) -> Command {
        match self {
            Confirm::PurgeQueue(q) => Command::PurgeQueue(q),
            Confirm::DeleteQueue { name, force } => Command::DeleteQueue { name, force },
            Confirm::RedriveQueue(q) => Command::RedriveQueue(q),
            Confirm::PurgeTopic(t) => Command::PurgeTopic(t),
            Confirm::DeleteTopic { name, force } => Command::DeleteTopic { name, force },
            Confirm::CloseClient { id, .. } => Command::CloseClient(id),
        }
    }
}

/// What a one-line prompt in the footer is for.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptKind {
    /// The filter of a pane, applied as it is typed.
    Filter {
        pane: Pane,
        regex: bool,
    },
    Watch,
    ReplayFrom(String),
    Command,
    Save,
}

/// How the message detail shows the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadView {
    /// Pretty JSON when it parses, text when it is UTF-8, else hex.
    #[default]
    Auto,
    Text,
    Hex,
}

impl PayloadView {
    pub fn next(self) -> PayloadView {
        match self {
            PayloadView::Auto => PayloadView::Text,
            PayloadView::Text => PayloadView::Hex,
            PayloadView::Hex => PayloadView::Auto,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PayloadView::Auto => "auto",
            PayloadView::Text => "text",
            PayloadView::Hex => "hex",
        }
    }
}

/// What the screen is doing besides showing the panes.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Prompt {
        kind: PromptKind,
        input: Input,
    },
    Publish(PublishForm),
    CreateQueue {
        name: Input,
        binding: Input,
        field: usize,
    },
    Confirm(Confirm),
    Detail {
        msg: Box<Message>,
        scroll: u16,
        view: PayloadView,
    },
    Help {
        scroll: u16,
    },
}

/// Scroll of an overlay: the drawing clamps it to the text.
fn scroll(cur: u16, k: &KeyEvent) -> Option<u16> {
    Some(match k.code {
        KeyCode::Char('j') | KeyCode::Down => cur.saturating_add(1),
        KeyCode::Char('k') | KeyCode::Up => cur.saturating_sub(1),
        KeyCode::PageDown | KeyCode::Char(' ') => cur.saturating_add(10),
        KeyCode::PageUp => cur.saturating_sub(10),
        KeyCode::Char('g') | KeyCode::Home => 0,
        KeyCode::Char('G') | KeyCode::End => u16::MAX,
        _ => return None,
    })
}

fn closes(k: &KeyEvent) -> bool {
    matches!(
        k.code,
        KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char('?')
    )
}

impl App {
    /// A key while a dialog, prompt or overlay is open. The mode was taken out of `self`;
    /// put it back to keep it open.
    pub(super) fn key_mode(&mut self, mode: Mode, k: KeyEvent) -> Vec<Command> {
        match mode {
            Mode::Normal => self.key_normal(k),
            Mode::Help { scroll: s } => {
                if let Some(s) = scroll(s, &k) {
                    self.mode = Mode::Help { scroll: s };
                } else if !closes(&k) {
                    self.mode = Mode::Help { scroll: s };
                }
                Vec::new()
            }
            Mode::Detail {
                msg,
                scroll: s,
                view,
            } => {
                let mut keep = true;
                let mut s2 = s;
                let mut view = view;
                if let Some(n) = scroll(s, &k) {
                    s2 = n;
                } else if k.code == KeyCode::Char('v') {
                    view = view.next();
                    s2 = 0;
                } else if k.code == KeyCode::Char('y') {
                    self.copy(&msg);
                } else if closes(&k) {
                    keep = false;
                }
                if keep {
                    self.mode = Mode::Detail {
                        msg,
                        scroll: s2,
                        view,
                    };
                }
                Vec::new()
            }
            Mode::Prompt { kind, input } => self.key_prompt(kind, input, k),
            Mode::Publish(form) => self.key_publish(form, k),
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
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    if matches!(c, Confirm::DeleteQueue { .. } | Confirm::CloseClient { .. }) {
                        self.drill = None;
                    }
                    vec![c.command()]
                }
                _ => {
                    self.set_status("cancelled");
                    Vec::new()
                }
            },
        }
    }

    fn key_prompt(&mut self, kind: PromptKind, mut input: Input, k: KeyEvent) -> Vec<Command> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        match (kind, k.code) {
            (PromptKind::Filter { pane, .. }, KeyCode::Esc) => {
                self.set_filter(pane, Filter::default());
            }
            (PromptKind::Filter { .. }, KeyCode::Enter) => {}
            (PromptKind::Filter { pane, regex }, KeyCode::Char('r')) if ctrl => {
                self.set_filter(pane, Filter::new(&input.text, !regex));
                self.mode = Mode::Prompt {
                    kind: PromptKind::Filter {
                        pane,
                        regex: !regex,
                    },
                    input,
                };
            }
            (PromptKind::Filter { pane, regex }, _) => {
                input.edit(&k);
                self.set_filter(pane, Filter::new(&input.text, regex));
                self.mode = Mode::Prompt {
                    kind: PromptKind::Filter { pane, regex },
                    input,
                };
            }
            (_, KeyCode::Esc) => {}
            (PromptKind::Watch, KeyCode::Enter) if !input.text.trim().is_empty() => {
                return self.watch(input.text.trim(), StartAt::New, 0);
            }
            (PromptKind::ReplayFrom(topic), KeyCode::Enter) => {
                match input.text.trim().parse::<u64>() {
                    Ok(seq) => return self.watch(&topic, StartAt::Seq, seq),
                    Err(_) => {
                        self.set_error(format!("{:?} is not a seq number", input.text));
                        self.mode = Mode::Prompt {
                            kind: PromptKind::ReplayFrom(topic),
                            input,
                        };
                    }
                }
            }
            (PromptKind::Command, KeyCode::Enter) => return self.run_command_line(&input.text),
            (PromptKind::Save, KeyCode::Enter) if !input.text.trim().is_empty() => {
                return self.save(input.text.trim());
            }
            (kind, _) => {
                input.edit(&k);
                // Backspace on an empty command line leaves it, as in vim.
                if !(kind == PromptKind::Command
                    && input.text.is_empty()
                    && k.code == KeyCode::Backspace)
                {
                    self.mode = Mode::Prompt { kind, input };
                }
            }
        }
        Vec::new()
    }

    fn key_publish(&mut self, mut form: PublishForm, k: KeyEvent) -> Vec<Command> {
        match k.code {
            KeyCode::Esc => {
                // Remember what was typed for next time, except the payload.
                self.publish_memory = PublishForm {
                    payload: Input::default(),
                    error: None,
                    ..form
                };
            }
            KeyCode::Tab | KeyCode::Down => {
                form.field = (form.field + 1) % PUBLISH_FIELDS;
                self.mode = Mode::Publish(form);
            }
            KeyCode::BackTab | KeyCode::Up => {
                form.field = (form.field + PUBLISH_FIELDS - 1) % PUBLISH_FIELDS;
                self.mode = Mode::Publish(form);
            }
            KeyCode::Enter => match super::parse_headers(&form.headers.text) {
                Ok(_) if form.topic.text.trim().is_empty() => {
                    form.error = Some("the topic is empty".into());
                    form.field = 0;
                    self.mode = Mode::Publish(form);
                }
                Ok(headers) => {
                    form.error = None;
                    let id = form.msg_id.text.trim();
                    let cmd = Command::Publish {
                        topic: form.topic.text.trim().to_string(),
                        headers,
                        payload: form.payload.text.clone(),
                        msg_id: (!id.is_empty()).then(|| id.to_string()),
                    };
                    self.pending_publish = Some(form.clone());
                    self.publish_memory = PublishForm {
                        payload: Input::default(),
                        ..form
                    };
                    return vec![cmd];
                }
                Err(e) => {
                    form.error = Some(e);
                    form.field = 1;
                    self.mode = Mode::Publish(form);
                }
            },
            _ => {
                let f = match form.field {
                    0 => &mut form.topic,
                    1 => &mut form.headers,
                    2 => &mut form.msg_id,
                    _ => &mut form.payload,
                };
                f.edit(&k);
                self.mode = Mode::Publish(form);
            }
        }
        Vec::new()
    }

    /// Open the publish dialog: the remembered fields, or the selected topic.
    pub fn open_publish(&mut self, topic: Option<String>) {
        let mut form = self.publish_memory.clone();
        if let Some(t) = topic.or_else(|| {
            form.topic
                .text
                .is_empty()
                .then(|| self.selected_topic())
                .flatten()
        }) {
            form.topic = Input::with(&t);
        }
        form.field = if form.topic.text.is_empty() { 0 } else { 3 };
        form.error = None;
        self.mode = Mode::Publish(form);
    }

    pub fn set_filter(&mut self, pane: Pane, f: Filter) {
        self.views[pane.index()].filter = f;
    }
}
