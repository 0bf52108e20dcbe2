//! The `jobs` table on PostgreSQL: the statements of [`crate::db::jobs`] and
//! [`crate::db::job_batches`] in its dialect. Writes that read a job first lock its row, and a
//! claim takes the oldest queued job no other transaction holds (`FOR UPDATE SKIP LOCKED`).

use sqlx::{AssertSqlSafe, Executor, PgConnection, Postgres};
use sweep_proto::domain::{Direction, Fence, JobId, JobState, PlannedJob, SweepSpec};

use crate::db::ingest::LeaseWrite;
use crate::db::jobs::{self, JobRow, LeaseHolder, StateTotals, StoredJob, checked, job_cols};
use crate::error::Result;
use crate::lifecycle::Event;

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub async fn get<'c, E>(ex: E, id: JobId) -> Result<Option<StoredJob>>
where
    E: Executor<'c, Database = Postgres>,
{
    let sql = concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1");
    let row = sqlx::query_as::<_, JobRow>(sql).bind(id.0).fetch_optional(ex).await?;
    row.map(StoredJob::try_from).transpose()
}

/// [`get`], the row locked until the transaction ends.
pub async fn get_for_update(conn: &mut PgConnection, id: JobId) -> Result<Option<StoredJob>> {
    let sql = concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1 FOR UPDATE");
    let row = sqlx::query_as::<_, JobRow>(sql).bind(id.0).fetch_optional(conn).await?;
    row.map(StoredJob::try_from).transpose()
}

/// Jobs of a sweep, optionally only those in `state` and/or of `variant`, by id.
pub async fn list<'c, E>(
    ex: E,
    sweep: &str,
    state: Option<JobState>,
    variant: Option<&str>,
) -> Result<Vec<StoredJob>>
where
    E: Executor<'c, Database = Postgres>,
{
    let sql = concat!(
        "SELECT ",
        job_cols!(),
        " FROM jobs WHERE sweep = $1 AND ($2::text IS NULL OR state = $2) \
         AND ($3::text IS NULL OR variant = $3) ORDER BY id"
    );
    let rows = sqlx::query_as::<_, JobRow>(sql)
        .bind(sweep)
        .bind(state.map(JobState::as_str))
        .bind(variant)
        .fetch_all(ex)
        .await?;
    checked(rows)
}

/// Completes the job `fence` holds if it is its running, unexpired lease and every epoch is
/// stored; `None` otherwise.
pub async fn complete_fenced(
    conn: &mut PgConnection,
    fence: &Fence,
    now_ms: i64,
) -> Result<Option<StoredJob>> {
    let sql = concat!(
        "UPDATE jobs SET state = 'succeeded', last_error = NULL, lease_expires_at_ms = NULL, finished_at_ms = $1 \
         WHERE id = $2 AND attempt = $3 AND lease_token = $4 AND state = 'running' \
         AND lease_expires_at_ms > $1 AND epochs_done >= epochs RETURNING ",
        job_cols!()
    );
    let row = sqlx::query_as::<_, JobRow>(sql)
        .bind(now_ms)
        .bind(fence.job_id)
        .bind(i64::from(fence.attempt))
        .bind(fence.lease_token.as_str())
        .fetch_optional(conn)
        .await?;
    row.map(StoredJob::try_from).transpose()
}

/// Moves `stored` along `event` (see [`crate::db::jobs::transition`]).
pub async fn transition(
    conn: &mut PgConnection,
    stored: &StoredJob,
    event: Event,
    now_ms: i64,
) -> Result<StoredJob> {
    let job = &stored.job;
    let next = jobs::next_status(stored, event)?;
    let sql = concat!(
        "UPDATE jobs SET state = $1, attempt = $2, last_error = $3, lease_expires_at_ms = NULL, \
         worker_id = CASE WHEN $1 = 'queued' THEN NULL ELSE worker_id END, \
         lease_token = CASE WHEN $1 = 'queued' THEN NULL ELSE lease_token END, max_attempts = $8, \
         finished_at_ms = CASE WHEN $1 IN ('succeeded', 'failed', 'cancelled') THEN $4 ELSE NULL END \
         WHERE id = $5 AND state = $6 AND attempt = $7 RETURNING ",
        job_cols!()
    );
    let row = sqlx::query_as::<_, JobRow>(sql)
        .bind(next.state.as_str())
        .bind(i64::from(next.attempt))
        .bind(next.last_error)
        .bind(now_ms)
        .bind(job.id.0)
        .bind(job.state.as_str())
        .bind(i64::from(job.attempt))
        .bind(i64::from(next.max_attempts))
        .fetch_optional(conn)
        .await?;
    row.ok_or_else(|| jobs::changed_meanwhile(job.id))?.try_into()
}

