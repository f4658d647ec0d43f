//! The live stream: what the network task samples for display, what the dashboard keeps,
//! pausing (by hand, or by itself while the user moves), and marks for saving.
//!
//! At high rates only a sample is shown, but the sample is always the newest messages of
//! the interval: the newest message that arrived is on screen.

use std::collections::{HashSet, VecDeque};

use mom_proto::Message;

use super::table::msg_key;
use super::{App, Pane};

/// Collects the messages of one display interval, keeping at most `cap` of them, the
/// newest, and counting all. Used by the network task; pure so it can be tested.
#[derive(Debug)]
pub struct Sampler {
    cap: usize,
    sample: VecDeque<Message>,
    pub total: u64,
    pub skipped: u64,
}

impl Sampler {
    pub fn new(cap: usize) -> Sampler {
        Sampler {
            cap: cap.max(1),
            sample: VecDeque::new(),
            total: 0,
            skipped: 0,
        }
    }

    pub fn add(&mut self, msgs: Vec<Message>) {
        self.total += msgs.len() as u64;
        let skip = msgs.len().saturating_sub(self.cap);
        for m in msgs.into_iter().skip(skip) {
            if self.sample.len() == self.cap {
                self.sample.pop_front();
            }
            self.sample.push_back(m);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0 && self.skipped == 0
    }

    /// The interval's sample, oldest first, and its counts; the sampler starts over.
    pub fn take(&mut self) -> (Vec<Message>, u64, u64) {
        let out = (
            std::mem::take(&mut self.sample).into(),
            self.total,
            self.skipped,
        );
        self.total = 0;
        self.skipped = 0;
        out
    }

    pub fn clear(&mut self) {
        self.take();
    }
}

#[derive(Debug, Default)]
pub struct StreamState {
    /// Shown messages, oldest first.
    pub buf: VecDeque<Message>,
    pub cap: usize,
    pub pattern: String,
    /// Messages the stream received in all, those handed to the display, and those the
    /// broker skipped because this dashboard could not keep up.
    pub total: u64,
    pub shown: u64,
    pub skipped: u64,
    pub paused: bool,
    /// Paused by moving the cursor (resumes with `g`/Home or space).
    pub auto_paused: bool,
    /// Arrived while paused, shown on resume (bounded like the list).
    pub held: VecDeque<Message>,
    /// Keys (`topic#seq`) of messages marked for saving.
    pub marked: HashSet<String>,
}

impl StreamState {
    pub fn new(cap: usize) -> StreamState {
        StreamState {
            cap: cap.max(1),
            pattern: ">".into(),
            ..StreamState::default()
        }
    }

    pub fn add(&mut self, sample: Vec<Message>, total: u64, skipped: u64) {
        self.total += total;
        self.skipped += skipped;
        self.shown += sample.len() as u64;
        let to = if self.paused {
            &mut self.held
        } else {
            &mut self.buf
        };
        to.extend(sample);
        while to.len() > self.cap {
            to.pop_front();
        }
        let live: HashSet<String> = self.buf.iter().chain(&self.held).map(msg_key).collect();
        self.marked.retain(|k| live.contains(k));
    }

    /// A new watch: start over.
    pub fn restart(&mut self, pattern: String) {
        let cap = self.cap;
        *self = StreamState::new(cap);
        self.pattern = pattern;
    }

    pub fn resume(&mut self) {
        self.paused = false;
        self.auto_paused = false;
        let held = std::mem::take(&mut self.held);
        self.buf.extend(held);
        while self.buf.len() > self.cap {
            self.buf.pop_front();
        }
    }

    /// The markers of the stream's title: paused, new messages held.
    pub fn note(&self) -> String {
        match (self.paused, self.held.len()) {
            (false, _) => String::new(),
            (true, 0) => "[paused] ".into(),
            (true, n) => format!("[paused, {n} new] "),
        }
    }
}

impl App {
    /// The stream's rows as shown: newest first, after the Stream pane's filter.
    pub fn stream_rows(&self) -> Vec<&Message> {
        let f = &self.view(Pane::Stream).filter;
        self.stream
            .buf
            .iter()
            .rev()
            .filter(|m| {
                f.is_empty()
                    || f.matches(&m.topic)
                    || f.matches(&m.sender.name)
                    || f.matches(&String::from_utf8_lossy(&m.payload))
                    || m.headers.iter().any(|(k, v)| f.matches(k) || f.matches(v))
            })
            .collect()
    }

    pub fn selected_message(&self) -> Option<&Message> {
        self.stream_rows().get(self.selected(Pane::Stream)).copied()
    }

    pub fn toggle_pause(&mut self) {
        if self.stream.paused {
            // Resuming follows the newest again: a stream that counts on under a frozen
            // view would look resumed and not be.
            self.stream.resume();
            self.follow_stream();
            self.set_status("stream resumed");
        } else {
            self.stream.paused = true;
            self.set_status("stream paused (space resumes)");
        }
    }

    /// Back to the newest message, following new ones again.
    pub fn follow_stream(&mut self) {
        if self.stream.paused && self.stream.auto_paused {
            self.stream.resume();
        }
        let v = &mut self.views[Pane::Stream.index()];
        v.key = None;
        v.index = 0;
    }

    /// Mark or unmark the selected message for saving.
    pub fn toggle_mark(&mut self) {
        if let Some(k) = self.selected_message().map(msg_key) {
            if !self.stream.marked.remove(&k) {
                self.stream.marked.insert(k);
            }
        }
    }

    /// What `:save` writes: the marked messages if any, else every row shown, oldest
    /// first, one JSON object per line as `momctl sub --json` prints them.
    pub fn save_lines(&self) -> Vec<String> {
        let rows = self.stream_rows();
        let marked = !self.stream.marked.is_empty();
        rows.iter()
            .rev()
            .filter(|m| !marked || self.stream.marked.contains(&msg_key(m)))
            .map(|m| json_line(m))
            .collect()
    }
}

/// A message as one JSON object (the fields of `momctl sub --json`).
pub fn json_line(m: &Message) -> String {
    momctl::json::message_line(m)
}
