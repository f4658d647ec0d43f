//! The `msg_id` dedupe window: a repeat within the window is acknowledged with the original
//! seq and not stored again (DESIGN.md, Message).

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Default, Clone)]
pub struct Dedupe {
    /// topic id -> msg id -> (seq, time first seen)
    seen: HashMap<u32, HashMap<String, (u64, u64)>>,
    /// Insertion order, for expiry: (time, topic, msg id).
    order: VecDeque<(u64, u32, String)>,
    len: usize,
}

impl Dedupe {
    /// The original seq of `msg_id` on `topic`, if it is still in the window.
    pub fn check(&self, topic: u32, msg_id: &str) -> Option<u64> {
        self.seen.get(&topic)?.get(msg_id).map(|(seq, _)| *seq)
    }

    pub fn insert(&mut self, topic: u32, msg_id: String, seq: u64, now: u64) {
        self.order.push_back((now, topic, msg_id.clone()));
        if self
            .seen
            .entry(topic)
            .or_default()
            .insert(msg_id, (seq, now))
            .is_none()
        {
            self.len += 1;
        }
    }

    /// Drop entries older than the window; return them.
    pub fn expire(&mut self, now: u64, window_ms: u64) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        while let Some((t, _, _)) = self.order.front() {
            if now.saturating_sub(*t) < window_ms {
                break;
            }
            let Some((t, topic, id)) = self.order.pop_front() else {
                break;
            };
            let Some(ids) = self.seen.get_mut(&topic) else {
                continue;
            };
            // Only remove if this is still the entry inserted at that time.
            if ids.get(&id).is_some_and(|(_, at)| *at == t) {
                ids.remove(&id);
                self.len -= 1;
                if ids.is_empty() {
                    self.seen.remove(&topic);
                }
                out.push((topic, id));
            }
        }
        out
    }

    pub fn remove(&mut self, topic: u32, msg_id: &str) {
        if let Some(ids) = self.seen.get_mut(&topic) {
            if ids.remove(msg_id).is_some() {
                self.len -= 1;
            }
        }
    }

    pub fn forget_topic(&mut self, topic: u32) {
        if let Some(ids) = self.seen.remove(&topic) {
            self.len -= ids.len();
        }
        self.order.retain(|(_, t, _)| *t != topic);
    }
}
