//! The PostgreSQL store: a connection pool, one transaction per write, and the hot writes (claims,
//! heartbeats, epochs) as a few guarded statements each. Claims and the reaper lock rows with
//! `FOR UPDATE SKIP LOCKED`, so several coordinators can serve one database: two never hand out
//! the same job, and each reaps a different expired lease.

pub mod epochs;
pub mod jobs;
pub mod notify;
pub mod sweeps;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres};
use sweep_proto::domain::{JobState, LeaseVerdict};

use super::epochs::EpochWrite;
use super::ingest::{Beat, HeartbeatWrite, Ingested, LeaseWrite, Leased};
use crate::error::{Error, Result};

/// The PostgreSQL schema migrations in `/migrations/postgres`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections in the pool: requests run their statements concurrently, unlike SQLite's one writer.
const CONNECTIONS: u32 = 16;

/// A handle on a PostgreSQL database; cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    commits: prometheus::Histogram,
    /// This process's id in change announcements ([`notify`]).
    origin: Arc<str>,
}

impl PgStore {
    /// Connects to the database at `url` (creating it when the server has no such database yet)
    /// and applies pending migrations (under the migrator's advisory lock, so coordinators
    /// starting together apply them once).
    pub async fn open(url: &str) -> Result<PgStore> {
        if !Postgres::database_exists(url).await? {
            Postgres::create_database(url).await.or_else(|e| match e {
                // Another coordinator created it meanwhile.
                sqlx::Error::Database(d) if d.code().as_deref() == Some("42P04") => Ok(()),
                e => Err(e),
            })?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        let opts = prometheus::HistogramOpts::new(
            "sweep_db_write_batch_size",
            "Writes committed per write transaction",
        )
        .buckets(vec![1.0]);
        let commits = prometheus::Histogram::with_opts(opts).expect("valid histogram options");
        let origin = uuid::Uuid::new_v4().simple().to_string().into();
        Ok(PgStore { pool, commits, origin })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// This process's id in change announcements.
    pub fn origin(&self) -> &Arc<str> {
        &self.origin
    }

    /// Writes per committed transaction: always one here.
    pub fn write_batch_sizes(&self) -> prometheus::Histogram {
        self.commits.clone()
    }

    /// Runs `f` in a transaction of its own: committed if it succeeds, rolled back otherwise.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<R>>,
    {
        let mut tx = self.pool.begin().await?;
        match f(&mut tx).await {
            Ok(value) => {
                tx.commit().await?;
                self.commits.observe(1.0);
                Ok(value)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    /// Marks the worker seen and claims the oldest queued job of the kinds it runs.
    pub async fn lease(&self, lease: LeaseWrite) -> Leased {
        let origin = self.origin.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let now = super::now_ms();
                if !workers::touch(&mut *conn, &lease.worker_id, None, now).await? {
                    return Err(unregistered(&lease.worker_id));
                }
                let Some(stored) = jobs::claim(conn, &lease, now).await? else { return Ok(None) };
                notify::jobs_changed(conn, &origin, &[stored.job.id]).await?;
                let spec = sweeps::get(&mut *conn, &stored.job.sweep)
                    .await?
                    .ok_or_else(|| Error::Internal(format!("job {} has no sweep", stored.job.id)))?
                    .spec()?;
                Ok(Some((stored, Arc::new(spec))))
            })
        })
        .await
    }

    /// Marks the worker seen with its free slots and renews every lease in the beat that is
    /// still its job's running, unexpired one.
    pub async fn heartbeat(&self, beat: HeartbeatWrite) -> Beat {
        self.write(move |conn| {
            Box::pin(async move {
                let now = super::now_ms();
                if !workers::touch(&mut *conn, &beat.worker_id, Some(beat.idle_slots), now).await? {
                    return Err(unregistered(&beat.worker_id));
                }
                let mut verdicts = Vec::with_capacity(beat.fences.len());
                for fence in &beat.fences {
                    let verdict = if jobs::renew(&mut *conn, fence, now + beat.lease_ttl_ms, now).await? {
                        LeaseVerdict::Renewed
                    } else {
                        let cancelled = jobs::get(&mut *conn, fence.job())
                            .await?
                            .is_some_and(|s| s.holds(fence) && s.job.state == JobState::Cancelled);
                        if cancelled { LeaseVerdict::Cancelled } else { LeaseVerdict::Lost }
                    };
                    verdicts.push(verdict);
                }
                Ok(verdicts)
            })
        })
        .await
    }

    /// Stores one epoch if its fence is the job's running, unexpired lease and the epoch is
    /// within the job's epochs (see [`epochs::store`]).
    pub async fn record_epoch(&self, write: EpochWrite) -> Ingested {
        let origin = self.origin.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let stored = epochs::store(conn, &write, super::now_ms()).await?;
                if stored.is_some() {
                    notify::epoch_stored(conn, &origin, write.fence.job(), write.metrics.epoch).await?;
                }
                Ok(stored)
            })
        })
        .await
    }

    /// Closes every connection.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

fn unregistered(worker_id: &str) -> Error {
    Error::NotFound(format!("worker {worker_id:?} (register it first)"))
}
