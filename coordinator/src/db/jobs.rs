//! The `jobs` table: one row per (sweep, variant, seed) with its state, attempt, lease and
//! progress, read back as checked [`StoredJob`]s. State changes go through [`transition`] (which
//! asks [`crate::lifecycle`]), the fenced [`complete_fenced`] or the batched claim
//! ([`super::job_batches::claim_many`]); every UPDATE is guarded on the state and attempt it
//! expects.

use std::fmt::Display;

use sqlx::{Executor, FromRow, Sqlite, SqliteConnection};
use sweep_proto::domain::{Fence, Job, JobId, JobKind, JobState, MAX_LABEL_LEN};

use super::corrupt;
use crate::error::{Error, Result};
use crate::lifecycle::{self, Event};

/// The columns of [`JobRow`], for the statements built at run time (the static ones name them in
/// `sql/*.sql`).
macro_rules! cols {
    () => {
        "id, sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, learning_rate, \
         epochs_done, best_value, best_epoch, worker_id, lease_token, lease_expires_at_ms, \
         last_error, created_at_ms, started_at_ms, finished_at_ms, kind"
    };
}
pub(crate) use cols as job_cols;

/// A `jobs` row as SQLite hands it back; [`StoredJob`] is its checked form.
#[derive(Debug, Clone, FromRow)]
pub(crate) struct JobRow {
    pub id: i64,
    pub sweep: String,
    pub variant: String,
    pub seed: i64,
    pub state: String,
    pub attempt: i64,
    pub max_attempts: i64,
    pub epochs: i64,
    pub batch_size: i64,
    pub learning_rate: f64,
    pub epochs_done: i64,
    pub best_value: f64,
    pub best_epoch: i64,
    pub worker_id: Option<String>,
    pub lease_token: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub kind: String,
}

/// A stored job: what callers see of it plus the lease that fences worker writes.
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub job: Job,
    pub lease_token: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub kind: JobKind,
}

/// Checks a stored variant: a loss variant's name or a command sweep's parameter point.
pub(super) fn variant(job: i64, name: String) -> Result<String> {
    if name.is_empty() || name.len() > MAX_LABEL_LEN {
        return Err(corrupt(format_args!("job {job}"), "variant", format!("{} bytes", name.len())));
    }
    Ok(name)
}

fn kind(job: i64, name: &str) -> Result<JobKind> {
    match name {
        "builtin" => Ok(JobKind::Builtin),
        "command" => Ok(JobKind::Command),
        other => Err(corrupt(format_args!("job {job}"), "kind", sweep_proto::text::echo(other))),
    }
}

impl TryFrom<JobRow> for StoredJob {
    type Error = Error;

    fn try_from(r: JobRow) -> Result<StoredJob> {
        let id = r.id;
        let count =
            |column: &str, v: i64| u32::try_from(v).map_err(|e| corrupt(format_args!("job {id}"), column, e));
        let state = r.state.parse().map_err(|e| corrupt(format_args!("job {id}"), "state", e))?;
        let job = Job {
            id: JobId(id),
            variant: variant(id, r.variant)?,
            sweep: r.sweep,
            // Seeds are u64 stored bit-for-bit in an i64 column.
            seed: r.seed as u64,
            state,
            attempt: count("attempt", r.attempt)?,
            max_attempts: count("max_attempts", r.max_attempts)?,
            epochs: count("epochs", r.epochs)?,
            batch_size: count("batch_size", r.batch_size)?,
            learning_rate: r.learning_rate,
            epochs_done: count("epochs_done", r.epochs_done)?,
            best_value: r.best_value,
            best_epoch: count("best_epoch", r.best_epoch)?,
            worker_id: r.worker_id,
            last_error: r.last_error,
            created_at_ms: r.created_at_ms,
            started_at_ms: r.started_at_ms,
            finished_at_ms: r.finished_at_ms,
        };
        let kind = kind(id, &r.kind)?;
        Ok(StoredJob { job, lease_token: r.lease_token, lease_expires_at_ms: r.lease_expires_at_ms, kind })
    }
}

impl StoredJob {
    /// What the lifecycle state machine looks at.
    pub fn status(&self) -> lifecycle::Status {
        lifecycle::Status {
            state: self.job.state,
            attempt: self.job.attempt,
            max_attempts: self.job.max_attempts,
            last_error: self.job.last_error.clone(),
        }
    }

    /// True when `fence` is this job's lease (whatever the state).
    pub fn holds(&self, fence: &Fence) -> bool {
        self.job.attempt == fence.attempt && self.lease_token.as_deref() == Some(&fence.lease_token)
    }
}

pub(crate) fn checked(rows: Vec<JobRow>) -> Result<Vec<StoredJob>> {
    rows.into_iter().map(StoredJob::try_from).collect()
}

