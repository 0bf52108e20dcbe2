//! The lease reaper: a background task that periodically requeues (or fails, once attempts run
//! out) every running job whose lease expired without a heartbeat ([`Queue::reap_expired`]).

use std::time::Duration;

use tokio::sync::watch;

use crate::queue::Queue;

/// Reaps expired leases every `interval` until `stop` turns true.
pub async fn run(queue: Queue, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if let Err(e) = queue.reap_expired().await {
            tracing::warn!(error = %e, "reaping expired leases failed");
        }
    }
}
