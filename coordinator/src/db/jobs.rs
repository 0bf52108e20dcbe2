//! The `jobs` table: one row per (sweep, variant, seed) with its state, attempt, lease and
//! progress. State changes go through [`transition`] (which asks [`crate::lifecycle`]) or the
//! atomic [`claim`]; every UPDATE is guarded on the state and attempt it expects.

use sqlx::{Executor, FromRow, Sqlite, SqliteConnection};
use sweep_proto::convert::state_to_wire;
use sweep_proto::{Fence, JobState, SweepSpec, pb};

pub use super::job_batches::{JobKey, Progress, claim_many, record_progress, renew_many};
use crate::error::{Error, Result};
use crate::lifecycle::{self, Event};

macro_rules! cols {
    () => {
        "id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate, \
         epochs_done, best_val_acc, best_epoch, worker_id, lease_token, lease_expires_at_ms, \
         last_error, created_at_ms, started_at_ms, finished_at_ms"
    };
}
pub(super) use cols as job_cols;

/// A stored job.
#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: i64,
    pub sweep: String,
    pub variant: String,
    /// The u64 seed, stored bit-for-bit.
    pub seed: i64,
    pub state: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub epochs: i64,
    pub batch_size: i64,
    pub learning_rate: f64,
    pub epochs_done: i64,
    pub best_val_acc: f64,
    pub best_epoch: i64,
    pub worker_id: Option<String>,
    pub lease_token: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

impl JobRow {
    /// The job's state (the table's CHECK constraint admits only valid names).
    pub fn job_state(&self) -> JobState {
        self.state.parse().unwrap_or(JobState::Failed)
    }

    pub fn seed(&self) -> u64 {
        self.seed as u64
    }

    /// What the lifecycle state machine looks at.
    pub fn status(&self) -> lifecycle::Status {
        lifecycle::Status {
            state: self.job_state(),
            attempt: self.attempt as u32,
            max_attempts: self.max_attempts as u32,
            last_error: self.last_error.clone(),
        }
    }

    /// True when `fence` is this job's lease (whatever the state).
    pub fn holds(&self, fence: &Fence) -> bool {
        self.attempt == i64::from(fence.attempt) && self.lease_token.as_deref() == Some(&fence.lease_token)
    }

    pub fn to_pb(&self) -> pb::Job {
        pb::Job {
            id: self.id,
            sweep: self.sweep.clone(),
            variant: self.variant.clone(),
            seed: self.seed(),
            state: state_to_wire(self.job_state()) as i32,
            attempt: self.attempt as u32,
            max_attempts: self.max_attempts as u32,
            epochs: self.epochs as u32,
            epochs_done: self.epochs_done as u32,
            learning_rate: self.learning_rate,
            best_val_acc: self.best_val_acc,
            best_epoch: self.best_epoch as u32,
            worker_id: self.worker_id.clone().unwrap_or_default(),
            last_error: self.last_error.clone().unwrap_or_default(),
            created_at_ms: self.created_at_ms,
            started_at_ms: self.started_at_ms.unwrap_or(0),
            finished_at_ms: self.finished_at_ms.unwrap_or(0),
        }
    }
}

pub async fn get<'c, E>(ex: E, id: i64) -> Result<Option<JobRow>>
where
    E: Executor<'c, Database = Sqlite>,
{
    Ok(sqlx::query_as(concat!("SELECT ", cols!(), " FROM jobs WHERE id = ?1"))
        .bind(id)
        .fetch_optional(ex)
        .await?)
}

/// Like [`get`], but a missing job is [`Error::NotFound`].
pub async fn require<'c, E>(ex: E, id: i64) -> Result<JobRow>
where
    E: Executor<'c, Database = Sqlite>,
{
    get(ex, id).await?.ok_or_else(|| Error::NotFound(format!("job {id}")))
}

