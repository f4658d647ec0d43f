//! Flushing: the segment files (and the queue journal) for an ack; the index with them
//! when it holds what they cannot give back, and every quarter second beside the acks.

use super::*;

impl Store {
    /// Make everything written so far durable: the log first, then sled's index
    /// (whose log file is fdatasynced after sled's own flush, which only ends in
    /// sync_file_range). In that order, an index entry reaches the disk only after its
    /// record did: recovery never has to guess whether a record that does not read back
    /// was torn by a crash (never acknowledged) or damaged later (`recover_tail`).
    /// A backup's checkpoint (`backup.rs`): flushed, then the index copied and the segment
    /// files linked. The caller makes sure nothing writes to the store meanwhile.
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        self.flush()?;
        crate::backup::checkpoint(&self.db, &self.dir)
    }

    pub fn flush(&self) -> Result<usize> {
        let _one = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        // The overlay's writes and the journal's files are taken at one point.
        // Segment files with no live record: deleted once this flush made the index without
        // their records durable.
        let (writes, generation, dead, mark) = {
            let mut o = self.overlay();
            let dead = self.live().dead(self.segs.newest());
            let mark = self.heads().mark();
            (o.take_for_flush(), self.journal().rotate(), dead, mark)
        };
        // The segment files (and the journal) and the index are synced side by side: an
        // ack waits for both, for about one fdatasync. (After a power cut, the index may
        // then name a record of the last flush that did not reach the disk: never
        // acknowledged, it is reported as damage and its seqs are not given again.)
        let records = {
            let (segs, journal, journal_sync) = (
                self.segs.clone(),
                self.journal.clone(),
                self.journal_sync.clone(),
            );
            self.side.run(move || {
                segs.sync()?;
                journal::sync(&journal, &journal_sync).map(|_| ())
            })
        };
        let index = (|| -> Result<usize> {
            if !writes.is_empty() {
                self.db.apply_batch(big::to_batch(&self.db, &writes)?)?;
            }
            let n = self.db.flush()?;
            self.log.sync_data()?;
            collect_garbage();
            Ok(n)
        })();
        let res = records.wait().map_err(StoreError::from).and(index);
        match &res {
            Ok(_) => {
                self.overlay().flushed();
                // The topics written before the take are in the index now.
                self.heads().indexed(mark);
                self.remove_dead_segments(&dead);
                // The states of those journal files are in the index now.
                if let Some(g) = generation {
                    if let Err(e) = self.journal().remove_upto(g) {
                        tracing::warn!("cannot delete journal files: {e}");
                    }
                }
            }
            Err(_) => self.overlay().flush_failed(),
        }
        self.keep_index_room();
        res
    }

    /// Delete segment files none of whose records is live any more (`live.rs`); their
    /// counts go from the index with the next flush.
    fn remove_dead_segments(&self, dead: &[u64]) {
        for seg in dead {
            match self.segs.remove(*seg) {
                Ok(true) => {
                    self.live().forget(*seg);
                    self.overlay().remove(live::seg_key(*seg).to_vec());
                    self.index_unsynced.store(true, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    segment = %self.segs.display_path(*seg),
                    "cannot delete a segment file none of whose records is live: {e}"
                ),
            }
        }
    }

    /// Decide what the next flush must be, on the thread that writes the store, before it
    /// starts: true for a full [`Store::flush`] — the index holds what the segment files
    /// cannot give back, or `want_full` and the index was written since the last one —
    /// false when [`Store::sync_records`] is enough. Writes after this call are covered
    /// by the flush after. When a full flush fails, call [`Store::full_flush_failed`].
    pub fn take_flush_kind(&self, want_full: bool) -> bool {
        let needed = self.index_needed.swap(false, Ordering::Relaxed)
            || self.heads().len() > heads::CAPACITY;
        if needed || (want_full && self.index_unsynced.load(Ordering::Relaxed)) {
            self.index_unsynced.store(false, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// A full flush failed: the one after must be full again.
    pub fn full_flush_failed(&self) {
        self.needs_index_flush();
    }

    /// For the index flush that runs beside the acks (every `INDEX_FLUSH_EVERY`): true when
    /// the index was written since the last full flush began. Leaves alone what an ack
    /// waits for ([`Store::take_flush_kind`] still says full then).
    pub fn take_index_unsynced(&self) -> bool {
        self.index_unsynced.swap(false, Ordering::Relaxed)
    }

    /// The index flush beside the acks failed: try again with the next one.
    pub fn index_flush_failed(&self) {
        self.index_unsynced.store(true, Ordering::Relaxed);
    }

    /// Make the records written so far durable, not the index: one fdatasync per segment
    /// file written, after the heads file was sent to the device (`heads.rs`): the
    /// fdatasync's cache flush covers both. Enough for an ack when
    /// the index holds nothing the log cannot give back ([`Store::take_flush_kind`]); a
    /// full flush instead when more topics were written since the index's last flush than
    /// the heads file holds.
    pub fn sync_records(&self) -> Result<usize> {
        let (file, range) = {
            let mut h = self.heads();
            match h.write()? {
                Some(range) => (h.file(), range),
                None => {
                    drop(h);
                    return self.flush();
                }
            }
        };
        heads::to_device(&file, range.0, range.1)?;
        let synced = self.segs.sync()?;
        let synced = journal::sync(&self.journal, &self.journal_sync)? || synced;
        if !synced {
            // No fdatasync flushed the device's cache after the slot reached it (another
            // flush synced the records): this one does.
            file.sync_data()?;
        }
        Ok(0)
    }

    /// Note a write to the index that the segment files cannot give back.
    pub(super) fn needs_index_flush(&self) {
        self.index_unsynced.store(true, Ordering::Relaxed);
        self.index_needed.store(true, Ordering::Relaxed);
    }
}

/// sled frees replaced tree nodes through crossbeam's epoch collector, which frees a few
/// bags of garbage per pin: a batch of thousands of inserts (each copying its leaf) made
/// garbage faster than it was freed, and momd grew by gigabytes that stayed. Pinning
/// again here frees what the batch left, a few bags at a time, until none is left to free.
fn collect_garbage() {
    for _ in 0..64 {
        crossbeam_epoch::pin().flush();
    }
}
