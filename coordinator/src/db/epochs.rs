//! The `epochs` table: one row per (job, epoch) holding that epoch's metrics and the attempt that
//! wrote it. A later attempt overwrites rows of earlier ones (the rows it does not reach stay: it
//! continued after them from a checkpoint); the same attempt re-sending an epoch changes nothing
//! (a duplicate).

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, Executor, Sqlite, SqliteConnection};
use sweep_proto::domain::{EpochMetrics, Fence, JobId, StoredEpoch};

use crate::error::Result;

/// One streamed epoch to store.
#[derive(Debug, Clone)]
pub struct EpochWrite {
    pub fence: Fence,
    pub metrics: EpochMetrics,
}

/// `NOT INDEXED`: see [`super::job_batches::claim_sql`] (the join must look jobs up by primary key).
pub(crate) fn insert_sql(rows: usize) -> String {
    // Anonymous `?` only: SQLite looks up a named parameter (`?NNN`) by walking a list, which
    // makes binding hundreds of them quadratic. Bind order: now, the rows, now again.
    let mut sql = String::from(
        "INSERT INTO epochs (job_id, epoch, attempt, train_loss, train_acc, val_loss, val_acc, wall_seconds, \
         images_per_sec, values_json, recorded_at_ms) \
         SELECT j.id, v.column2, j.attempt, v.column5, v.column6, v.column7, v.column8, v.column9, v.column10, \
         v.column11, ? FROM (VALUES ",
    );
    for row in 0..rows {
        sql.push_str(if row == 0 {
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        } else {
            ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        });
    }
    sql.push_str(
        ") AS v JOIN jobs j NOT INDEXED ON j.id = v.column1 AND j.state = 'running' AND j.attempt = v.column3 \
         AND j.lease_token = v.column4 AND j.lease_expires_at_ms > ? AND j.epochs >= v.column2 \
         WHERE true \
         ON CONFLICT (job_id, epoch) DO UPDATE SET attempt = excluded.attempt, \
         train_loss = excluded.train_loss, train_acc = excluded.train_acc, val_loss = excluded.val_loss, \
         val_acc = excluded.val_acc, wall_seconds = excluded.wall_seconds, \
         images_per_sec = excluded.images_per_sec, values_json = excluded.values_json, \
         recorded_at_ms = excluded.recorded_at_ms \
         WHERE excluded.attempt > epochs.attempt \
         RETURNING job_id, epoch",
    );
    sql
}

/// Stores, with a few multi-row statements, every write whose fence is its job's running,
/// unexpired lease (as of `now_ms`) and whose epoch is within the job's epoch count; a row of an
/// earlier attempt is overwritten. Returns, per write, whether it was stored; a write that was not
/// had a bad fence or epoch, or was a duplicate of this attempt (callers find out which).
pub async fn insert_batch(
    conn: &mut SqliteConnection,
    writes: &[EpochWrite],
    now_ms: i64,
) -> Result<Vec<bool>> {
    let mut stored = Vec::with_capacity(writes.len());
    let mut rest = writes;
    for (rows, shape) in super::padded_chunks(writes.len()) {
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        let mut query = sqlx::query_as::<_, (i64, i64)>(AssertSqlSafe(insert_sql(shape))).bind(now_ms);
        for w in chunk {
            let m = &w.metrics;
            query = query
                .bind(w.fence.job_id)
                .bind(i64::from(m.epoch))
                .bind(i64::from(w.fence.attempt))
                .bind(w.fence.lease_token.as_str())
                .bind(m.train_loss)
                .bind(m.train_acc)
                .bind(m.val_loss)
                .bind(m.val_acc)
                .bind(m.wall_seconds)
                .bind(m.images_per_sec)
                .bind(values_json(&m.values)?);
        }
        for _ in rows..shape {
            // Padding: job id 0 never exists, so the row joins nothing.
            query = query.bind(0i64).bind(1i64).bind(1i64).bind("");
            query = query.bind(0.0).bind(0.0).bind(0.0).bind(0.0).bind(0.0).bind(0.0).bind(None::<String>);
        }
        query = query.bind(now_ms);
        let mut written: HashSet<(i64, i64)> = query.fetch_all(&mut *conn).await?.into_iter().collect();
        // A (job, epoch) sent twice in one chunk is stored once: the first write gets it.
        stored.extend(chunk.iter().map(|w| written.remove(&(w.fence.job_id, i64::from(w.metrics.epoch)))));
    }
    Ok(stored)
}