/// Jobs of a sweep, optionally only those in `state` and/or of `variant`, by id.
pub async fn list<'c, E>(
    ex: E,
    sweep: &str,
    state: Option<JobState>,
    variant: Option<&str>,
) -> Result<Vec<JobRow>>
where
    E: Executor<'c, Database = Sqlite>,
{
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        cols!(),
        " FROM jobs WHERE sweep = ?1 AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR variant = ?3) ORDER BY id"
    ))
    .bind(sweep)
    .bind(state.map(JobState::as_str))
    .bind(variant)
    .fetch_all(ex)
    .await?)
}

/// Inserts the jobs of `spec` that do not exist yet; returns the new rows.
pub async fn insert_missing(
    conn: &mut SqliteConnection,
    spec: &SweepSpec,
    now_ms: i64,
) -> Result<Vec<JobRow>> {
    let mut created = Vec::new();
    for (variant, seed) in spec.jobs() {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "INSERT INTO jobs (sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, \
             learning_rate, created_at_ms) VALUES (?1, ?2, ?3, 'queued', 1, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (sweep, variant, seed) DO NOTHING RETURNING ",
            cols!()
        ))
        .bind(&spec.name)
        .bind(variant.name())
        .bind(seed as i64)
        .bind(i64::from(spec.max_attempts))
        .bind(i64::from(spec.epochs))
        .bind(i64::from(spec.batch_size))
        .bind(spec.learning_rate(variant))
        .bind(now_ms)
        .fetch_optional(&mut *conn)
        .await?;
        created.extend(row);
    }
    Ok(created)
}

/// Atomically claims the oldest queued job for `worker_id` (one guarded UPDATE: two callers
/// can never both win the same row). The lease lasts until `expires_at_ms`.
pub async fn claim(
    conn: &mut SqliteConnection,
    worker_id: &str,
    lease_token: &str,
    expires_at_ms: i64,
    now_ms: i64,
) -> Result<Option<JobRow>> {
    Ok(sqlx::query_as(concat!(
        "UPDATE jobs SET state = 'running', worker_id = ?1, lease_token = ?2, lease_expires_at_ms = ?3, \
         started_at_ms = COALESCE(started_at_ms, ?4) \
         WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1) AND state = 'queued' \
         RETURNING ",
        cols!()
    ))
    .bind(worker_id)
    .bind(lease_token)
    .bind(expires_at_ms)
    .bind(now_ms)
    .fetch_optional(conn)
    .await?)
}

/// Completes the job `fence` holds in one guarded UPDATE, if the fence is its running, unexpired
/// lease and every epoch is stored (what [`fenced`] and [`lifecycle::apply`] would allow);
/// `None` otherwise (the caller then finds out why).
pub async fn complete_fenced(
    conn: &mut SqliteConnection,
    fence: &Fence,
    now_ms: i64,
) -> Result<Option<JobRow>> {
    Ok(sqlx::query_as(concat!(
        "UPDATE jobs SET state = 'succeeded', last_error = NULL, lease_expires_at_ms = NULL, \
         finished_at_ms = ?1 WHERE id = ?2 AND attempt = ?3 AND lease_token = ?4 AND state = 'running' \
         AND lease_expires_at_ms > ?1 AND epochs_done >= epochs RETURNING ",
        cols!()
    ))
    .bind(now_ms)
    .bind(fence.job_id)
    .bind(i64::from(fence.attempt))
    .bind(&fence.lease_token)
    .fetch_optional(conn)
    .await?)
}

/// The job `fence` writes to, if the fence is its current, running, unexpired lease; otherwise
/// [`Error::StaleLease`] saying why (or [`Error::NotFound`]).
pub async fn fenced<'c, E>(ex: E, fence: &Fence, now_ms: i64) -> Result<JobRow>
where
    E: Executor<'c, Database = Sqlite>,
{
    let job = require(ex, fence.job_id).await?;
    let id = job.id;
    if !job.holds(fence) {
        return Err(Error::StaleLease(format!(
            "job {id} is on attempt {} and the fence (attempt {}) is not its current lease",
            job.attempt, fence.attempt
        )));
    }
    if !lifecycle::accepts_worker_writes(job.job_state()) {
        return Err(Error::StaleLease(format!("job {id} is {}", job.state)));
    }
    if job.lease_expires_at_ms.is_none_or(|t| t <= now_ms) {
        return Err(Error::StaleLease(format!("the lease of job {id} expired")));
    }
    Ok(job)
}

