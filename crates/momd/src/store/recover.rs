//! Start-up: what the store reads to rebuild the broker (topic states, dedupe entries,
//! server meta), and the check of the log's end against the index — where a torn tail
//! (written, never acknowledged) is cut and any other damage is kept and reported (see
//! `check`).

use super::*;

impl Store {
    /// Read what is needed at start: topic states, dedupe entries, server meta, and check
    /// the log's end. Its cost grows with the number of topics and live dedupe entries, not
    /// with stored messages.
    pub fn load(&self, now: u64, dedupe_window_ms: u64) -> Result<Loaded> {
        let mut out = Loaded::default();
        // The journal first (topics and queues newer than the index's): the topics' records
        // are indexed again below, and a flush then deletes the journal's files.
        let mut queues = std::collections::BTreeMap::new();
        for kv in self.db.scan_prefix([P_QUEUE]) {
            let (k, v) = kv?;
            let v = self.whole(&k, v)?;
            let mut q: QueueRecord = rmp_serde::from_slice(&v).map_err(|e| corrupt(&k, e))?;
            if let Some((_, shard)) = queue_of_key(&k) {
                q.shard = shard;
            }
            queues.insert((q.def.name.clone(), q.shard), q);
        }
        // Queue states newer than the index's, from the journal (`journal.rs`), into the
        // index; then the journal starts empty.
        let journal_dir = self.dir.join("queues");
        let entries = journal::replay(&journal_dir)?;
        if !entries.is_empty() {
            let mut batch = sled::Batch::default();
            let mut topics_seen: std::collections::HashMap<u32, Vec<u8>> = Default::default();
            let mut next_topic = self
                .db
                .get(meta_key("next_topic_id"))?
                .and_then(|v| be_u64(&v))
                .unwrap_or(1);
            for e in entries {
                match e {
                    journal::Entry::Put(v) => {
                        let q: QueueRecord =
                            rmp_serde::from_slice(&v).map_err(|e| corrupt(b"queue journal", e))?;
                        let k = queue_key(&q.def.name, q.shard);
                        big::stage(&self.db, &mut batch, &k, Some(&v))?;
                        queues.insert((q.def.name.clone(), q.shard), q);
                    }
                    journal::Entry::Remove(name, shard) => {
                        big::stage(&self.db, &mut batch, &queue_key(&name, shard), None)?;
                        queues.remove(&(name, shard));
                    }
                    journal::Entry::Topic(v) => {
                        let mut t: TopicState =
                            rmp_serde::from_slice(&v).map_err(|e| corrupt(b"topic journal", e))?;
                        // Its counters are the index's (and the segment files'): keep them.
                        let k = topic_key(t.id);
                        let known = match topics_seen.get(&t.id) {
                            Some(v) => Some(v.clone()),
                            None => self.db.get(k)?.map(|v| v.to_vec()),
                        };
                        if let Some(v) = known {
                            let had: TopicState =
                                rmp_serde::from_slice(&v).map_err(|e| corrupt(&k, e))?;
                            t.first_seq = had.first_seq;
                            t.last_seq = had.last_seq;
                            t.msgs = had.msgs;
                            t.bytes = had.bytes;
                            t.last_time = had.last_time;
                        } else {
                            // New since the index's flush: its records are indexed below.
                            t.first_seq = 1;
                            t.last_seq = 0;
                            t.msgs = 0;
                            t.bytes = 0;
                            t.last_time = 0;
                        }
                        let v = encode_topic(&t);
                        batch.insert(&k[..], v.clone());
                        topics_seen.insert(t.id, v);
                        next_topic = next_topic.max(u64::from(self.shards.number(t.id)) + 1);
                    }
                }
            }
            batch.insert(meta_key("next_topic_id"), &next_topic.to_be_bytes()[..]);
            self.db.apply_batch(batch)?;
            self.db.flush()?;
            self.log.sync_data()?;
        }
        journal::remove_all(&journal_dir)?;
        out.queues = queues.into_values().collect();
        let mut decoder = crate::core::StateDecoder::default();
        for kv in self.db.scan_prefix([P_TOPIC]) {
            let (k, v) = kv?;
            out.topics
                .push(decoder.decode(&v).map_err(|e| corrupt(&k, e))?);
        }
        let meta_u64 = |name: &str| -> Result<Option<u64>> {
            Ok(self.db.get(meta_key(name))?.and_then(|v| be_u64(&v)))
        };
        // The downtime as of the last start: what records written since were stored less.
        let downtime_then = meta_u64("downtime")?.unwrap_or(0);
        let (damage, reindexed) = self.recover_log(&mut out.topics, downtime_then)?;
        out.damage.extend(damage);
        if reindexed > 0 {
            tracing::info!(
                records = reindexed,
                "indexed records written after the index was last flushed"
            );
            self.flush()?;
        }
        // The dedupe window counts the time momd runs, not the time it was down (nor a
        // clock that jumped meanwhile): a publisher retrying after a restart is still
        // recognised. The downtime since the last time momd said it was alive is added to
        // the total, and an entry's time is kept less the total at the time it was written;
        // so no entry is written again at a start, however many there are.
        let since_alive = meta_u64("alive")?.map_or(0, |alive| now.saturating_sub(alive));
        let downtime = meta_u64("downtime")?
            .unwrap_or(0)
            .saturating_add(since_alive);
        self.downtime
            .store(downtime, std::sync::atomic::Ordering::Relaxed);
        let mut expired = sled::Batch::default();
        for kv in self.db.scan_prefix([P_DEDUPE]) {
            let (k, v) = kv?;
            let (Some(topic), Some(seq), Some(time)) = (
                k.get(1..5)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes),
                be_u64(&v),
                v.get(8..).and_then(be_u64),
            ) else {
                expired.remove(k);
                continue;
            };
            let time = time.saturating_add(downtime);
            if now.saturating_sub(time) >= dedupe_window_ms {
                expired.remove(k);
                continue;
            }
            let id = String::from_utf8_lossy(k.get(5..).unwrap_or_default()).into_owned();
            out.dedupe.push((topic, id, seq, time));
        }
        // From now on, the time since this start is what counts.
        expired.insert(meta_key("alive"), &now.to_be_bytes()[..]);
        expired.insert(meta_key("downtime"), &downtime.to_be_bytes()[..]);
        self.db.apply_batch(expired)?;
        out.dedupe.sort_by_key(|d| d.3);
        out.next_topic_id = self
            .db
            .get(meta_key("next_topic_id"))?
            .and_then(|v| be_u64(&v))
            .unwrap_or(1) as u32;
        // Topics the log's tail brought back may be newer than the counter.
        if let Some(max) = out.topics.iter().map(|t| self.shards.number(t.id)).max() {
            out.next_topic_id = out.next_topic_id.max(max.saturating_add(1));
        }
        // Ids handed out in the second before a crash may not have been flushed: skip ahead so
        // none is given twice.
        let stored = self
            .db
            .get(meta_key("next_client_id"))?
            .and_then(|v| be_u64(&v))
            .unwrap_or(1);
        out.next_client_id = stored.saturating_add(1000);
        self.db.insert(
            meta_key("next_client_id"),
            &out.next_client_id.to_be_bytes()[..],
        )?;
        out.server_id = match self.db.get(meta_key("server_id"))? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let id = new_server_id();
                self.db.insert(meta_key("server_id"), id.as_bytes())?;
                self.db.flush()?;
                id
            }
        };
        Ok(out)
    }

    /// Check the log against the index's end, then index again the records written after
    /// it (`tail.rs`), cutting off a torn write at the log's end. A log that ends before
    /// the records the index names was cut short after they were written: damage, kept,
    /// reported (returned, and logged), their seqs never given again, and new records go
    /// to a new segment file. Returns the damage and how many records were indexed again.
    fn recover_log(
        &self,
        topics: &mut Vec<TopicState>,
        downtime: u64,
    ) -> Result<(Vec<check::Damage>, u64)> {
        let end = self.db.get(meta_key(LOG_END))?.and_then(|v| decode_pos(&v));
        let files = self.segs.list()?;
        let mut damage = Vec::new();
        if let Some((seg, off)) = end {
            let len = match files.get(&seg) {
                Some(p) => Some(std::fs::metadata(p)?.len()),
                None => None,
            };
            // A segment with live records that is gone, or the newest indexed one cut
            // short: the index names records the log no longer holds.
            if len.is_none_or(|l| l < off) && (len.is_some() || self.live().get(seg).records > 0) {
                damage = self.damage_past(topics, seg, len.unwrap_or(0))?;
                self.segs.seal()?;
            }
        }
        if let Some(end) = end {
            damage.extend(self.check_newest(topics, &files, end)?);
        }
        // Segment files nothing counts: none of their records is live.
        {
            let mut live = self.live();
            let newest = self.segs.newest();
            for seg in files.keys() {
                if *seg < newest && live.get(*seg) == live::SegLive::default() {
                    live.set(*seg, live::SegLive::default());
                }
            }
        }
        if self.replica {
            // The Raft log gives again what is past the index (`replica.rs`); the heads
            // file does not apply (acks wait for Raft, not for this log).
            self.drop_unindexed(end)?;
            self.heads_found
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            log_damage(&damage);
            return Ok((damage, 0));
        }
        let tail = self.index_tail(topics, end, downtime)?;
        damage.extend(tail.damage);
        let unwritten = self.damage_unwritten(topics)?;
        let reindexed = tail.records + unwritten.len() as u64;
        damage.extend(unwritten);
        log_damage(&damage);
        Ok((damage, reindexed))
    }

    /// Compare each topic's log with what the heads file says was acknowledged (`heads.rs`):
    /// seqs named there and missing from the log (cut short after the ack: a torn write
    /// would never have been acknowledged) are damage. They get an index entry past the
    /// newest segment file's end, which reads report as damaged, so they are never given
    /// again; new records go to a new segment file.
    fn damage_unwritten(&self, topics: &mut [TopicState]) -> Result<Vec<check::Damage>> {
        let found =
            std::mem::take(&mut *self.heads_found.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out = Vec::new();
        if found.is_empty() {
            return Ok(out);
        }
        let by_id: std::collections::HashMap<u32, usize> =
            topics.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        let mut batch = sled::Batch::default();
        for (id, head) in found {
            let Some(t) = by_id.get(&id).and_then(|i| topics.get_mut(*i)) else {
                // Removed since (its removal was flushed with the index).
                continue;
            };
            if head <= t.last_seq {
                continue;
            }
            if out.is_empty() {
                self.segs.seal()?;
            }
            // Past the end of the file new records no longer go to: never readable.
            let seg = self.segs.newest().saturating_sub(1);
            let loc = Loc {
                segment: seg,
                offset: self.segs.size(seg),
                len: 1,
            };
            let d = self.name_damage(
                &mut batch,
                t,
                head,
                loc,
                "acknowledged, and the log ends before it: cut short after it was written",
            );
            batch.insert(&topic_key(t.id)[..], encode_topic(t));
            out.push(d);
        }
        if !out.is_empty() {
            self.db.apply_batch(batch)?;
            self.needs_index_flush();
        }
        Ok(out)
    }

    /// Check the indexed part of the newest segment the index names (up to `end`): a
    /// record there that does not read back whole, and whose header still says which
    /// topic and seq it holds, is reported as damage at once (reads and `momd verify` find
    /// the others).
    fn check_newest(
        &self,
        topics: &[TopicState],
        files: &std::collections::BTreeMap<u64, std::path::PathBuf>,
        (seg, off): (u64, u64),
    ) -> Result<Vec<check::Damage>> {
        use std::os::unix::fs::FileExt;
        let Some(path) = files.get(&seg) else {
            return Ok(Vec::new());
        };
        let f = std::fs::File::open(path)?;
        let len = f.metadata()?.len().min(off);
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        f.read_exact_at(&mut buf, 0)?;
        let mut bad_at = Vec::new();
        let mut pos = 0usize;
        while pos < buf.len() {
            if let Some((_, _, l)) = segments::whole_at(&buf, pos) {
                pos += segments::HEADER_LEN as usize + l as usize;
                continue;
            }
            bad_at.push(pos);
            match segments::next_whole(&buf, pos + 1) {
                Some((p, ..)) => pos = p,
                None => break,
            }
        }
        let mut out = Vec::new();
        let mut reader = self.segs.reader();
        for pos in bad_at {
            let Some((topic, seq, l)) = segments::header_at(&buf, pos) else {
                tracing::error!(
                    segment = %self.segs.display_path(seg),
                    offset = pos,
                    "bytes in the log do not read back and their header is unreadable; \
                     reads of the records there report them"
                );
                continue;
            };
            let loc = Loc {
                segment: seg,
                offset: pos as u64,
                len: l,
            };
            if loc.end().1 > len {
                // Cut short: `damage_past` names it.
                continue;
            }
            let Some(t) = topics.iter().find(|t| t.id == topic) else {
                continue;
            };
            let Some((first, e)) = self.entry_at_or_below(topic, seq)? else {
                continue;
            };
            if first != seq || e.loc != loc {
                continue;
            }
            if let Err(bad) = check::check_record(&mut reader, topic, first, &e) {
                let b = check::BadRecord {
                    key: sled::IVec::from(&msg_key(topic, first)[..]),
                    entry: Some((first, e)),
                    bad,
                };
                out.extend(check::ranges(self, t, &[b]));
            }
        }
        Ok(out)
    }

    /// The records the index names in segment `seg` from byte `len` on (the file ends
    /// there, or is gone): damage. Found by reading the whole index once — only when the
    /// log was cut short.
    fn damage_past(&self, topics: &[TopicState], seg: u64, len: u64) -> Result<Vec<check::Damage>> {
        let mut out = Vec::new();
        let by_id: std::collections::HashMap<u32, &TopicState> =
            topics.iter().map(|t| (t.id, t)).collect();
        let mut bad: Vec<(u32, check::BadRecord)> = Vec::new();
        for kv in self.db.scan_prefix([P_MSG]) {
            let (k, v) = kv?;
            let Some(e) = IndexEntry::decode(&v) else {
                continue;
            };
            if e.loc.segment != seg || e.loc.end().1 <= len {
                continue;
            }
            let (Some(topic), Some(first)) = (
                k.get(1..5)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes),
                seq_of_key(&k),
            ) else {
                continue;
            };
            let reason = if len == 0 {
                "its segment file is missing".to_string()
            } else {
                format!(
                    "the file ends at byte {len}, before the record (bytes {}..{})",
                    e.loc.offset,
                    e.loc.end().1
                )
            };
            bad.push((
                topic,
                check::BadRecord {
                    key: k,
                    entry: Some((first, e)),
                    bad: segments::Bad::Incomplete(reason),
                },
            ));
        }
        let mut i = 0;
        while i < bad.len() {
            let topic = bad[i].0;
            let j = bad[i..]
                .iter()
                .position(|(t, _)| *t != topic)
                .map_or(bad.len(), |n| i + n);
            if let Some(t) = by_id.get(&topic) {
                let recs: Vec<check::BadRecord> =
                    bad[i..j].iter().map(|(_, b)| b.clone()).collect();
                out.extend(check::ranges(self, t, &recs));
            }
            i = j;
        }
        Ok(out)
    }
}

/// Each damaged range found at start, in the log (also in `stats` and on `$sys.events`).
fn log_damage(damage: &[check::Damage]) {
    for d in damage {
        tracing::error!(
            topic = %d.topic,
            seqs = %format!("{}-{}", d.first_seq, d.last_seq),
            segment = %d.segment,
            offset = d.offset,
            "damaged record kept, not cut: {}; reads of these seqs fail, other records \
             and topics are served, no seq is given twice; `momd verify` lists all \
             damage, `momd repair` moves it aside",
            d.reason
        );
    }
}
