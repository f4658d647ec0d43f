//! Limits on creating topics. A topic per device or per order is normal use, so both are
//! generous by default, but a runaway client must get an answer, not exhaust the broker:
//! a total cap on topics held (each costs memory and storage; too_large past it), and an
//! optional per-user creation rate, a token bucket (rate_limited past it), like Kafka's
//! `controller_mutation_rate` and Redpanda's `kafka_admin_topic_api_rate`. Time comes in
//! as `now` (ms), so the decision is the core's and the same on every replay.

use std::collections::HashMap;

/// The limits, from the configuration (reloadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreationLimits {
    /// Most topics held at once, all users together; 0 = unlimited.
    pub max_topics: u64,
    /// Topics one user may create per second, sustained; 0 = unlimited.
    pub rate: u64,
    /// Topics one user may create at once after a pause; 0 = `rate` (one second's worth).
    pub burst: u64,
}

/// Ten million topics: ten times the scale the broker is built for (a million topics in
/// about 300 MB), so no legitimate use meets it, while a loop creating topics by mistake
/// stops long before memory runs out. The rate is off by default, as in Kafka and
/// Redpanda: a bulk load or a restore legitimately creates topics as fast as it can, and
/// the broker serves connections in turn, so one creator does not stall the others.
pub const DEFAULT_MAX_TOPICS: u64 = 10_000_000;

impl Default for CreationLimits {
    fn default() -> Self {
        CreationLimits {
            max_topics: DEFAULT_MAX_TOPICS,
            rate: 0,
            burst: 0,
        }
    }
}

impl CreationLimits {
    /// The bucket's size in thousandths of a topic.
    fn capacity(&self) -> u64 {
        let burst = if self.burst == 0 {
            self.rate
        } else {
            self.burst
        };
        burst.max(1).saturating_mul(1000)
    }
}

/// Why a topic may not be created now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The broker holds `max` topics already.
    Full { max: u64 },
    /// The user created topics faster than `rate` a second (bucket of `burst`); one more
    /// is possible in `retry_ms`.
    Rate {
        rate: u64,
        burst: u64,
        retry_ms: u64,
    },
}

/// Thousandths of a topic a user may still create, and when that was worked out.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli: u64,
    at: u64,
}

/// The per-user buckets. Only users who created topics lately have one: a bucket that has
/// filled up again is forgotten ([`Creations::tidy`]).
#[derive(Debug, Default)]
pub struct Creations {
    buckets: HashMap<String, Bucket>,
}

impl Bucket {
    fn refill(&mut self, limits: &CreationLimits, now: u64) {
        let elapsed = now.saturating_sub(self.at);
        // `rate` topics a second is `rate` thousandths a millisecond.
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(limits.rate))
            .min(limits.capacity());
        self.at = self.at.max(now);
    }
}

impl Creations {
    /// May `user` create a topic now, with `held` topics in the broker? `rated`: the
    /// creation counts against the user's rate (reply inboxes do not: they go by
    /// themselves within a minute). When it may, the creation is counted.
    pub fn admit(
        &mut self,
        limits: &CreationLimits,
        user: &str,
        held: u64,
        rated: bool,
        now: u64,
    ) -> Result<(), Refusal> {
        if limits.max_topics > 0 && held >= limits.max_topics {
            return Err(Refusal::Full {
                max: limits.max_topics,
            });
        }
        if !rated || limits.rate == 0 {
            return Ok(());
        }
        let full = Bucket {
            milli: limits.capacity(),
            at: now,
        };
        let b = self.buckets.entry(user.to_string()).or_insert(full);
        b.refill(limits, now);
        if b.milli < 1000 {
            return Err(Refusal::Rate {
                rate: limits.rate,
                burst: limits.capacity() / 1000,
                retry_ms: (1000 - b.milli).div_ceil(limits.rate),
            });
        }
        b.milli -= 1000;
        Ok(())
    }

    /// Forget the buckets that are full again (their users could create a whole burst):
    /// memory follows the users creating topics now, not every user ever seen.
    pub fn tidy(&mut self, limits: &CreationLimits, now: u64) {
        if limits.rate == 0 {
            self.buckets.clear();
            return;
        }
        self.buckets.retain(|_, b| {
            b.refill(limits, now);
            b.milli < limits.capacity()
        });
    }

    /// Users with a bucket (tests).
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_topics: u64, rate: u64, burst: u64) -> CreationLimits {
        CreationLimits {
            max_topics,
            rate,
            burst,
        }
    }

    #[test]
    fn the_cap_counts_every_topic_held() {
        let l = limits(3, 0, 0);
        let mut c = Creations::default();
        assert_eq!(c.admit(&l, "u", 2, true, 0), Ok(()));
        assert_eq!(c.admit(&l, "u", 3, true, 0), Err(Refusal::Full { max: 3 }));
        assert_eq!(c.admit(&l, "u", 3, false, 0), Err(Refusal::Full { max: 3 }));
        let unlimited = limits(0, 0, 0);
        assert_eq!(c.admit(&unlimited, "u", u64::MAX, true, 0), Ok(()));
        assert_eq!(c.tracked(), 0, "no rate, no bucket");
    }

    #[test]
    fn a_user_gets_a_burst_then_the_rate_and_is_told_when_to_retry() {
        let l = limits(0, 10, 3);
        let mut c = Creations::default();
        for _ in 0..3 {
            assert_eq!(c.admit(&l, "u", 0, true, 1000), Ok(()));
        }
        let refused = c.admit(&l, "u", 0, true, 1000);
        assert_eq!(
            refused,
            Err(Refusal::Rate {
                rate: 10,
                burst: 3,
                retry_ms: 100
            })
        );
        // Another user has a bucket of its own; a reply inbox is not rated.
        assert_eq!(c.admit(&l, "v", 0, true, 1000), Ok(()));
        assert_eq!(c.admit(&l, "u", 0, false, 1000), Ok(()));
        // 10 a second: one more every 100 ms.
        assert!(c.admit(&l, "u", 0, true, 1060).is_err());
        assert_eq!(c.admit(&l, "u", 0, true, 1100), Ok(()));
        assert!(c.admit(&l, "u", 0, true, 1100).is_err());
        // A clock that goes back gives nothing and takes nothing.
        assert!(c.admit(&l, "u", 0, true, 500).is_err());
        assert_eq!(c.admit(&l, "u", 0, true, 1200), Ok(()));
    }

    #[test]
    fn the_burst_defaults_to_one_seconds_worth() {
        let l = limits(0, 5, 0);
        let mut c = Creations::default();
        let admitted = (0..20)
            .filter(|_| c.admit(&l, "u", 0, true, 0).is_ok())
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let l = limits(0, 10, 2);
        let mut c = Creations::default();
        assert_eq!(c.admit(&l, "u", 0, true, 0), Ok(()));
        assert_eq!(c.admit(&l, "v", 0, true, 0), Ok(()));
        assert_eq!(c.admit(&l, "v", 0, true, 0), Ok(()));
        c.tidy(&l, 100);
        assert_eq!(c.tracked(), 1, "u is full again after 100 ms, v is not");
        c.tidy(&l, 200);
        assert_eq!(c.tracked(), 0);
    }
}
