//! Copying a whole database into an empty one, on either backend (`coordinator migrate`): every
//! sweep, job (with its id, state, lease and progress), epoch and worker, in one transaction on the
//! destination, then checked by counting. The rows travel as they are stored, so nothing is
//! recomputed and ids stay valid for checkpoints and exports.

use std::sync::Arc;

use sqlx::{FromRow, QueryBuilder};

use super::{Database, Tx};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, FromRow)]
struct SweepRaw {
    name: String,
    spec_json: String,
    created_at_ms: i64,
    owner: String,
}

#[derive(Debug, Clone, PartialEq, FromRow)]
struct JobRaw {
    id: i64,
    sweep: String,
    variant: String,
    seed: i64,
    state: String,
    attempt: i64,
    max_attempts: i64,
    epochs: i64,
    batch_size: i64,
    learning_rate: f64,
    epochs_done: i64,
    best_value: f64,
    best_epoch: i64,
    worker_id: Option<String>,
    lease_token: Option<String>,
    lease_expires_at_ms: Option<i64>,
    last_error: Option<String>,
    created_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    kind: String,
    objective: String,
    objective_max: bool,
}

#[derive(Debug, Clone, PartialEq, FromRow)]
struct EpochRaw {
    job_id: i64,
    epoch: i64,
    attempt: i64,
    train_loss: Option<f64>,
    train_acc: Option<f64>,
    val_loss: Option<f64>,
    val_acc: Option<f64>,
    wall_seconds: f64,
    images_per_sec: Option<f64>,
    recorded_at_ms: i64,
    values_json: Option<String>,
}

#[derive(Debug, Clone, PartialEq, FromRow)]
struct WorkerRaw {
    id: String,
    hostname: String,
    gpus_json: String,
    slots: i64,
    idle_slots: i64,
    registered_at_ms: i64,
    last_seen_ms: i64,
    owner: String,
    data_files_json: String,
}

const SWEEPS: &str = "SELECT name, spec_json, created_at_ms, owner FROM sweeps ORDER BY name";
const JOBS: &str = "SELECT id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, \
    learning_rate, epochs_done, best_value, best_epoch, worker_id, lease_token, lease_expires_at_ms, last_error, \
    created_at_ms, started_at_ms, finished_at_ms, kind, objective, objective_max FROM jobs ORDER BY id";
const EPOCHS: &str = "SELECT job_id, epoch, attempt, train_loss, train_acc, val_loss, val_acc, wall_seconds, \
    images_per_sec, recorded_at_ms, values_json FROM epochs ORDER BY job_id, epoch";
const WORKERS: &str = "SELECT id, hostname, gpus_json, slots, idle_slots, registered_at_ms, last_seen_ms, owner, \
    data_files_json FROM workers ORDER BY id";

/// Rows per multi-row INSERT (PostgreSQL takes at most 65,535 parameters per statement).
const CHUNK: usize = 1000;

/// Every row of a database.
#[derive(Debug, Clone, PartialEq, Default)]
struct Rows {
    sweeps: Vec<SweepRaw>,
    jobs: Vec<JobRaw>,
    epochs: Vec<EpochRaw>,
    workers: Vec<WorkerRaw>,
}

/// How many rows of each table were copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub sweeps: usize,
    pub jobs: usize,
    pub epochs: usize,
    pub workers: usize,
}

impl Rows {
    fn counts(&self) -> Copied {
        Copied {
            sweeps: self.sweeps.len(),
            jobs: self.jobs.len(),
            epochs: self.epochs.len(),
            workers: self.workers.len(),
        }
    }
}

/// Reads every row with the same statements on either backend.
macro_rules! read_all {
    ($ex:expr) => {{
        Rows {
            sweeps: sqlx::query_as(SWEEPS).fetch_all($ex).await?,
            jobs: sqlx::query_as(JOBS).fetch_all($ex).await?,
            epochs: sqlx::query_as(EPOCHS).fetch_all($ex).await?,
            workers: sqlx::query_as(WORKERS).fetch_all($ex).await?,
        }
    }};
}