pub async fn get<'c, E>(ex: E, id: JobId) -> Result<Option<StoredJob>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let row = sqlx::query_file_as!(JobRow, "src/db/sql/job_get.sql", id.0).fetch_optional(ex).await?;
    row.map(StoredJob::try_from).transpose()
}

/// Like [`get`], but a missing job is [`Error::NotFound`].
pub async fn require<'c, E>(ex: E, id: JobId) -> Result<StoredJob>
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
) -> Result<Vec<StoredJob>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let state = state.map(JobState::as_str);
    checked(
        sqlx::query_file_as!(JobRow, "src/db/sql/jobs_of_sweep.sql", sweep, state, variant)
            .fetch_all(ex)
            .await?,
    )
}

/// Completes the job `fence` holds in one guarded UPDATE, if the fence is its running, unexpired
/// lease and every epoch is stored (what [`fenced`] and [`lifecycle::apply`] would allow);
/// `None` otherwise (the caller then finds out why).
pub async fn complete_fenced(
    conn: &mut SqliteConnection,
    fence: &Fence,
    now_ms: i64,
) -> Result<Option<StoredJob>> {
    let row = sqlx::query_file_as!(
        JobRow,
        "src/db/sql/job_complete.sql",
        now_ms,
        fence.job_id,
        fence.attempt,
        fence.lease_token
    )
    .fetch_optional(conn)
    .await?;
    row.map(StoredJob::try_from).transpose()
}

/// The job `fence` writes to, if the fence is its current, running, unexpired lease; otherwise
/// [`Error::StaleLease`] saying why (or [`Error::NotFound`]).
pub async fn fenced<'c, E>(ex: E, fence: &Fence, now_ms: i64) -> Result<StoredJob>
where
    E: Executor<'c, Database = Sqlite>,
{
    check_fence(require(ex, fence.job()).await?, fence, now_ms)
}

/// `stored` if `fence` is its current, running, unexpired lease as of `now_ms`; otherwise
/// [`Error::StaleLease`] saying why.
pub fn check_fence(stored: StoredJob, fence: &Fence, now_ms: i64) -> Result<StoredJob> {
    let job = &stored.job;
    if !stored.holds(fence) {
        return Err(Error::StaleLease(not_held(&stored, fence)));
    }
    if !lifecycle::accepts_worker_writes(job.state) {
        return Err(Error::StaleLease(format!("job {} is {}", job.id, job.state)));
    }
    if stored.lease_expires_at_ms.is_none_or(|t| t <= now_ms) {
        return Err(Error::StaleLease(format!("the lease of job {} expired", job.id)));
    }
    Ok(stored)
}

/// Why `fence` is not `stored`'s lease. Every requeue starts a new attempt, so a matching attempt
/// with another token is a wrong token. Tokens are never quoted: the fence's may be a guess, and
/// the current one belongs to the worker holding the lease.
fn not_held(stored: &StoredJob, fence: &Fence) -> String {
    let job = &stored.job;
    if job.attempt != fence.attempt {
        format!(
            "job {} is on attempt {} and the fence (attempt {}) is not its current lease",
            job.id, job.attempt, fence.attempt
        )
    } else if stored.lease_token.is_none() {
        format!("job {} attempt {}: the job is not leased", job.id, job.attempt)
    } else {
        format!("job {} attempt {}: the lease token does not match the current lease", job.id, job.attempt)
    }
}

/// Moves `stored` along `event` as [`lifecycle::apply`] allows, guarded on the state and attempt
/// read. A requeued job loses its lease but keeps its stored epochs; a terminal one gets
/// `finished_at_ms`.
pub async fn transition(
    conn: &mut SqliteConnection,
    stored: &StoredJob,
    event: Event,
    now_ms: i64,
) -> Result<StoredJob> {
    let job = &stored.job;
    let next = next_status(stored, event)?;
    let row = sqlx::query_file_as!(
        JobRow,
        "src/db/sql/job_transition.sql",
        next.state.as_str(),
        next.attempt,
        next.last_error,
        now_ms,
        job.id.0,
        job.state.as_str(),
        job.attempt,
        next.max_attempts
    )
    .fetch_optional(conn)
    .await?;
    row.ok_or_else(|| changed_meanwhile(job.id))?.try_into()
}

/// Where `event` takes `stored`, as [`lifecycle::apply`] allows ([`Error::Precondition`] if not).
pub fn next_status(stored: &StoredJob, event: Event) -> Result<lifecycle::Status> {
    lifecycle::apply(&stored.status(), event)
        .map_err(|e| Error::Precondition(format!("job {}: {e}", stored.job.id)))
}

