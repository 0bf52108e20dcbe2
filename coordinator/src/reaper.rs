//! The lease reaper: a background task that periodically requeues (or fails, once attempts run
//! out) every running job whose lease expired without a heartbeat.

use std::time::Duration;

use tokio::sync::watch;

use crate::db::{self, Database, jobs};
use crate::error::Result;
use crate::events::Events;
use crate::lifecycle::Event;

/// Expires overdue leases once; returns the jobs it changed.
pub async fn reap_once(db: &Database, events: &Events) -> Result<Vec<jobs::JobRow>> {
    let changed = db
        .write(|conn| {
            Box::pin(async move {
                let now = db::now_ms();
                let mut changed = Vec::new();
                for job in jobs::expired(&mut *conn, now).await? {
                    changed.push(jobs::transition(conn, &job, Event::LeaseExpired, now).await?);
                }
                Ok(changed)
            })
        })
        .await?;
    for job in &changed {
        tracing::info!(job = job.id, state = %job.state, attempt = job.attempt, "lease expired");
    }
    events.jobs_changed(&changed);
    Ok(changed)
}

/// Runs [`reap_once`] every `interval` until `stop` turns true.
pub async fn run(db: Database, events: Events, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if let Err(e) = reap_once(&db, &events).await {
            tracing::warn!(error = %e, "reaping expired leases failed");
        }
    }
}
