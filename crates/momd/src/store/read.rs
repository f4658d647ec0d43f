//! Reading: the index entries of a topic (sled's, with the overlay's writes over them),
//! messages by seq, the seq at a time, and the records read last, kept decoded.

use super::*;

impl Store {
    /// The record at `loc`, decoded: from the recent ones when it is there.
    pub(super) fn decoded(
        &self,
        topic: u32,
        first: u64,
        loc: Loc,
        reader: &mut segments::Reader<'_>,
        key: &[u8],
    ) -> Result<Arc<record::Record>> {
        let k = (topic, loc.segment, loc.offset);
        if let Some(r) = self.recent().get(&k) {
            return Ok(r);
        }
        let body = reader.read(topic, first, loc)?;
        let rec = Arc::new(record::decode(&body).map_err(|err| corrupt(key, err))?);
        self.recent().put(k, rec.clone());
        Ok(rec)
    }

    pub(super) fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index entry of `topic` with the greatest first seq at or below `seq`: the one
    /// holding `seq`, if any does. The overlay first, then sled.
    pub(super) fn entry_at_or_below(
        &self,
        topic: u32,
        seq: u64,
    ) -> Result<Option<(u64, IndexEntry)>> {
        let pfx = prefix(P_MSG, topic);
        let k = msg_key(topic, seq);
        let o = self.overlay();
        let over = o.last_at_or_below(&pfx, &k);
        // The newest key of sled's that the overlay did not remove (retention, a removed
        // topic: their removals reach sled with the next flush).
        let mut sled = None;
        for kv in self.db.range(..=k).rev() {
            let (sk, sv) = kv?;
            if !sk.starts_with(&pfx) {
                break;
            }
            match o.get(&sk) {
                Some(None) => continue,
                Some(Some(v)) => sled = Some((sk.to_vec(), v.clone())),
                None => sled = Some((sk.to_vec(), sv.to_vec())),
            }
            break;
        }
        drop(o);
        // The greater key wins. A sled key the overlay removed is below the topic's first
        // seq (retention removes the oldest): never the one holding a seq still stored.
        let best = match (over, sled) {
            (Some(o), Some(s)) => Some(if o.0 >= s.0 { o } else { s }),
            (o, s) => o.or(s),
        };
        best.map(|(k, v)| {
            let first = seq_of_key(&k).ok_or_else(|| corrupt(&k, "short key"))?;
            let e = IndexEntry::decode(&v).ok_or_else(|| corrupt(&k, "short index entry"))?;
            Ok((first, e))
        })
        .transpose()
    }

    /// The index entries of `topic` from the one holding `from` on: sled's, with the
    /// overlay's writes over them.
    pub(super) fn entries_from(
        &self,
        topic: u32,
        from: u64,
    ) -> Result<impl Iterator<Item = Result<(u64, IndexEntry, Vec<u8>)>>> {
        let start = match self.entry_at_or_below(topic, from)? {
            Some((first, _)) => msg_key(topic, first).to_vec(),
            None => msg_key(topic, from).to_vec(),
        };
        let end = msg_key(topic, u64::MAX).to_vec();
        let over = self.overlay().range(&start, &end);
        let sled = self.db.range(start..=end).map(|kv| {
            let (k, v) = kv?;
            Ok((k.to_vec(), v.to_vec()))
        });
        Ok(overlay_merge(over, sled).map(|kv| {
            let (k, v) = kv?;
            let first = seq_of_key(&k).ok_or_else(|| corrupt(&k, "short key"))?;
            let e = IndexEntry::decode(&v).ok_or_else(|| corrupt(&k, "short index entry"))?;
            Ok((first, e, k))
        }))
    }

