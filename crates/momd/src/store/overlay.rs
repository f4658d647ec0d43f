//! Index writes on their way to sled. Every write of the running broker to the index
//! (index entries, topic states, dedupe entries, queue states, removals) lands here first
//! and reaches sled in one batch with the next full flush (`Store::flush`), at most
//! `INDEX_FLUSH_EVERY` apart. So a publish costs sled nothing on its way to its ack; sled
//! sees a few large batches a second instead of one small one per group commit (its log
//! writer deadlocks when many small ones pile up: sled issue 1412); and a key written and
//! removed between two flushes (a reply inbox's messages, trimmed at once) never reaches
//! sled at all. Reads look here before sled; a start gets back what a crash took from
//! here out of the segment files (`tail.rs`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// Writes by key: `Some(value)` written, `None` removed. The newest write of a key wins.
pub(super) type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Default)]
pub(super) struct Overlay {
    /// Written since the last full flush took its writes.
    pending: Writes,
    /// Taken by the full flush in progress, until sled holds them.
    flushing: Option<Arc<Writes>>,
}

impl Overlay {
    pub fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.pending.insert(k, Some(v));
    }

    pub fn remove(&mut self, k: Vec<u8>) {
        self.pending.insert(k, None);
    }

    pub fn extend(&mut self, writes: Writes) {
        self.pending.extend(writes);
    }

    /// The newest write of `k`: `Some(None)` if it was removed, None if not written here.
    pub fn get(&self, k: &[u8]) -> Option<Option<&Vec<u8>>> {
        if let Some(v) = self.pending.get(k) {
            return Some(v.as_ref());
        }
        self.flushing.as_ref()?.get(k).map(|v| v.as_ref())
    }

    /// The writes of keys from `lo` to `hi` (inclusive), newest winning, in key order.
    pub fn range(&self, lo: &[u8], hi: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let bounds = (Bound::Included(lo), Bound::Included(hi));
        let mut out: Writes = BTreeMap::new();
        if let Some(f) = &self.flushing {
            for (k, v) in f.range::<[u8], _>(bounds) {
                out.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in self.pending.range::<[u8], _>(bounds) {
            out.insert(k.clone(), v.clone());
        }
        out.into_iter().collect()
    }

    /// The newest key at or below `k` and at or above `lo` that is written (not removed),
    /// with its value.
    pub fn last_at_or_below(&self, lo: &[u8], k: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let bounds = (Bound::Included(lo), Bound::Included(k));
        // Newest first, going down from `k`: the first key found written in the newest
        // layer that has it.
        let mut p = self.pending.range::<[u8], _>(bounds).rev().peekable();
        let empty = Writes::new();
        let f_layer = self.flushing.as_deref().unwrap_or(&empty);
        let mut f = f_layer.range::<[u8], _>(bounds).rev().peekable();
        loop {
            let (take_p, same) = match (p.peek(), f.peek()) {
                (None, None) => return None,
                (Some(_), None) => (true, false),
                (None, Some(_)) => (false, false),
                (Some((pk, _)), Some((fk, _))) => (pk >= fk, pk == fk),
            };
            if same {
                f.next();
            }
            let (k, v) = if take_p { p.next()? } else { f.next()? };
            if let Some(v) = v {
                return Some((k.clone(), v.clone()));
            }
        }
    }

    /// Start a full flush: what is pending goes to it. Call [`Overlay::flushed`] or
    /// [`Overlay::flush_failed`] with it afterwards. One full flush at a time.
    pub fn take_for_flush(&mut self) -> Arc<Writes> {
        let w = Arc::new(std::mem::take(&mut self.pending));
        self.flushing = Some(w.clone());
        w
    }

    /// sled holds them now.
    pub fn flushed(&mut self) {
        self.flushing = None;
    }

    /// They did not reach sled: keep them for the next flush, under newer writes.
    pub fn flush_failed(&mut self) {
        if let Some(w) = self.flushing.take() {
            let w = Arc::try_unwrap(w).unwrap_or_else(|w| (*w).clone());
            for (k, v) in w {
                self.pending.entry(k).or_insert(v);
            }
        }
    }

    /// Keys written since the last full flush (pending and in flush).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len() + self.flushing.as_ref().map_or(0, |f| f.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_write_wins_and_a_failed_flush_keeps_its_writes_under_newer_ones() {
        let mut o = Overlay::default();
        o.put(b"a".to_vec(), b"1".to_vec());
        o.put(b"b".to_vec(), b"1".to_vec());
        let _taken = o.take_for_flush();
        o.put(b"a".to_vec(), b"2".to_vec());
        o.remove(b"b".to_vec());
        assert_eq!(
            o.range(b"a", b"z"),
            vec![(b"a".to_vec(), Some(b"2".to_vec())), (b"b".to_vec(), None)]
        );
        assert_eq!(
            o.last_at_or_below(b"a", b"b"),
            Some((b"a".to_vec(), b"2".to_vec()))
        );
        o.flush_failed();
        // The newer writes stay; what the failed flush held comes back under them.
        o.put(b"c".to_vec(), b"1".to_vec());
        assert_eq!(o.len(), 3);
        let taken = o.take_for_flush();
        assert_eq!(taken.get(&b"a"[..]), Some(&Some(b"2".to_vec())));
        assert_eq!(taken.get(&b"b"[..]), Some(&None));
        o.flushed();
        assert_eq!(o.len(), 0);
    }
}
