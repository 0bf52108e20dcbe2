//! The multi-row statements on the `jobs` table: inserting a submission's jobs, and behind the
//! writer's batched paths claiming jobs for a run of lease requests, renewing the leases of a run
//! of heartbeats and recording the progress of a run of stored epochs (batched counterparts of
//! [`super::jobs`]).

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, FromRow, SqliteConnection};
use sweep_proto::domain::{Direction, Fence, JobId, JobKind, PlannedJob, SweepSpec};

use super::jobs::{self, JobRow, StoredJob, job_cols};
use crate::error::Result;

/// `kinds` as an SQL list: the enum's constant names, never a caller's text.
fn kind_list(kinds: &[JobKind]) -> String {
    kinds.iter().map(|k| format!("'{}'", k.as_str())).collect::<Vec<_>>().join(", ")
}

/// Most queued jobs [`queued_sql`] counts: a worker only shares out a short queue, and a count
/// of a long one would cost every lease a walk over it.
pub const QUEUED_COUNT_CAP: u32 = 4096;

/// How many jobs of `kinds` are queued, up to [`QUEUED_COUNT_CAP`].
pub(crate) fn queued_sql(kinds: &[JobKind]) -> String {
    format!(
        "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE state = 'queued' AND kind IN ({}) LIMIT {QUEUED_COUNT_CAP}) AS q",
        kind_list(kinds)
    )
}

/// The multi-row statements below name the updated `jobs` `NOT INDEXED`: otherwise SQLite's
/// planner (3.51) drives them from the `(state, lease_expires_at_ms)` index, walking every running
/// job (and the VALUES rows for each) instead of looking each row's job up by primary key, which
/// made the writer CPU-bound. The rowid lookup stays allowed; `hot_statements_use_primary_keys`
/// checks the plans.
pub(crate) fn claim_sql(shape: usize, kinds: &[JobKind]) -> String {
    // Anonymous `?` in text order: the VALUES rows, the LIMIT, then now.
    let mut sql = String::from("WITH v(rn, w, tok, exp) AS (VALUES ");
    for i in 0..shape {
        sql.push_str(if i == 0 { "(?, ?, ?, ?)" } else { ", (?, ?, ?, ?)" });
    }
    sql.push_str(&format!(
        "), q AS (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM \
         (SELECT id FROM jobs WHERE state = 'queued' AND kind IN ({}) ORDER BY id LIMIT ?)) \
         UPDATE jobs NOT INDEXED SET state = 'running', worker_id = c.w, lease_token = c.tok, \
         lease_expires_at_ms = c.exp, started_at_ms = COALESCE(started_at_ms, ?) \
         FROM (SELECT q.id AS jid, v.w, v.tok, v.exp FROM q JOIN v ON v.rn = q.rn) AS c \
         WHERE jobs.id = c.jid AND jobs.state = 'queued' RETURNING {}",
        kind_list(kinds),
        job_cols!()
    ));
    sql
}

pub(crate) fn renew_sql(shape: usize) -> String {
    let mut sql = String::from("UPDATE jobs NOT INDEXED SET lease_expires_at_ms = v.column4 FROM (VALUES ");
    for i in 0..shape {
        sql.push_str(if i == 0 { "(?, ?, ?, ?)" } else { ", (?, ?, ?, ?)" });
    }
    sql.push_str(
        ") AS v WHERE jobs.id = v.column1 AND jobs.attempt = v.column2 AND jobs.lease_token = v.column3 \
         AND jobs.state = 'running' AND jobs.lease_expires_at_ms > ? RETURNING id, attempt, lease_token",
    );
    sql
}

/// The objective's value in epoch row `a` of the job being updated: a named column, else an
/// entry of values_json (NULL when the epoch lacks it).
fn objective_value(a: &str) -> String {
    format!(
        "(CASE jobs.objective WHEN 'val_acc' THEN {a}.val_acc WHEN 'val_loss' THEN {a}.val_loss \
         WHEN 'train_acc' THEN {a}.train_acc WHEN 'train_loss' THEN {a}.train_loss \
         WHEN 'images_per_sec' THEN {a}.images_per_sec WHEN 'wall_seconds' THEN {a}.wall_seconds \
         ELSE json_extract({a}.values_json, '$.\"' || jobs.objective || '\"') END)"
    )
}