    /// Read messages of `topic` from `from` up to `to` (inclusive), stopping after about
    /// `max_bytes` of payload. Batches come out in seq order; a message whose checksum does
    /// not match is logged, counted and skipped, and so is a record whose segment data does
    /// not match its index.
    pub fn read(
        &self,
        topic: u32,
        name: &str,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<ReadBatch> {
        let mut out = ReadBatch {
            next_seq: from,
            ..ReadBatch::default()
        };
        if from > to {
            return Ok(out);
        }
        let name: Arc<str> = Arc::from(name);
        let mut bytes = 0usize;
        let mut reader = self.segs.reader();
        for item in self.entries_from(topic, from)? {
            let (rec_first, e, key) = item?;
            if rec_first > to {
                break;
            }
            let rec_next = rec_first + u64::from(e.count);
            if rec_next <= from {
                continue;
            }
            let mut got = self.decoded(topic, rec_first, e.loc, &mut reader, &key);
            if got.is_err() {
                // Compaction may have moved the record (and its old file gone) since its
                // index entry was read: read it where the index says now.
                if let Some((first, now)) = self.entry_at_or_below(topic, rec_first)? {
                    if first == rec_first && now.loc != e.loc {
                        got = self.decoded(topic, rec_first, now.loc, &mut reader, &key);
                    }
                }
            }
            let rec = match got {
                Ok(r) => r,
                Err(err) => {
                    tracing::error!(
                        topic = &*name,
                        seqs = %format!("{rec_first}-{}", rec_next.saturating_sub(1)),
                        "damaged record skipped: {err}; `momd verify` lists all damage, \
                         `momd repair` moves it aside"
                    );
                    out.corrupt += u64::from(e.count);
                    out.next_seq = rec_next.min(to + 1);
                    continue;
                }
            };
            let mut seq = rec_first;
            for run in &rec.runs {
                let mut cur: Option<Batch> = None;
                for m in &run.msgs {
                    let this = seq;
                    seq += 1;
                    if this < from {
                        continue;
                    }
                    if this > to {
                        break;
                    }
                    out.next_seq = this + 1;
                    if !m.checksum_ok() {
                        tracing::error!(
                            topic = &*name,
                            seq = this,
                            "checksum mismatch; message skipped"
                        );
                        out.corrupt += 1;
                        out.batches.extend(cur.take());
                        continue;
                    }
                    bytes += m.payload.len();
                    let b = cur.get_or_insert_with(|| Batch {
                        topic: name.clone(),
                        first_seq: this,
                        time: run.time,
                        sender: run.sender.clone(),
                        msgs: Vec::new(),
                    });
                    b.msgs.push(NewMsg {
                        headers: m.headers.clone(),
                        msg_id: m.msg_id.clone(),
                        payload: m.payload.clone(),
                        key: m.key.clone(),
                    });
                }
                out.batches.extend(cur.take());
            }
            if bytes >= max_bytes {
                return Ok(out);
            }
        }
        out.next_seq = to.saturating_add(1);
        Ok(out)
    }

    /// The first seq of `topic` whose time is >= `time` (`last_seq + 1` when none is). A
    /// binary search over the index: a topic's times never decrease (core, `publish`).
    pub fn seq_at_time(&self, topic: &TopicState, time: u64) -> Result<u64> {
        // The record holding `seq`: its first seq and its time.
        let record_at = |seq: u64| -> Result<Option<(u64, u64)>> {
            Ok(self
                .entry_at_or_below(topic.id, seq)?
                .map(|(first, e)| (first, e.time)))
        };
        let (mut lo, mut hi) = (topic.first_seq, topic.last_seq + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match record_at(mid)? {
                Some((first, t)) if t >= time => hi = first.max(lo).min(mid),
                _ => lo = mid + 1,
            }
        }
        Ok(lo)
    }
}

/// The last records read, decoded, by (topic, segment, offset). A record at a place never
/// changes, except when a failed write is cut back or a topic removed: then all goes.
#[derive(Default)]
pub(super) struct Recent {
    map: std::collections::HashMap<(u32, u64, u64), Arc<record::Record>>,
    order: std::collections::VecDeque<(u32, u64, u64)>,
}

impl Recent {
    /// Records kept: about 2 MiB of 32 KiB records.
    const KEEP: usize = 64;

    pub(super) fn get(&self, k: &(u32, u64, u64)) -> Option<Arc<record::Record>> {
        self.map.get(k).cloned()
    }

    pub(super) fn put(&mut self, k: (u32, u64, u64), r: Arc<record::Record>) {
        if self.map.insert(k, r).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// Merge sled's entries with the overlay's writes over them (both in key order).
pub(super) fn overlay_merge(
    over: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    sled: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> {
    let mut over = over.into_iter().peekable();
    let mut sled = sled.peekable();
    std::iter::from_fn(move || loop {
        let o_key = over.peek().map(|(k, _)| k.clone());
        let s_key = match sled.peek() {
            Some(Ok((k, _))) => Some(k.clone()),
            Some(Err(_)) => return sled.next(),
            None => None,
        };
        let take_over = match (&o_key, &s_key) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(o), Some(s)) => {
                if o == s {
                    sled.next();
                }
                o <= s
            }
        };
        if take_over {
            match over.next() {
                Some((k, Some(v))) => return Some(Ok((k, v))),
                _ => continue,
            }
        }
        return sled.next();
    })
}
