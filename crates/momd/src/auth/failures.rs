//! Failed logins per client address: each one from the same address is answered later than
//! the one before (100 ms, doubling, at most 5 s), so guessing from one address slows to a
//! crawl while other addresses are not slowed at all. A success resets its address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Addresses remembered at most; the quietest are forgotten first.
const MAX_ADDRESSES: usize = 10_000;
/// A failure this old no longer counts.
const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct Failures {
    by_addr: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Failed logins since start.
    pub total: AtomicU64,
}

impl Failures {
    /// A login from `ip` failed: how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut m = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if m.len() >= MAX_ADDRESSES && !m.contains_key(&ip) {
            m.retain(|_, (_, at)| now.duration_since(*at) < FORGET_AFTER);
            if m.len() >= MAX_ADDRESSES {
                if let Some(oldest) = m.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                    m.remove(&oldest);
                }
            }
        }
        let e = m.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= FORGET_AFTER {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now;
        delay_for(e.0)
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.by_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

/// The wait before answering the `n`-th failure in a row.
fn delay_for(n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1u32 << shift).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_from_one_address_wait_longer_and_others_do_not() {
        let f = Failures::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let waits: Vec<Duration> = (0..8).map(|_| f.failed(a)).collect();
        assert_eq!(waits[0], Duration::from_millis(100));
        assert_eq!(waits[1], Duration::from_millis(200));
        assert_eq!(waits[7], MAX_DELAY);
        assert_eq!(f.failed(b), FIRST_DELAY, "another address is not slowed");
        f.succeeded(a);
        assert_eq!(f.failed(a), FIRST_DELAY, "a success resets the address");
    }
}