/// A job's stored epochs (any attempt: a later attempt may continue after an earlier one's) are
/// counted and searched for the best anew on every batch: an attempt that starts over rewrites
/// rows instead of adding them, so increments would not add up. Two statements, each one pass
/// over every job's epochs by primary key: this one sets `epochs_done` and `best_value` (0 when
/// no epoch has the objective), [`best_epoch_sql`] then the first epoch reaching it. (One
/// statement needs the best inside a per-epoch condition, which SQLite re-evaluates for every
/// epoch row: quadratic in the job's epochs.)
pub(crate) fn progress_sql(shape: usize) -> String {
    // Aggregates, not ORDER BY: SQLite resolves no outer column in a subquery's ORDER BY.
    let v = objective_value("e");
    let mut sql = format!(
        "UPDATE jobs NOT INDEXED SET \
         epochs_done = (SELECT COUNT(*) FROM epochs e WHERE e.job_id = jobs.id), \
         best_value = COALESCE((SELECT CASE WHEN jobs.objective_max THEN MAX({v}) ELSE MIN({v}) END \
         FROM epochs e WHERE e.job_id = jobs.id), 0) FROM (VALUES "
    );
    for i in 0..shape {
        sql.push_str(if i == 0 { "(?)" } else { ", (?)" });
    }
    sql.push_str(") AS v WHERE jobs.id = v.column1");
    sql
}

/// The first epoch whose objective equals the job's `best_value` just set by [`progress_sql`]
/// (0 when none has the objective: their values are NULL and match nothing).
pub(crate) fn best_epoch_sql(shape: usize) -> String {
    let mut sql = format!(
        "UPDATE jobs NOT INDEXED SET best_epoch = COALESCE((SELECT MIN(e.epoch) FROM epochs e \
         WHERE e.job_id = jobs.id AND {} = jobs.best_value), 0) FROM (VALUES ",
        objective_value("e")
    );
    for i in 0..shape {
        sql.push_str(if i == 0 { "(?)" } else { ", (?)" });
    }
    sql.push_str(") AS v WHERE jobs.id = v.column1 RETURNING id, sweep, variant, seed");
    sql
}

pub(crate) fn insert_sql(shape: usize) -> String {
    // Anonymous `?` in text order: sweep, max_attempts, epochs, batch_size, now, kind,
    // objective, objective_max, then the rows. Padding rows are NULL and filtered out; the WHERE
    // also keeps SQLite from reading the upsert's ON as a join constraint.
    let mut sql = String::from(
        "INSERT INTO jobs (sweep, variant, seed, state, attempt, max_attempts, epochs, batch_size, \
         learning_rate, created_at_ms, kind, objective, objective_max) \
         SELECT ?, v.column1, v.column2, 'queued', 1, ?, ?, ?, v.column3, ?, ?, ?, ? FROM (VALUES ",
    );
    for i in 0..shape {
        sql.push_str(if i == 0 { "(?, ?, ?)" } else { ", (?, ?, ?)" });
    }
    sql.push_str(concat!(
        ") AS v WHERE v.column1 IS NOT NULL ON CONFLICT (sweep, variant, seed) DO NOTHING RETURNING ",
        job_cols!()
    ));
    sql
}

/// Inserts the `(variant, seed)` jobs of `spec` that the sweep does not have yet, queued on
/// attempt 1, with one multi-row INSERT per chunk of 256; returns the new ones.
pub async fn insert_missing(
    conn: &mut SqliteConnection,
    spec: &SweepSpec,
    jobs: &[PlannedJob],
    now_ms: i64,
) -> Result<Vec<StoredJob>> {
    let mut created = Vec::with_capacity(jobs.len());
    let mut rest = jobs;
    for (rows, shape) in super::padded_chunks(jobs.len()) {
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        let mut query = sqlx::query_as::<_, JobRow>(AssertSqlSafe(insert_sql(shape)))
            .bind(spec.name.as_str())
            .bind(i64::from(spec.max_attempts))
            .bind(i64::from(spec.epochs))
            .bind(i64::from(spec.batch_size))
            .bind(now_ms)
            .bind(spec.kind().as_str())
            .bind(spec.objective.metric.as_str())
            .bind(spec.objective.direction == Direction::Max);
        for job in chunk {
            // Seeds are u64 stored bit-for-bit in an i64 column.
            query = query.bind(job.variant.as_str()).bind(job.seed as i64).bind(job.learning_rate);
        }
        for _ in rows..shape {
            query = query.bind(None::<&str>).bind(None::<i64>).bind(None::<f64>);
        }
        created.extend(query.fetch_all(&mut *conn).await?);
    }
    jobs::checked(created)
}

/// One LeaseJob call: the worker and the lease it gets if a job is queued.
#[derive(Debug, Clone)]
pub struct LeaseWrite {
    pub worker_id: String,
    /// The kinds of job the worker's slot runs (at least one, sorted, distinct).
    pub kinds: Vec<JobKind>,
    /// Fresh for every request (it also tells the claims of one batch apart).
    pub lease_token: String,
    pub expires_at_ms: i64,
}