/// The error of a guarded UPDATE that found the job no longer in the state it read.
pub fn changed_meanwhile(id: JobId) -> Error {
    Error::Precondition(format!("job {id} changed while being updated"))
}

/// Moves every running lease's expiry to at least `until`; returns how many it moved.
pub async fn extend_running_leases(conn: &mut SqliteConnection, until: i64) -> Result<u64> {
    let done = sqlx::query!(
        "UPDATE jobs SET lease_expires_at_ms = ?1 WHERE state = 'running' AND lease_expires_at_ms < ?1",
        until
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Up to `limit` running jobs whose lease ran out by `now_ms`, oldest first.
pub async fn expired<'c, E>(ex: E, now_ms: i64, limit: usize) -> Result<Vec<StoredJob>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    checked(sqlx::query_file_as!(JobRow, "src/db/sql/jobs_expired.sql", now_ms, limit).fetch_all(ex).await?)
}

/// Cancels up to `limit` of the sweep's queued or running jobs, oldest first, with one guarded
/// UPDATE that makes the change [`transition`] would make for [`Event::Cancel`]
/// (`cancel_some_matches_the_state_machine` checks that); returns them.
pub async fn cancel_some(
    conn: &mut SqliteConnection,
    sweep: &str,
    limit: usize,
    now_ms: i64,
) -> Result<Vec<StoredJob>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    checked(
        sqlx::query_file_as!(JobRow, "src/db/sql/jobs_cancel_some.sql", now_ms, sweep, limit)
            .fetch_all(conn)
            .await?,
    )
}

/// Up to `limit` of the sweep's jobs in `state`, oldest first.
pub async fn in_state(
    conn: &mut SqliteConnection,
    sweep: &str,
    state: JobState,
    limit: usize,
) -> Result<Vec<StoredJob>> {
    let (state, limit) = (state.as_str(), i64::try_from(limit).unwrap_or(i64::MAX));
    checked(
        sqlx::query_file_as!(JobRow, "src/db/sql/jobs_in_state.sql", sweep, state, limit)
            .fetch_all(conn)
            .await?,
    )
}

/// Who holds job `id`'s lease: its attempt, lease token and the credential its worker is bound
/// to (`None` when the job is unknown).
pub async fn lease_holder<'c, E>(ex: E, id: JobId) -> Result<Option<LeaseHolder>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let row = sqlx::query!(
        r#"SELECT j.attempt, j.lease_token, w.owner AS "owner?" FROM jobs j
           LEFT JOIN workers w ON w.id = j.worker_id WHERE j.id = ?1"#,
        id.0
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| LeaseHolder { attempt: r.attempt, lease_token: r.lease_token, owner: r.owner }))
}

/// See [`lease_holder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub attempt: i64,
    pub lease_token: Option<String>,
    /// `None`: the job has no worker, or its worker is not registered.
    pub owner: Option<String>,
}

impl LeaseHolder {
    /// True when `fence` is this job's lease.
    pub fn holds(&self, fence: &Fence) -> bool {
        self.attempt == i64::from(fence.attempt) && self.lease_token.as_deref() == Some(&fence.lease_token)
    }
}

/// Totals of a sweep's jobs in one state.
#[derive(Debug, Clone, Copy)]
pub struct StateTotals {
    pub state: JobState,
    pub jobs: u32,
    pub epochs: u64,
    pub epochs_done: u64,
}

pub async fn totals_by_state<'c, E>(ex: E, sweep: &str) -> Result<Vec<StateTotals>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let rows = sqlx::query!(
        r#"SELECT state, COUNT(*) AS "jobs!: i64", COALESCE(SUM(epochs), 0) AS "epochs!: i64",
           COALESCE(SUM(epochs_done), 0) AS "epochs_done!: i64" FROM jobs WHERE sweep = ?1 GROUP BY state"#,
        sweep
    )
    .fetch_all(ex)
    .await?;
    totals(sweep, rows.into_iter().map(|t| (t.state, t.jobs, t.epochs, t.epochs_done)).collect())
}

/// Checked [`StateTotals`] from `(state, jobs, epochs, epochs_done)` rows.
pub(crate) fn totals(sweep: &str, rows: Vec<(String, i64, i64, i64)>) -> Result<Vec<StateTotals>> {
    let bad = |column: &str, e: &dyn Display| corrupt(format_args!("sweep {sweep:?}"), column, e);
    rows.into_iter()
        .map(|(state, jobs, epochs, epochs_done)| {
            Ok(StateTotals {
                state: state.parse().map_err(|e| bad("state", &e))?,
                jobs: u32::try_from(jobs).map_err(|e| bad("job count", &e))?,
                epochs: u64::try_from(epochs).map_err(|e| bad("epochs", &e))?,
                epochs_done: u64::try_from(epochs_done).map_err(|e| bad("epochs_done", &e))?,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
