//! What each table shows: its columns, its filter (per pane, case-insensitive, optionally a
//! regex), its sort (per pane, any column) and a selection tied to a row's key, so a row
//! keeps the cursor when others arrive, leave or move.

use std::cmp::Ordering;

use mom_proto::{ClientInfo, QueueInfo, TopicInfo};
use regex::{Regex, RegexBuilder};

use super::{App, Pane};

/// Column heads of each table, in order. Sorting names a column by its index here.
pub const TOPIC_COLUMNS: &[&str] = &[
    "TOPIC", "MSGS", "BYTES", "SEQ", "IN/S", "RATE", "WATCH", "QUEUES",
];
pub const QUEUE_COLUMNS: &[&str] = &[
    "QUEUE", "BINDINGS", "CONS", "READY", "UNACK", "REDELIV", "DLQ", "LAG", "OWNER",
];
pub const CLIENT_COLUMNS: &[&str] = &[
    "ID", "NAME", "USER", "ADDRESS", "SINCE", "IN", "OUT", "IN/S", "OUT/S", "WATCHES",
];
pub const STREAM_COLUMNS: &[&str] = &["TIME", "TOPIC", "SEQ", "SENDER", "PAYLOAD"];

pub fn columns(pane: Pane) -> &'static [&'static str] {
    match pane {
        Pane::Topics => TOPIC_COLUMNS,
        Pane::Subscriptions => QUEUE_COLUMNS,
        Pane::Clients => CLIENT_COLUMNS,
        Pane::Stream => STREAM_COLUMNS,
    }
}

/// Columns holding text sort ascending first; numbers sort biggest first, as the hot topic
/// is what one looks for.
fn text_column(pane: Pane, col: usize) -> bool {
    matches!(
        (pane, col),
        (Pane::Topics, 0) | (Pane::Subscriptions, 0 | 1 | 8) | (Pane::Clients, 1..=3)
    )
}

/// A pane's filter: a case-insensitive substring, or a case-insensitive regex.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub text: String,
    pub regex: bool,
    compiled: Option<Regex>,
    /// Why the regex does not compile (it then matches everything).
    pub error: Option<String>,
    lower: String,
}

impl PartialEq for Filter {
    fn eq(&self, o: &Filter) -> bool {
        self.text == o.text && self.regex == o.regex
    }
}

