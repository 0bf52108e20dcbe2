//! The `workers` table on PostgreSQL (see [`crate::db::workers`]).

use sqlx::{Executor, Postgres};
use sweep_proto::domain::Worker;

use crate::db::workers::{Registration, WorkerRow, files_to_json};
use crate::error::Result;

/// Records a worker bound to `owner` (see [`crate::db::workers::register`]); false when the id
/// belongs to another credential.
pub async fn register<'c, E>(
    ex: E,
    worker: &Registration,
    now_ms: i64,
    owner: &str,
    any_owner: bool,
) -> Result<bool>
where
    E: Executor<'c, Database = Postgres>,
{
    let recorded: Option<String> = sqlx::query_scalar(
        "INSERT INTO workers (id, hostname, gpus_json, slots, idle_slots, registered_at_ms, last_seen_ms, owner, \
         data_files_json) VALUES ($1, $2, $3, $4, $4, $5, $5, $6, $8) ON CONFLICT (id) DO UPDATE SET \
         hostname = excluded.hostname, gpus_json = excluded.gpus_json, slots = excluded.slots, \
         idle_slots = excluded.idle_slots, data_files_json = excluded.data_files_json, \
         registered_at_ms = excluded.registered_at_ms, last_seen_ms = excluded.last_seen_ms, \
         owner = CASE WHEN workers.owner = '' THEN excluded.owner ELSE workers.owner END \
         WHERE $7 OR workers.owner = '' OR workers.owner = excluded.owner \
         RETURNING id",
    )
    .bind(&worker.worker_id)
    .bind(&worker.hostname)
    .bind(serde_json::to_string(&worker.gpus)?)
    .bind(i64::from(worker.slots))
    .bind(now_ms)
    .bind(owner)
    .bind(any_owner)
    .bind(files_to_json(&worker.data_files))
    .fetch_optional(ex)
    .await?;
    Ok(recorded.is_some())
}

/// The credential worker `id` is bound to (`""`: none), or `None` for an unknown worker.
pub async fn owner<'c, E>(ex: E, id: &str) -> Result<Option<String>>
where
    E: Executor<'c, Database = Postgres>,
{
    Ok(sqlx::query_scalar("SELECT owner FROM workers WHERE id = $1").bind(id).fetch_optional(ex).await?)
}

/// Notes that worker `id` was heard from (with its free slots, when given); false for an id that
/// never registered.
pub async fn touch<'c, E>(ex: E, id: &str, idle_slots: Option<u32>, now_ms: i64) -> Result<bool>
where
    E: Executor<'c, Database = Postgres>,
{
    let done = sqlx::query(
        "UPDATE workers SET last_seen_ms = $1, idle_slots = COALESCE($2, idle_slots) WHERE id = $3",
    )
    .bind(now_ms)
    .bind(idle_slots.map(i64::from))
    .bind(id)
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every worker with its running job count, most recently seen first.
pub async fn list<'c, E>(ex: E) -> Result<Vec<Worker>>
where
    E: Executor<'c, Database = Postgres>,
{
    let rows: Vec<WorkerRow> = sqlx::query_as(
        "SELECT w.id, w.hostname, w.gpus_json, w.slots, w.idle_slots, w.registered_at_ms, w.last_seen_ms, \
         w.data_files_json, (SELECT COUNT(*) FROM jobs j WHERE j.worker_id = w.id AND j.state = 'running') AS running_jobs \
         FROM workers w ORDER BY w.last_seen_ms DESC, w.id",
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter().map(WorkerRow::into_worker).collect()
}

/// (worker, images/s) summed over each worker's running jobs, from each job's last stored epoch.
pub async fn running_throughput<'c, E>(ex: E) -> Result<Vec<(String, f64)>>
where
    E: Executor<'c, Database = Postgres>,
{
    Ok(sqlx::query_as(
        "SELECT j.worker_id, SUM(e.images_per_sec) FROM jobs j JOIN epochs e ON e.job_id = j.id \
         WHERE j.state = 'running' AND j.worker_id IS NOT NULL AND e.images_per_sec IS NOT NULL \
         AND e.epoch = (SELECT MAX(epoch) FROM epochs WHERE job_id = j.id) \
         GROUP BY j.worker_id ORDER BY j.worker_id",
    )
    .fetch_all(ex)
    .await?)
}