/// Moves every running lease's expiry to at least `until`; returns how many it moved.
pub async fn extend_running_leases(conn: &mut PgConnection, until: i64) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE jobs SET lease_expires_at_ms = $1 WHERE state = 'running' AND lease_expires_at_ms < $1",
    )
    .bind(until)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Up to `limit` running jobs whose lease ran out by `now_ms`, oldest first, locked; rows another
/// coordinator's reaper holds are skipped.
pub async fn expired(conn: &mut PgConnection, now_ms: i64, n: usize) -> Result<Vec<StoredJob>> {
    let sql = concat!(
        "SELECT ",
        job_cols!(),
        " FROM jobs WHERE state = 'running' AND lease_expires_at_ms <= $1 ORDER BY id LIMIT $2 \
         FOR UPDATE SKIP LOCKED"
    );
    checked(sqlx::query_as::<_, JobRow>(sql).bind(now_ms).bind(limit(n)).fetch_all(conn).await?)
}

/// Cancels up to `n` of the sweep's queued or running jobs (what a Cancel does to each); waits
/// for rows a concurrent write holds rather than skipping them, so none is left behind.
pub async fn cancel_some(
    conn: &mut PgConnection,
    sweep: &str,
    n: usize,
    now_ms: i64,
) -> Result<Vec<StoredJob>> {
    let sql = concat!(
        "UPDATE jobs SET state = 'cancelled', lease_expires_at_ms = NULL, finished_at_ms = $1 \
         WHERE id IN (SELECT id FROM jobs WHERE sweep = $2 AND state IN ('queued', 'running') \
         ORDER BY id LIMIT $3 FOR UPDATE) AND state IN ('queued', 'running') RETURNING ",
        job_cols!()
    );
    checked(sqlx::query_as::<_, JobRow>(sql).bind(now_ms).bind(sweep).bind(limit(n)).fetch_all(conn).await?)
}

/// Up to `n` of the sweep's jobs in `state`, oldest first, locked.
pub async fn in_state(
    conn: &mut PgConnection,
    sweep: &str,
    state: JobState,
    n: usize,
) -> Result<Vec<StoredJob>> {
    let sql = concat!(
        "SELECT ",
        job_cols!(),
        " FROM jobs WHERE sweep = $1 AND state = $2 ORDER BY id LIMIT $3 FOR UPDATE"
    );
    checked(
        sqlx::query_as::<_, JobRow>(sql)
            .bind(sweep)
            .bind(state.as_str())
            .bind(limit(n))
            .fetch_all(conn)
            .await?,
    )
}

/// Inserts the `(variant, seed)` jobs of `spec` the sweep does not have yet, queued on attempt
/// 1, in one statement over arrays; returns the new ones.
pub async fn insert_missing(
    conn: &mut PgConnection,
    spec: &SweepSpec,
    planned: &[PlannedJob],
    now_ms: i64,
) -> Result<Vec<StoredJob>> {
    let sql = concat!(
        "INSERT INTO jobs (sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, \
         learning_rate, created_at_ms, kind, objective, objective_max) \
         SELECT $1, v.variant, v.seed, 'queued', 1, $2, $3, $4, v.lr, $5, $6, $7, $8 \
         FROM UNNEST($9::text[], $10::bigint[], $11::float8[]) WITH ORDINALITY AS v(variant, seed, lr, n) \
         ORDER BY v.n ON CONFLICT (sweep, variant, seed) DO NOTHING RETURNING ",
        job_cols!()
    );
    let variants: Vec<&str> = planned.iter().map(|j| j.variant.as_str()).collect();
    // Seeds are u64 stored bit-for-bit in an i64 column.
    let seeds: Vec<i64> = planned.iter().map(|j| j.seed as i64).collect();
    let rates: Vec<f64> = planned.iter().map(|j| j.learning_rate).collect();
    let rows = sqlx::query_as::<_, JobRow>(sql)
        .bind(spec.name.as_str())
        .bind(i64::from(spec.max_attempts))
        .bind(i64::from(spec.epochs))
        .bind(i64::from(spec.batch_size))
        .bind(now_ms)
        .bind(spec.kind().as_str())
        .bind(spec.objective.metric.as_str())
        .bind(spec.objective.direction == Direction::Max)
        .bind(variants)
        .bind(seeds)
        .bind(rates)
        .fetch_all(conn)
        .await?;
    checked(rows)
}