impl Filter {
    pub fn new(text: &str, regex: bool) -> Filter {
        let mut f = Filter {
            text: text.to_string(),
            regex,
            lower: text.to_lowercase(),
            ..Filter::default()
        };
        if regex && !text.is_empty() {
            match RegexBuilder::new(text).case_insensitive(true).build() {
                Ok(r) => f.compiled = Some(r),
                Err(e) => {
                    f.error = Some(
                        e.to_string()
                            .lines()
                            .last()
                            .unwrap_or("invalid")
                            .trim()
                            .to_string(),
                    )
                }
            }
        }
        f
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    pub fn matches(&self, s: &str) -> bool {
        if self.text.is_empty() {
            return true;
        }
        match (&self.compiled, self.regex) {
            (Some(r), _) => r.is_match(s),
            (None, true) => true,
            (None, false) => s.to_lowercase().contains(&self.lower),
        }
    }

    /// The marker shown in a pane's title.
    pub fn note(&self) -> String {
        match (self.text.is_empty(), self.regex) {
            (true, _) => String::new(),
            (false, false) => format!("[filter: {}] ", self.text),
            (false, true) => format!("[regex: {}] ", self.text),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sort {
    pub col: usize,
    pub desc: bool,
}

/// A pane's own filter, sort and selection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    pub filter: Filter,
    pub sort: Sort,
    /// The key of the selected row (topic or queue name, client id, `topic#seq`); `None`
    /// follows the first row.
    pub key: Option<String>,
    /// Where the selection was, for when its row is gone.
    pub index: usize,
}

impl View {
    /// Sort by `col`; the same column again flips the direction.
    pub fn sort_by(&mut self, pane: Pane, col: usize) {
        if self.sort.col == col {
            self.sort.desc = !self.sort.desc;
        } else {
            self.sort = Sort {
                col,
                desc: !text_column(pane, col),
            };
        }
    }
}

fn cmp_f(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

fn ordered<T>(rows: &mut [T], sort: Sort, cmp: impl Fn(&T, &T) -> Ordering) {
    rows.sort_by(|a, b| {
        let o = cmp(a, b);
        if sort.desc {
            o.reverse()
        } else {
            o
        }
    });
}

impl App {
    pub fn view(&self, pane: Pane) -> &View {
        &self.views[pane.index()]
    }

    pub fn topics(&self) -> Vec<&TopicInfo> {
        let Some(s) = &self.stats else {
            return Vec::new();
        };
        let v = self.view(Pane::Topics);
        let mut rows: Vec<&TopicInfo> = s
            .topics
            .iter()
            .filter(|t| v.filter.matches(&t.name))
            .collect();
        ordered(&mut rows, v.sort, |a, b| {
            let by = match v.sort.col {
                1 => a.messages.cmp(&b.messages),
                2 => a.bytes.cmp(&b.bytes),
                3 => a.last_seq.cmp(&b.last_seq),
                4 | 5 => cmp_f(a.in_rate, b.in_rate),
                6 => self.watchers(a).cmp(&self.watchers(b)),
                7 => a.queues.cmp(&b.queues),
                _ => Ordering::Equal,
            };
            by.then_with(|| a.name.cmp(&b.name))
        });
        rows
    }

    pub fn queues(&self) -> Vec<&QueueInfo> {
        let Some(s) = &self.stats else {
            return Vec::new();
        };
        let v = self.view(Pane::Subscriptions);
        let mut rows: Vec<&QueueInfo> = s
            .queues
            .iter()
            .filter(|q| {
                v.filter.matches(&q.name)
                    || q.bindings.iter().any(|b| v.filter.matches(b))
                    || v.filter.matches(&q.owner)
            })
            .collect();
        ordered(&mut rows, v.sort, |a, b| {
            let by = match v.sort.col {
                1 => a.bindings.cmp(&b.bindings),
                2 => a.consumers.cmp(&b.consumers),
                3 => a.ready.cmp(&b.ready),
                4 => a.unacked.cmp(&b.unacked),
                5 => a.redelivered.cmp(&b.redelivered),
                6 => a.dead_lettered.cmp(&b.dead_lettered),
                7 => a.lag.cmp(&b.lag),
                8 => a.owner.cmp(&b.owner),
                _ => Ordering::Equal,
            };
            by.then_with(|| a.name.cmp(&b.name))
        });
        rows
    }

    pub fn clients(&self) -> Vec<&ClientInfo> {
        let Some(s) = &self.stats else {
            return Vec::new();
        };
        let v = self.view(Pane::Clients);
        let mut rows: Vec<&ClientInfo> = s
            .clients
            .iter()
            .filter(|c| {
                v.filter.matches(&c.name)
                    || v.filter.matches(&c.addr)
                    || v.filter.matches(&c.user)
                    || v.filter.matches(&c.client_id.to_string())
            })
            .collect();
        let rate = |c: &ClientInfo| self.client_rates.get(&c.client_id).copied();
        ordered(&mut rows, v.sort, |a, b| {
            let (ra, rb) = (rate(a).unwrap_or_default(), rate(b).unwrap_or_default());
            let by = match v.sort.col {
                1 => a.name.cmp(&b.name),
                2 => a.user.cmp(&b.user),
                3 => a.addr.cmp(&b.addr),
                4 => a.since.cmp(&b.since),
                5 => a.msgs_in.cmp(&b.msgs_in),
                6 => a.msgs_out.cmp(&b.msgs_out),
                7 => cmp_f(ra.in_rate, rb.in_rate),
                8 => cmp_f(ra.out_rate, rb.out_rate),
                9 => a.watches.cmp(&b.watches),
                _ => Ordering::Equal,
            };
            by.then_with(|| a.client_id.cmp(&b.client_id))
        });
        rows
    }

    /// Watchers of a topic: the broker counts only those that are not passive, so this
    /// dashboard's own watch is never among them.
    pub fn watchers(&self, t: &TopicInfo) -> u64 {
        t.watchers
    }

    /// The key of each row of a pane, in the order shown.
    pub fn row_keys(&self, pane: Pane) -> Vec<String> {
        match pane {
            Pane::Topics => self.topics().iter().map(|t| t.name.clone()).collect(),
            Pane::Subscriptions => self.queues().iter().map(|q| q.name.clone()).collect(),
            Pane::Clients => self
                .clients()
                .iter()
                .map(|c| c.client_id.to_string())
                .collect(),
            Pane::Stream => self.stream_rows().iter().map(|m| msg_key(m)).collect(),
        }
    }

    /// The row index of a pane's selection: its key's row, or where it was if that row is
    /// gone.
    pub fn selected(&self, pane: Pane) -> usize {
        let v = self.view(pane);
        let keys = self.row_keys(pane);
        if let Some(k) = &v.key {
            if let Some(i) = keys.iter().position(|x| x == k) {
                return i;
            }
        }
        v.index.min(keys.len().saturating_sub(1))
    }

    /// Select row `i` (clamped) of a pane, by its key.
    pub fn select(&mut self, pane: Pane, i: usize) {
        let keys = self.row_keys(pane);
        let i = i.min(keys.len().saturating_sub(1));
        let v = &mut self.views[pane.index()];
        v.index = i;
        v.key = keys.get(i).cloned();
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

    pub fn selected_client(&self) -> Option<&ClientInfo> {
        self.clients().get(self.selected(Pane::Clients)).copied()
    }
}

/// A message's key in the stream: topic and seq name it.
pub fn msg_key(m: &mom_proto::Message) -> String {
    format!("{}#{}", m.topic, m.seq)
}
