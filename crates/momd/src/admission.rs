//! Admission: the bytes of requests read from all connections and not yet done with — a
//! publish until it is durable and answered, anything else until the broker handled it.
//!
//! A request is admitted while the total is under the budget, whatever its size (so one
//! the size of the largest frame is never starved, and the bound is the budget plus one
//! frame, as Kafka's request memory pool allows). Past it, every connection waits for the
//! total to come back under the budget, and then each takes its turn with its one waiting
//! request. A waiting connection is not read, and TCP slows its publisher down.
//!
//! Small requests (up to [`SMALL`] bytes) have a lane of their own, a quarter of the budget:
//! a client publishing one event at a time never waits behind others' megabyte frames, only
//! for the flush round its publish joins.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Bytes a request is charged besides its body: its decoded form and bookkeeping.
const OVERHEAD: usize = 256;

/// Requests up to this many bytes go through the small lane.
pub const SMALL: usize = 64 * 1024;

#[derive(Clone)]
pub struct Admission {
    large: Arc<Inner>,
    small: Arc<Inner>,
}

struct Inner {
    used: AtomicUsize,
    budget: usize,
    room: Notify,
}

/// Held while a request is in flight; dropping it gives its bytes back.
#[derive(Debug)]
pub struct Ticket {
    inner: Arc<Inner>,
    bytes: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("used", &self.used.load(Ordering::Relaxed))
            .field("budget", &self.budget)
            .finish()
    }
}

impl Admission {
    pub fn new(budget: usize) -> Admission {
        let lane = |budget: usize| {
            Arc::new(Inner {
                used: AtomicUsize::new(0),
                budget: budget.max(1),
                room: Notify::new(),
            })
        };
        Admission {
            large: lane(budget),
            small: lane((budget / 4).max(SMALL)),
        }
    }

    /// Bytes admitted and not yet given back.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.large.used.load(Ordering::Acquire) + self.small.used.load(Ordering::Acquire)
    }

    /// Admit a request whose body is `len` bytes, waiting while the budget is spent.
    pub async fn admit(&self, len: usize) -> Ticket {
        let (lane, bytes) = self.lane(len);
        loop {
            let notified = lane.room.notified();
            tokio::pin!(notified);
            // Registered before looking, so a release in between is not missed.
            notified.as_mut().enable();
            if let Some(t) = try_admit(lane, bytes) {
                return t;
            }
            notified.await;
        }
    }

    /// Admit a request whose body is `len` bytes if the budget has room now, as
    /// [`Admission::admit`] does before it waits.
    pub fn try_admit(&self, len: usize) -> Option<Ticket> {
        let (lane, bytes) = self.lane(len);
        try_admit(lane, bytes)
    }

    /// The lane of a request of `len` bytes, and what it is charged.
    fn lane(&self, len: usize) -> (&Arc<Inner>, usize) {
        let lane = if len <= SMALL {
            &self.small
        } else {
            &self.large
        };
        (lane, len.saturating_add(OVERHEAD))
    }
}

fn try_admit(lane: &Arc<Inner>, bytes: usize) -> Option<Ticket> {
    let mut cur = lane.used.load(Ordering::Acquire);
    while cur < lane.budget {
        match lane.used.compare_exchange_weak(
            cur,
            cur.saturating_add(bytes),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                return Some(Ticket {
                    inner: lane.clone(),
                    bytes,
                })
            }
            Err(now) => cur = now,
        }
    }
    None
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let before = self.inner.used.fetch_sub(self.bytes, Ordering::AcqRel);
        // Wake the waiters when this brought the total back under the budget.
        if before >= self.inner.budget && before - self.bytes < self.inner.budget {
            self.inner.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn admits_under_the_budget_and_one_request_may_overdraw() {
        let a = Admission::new(100_000);
        let big = a.admit(1_000_000).await;
        assert_eq!(a.used(), 1_000_000 + OVERHEAD, "a big one is not starved");
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.admit(SMALL + 1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "over the budget: the next one waits"
        );
        // A small request has its own lane: it does not wait behind the big ones.
        let small = tokio::time::timeout(Duration::from_secs(5), a.admit(100))
            .await
            .expect("the small lane has room");
        drop(big);
        let next = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("admitted once there is room")
            .expect("task");
        assert_eq!(a.used(), SMALL + 1 + 100 + 2 * OVERHEAD);
        drop((small, next));
        assert_eq!(a.used(), 0);
    }

    #[tokio::test]
    async fn every_waiting_connection_gets_its_turn() {
        let a = Admission::new(4 * SMALL);
        let hog = a.admit(SMALL).await;
        let mut waiters = Vec::new();
        for _ in 0..20 {
            let a = a.clone();
            waiters.push(tokio::spawn(async move { a.admit(10).await }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(hog);
        for w in waiters {
            let t = tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("each is admitted")
                .expect("task");
            drop(t);
        }
        assert_eq!(a.used(), 0);
    }
}