/// One stored row, as both readers select it.
#[derive(sqlx::FromRow)]
pub(crate) struct EpochRow {
    job_id: i64,
    epoch: i64,
    attempt: i64,
    train_loss: Option<f64>,
    train_acc: Option<f64>,
    val_loss: Option<f64>,
    val_acc: Option<f64>,
    wall_seconds: f64,
    images_per_sec: Option<f64>,
    values_json: Option<String>,
}

impl EpochRow {
    pub(crate) fn into_stored(self) -> Result<(JobId, StoredEpoch)> {
        let job = JobId(self.job_id);
        let epoch = u32::try_from(self.epoch)
            .map_err(|err| super::corrupt(format_args!("job {job}"), "epoch", err))?;
        let attempt = u32::try_from(self.attempt)
            .map_err(|err| super::corrupt(format_args!("job {job}"), "attempt", err))?;
        let values = match self.values_json {
            Some(json) => serde_json::from_str(&json)
                .map_err(|err| super::corrupt(format_args!("job {job} epoch {epoch}"), "values_json", err))?,
            None => Default::default(),
        };
        let metrics = EpochMetrics {
            epoch,
            train_loss: self.train_loss,
            train_acc: self.train_acc,
            val_loss: self.val_loss,
            val_acc: self.val_acc,
            wall_seconds: self.wall_seconds,
            images_per_sec: self.images_per_sec,
            values,
        };
        Ok((job, StoredEpoch { metrics, attempt }))
    }
}

/// The job's stored epochs, by epoch, with the attempt that stored each (a later attempt may
/// have continued after an earlier one's epochs).
pub async fn for_job<'c, E>(ex: E, job: JobId) -> Result<Vec<StoredEpoch>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let rows = sqlx::query_as!(
        EpochRow,
        "SELECT job_id, epoch, attempt, train_loss, train_acc, val_loss, val_acc, wall_seconds, images_per_sec, \
         values_json FROM epochs WHERE job_id = ?1 ORDER BY epoch",
        job.0
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter().map(|row| row.into_stored().map(|(_, epoch)| epoch)).collect()
}

/// Every stored epoch of the sweep's jobs, by job and epoch, in one read (a page or report of
/// the whole sweep needs them all).
pub async fn for_sweep<'c, E>(ex: E, sweep: &str) -> Result<Vec<(JobId, StoredEpoch)>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let rows = sqlx::query_as!(
        EpochRow,
        r#"SELECT e.job_id AS "job_id!", e.epoch AS "epoch!", e.attempt AS "attempt!", e.train_loss, e.train_acc,
         e.val_loss, e.val_acc, e.wall_seconds AS "wall_seconds!", e.images_per_sec, e.values_json
         FROM epochs e JOIN jobs j ON j.id = e.job_id WHERE j.sweep = ?1 ORDER BY e.job_id, e.epoch"#,
        sweep
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter().map(EpochRow::into_stored).collect()
}

/// Mean wall seconds of the sweep's stored epochs (all attempts), `None` before the first.
pub async fn mean_wall_seconds<'c, E>(ex: E, sweep: &str) -> Result<Option<f64>>
where
    E: Executor<'c, Database = Sqlite>,
{
    Ok(sqlx::query_scalar!(
        "SELECT AVG(e.wall_seconds) FROM epochs e JOIN jobs j ON j.id = e.job_id WHERE j.sweep = ?1",
        sweep
    )
    .fetch_one(ex)
    .await?)
}

/// The named metrics of an epoch as stored: a JSON object, or NULL when there is none.
pub(crate) fn values_json(values: &std::collections::BTreeMap<String, f64>) -> Result<Option<String>> {
    if values.is_empty() { Ok(None) } else { Ok(Some(serde_json::to_string(values)?)) }
}
