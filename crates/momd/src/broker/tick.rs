//! The broker's once-a-second work: rates, dedupe expiry, stale reply inboxes, age
//! retention, slow-consumer notices, and a flush when something is waiting for one.

use std::time::Instant;

use super::{now_ms, send_slow_notice, Broker, INBOX_PREFIX, INBOX_TTL_MS};

impl Broker {
    pub(super) fn on_tick(&mut self) {
        self.commit();
        self.disk_check();
        self.measure_disk_bytes();
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(10) {
            give_back_freed_memory();
        }
        let now = now_ms();
        let dt = self.last_tick.elapsed().as_secs_f64().max(0.001);
        self.last_tick = Instant::now();
        for r in self.rates.values_mut() {
            r.roll(dt);
        }
        // A topic with no traffic for a while costs no rate entry (a million quiet topics).
        self.rates.retain(|_, r| !r.idle());
        shrink_when_sparse(&mut self.rates);
        let queues = &self.queues;
        self.queue_rates.retain(|name, _| queues.contains_key(name));
        self.queues.settle_strays();
        for r in self.queue_rates.values_mut() {
            r.roll(dt);
        }
        self.total_rate.roll(dt);
        self.auth.purge_revoked(now);
        self.store.set_alive(now);
        let expired = self.core.tick(now);
        if !expired.is_empty() {
            if let Err(e) = self.store.remove_dedupe(&expired) {
                tracing::warn!("cannot remove expired dedupe entries: {e}");
            }
            self.dirty = true;
        }
        // Reply inboxes nobody watches and nothing was sent to for a while go away. Every
        // watch counts here, passive ones and group members too: whoever watches an inbox
        // is a requester still waiting for its reply, however it chose to watch.
        let stale: Vec<u32> = self
            .core
            .topics
            .with_prefix(INBOX_PREFIX)
            .filter(|t| {
                now.saturating_sub(t.last_time.max(t.created)) > INBOX_TTL_MS
                    && self.core.watches.count_matching(&t.name) == 0
            })
            .map(|t| t.id)
            .collect();
        for id in stale {
            self.drop_topic(id);
        }
        let aged: Vec<u32> = self
            .core
            .topics
            .iter_unordered()
            .filter(|t| t.has_age_limit() && t.msgs > 0)
            .map(|t| t.id)
            .collect();
        for id in aged {
            self.trim(id, now);
        }
        // Tell slow consumers that caught up how much they missed.
        let mut noticed = Vec::new();
        for (w, ws) in &mut self.watches {
            if ws.skipped > 0 && ws.outbox.has_room() {
                noticed.push((*w, ws.session, ws.skipped));
                send_slow_notice(*w, ws);
            }
        }
        for (w, session, skipped) in noticed {
            let client = self
                .sessions
                .get(&session)
                .map_or(0, |s| s.client.client_id);
            self.sys_event(format!(
                r#"{{"event":"slow_consumer","client_id":{client},"watch":{w},"skipped":{skipped}}}"#
            ));
        }
        self.compact();
        // Acks do not wait for it with --fsync never, but the store is still written out
        // every second.
        if self.dirty && self.flush_rx.is_none() {
            self.start_flush();
        }
        // The index, once publishes pause: a start then has nothing to index again.
        self.maybe_flush_index();
    }

    /// Copy the live records out of mostly dead segment files, a few steps a tick
    /// (`store/compact.rs`); the files go with the index flush after. With the disk short
    /// of space, the segment being written is taken too.
    fn compact(&mut self) {
        let urgent = self
            .disk
            .as_ref()
            .is_some_and(|d| d.full() || d.free() < d.floor().saturating_mul(2));
        let t0 = Instant::now();
        for _ in 0..16 {
            match self.store.compact_step(urgent) {
                Ok(true) if t0.elapsed() < std::time::Duration::from_millis(20) => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("compaction stopped: {e}");
                    break;
                }
            }
        }
    }

    /// Measure the data dir's size on the blocking pool, one walk at a time.
    fn measure_disk_bytes(&self) {
        use std::sync::atomic::Ordering;
        if self.disk_bytes_measuring.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, bytes, busy) = (
            self.store.clone(),
            self.disk_bytes.clone(),
            self.disk_bytes_measuring.clone(),
        );
        tokio::task::spawn_blocking(move || {
            bytes.store(store.disk_bytes(), Ordering::Relaxed);
            busy.store(false, Ordering::Release);
        });
    }

    /// Forget a topic the broker itself removes (reply inboxes).
    pub(super) fn drop_topic(&mut self, id: u32) {
        let Some(name) = self.core.topics.by_id(id).map(|t| t.name.clone()) else {
            return;
        };
        let upto = self.core.topics.remove(&name).map(|t| t.delivered_upto);
        self.core.dedupe.forget_topic(id);
        self.rates.remove(&id);
        self.metrics.forget(id);
        self.topic_removed_for_queues(id, upto.map(|u| (1, u)));
        if let Err(e) = self.store.remove_topic(id) {
            tracing::warn!(topic = %name, "cannot remove: {e}");
        }
        self.dirty = true;
    }
}

/// Hand memory that was freed back to the system: after a burst (large frames, a hostile
/// client) the allocator keeps it for reuse otherwise, and momd's RSS would not come back
/// down when the clients go.
/// A map that held a burst (a million topics created in a minute) gives the room back
/// once the burst is over: hashbrown never shrinks by itself.
fn shrink_when_sparse<K: std::hash::Hash + Eq, V>(map: &mut std::collections::HashMap<K, V>) {
    if map.capacity() > 4096 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only returns unused heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
