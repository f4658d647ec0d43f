//! Start-up: what the store reads to rebuild the broker (topic states, dedupe entries,
//! server meta), and the check of each topic's newest records — where a torn tail (written,
//! never acknowledged) is cut and any other damage is kept and reported (see `check`).

use super::*;

impl Store {
    /// Read what is needed at start: topic states, dedupe entries, server meta, and check
    /// each topic's newest record. Its cost grows with the number of topics and live dedupe
    /// entries, not with stored messages.
    pub fn load(&self, now: u64, dedupe_window_ms: u64) -> Result<Loaded> {
        let mut out = Loaded::default();
        // The journal first (topics and queues newer than the index's): the topics' records
        // are indexed again below, and a flush then deletes the journal's files.
        let mut queues = std::collections::BTreeMap::new();
        for kv in self.db.scan_prefix([P_QUEUE]) {
            let (k, v) = kv?;
            let q: QueueRecord = rmp_serde::from_slice(&v).map_err(|e| corrupt(&k, e))?;
            queues.insert(q.def.name.clone(), q);
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
                        batch.insert(queue_key(&q.def.name), v);
                        queues.insert(q.def.name.clone(), q);
                    }
                    journal::Entry::Remove(name) => {
                        batch.remove(queue_key(&name));
                        queues.remove(&name);
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
                        next_topic = next_topic.max(u64::from(t.id) + 1);
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
        for kv in self.db.scan_prefix([P_TOPIC]) {
            let (k, v) = kv?;
            let t: TopicState = rmp_serde::from_slice(&v).map_err(|e| corrupt(&k, e))?;
            out.topics.push(t);
        }
        let meta_u64 = |name: &str| -> Result<Option<u64>> {
            Ok(self.db.get(meta_key(name))?.and_then(|v| be_u64(&v)))
        };
        // The downtime as of the last start: what records written since were stored less.
        let downtime_then = meta_u64("downtime")?.unwrap_or(0);
        let mut reindexed = 0;
        for t in &mut out.topics {
            let (damage, records) = self.recover_tail(t, downtime_then)?;
            out.damage.extend(damage);
            reindexed += records;
        }
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

    /// Check the newest records of a topic against its index, then index again the records
    /// written after them (`tail.rs`), cutting off a torn write at the log's end. A record
    /// that does not read back is damage: kept, reported (returned, and logged), its seqs
    /// never given again. Returns the damage and how many records were indexed again.
    fn recover_tail(&self, t: &mut TopicState, downtime: u64) -> Result<(Vec<check::Damage>, u64)> {
        // The newest records, newest first. A power cut can tear anything written since the
        // last fdatasync, which is at most one group commit: check a generous window.
        let mut entries: Vec<(sled::IVec, Option<(u64, IndexEntry)>)> = Vec::new();
        let mut window = 0u64;
        for kv in self.db.scan_prefix(prefix(P_MSG, t.id)).rev() {
            let (k, v) = kv?;
            let parsed = seq_of_key(&k).zip(IndexEntry::decode(&v));
            window += parsed.map_or(0, |(_, e)| u64::from(e.loc.len));
            entries.push((k, parsed));
            if entries.len() >= TAIL_CHECK_RECORDS || window >= TAIL_CHECK_BYTES {
                break;
            }
        }
        let mut reader = self.segs.reader(t.id);
        let checked: Vec<Option<segments::Bad>> = entries
            .iter()
            .map(|(_, p)| match p {
                Some((first, e)) => check::check_record(&mut reader, *first, e).err(),
                None => Some(segments::Bad::Damaged(
                    "its index entry does not decode".into(),
                )),
            })
            .collect();
        // Records the index names reached the disk whole before their index entries did
        // (`Store::flush` syncs segments first): one that does not read back was damaged
        // after it was written — a flipped bit, a truncated file — and is never cut here.
        // Only bytes after the newest indexed record can be torn writes (`tail.rs`).
        let mut bad: Vec<check::BadRecord> = entries
            .iter()
            .zip(checked)
            .filter_map(|((k, p), bad)| {
                bad.map(|bad| check::BadRecord {
                    key: k.clone(),
                    entry: *p,
                    bad,
                })
            })
            .collect();
        bad.reverse();
        let mut damage = check::ranges(self, t, &bad);
        let mut reindexed = 0;
        // With no index entry readable, nothing says where the log ends: leave it.
        let newest = entries.iter().find_map(|(_, p)| p.map(|(_, e)| e.loc));
        if newest.is_some() || entries.is_empty() {
            let tail = self.index_tail(t, newest, downtime)?;
            reindexed = tail.records;
            // New records go to a new segment file, after every seq the index knows: never
            // into a file whose end is damaged, where they would overlap what it names.
            let damaged_end = tail.records == 0
                && tail.damage.is_empty()
                && newest.is_some_and(|l| {
                    let file = self.segs.display_path(t.id, l.segment);
                    damage.iter().any(|d| d.segment == file)
                });
            if damaged_end {
                self.segs.seal(t.id);
            }
            damage.extend(tail.damage);
        }
        for d in &damage {
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
        Ok((damage, reindexed))
    }
}
