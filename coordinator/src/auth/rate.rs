//! Per-credential rate limits on writes: a token bucket per credential name, refilled at the
//! role's rate. Workers get a larger budget than users (a fleet shares one worker credential and
//! each slot leases, heartbeats and streams epochs). Callers without a credential
//! ([`Principal::Local`]) are not limited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::{Principal, Role};
use crate::error::{Error, Result};

/// A write budget: `per_second` on average, up to `burst` at once. A rate of 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl RateLimit {
    pub const UNLIMITED: RateLimit = RateLimit { per_second: 0.0, burst: 0.0 };

    pub fn new(per_second: f64, burst: f64) -> RateLimit {
        RateLimit { per_second, burst: burst.max(1.0) }
    }

    fn unlimited(&self) -> bool {
        self.per_second <= 0.0
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every credential that wrote recently.
#[derive(Debug)]
pub struct RateLimiter {
    users: RateLimit,
    workers: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `users` applies to user and admin credentials, `workers` to worker credentials.
    pub fn new(users: RateLimit, workers: RateLimit) -> RateLimiter {
        RateLimiter { users, workers, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one write from `who`'s budget, or says which limit it ran into.
    pub fn check(&self, who: &Principal) -> Result<()> {
        let Principal::Token { name, role } = who else { return Ok(()) };
        let (limit, flag) = match role {
            Role::Worker => (self.workers, "--worker-write-rate"),
            Role::User | Role::Admin => (self.users, "--user-write-rate"),
        };
        if limit.unlimited() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter poisoned");
        let bucket = buckets.entry(name.clone()).or_insert(Bucket { tokens: limit.burst, at: now });
        let refill = now.duration_since(bucket.at).as_secs_f64() * limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(limit.burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(Error::ResourceExhausted(format!(
                "credential {name} made more writes than its rate limit allows ({flag} {} per second, burst {}); \
                 retry later",
                limit.per_second, limit.burst
            )));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_writes_are_refused_until_the_bucket_refills() {
        let limiter = RateLimiter::new(RateLimit::new(20.0, 5.0), RateLimit::new(1000.0, 100.0));
        let alice = Principal::Token { name: "alice".into(), role: Role::User };
        let bob = Principal::Token { name: "bob".into(), role: Role::Admin };
        for _ in 0..5 {
            limiter.check(&alice).unwrap();
        }
        let err = limiter.check(&alice).unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)) && err.to_string().contains("--user-write-rate"));
        // Budgets are per credential, and workers have their own.
        limiter.check(&bob).unwrap();
        let gpu = Principal::Token { name: "gpu".into(), role: Role::Worker };
        for _ in 0..100 {
            limiter.check(&gpu).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(120));
        limiter.check(&alice).unwrap();
        for _ in 0..1000 {
            limiter.check(&Principal::Local).unwrap();
        }
    }
}
