//! Exponential backoff with full jitter for retrying calls to an unreachable coordinator.

use std::time::Duration;

use rand::Rng;

/// Doubles the delay after each failure, from `initial` up to `max`, and draws the actual wait
/// uniformly in `[delay/2, delay]` so many workers that lost the coordinator at once do not
/// reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, current: initial }
    }

    /// The wait before the next retry; grows the delay for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        let low = delay.as_millis() as u64 / 2;
        Duration::from_millis(rand::rng().random_range(low..=delay.as_millis() as u64))
    }

    /// Call after a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        let caps = [100, 200, 400, 800, 800, 800];
        for (w, cap) in waits.iter().zip(caps) {
            assert!(w.as_millis() as u64 <= cap && w.as_millis() as u64 >= cap / 2, "{w:?} vs {cap}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