/// Claims the oldest queued job of the request's kinds that no other transaction holds.
pub async fn claim(conn: &mut PgConnection, lease: &LeaseWrite, now_ms: i64) -> Result<Option<StoredJob>> {
    let sql = concat!(
        "UPDATE jobs SET state = 'running', worker_id = $1, lease_token = $2, lease_expires_at_ms = $3, \
         started_at_ms = COALESCE(started_at_ms, $4) \
         WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND kind = ANY($5) ORDER BY id LIMIT 1 \
         FOR UPDATE SKIP LOCKED) AND state = 'queued' RETURNING ",
        job_cols!()
    );
    let kinds: Vec<&str> = lease.kinds.iter().map(|k| k.as_str()).collect();
    let row = sqlx::query_as::<_, JobRow>(sql)
        .bind(lease.worker_id.as_str())
        .bind(lease.lease_token.as_str())
        .bind(lease.expires_at_ms)
        .bind(now_ms)
        .bind(kinds)
        .fetch_optional(conn)
        .await?;
    row.map(StoredJob::try_from).transpose()
}

/// Extends `fence`'s lease to `until` if it is still its job's running, unexpired one.
pub async fn renew(conn: &mut PgConnection, fence: &Fence, until: i64, now_ms: i64) -> Result<bool> {
    let renewed = sqlx::query(
        "UPDATE jobs SET lease_expires_at_ms = $1 WHERE id = $2 AND attempt = $3 AND lease_token = $4 \
         AND state = 'running' AND lease_expires_at_ms > $5",
    )
    .bind(until)
    .bind(fence.job_id)
    .bind(i64::from(fence.attempt))
    .bind(fence.lease_token.as_str())
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Who holds job `id`'s lease (see [`crate::db::jobs::lease_holder`]).
pub async fn lease_holder<'c, E>(ex: E, id: JobId) -> Result<Option<LeaseHolder>>
where
    E: Executor<'c, Database = Postgres>,
{
    let row: Option<(i64, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT j.attempt, j.lease_token, w.owner FROM jobs j LEFT JOIN workers w ON w.id = j.worker_id \
         WHERE j.id = $1",
    )
    .bind(id.0)
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|(attempt, lease_token, owner)| LeaseHolder { attempt, lease_token, owner }))
}

/// Totals of a sweep's jobs per state.
pub async fn totals_by_state<'c, E>(ex: E, sweep: &str) -> Result<Vec<StateTotals>>
where
    E: Executor<'c, Database = Postgres>,
{
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(
        "SELECT state, COUNT(*)::bigint, COALESCE(SUM(epochs), 0)::bigint, COALESCE(SUM(epochs_done), 0)::bigint \
         FROM jobs WHERE sweep = $1 GROUP BY state",
    ))
    .bind(sweep)
    .fetch_all(ex)
    .await?;
    jobs::totals(sweep, rows)
}

/// Like [`get`], but a missing job is [`crate::Error::NotFound`].
pub async fn require<'c, E>(ex: E, id: JobId) -> Result<StoredJob>
where
    E: Executor<'c, Database = Postgres>,
{
    get(ex, id).await?.ok_or_else(|| crate::Error::NotFound(format!("job {id}")))
}