/// Claims the oldest queued jobs for many lease requests at once, in request order (the first
/// request gets the oldest), with one guarded multi-row UPDATE per chunk of 256: two requests can
/// never win the same job. Returns the claimed jobs (told apart by their lease tokens, unique per
/// request).
pub async fn claim_many(
    conn: &mut SqliteConnection,
    reqs: &[&LeaseWrite],
    kinds: &[JobKind],
    now_ms: i64,
) -> Result<Vec<StoredJob>> {
    let mut claimed = Vec::with_capacity(reqs.len());
    let mut rest = reqs;
    for (rows, shape) in super::padded_chunks(reqs.len()) {
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        let mut query = sqlx::query_as::<_, JobRow>(AssertSqlSafe(claim_sql(shape, kinds)));
        for (rank, r) in chunk.iter().enumerate() {
            query = query
                .bind(rank as i64 + 1)
                .bind(r.worker_id.as_str())
                .bind(r.lease_token.as_str())
                .bind(r.expires_at_ms);
        }
        for _ in rows..shape {
            // Padding: rank 0 matches no queued job.
            query = query.bind(0i64).bind("").bind("").bind(0i64);
        }
        claimed.extend(query.bind(rows as i64).bind(now_ms).fetch_all(&mut *conn).await?);
    }
    jobs::checked(claimed)
}

/// Extends every lease of `(fence, new expiry)` that is still its job's running, unexpired one,
/// with one multi-row UPDATE per chunk; returns the fences (job id, attempt, token) it renewed.
pub async fn renew_many(
    conn: &mut SqliteConnection,
    leases: &[(&Fence, i64)],
    now_ms: i64,
) -> Result<HashSet<(i64, i64, String)>> {
    let mut renewed = HashSet::with_capacity(leases.len());
    let mut rest = leases;
    for (rows, shape) in super::padded_chunks(leases.len()) {
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        let mut query = sqlx::query_as::<_, (i64, i64, String)>(AssertSqlSafe(renew_sql(shape)));
        for (fence, expires_at_ms) in chunk {
            query = query
                .bind(fence.job_id)
                .bind(i64::from(fence.attempt))
                .bind(fence.lease_token.as_str())
                .bind(*expires_at_ms);
        }
        for _ in rows..shape {
            // Padding: job id 0 never exists.
            query = query.bind(0i64).bind(0i64).bind("").bind(0i64);
        }
        renewed.extend(query.bind(now_ms).fetch_all(&mut *conn).await?);
    }
    Ok(renewed)
}

/// The identity of a job, as events name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobKey {
    pub id: JobId,
    pub sweep: String,
    pub variant: String,
    pub seed: u64,
}

#[derive(FromRow)]
pub(crate) struct KeyRow {
    id: i64,
    sweep: String,
    variant: String,
    seed: i64,
}

impl TryFrom<KeyRow> for JobKey {
    type Error = crate::Error;

    fn try_from(k: KeyRow) -> Result<JobKey> {
        // Seeds are u64 stored bit-for-bit in an i64 column.
        Ok(JobKey {
            id: JobId(k.id),
            variant: jobs::variant(k.id, k.variant)?,
            sweep: k.sweep,
            seed: k.seed as u64,
        })
    }
}

/// Sets each job's `epochs_done` to its stored epochs and its best validation accuracy to the
/// best of them (a tie keeps the earlier epoch), with a few multi-row UPDATEs. Returns the jobs'
/// keys.
pub async fn record_progress(conn: &mut SqliteConnection, job_ids: &[i64]) -> Result<Vec<JobKey>> {
    let mut keys = Vec::with_capacity(job_ids.len());
    let mut rest = job_ids;
    for (rows, shape) in super::padded_chunks(job_ids.len()) {
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        // Padding: job id 0 never exists.
        let ids = || chunk.iter().copied().chain(std::iter::repeat_n(0i64, shape - rows));
        let mut query = sqlx::query(AssertSqlSafe(progress_sql(shape)));
        for id in ids() {
            query = query.bind(id);
        }
        query.execute(&mut *conn).await?;
        let mut query = sqlx::query_as::<_, KeyRow>(AssertSqlSafe(best_epoch_sql(shape)));
        for id in ids() {
            query = query.bind(id);
        }
        keys.extend(query.fetch_all(&mut *conn).await?);
    }
    keys.into_iter().map(JobKey::try_from).collect()
}
