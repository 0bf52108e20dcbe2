//! Watch events for the changes other coordinators make to a shared PostgreSQL database: each
//! announcement ([`crate::db::postgres::notify`]) is read back from the database and published
//! on this coordinator's [`Events`], as its own writes are.

use sweep_proto::domain::EpochRecord;

use crate::db::Database;
use crate::db::postgres::notify::{self, Change};
use crate::error::Result;
use crate::events::{Event, Events};

/// Starts relaying, on PostgreSQL only, until the database is closed.
pub(super) fn spawn(db: &Database, events: &Events) {
    let Database::Postgres(pg) = db else { return };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let (pool, origin, db, events) = (pg.pool().clone(), pg.origin().clone(), db.clone(), events.clone());
    runtime.spawn(async move {
        let relay = |change: Change| {
            let (db, events) = (db.clone(), events.clone());
            async move {
                if let Err(e) = publish(&db, &events, &change).await {
                    tracing::warn!(error = %e, job = change.job, "could not relay another coordinator's change");
                }
            }
        };
        if let Err(e) = notify::follow(pool, origin, relay).await {
            tracing::error!(error = %e, "stopped following other coordinators' changes");
        }
    });
}

async fn publish(db: &Database, events: &Events, change: &Change) -> Result<()> {
    if !events.watched() {
        return Ok(());
    }
    let Some(stored) = db.job(change.job()).await? else { return Ok(()) };
    let job = stored.job;
    match change.epoch {
        None => events.jobs_changed([&job]),
        Some(epoch) => {
            let stored = db.epochs(job.id).await?.into_iter().find(|e| e.metrics.epoch == epoch);
            if let Some(stored) = stored {
                events.publish(Event::EpochRecorded(EpochRecord {
                    job_id: job.id,
                    sweep: job.sweep,
                    variant: job.variant,
                    seed: job.seed,
                    metrics: stored.metrics,
                }));
            }
        }
    }
    Ok(())
}
