//! The `epochs` table on PostgreSQL (see [`crate::db::epochs`]), and storing one streamed epoch
//! with its job's progress.

use sqlx::{Executor, PgConnection, Postgres};
use sweep_proto::InvalidInput;
use sweep_proto::domain::{JobId, StoredEpoch};

use crate::db::epochs::{EpochRow, EpochWrite, values_json};
use crate::db::ingest::Ingested;
use crate::db::job_batches::{JobKey, KeyRow};
use crate::db::jobs;
use crate::error::Result;

const COLUMNS: &str = "e.job_id, e.epoch, e.attempt, e.train_loss, e.train_acc, e.val_loss, e.val_acc, \
                       e.wall_seconds, e.images_per_sec, e.values_json";

/// The job's stored epochs, by epoch.
pub async fn for_job<'c, E>(ex: E, job: JobId) -> Result<Vec<StoredEpoch>>
where
    E: Executor<'c, Database = Postgres>,
{
    let sql = format!("SELECT {COLUMNS} FROM epochs e WHERE e.job_id = $1 ORDER BY e.epoch");
    let rows = sqlx::query_as::<_, EpochRow>(sqlx::AssertSqlSafe(sql)).bind(job.0).fetch_all(ex).await?;
    rows.into_iter().map(|row| row.into_stored().map(|(_, epoch)| epoch)).collect()
}

/// Every stored epoch of the sweep's jobs, by job and epoch.
pub async fn for_sweep<'c, E>(ex: E, sweep: &str) -> Result<Vec<(JobId, StoredEpoch)>>
where
    E: Executor<'c, Database = Postgres>,
{
    let sql = format!(
        "SELECT {COLUMNS} FROM epochs e JOIN jobs j ON j.id = e.job_id WHERE j.sweep = $1 ORDER BY e.job_id, e.epoch"
    );
    let rows = sqlx::query_as::<_, EpochRow>(sqlx::AssertSqlSafe(sql)).bind(sweep).fetch_all(ex).await?;
    rows.into_iter().map(EpochRow::into_stored).collect()
}

/// Mean wall seconds of the sweep's stored epochs, `None` before the first.
pub async fn mean_wall_seconds<'c, E>(ex: E, sweep: &str) -> Result<Option<f64>>
where
    E: Executor<'c, Database = Postgres>,
{
    Ok(sqlx::query_scalar(
        "SELECT AVG(e.wall_seconds) FROM epochs e JOIN jobs j ON j.id = e.job_id WHERE j.sweep = $1",
    )
    .bind(sweep)
    .fetch_one(ex)
    .await?)
}

/// Stores `w` if its fence is the job's running, unexpired lease as of `now_ms` (the job row
/// locked meanwhile) and its epoch is within the job's epochs; a row of an earlier attempt is
/// overwritten, one of this attempt kept (a duplicate, `None`). Then the job's progress is
/// counted anew, as on SQLite ([`crate::db::job_batches::progress_sql`]).
pub async fn store(conn: &mut PgConnection, w: &EpochWrite, now_ms: i64) -> Ingested {
    let (fence, m) = (&w.fence, &w.metrics);
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE id = $1 AND state = 'running' AND attempt = $2 AND lease_token = $3 \
         AND lease_expires_at_ms > $4 AND epochs >= $5 FOR UPDATE",
    )
    .bind(fence.job_id)
    .bind(i64::from(fence.attempt))
    .bind(fence.lease_token.as_str())
    .bind(now_ms)
    .bind(i64::from(m.epoch))
    .fetch_optional(&mut *conn)
    .await?;
    if held.is_none() {
        let stored = jobs::check_fence(super::jobs::require(&mut *conn, fence.job()).await?, fence, now_ms)?;
        if m.epoch > stored.job.epochs {
            return Err(InvalidInput::new(
                "metrics.epoch",
                format!("epoch {} is beyond the job's {} epochs", m.epoch, stored.job.epochs),
            )
            .into());
        }
        return Ok(None);
    }
    let written: Option<i64> = sqlx::query_scalar(
        "INSERT INTO epochs (job_id, epoch, attempt, train_loss, train_acc, val_loss, val_acc, wall_seconds, \
         images_per_sec, values_json, recorded_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (job_id, epoch) DO UPDATE SET attempt = excluded.attempt, \
         train_loss = excluded.train_loss, train_acc = excluded.train_acc, val_loss = excluded.val_loss, \
         val_acc = excluded.val_acc, wall_seconds = excluded.wall_seconds, \
         images_per_sec = excluded.images_per_sec, values_json = excluded.values_json, \
         recorded_at_ms = excluded.recorded_at_ms WHERE excluded.attempt > epochs.attempt RETURNING job_id",
    )
    .bind(fence.job_id)
    .bind(i64::from(m.epoch))
    .bind(i64::from(fence.attempt))
    .bind(m.train_loss)
    .bind(m.train_acc)
    .bind(m.val_loss)
    .bind(m.val_acc)
    .bind(m.wall_seconds)
    .bind(m.images_per_sec)
    .bind(values_json(&m.values)?)
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    if written.is_none() {
        return Ok(None);
    }
    Ok(Some(progress(conn, fence.job_id).await?))
}

/// Sets the job's `epochs_done` to its stored epochs and its best value of the objective to the
/// best of them in the objective's direction (a tie keeps the earlier epoch); returns its key.
async fn progress(conn: &mut PgConnection, job_id: i64) -> Result<JobKey> {
    let key: KeyRow = sqlx::query_as(
        "WITH v AS (SELECT e.epoch, j.objective_max AS maximize, \
           CASE j.objective WHEN 'val_acc' THEN e.val_acc WHEN 'val_loss' THEN e.val_loss \
             WHEN 'train_acc' THEN e.train_acc WHEN 'train_loss' THEN e.train_loss \
             WHEN 'images_per_sec' THEN e.images_per_sec WHEN 'wall_seconds' THEN e.wall_seconds \
             ELSE (e.values_json::jsonb ->> j.objective)::float8 END AS value \
           FROM epochs e JOIN jobs j ON j.id = e.job_id WHERE e.job_id = $1), \
         best AS (SELECT epoch, value FROM v WHERE value IS NOT NULL \
           ORDER BY CASE WHEN maximize THEN -value ELSE value END, epoch LIMIT 1) \
         UPDATE jobs SET epochs_done = (SELECT COUNT(*) FROM v), \
           best_value = COALESCE((SELECT value FROM best), 0), \
           best_epoch = COALESCE((SELECT epoch FROM best), 0) \
         WHERE id = $1 RETURNING id, sweep, variant, seed",
    )
    .bind(job_id)
    .fetch_one(conn)
    .await?;
    JobKey::try_from(key)
}
