//! Live watches: which watch ids want which patterns.

use std::collections::BTreeMap;

use mom_proto::topic;

pub type WatchId = u64;

#[derive(Debug, Default, Clone)]
pub struct Watches {
    patterns: BTreeMap<WatchId, Vec<String>>,
    next_id: WatchId,
}

impl Watches {
    /// Register a watch; patterns must already be validated.
    pub fn add(&mut self, patterns: Vec<String>) -> WatchId {
        self.next_id += 1;
        self.patterns.insert(self.next_id, patterns);
        self.next_id
    }

    pub fn remove(&mut self, id: WatchId) -> bool {
        self.patterns.remove(&id).is_some()
    }

    pub fn get(&self, id: WatchId) -> Option<&[String]> {
        self.patterns.get(&id).map(Vec::as_slice)
    }

    /// Watches with at least one pattern matching `name`.
    pub fn matching(&self, name: &str) -> Vec<WatchId> {
        self.patterns
            .iter()
            .filter(|(_, ps)| ps.iter().any(|p| topic::matches(p, name)))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn count_matching(&self, name: &str) -> u64 {
        self.patterns
            .values()
            .filter(|ps| ps.iter().any(|p| topic::matches(p, name)))
            .count() as u64
    }
}