/// Moves `job` along `event` as [`lifecycle::apply`] allows, guarded on the state and attempt
/// read. A requeued job loses its lease and progress; a terminal one gets `finished_at_ms`.
pub async fn transition(
    conn: &mut SqliteConnection,
    job: &JobRow,
    event: Event,
    now_ms: i64,
) -> Result<JobRow> {
    let next = lifecycle::apply(&job.status(), event)
        .map_err(|e| Error::Precondition(format!("job {}: {e}", job.id)))?;
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "UPDATE jobs SET state = ?1, attempt = ?2, last_error = ?3, lease_expires_at_ms = NULL, \
         worker_id = CASE WHEN ?1 = 'queued' THEN NULL ELSE worker_id END, \
         lease_token = CASE WHEN ?1 = 'queued' THEN NULL ELSE lease_token END, \
         epochs_done = CASE WHEN ?1 = 'queued' THEN 0 ELSE epochs_done END, \
         best_val_acc = CASE WHEN ?1 = 'queued' THEN 0 ELSE best_val_acc END, \
         best_epoch = CASE WHEN ?1 = 'queued' THEN 0 ELSE best_epoch END, \
         finished_at_ms = CASE WHEN ?1 IN ('succeeded', 'failed', 'cancelled') THEN ?4 ELSE NULL END \
         WHERE id = ?5 AND state = ?6 AND attempt = ?7 RETURNING ",
        cols!()
    ))
    .bind(next.state.as_str())
    .bind(i64::from(next.attempt))
    .bind(next.last_error)
    .bind(now_ms)
    .bind(job.id)
    .bind(&job.state)
    .bind(job.attempt)
    .fetch_optional(conn)
    .await?;
    row.ok_or_else(|| Error::Precondition(format!("job {} changed while being updated", job.id)))
}

/// Extends the lease `fence` holds if it is still the running, unexpired one; false otherwise.
pub async fn renew_lease<'c, E>(ex: E, fence: &Fence, expires_at_ms: i64, now_ms: i64) -> Result<bool>
where
    E: Executor<'c, Database = Sqlite>,
{
    let done = sqlx::query(
        "UPDATE jobs SET lease_expires_at_ms = ?1 WHERE id = ?2 AND state = 'running' AND attempt = ?3 \
         AND lease_token = ?4 AND lease_expires_at_ms > ?5",
    )
    .bind(expires_at_ms)
    .bind(fence.job_id)
    .bind(i64::from(fence.attempt))
    .bind(&fence.lease_token)
    .bind(now_ms)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Running jobs whose lease ran out by `now_ms`.
pub async fn expired<'c, E>(ex: E, now_ms: i64) -> Result<Vec<JobRow>>
where
    E: Executor<'c, Database = Sqlite>,
{
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        cols!(),
        " FROM jobs WHERE state = 'running' AND lease_expires_at_ms <= ?1 ORDER BY id"
    ))
    .bind(now_ms)
    .fetch_all(ex)
    .await?)
}

/// Per-state totals of a sweep's jobs.
#[derive(Debug, Clone, Default, FromRow)]
pub struct StateTotals {
    pub state: String,
    pub jobs: i64,
    pub epochs: i64,
    pub epochs_done: i64,
}

pub async fn totals_by_state<'c, E>(ex: E, sweep: &str) -> Result<Vec<StateTotals>>
where
    E: Executor<'c, Database = Sqlite>,
{
    Ok(sqlx::query_as(
        "SELECT state, COUNT(*) AS jobs, COALESCE(SUM(epochs), 0) AS epochs, \
         COALESCE(SUM(epochs_done), 0) AS epochs_done FROM jobs WHERE sweep = ?1 GROUP BY state",
    )
    .bind(sweep)
    .fetch_all(ex)
    .await?)
}