/// Inserts `rows` through the transaction `$tx` of backend `$db`, a chunk per statement.
macro_rules! insert_all {
    ($db:ty, $tx:expr, $rows:expr) => {{
        let (tx, rows) = ($tx, $rows);
        for chunk in rows.sweeps.chunks(CHUNK) {
            let mut q = QueryBuilder::<$db>::new("INSERT INTO sweeps (name, spec_json, created_at_ms, owner) ");
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.name).push_bind(&r.spec_json).push_bind(r.created_at_ms).push_bind(&r.owner);
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in rows.jobs.chunks(CHUNK) {
            let mut q = QueryBuilder::<$db>::new(
                "INSERT INTO jobs (id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, \
                 learning_rate, epochs_done, best_value, best_epoch, worker_id, lease_token, lease_expires_at_ms, \
                 last_error, created_at_ms, started_at_ms, finished_at_ms, kind, objective, objective_max) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.id).push_bind(&r.sweep).push_bind(&r.variant).push_bind(r.seed).push_bind(&r.state);
                b.push_bind(r.attempt).push_bind(r.max_attempts).push_bind(r.epochs).push_bind(r.batch_size);
                b.push_bind(r.learning_rate).push_bind(r.epochs_done).push_bind(r.best_value).push_bind(r.best_epoch);
                b.push_bind(&r.worker_id).push_bind(&r.lease_token).push_bind(r.lease_expires_at_ms);
                b.push_bind(&r.last_error).push_bind(r.created_at_ms).push_bind(r.started_at_ms);
                b.push_bind(r.finished_at_ms).push_bind(&r.kind).push_bind(&r.objective).push_bind(r.objective_max);
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in rows.epochs.chunks(CHUNK) {
            let mut q = QueryBuilder::<$db>::new(
                "INSERT INTO epochs (job_id, epoch, attempt, train_loss, train_acc, val_loss, val_acc, wall_seconds, \
                 images_per_sec, recorded_at_ms, values_json) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.job_id).push_bind(r.epoch).push_bind(r.attempt).push_bind(r.train_loss);
                b.push_bind(r.train_acc).push_bind(r.val_loss).push_bind(r.val_acc).push_bind(r.wall_seconds);
                b.push_bind(r.images_per_sec).push_bind(r.recorded_at_ms).push_bind(&r.values_json);
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in rows.workers.chunks(CHUNK) {
            let mut q = QueryBuilder::<$db>::new(
                "INSERT INTO workers (id, hostname, gpus_json, slots, idle_slots, registered_at_ms, last_seen_ms, \
                 owner, data_files_json) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.id).push_bind(&r.hostname).push_bind(&r.gpus_json).push_bind(r.slots);
                b.push_bind(r.idle_slots).push_bind(r.registered_at_ms).push_bind(r.last_seen_ms);
                b.push_bind(&r.owner).push_bind(&r.data_files_json);
            });
            q.build().execute(&mut *tx).await?;
        }
    }};
}

impl Database {
    async fn rows(&self) -> Result<Rows> {
        Ok(match self {
            Database::Sqlite(s) => read_all!(s.reader()),
            Database::Postgres(p) => read_all!(p.pool()),
        })
    }

    /// Copies every row of this database into `to`, which must hold no sweeps, jobs, epochs or
    /// workers ([`Error::Conflict`] otherwise, and nothing is written). All or nothing: one write
    /// on `to`, whose rows are read back and compared with the source's before it commits.
    pub async fn copy_into(&self, to: &Database) -> Result<Copied> {
        let there = to.rows().await?.counts();
        if there != (Copied { sweeps: 0, jobs: 0, epochs: 0, workers: 0 }) {
            return Err(Error::Conflict(format!(
                "the destination is not empty ({} sweeps, {} jobs, {} epochs, {} workers): migrate into a new database",
                there.sweeps, there.jobs, there.epochs, there.workers
            )));
        }
        let source = Arc::new(self.rows().await?);
        to.write(move |tx| {
            Box::pin(async move {
                let copied = match tx {
                    Tx::Sqlite(conn) => {
                        insert_all!(sqlx::Sqlite, &mut *conn, &*source);
                        read_all!(&mut *conn)
                    }
                    Tx::Postgres(conn, _) => {
                        insert_all!(sqlx::Postgres, &mut *conn, &*source);
                        // New jobs get ids after the copied ones.
                        sqlx::query(
                            "SELECT setval(pg_get_serial_sequence('jobs', 'id'), GREATEST((SELECT MAX(id) FROM jobs), 1))",
                        )
                        .execute(&mut *conn)
                        .await?;
                        read_all!(&mut *conn)
                    }
                };
                if copied != *source {
                    return Err(Error::Internal("the copied rows read back differ from the source's".into()));
                }
                Ok(copied.counts())
            })
        })
        .await
    }
}
