//! The bytes of a connection's requests in flight, and its requests with a large reply.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Semaphore;

/// Requests whose reply grows with the broker's state that a connection may have in
/// flight (read, and their reply not yet taken by the writer). One, as Kafka mutes a
/// connection per request: the next waits, so unread `stats` replies cannot pile up.
const LARGE_REPLIES_IN_FLIGHT: usize = 1;

/// Frames' worth of request bytes a connection may have in flight.
const INFLIGHT_FRAMES: usize = 4;

/// Bytes of requests read and not yet answered, by request id.
pub(super) struct InFlightBytes {
    pub sem: Semaphore,
    pub cap: usize,
    /// Requests with a large reply in flight ([`LARGE_REPLIES_IN_FLIGHT`]).
    pub large: Semaphore,
    /// The first request in flight with an id, and any others a client sent with the same
    /// id: a heap allocation only for those.
    by_id: Mutex<HashMap<u64, (Held, Vec<Held>)>>,
}

/// What one request in flight holds until its reply is taken by the writer.
pub(super) struct Held {
    pub kib: usize,
    pub large: bool,
}

impl InFlightBytes {
    /// Requests in flight are bounded in bytes too (KiB units): a few frames' worth.
    pub fn new(max_frame: usize) -> InFlightBytes {
        let kib = (INFLIGHT_FRAMES * max_frame / 1024).max(1);
        InFlightBytes {
            sem: Semaphore::new(kib),
            cap: kib,
            large: Semaphore::new(LARGE_REPLIES_IN_FLIGHT),
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Held, Vec<Held>)>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hold(&self, id: u64, held: Held) {
        match self.lock().entry(id) {
            Entry::Occupied(mut e) => e.get_mut().1.push(held),
            Entry::Vacant(e) => {
                e.insert((held, Vec::new()));
            }
        }
    }

    /// The request `id` was answered: its bytes are free again. (Ids are the client's; if
    /// it reuses one, another request's share may be freed first, but each reply frees one
    /// share, so the totals still hold.)
    pub fn release(&self, id: Option<u64>) {
        let held = id.and_then(|id| {
            let mut m = self.lock();
            let (_, more) = m.get_mut(&id)?;
            match more.pop() {
                Some(h) => Some(h),
                None => m.remove(&id).map(|(h, _)| h),
            }
        });
        if let Some(h) = held {
            self.sem.add_permits(h.kib);
            if h.large {
                self.large.add_permits(1);
            }
        }
    }
}
