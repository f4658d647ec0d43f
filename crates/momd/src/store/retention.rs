//! Retention: trimming a topic's oldest records by count, bytes and age.

use super::*;

/// The message sizes of one record (topic, first seq, where it is).
pub(super) struct CutSizes {
    topic: u32,
    first_seq: u64,
    loc: Loc,
    sizes: Arc<[u64]>,
}

impl Store {
    /// The sizes of a record's messages, read once for the cuts that fall inside it.
    fn sizes_of(
        &self,
        reader: &mut segments::Reader<'_>,
        topic: u32,
        first_seq: u64,
        loc: Loc,
        key: &[u8],
    ) -> Result<Arc<[u64]>> {
        let mut cache = self.cut_sizes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.topic == topic && c.first_seq == first_seq && c.loc == loc {
                return Ok(c.sizes.clone());
            }
        }
        let body = reader.read(topic, first_seq, loc)?;
        let rec = record::decode(&body).map_err(|err| corrupt(key, err))?;
        let sizes: Arc<[u64]> = rec.msgs().map(|m| m.size()).collect();
        *cache = Some(CutSizes {
            topic,
            first_seq,
            loc,
            sizes: sizes.clone(),
        });
        Ok(sizes)
    }

    /// Apply retention to `topic` (by count, bytes and, with `now`, age), never removing
    /// seq `keep_from` or later (a queue still holds it). Returns
    /// (new first seq, messages removed, bytes removed) when something went, having written
    /// the index removals and the topic's new state and deleted segment files no longer
    /// needed. Works from the index; a record is read only when the cut falls inside it.
    pub fn trim(
        &self,
        topic: &TopicState,
        lim: mom_proto::Limits,
        now: u64,
        keep_from: u64,
    ) -> Result<Option<(u64, u64, u64)>> {
        if lim.max_msgs == 0 && lim.max_bytes == 0 && lim.max_age_ms == 0 {
            return Ok(None);
        }
        let over = |msgs: u64, bytes: u64| {
            (lim.max_msgs > 0 && msgs > lim.max_msgs)
                || (lim.max_bytes > 0 && bytes > lim.max_bytes)
        };
        let mut msgs = topic.msgs;
        let mut bytes = topic.bytes;
        let mut first = topic.first_seq;
        let mut removed_msgs = 0;
        let mut removed_bytes = 0;
        let mut batch: Vec<(Vec<u8>, Loc)> = Vec::new();
        let mut reader = self.segs.reader();
        for item in self.entries_from(topic.id, first)? {
            let (rec_first, e, key) = item?;
            let rec_next = rec_first + u64::from(e.count);
            if rec_next <= first {
                batch.push((key, e.loc));
                continue;
            }
            let aged = lim.max_age_ms > 0 && now.saturating_sub(e.time) >= lim.max_age_ms;
            if msgs == 0 || first >= keep_from || !(aged || over(msgs, bytes)) {
                break;
            }
            let rest = rec_next - first.max(rec_first);
            // The whole record goes if it is old, or if the limits still hold without it.
            let whole = aged
                || (first <= rec_first
                    && over(msgs - rest.min(msgs), bytes.saturating_sub(e.bytes)));
            if whole && first <= rec_first && rec_next <= keep_from {
                msgs -= rest.min(msgs);
                bytes = bytes.saturating_sub(e.bytes);
                removed_msgs += rest;
                removed_bytes += e.bytes;
                first = rec_next;
                batch.push((key, e.loc));
                continue;
            }
            // The cut falls inside this record: go message by message.
            let sizes = self.sizes_of(&mut reader, topic.id, rec_first, e.loc, &key)?;
            for (i, size) in sizes.iter().copied().enumerate() {
                let seq = rec_first + i as u64;
                if seq < first {
                    continue;
                }
                if msgs == 0 || seq >= keep_from || !(aged || over(msgs, bytes)) {
                    break;
                }
                msgs -= 1;
                bytes = bytes.saturating_sub(size);
                removed_msgs += 1;
                removed_bytes += size;
                first = seq + 1;
            }
            if first >= rec_next {
                batch.push((key, e.loc));
                continue;
            }
            break;
        }
        if removed_msgs == 0 {
            return Ok(None);
        }
        // Lost in a crash, retention is simply applied again: no full flush needed for it
        // (the segment files it frees wait for one, `live.rs`).
        self.index_unsynced.store(true, Ordering::Relaxed);
        let mut t = topic.clone();
        t.record_trim(first, removed_msgs, removed_bytes);
        let mut o = self.overlay();
        let mut live = self.live();
        for (k, loc) in batch {
            o.remove(k);
            let (seg, v) = live.sub(&loc);
            o.put(live::seg_key(seg).to_vec(), v.encode());
        }
        drop(live);
        o.put(topic_key(t.id).to_vec(), encode_topic(&t));
        Ok(Some((first, removed_msgs, removed_bytes)))
    }
}
