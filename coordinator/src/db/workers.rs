//! The `workers` table: every worker that registered, its host, GPUs and slots, and when it was
//! last heard from (registration and heartbeats).

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, Executor, Sqlite, SqliteConnection};
use sweep_proto::domain::{DataFile, Worker};

use crate::error::Result;

/// A worker as it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub worker_id: String,
    pub hostname: String,
    pub gpus: Vec<String>,
    /// Jobs it runs at once (at least one is assumed).
    pub slots: u32,
    /// The data files it verified.
    pub data_files: Vec<DataFile>,
}

/// Records a worker bound to `owner`; registering again replaces its host, GPUs, slots and data
/// files. An id
/// bound to another credential is left alone unless `any_owner` (authentication off); an id
/// registered without authentication (owner `""`) is bound to the first credential that
/// registers it. Returns whether the worker was recorded (false: the id belongs to another
/// credential).
pub async fn register<'c, E>(
    ex: E,
    worker: &Registration,
    now_ms: i64,
    owner: &str,
    any_owner: bool,
) -> Result<bool>
where
    E: Executor<'c, Database = Sqlite>,
{
    let gpus_json = serde_json::to_string(&worker.gpus)?;
    let files_json = files_to_json(&worker.data_files);
    let recorded = sqlx::query_scalar!(
        "INSERT INTO workers (id, hostname, gpus_json, slots, idle_slots, registered_at_ms, last_seen_ms, owner, \
         data_files_json) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?5, ?6, ?8) ON CONFLICT (id) DO UPDATE SET \
         hostname = excluded.hostname, gpus_json = excluded.gpus_json, slots = excluded.slots, \
         idle_slots = excluded.idle_slots, data_files_json = excluded.data_files_json, \
         registered_at_ms = excluded.registered_at_ms, last_seen_ms = excluded.last_seen_ms, \
         owner = CASE WHEN workers.owner = '' THEN excluded.owner ELSE workers.owner END \
         WHERE ?7 OR workers.owner = '' OR workers.owner = excluded.owner \
         RETURNING id",
        worker.worker_id,
        worker.hostname,
        gpus_json,
        worker.slots,
        now_ms,
        owner,
        any_owner,
        files_json
    )
    .fetch_optional(ex)
    .await?;
    Ok(recorded.is_some())
}

/// The credential worker `id` is bound to (`""`: none), or `None` for an unknown worker.
pub async fn owner<'c, E>(ex: E, id: &str) -> Result<Option<String>>
where
    E: Executor<'c, Database = Sqlite>,
{
    Ok(sqlx::query_scalar!("SELECT owner FROM workers WHERE id = ?1", id).fetch_optional(ex).await?)
}

/// Notes that many workers were heard from (`(id, idle slots)`), with one multi-row UPDATE per
/// chunk; returns the ids that exist.
pub async fn touch_many(
    conn: &mut SqliteConnection,
    seen: &[(&str, u32)],
    now_ms: i64,
) -> Result<HashSet<String>> {
    let mut known = HashSet::with_capacity(seen.len());
    let mut rest = seen;
    for (rows, shape) in super::padded_chunks(seen.len()) {
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        let mut sql =
            String::from("UPDATE workers SET last_seen_ms = ?, idle_slots = v.column2 FROM (VALUES ");
        for i in 0..shape {
            sql.push_str(if i == 0 { "(?, ?)" } else { ", (?, ?)" });
        }
        sql.push_str(") AS v WHERE workers.id = v.column1 RETURNING id");
        let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(now_ms);
        for (id, idle) in chunk {
            query = query.bind(*id).bind(i64::from(*idle));
        }
        for _ in rows..shape {
            // Padding: no worker has an empty id.
            query = query.bind("").bind(0i64);
        }
        known.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(known)
}

/// Marks many workers seen (ids may repeat), with one UPDATE per chunk; returns the ids that exist.
pub async fn touch_ids(conn: &mut SqliteConnection, ids: &[&str], now_ms: i64) -> Result<HashSet<String>> {
    let mut known = HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(256) {
        let shape = super::padded_chunks(chunk.len()).next().map_or(4, |(_, shape)| shape);
        let mut sql = String::from("UPDATE workers SET last_seen_ms = ? WHERE id IN (VALUES ");
        for i in 0..shape {
            sql.push_str(if i == 0 { "(?)" } else { ", (?)" });
        }
        sql.push_str(") RETURNING id");
        let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(now_ms);
        for id in chunk {
            query = query.bind(*id);
        }
        for _ in chunk.len()..shape {
            // Padding: no worker has an empty id.
            query = query.bind("");
        }
        known.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(known)
}

/// Every worker with its running job count, most recently seen first.
pub async fn list<'c, E>(ex: E) -> Result<Vec<Worker>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let rows = sqlx::query!(
        r#"SELECT w.id, w.hostname, w.gpus_json, w.slots, w.idle_slots, w.registered_at_ms, w.last_seen_ms,
           w.data_files_json, (SELECT COUNT(*) FROM jobs j WHERE j.worker_id = w.id AND j.state = 'running')
               AS "running_jobs!: i64"
           FROM workers w ORDER BY w.last_seen_ms DESC, w.id"#
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|w| {
            WorkerRow {
                id: w.id,
                hostname: w.hostname,
                gpus_json: w.gpus_json,
                slots: w.slots,
                idle_slots: w.idle_slots,
                registered_at_ms: w.registered_at_ms,
                last_seen_ms: w.last_seen_ms,
                data_files_json: w.data_files_json,
                running_jobs: w.running_jobs,
            }
            .into_worker()
        })
        .collect()
}

/// A `workers` row with its running job count, as both backends read it.
#[derive(sqlx::FromRow)]
pub(crate) struct WorkerRow {
    pub id: String,
    pub hostname: String,
    pub gpus_json: String,
    pub slots: i64,
    pub idle_slots: i64,
    pub registered_at_ms: i64,
    pub last_seen_ms: i64,
    pub data_files_json: String,
    pub running_jobs: i64,
}

impl WorkerRow {
    pub(crate) fn into_worker(self) -> Result<Worker> {
        let w = self;
        let bad = |column: &str, e: &dyn std::fmt::Display| {
            super::corrupt(format_args!("worker {:?}", w.id), column, e)
        };
        Ok(Worker {
            gpus: serde_json::from_str(&w.gpus_json).map_err(|e| bad("gpus_json", &e))?,
            slots: u32::try_from(w.slots).map_err(|e| bad("slots", &e))?,
            running_jobs: u32::try_from(w.running_jobs).map_err(|e| bad("running job count", &e))?,
            idle_slots: u32::try_from(w.idle_slots).map_err(|e| bad("idle_slots", &e))?,
            data_files: files_from_json(&w.data_files_json).map_err(|e| bad("data_files_json", &e))?,
            id: w.id,
            hostname: w.hostname,
            registered_at_ms: w.registered_at_ms,
            last_seen_ms: w.last_seen_ms,
        })
    }
}

/// `[{"name": .., "md5": ..}]`, the column's format.
pub(crate) fn files_to_json(files: &[DataFile]) -> String {
    let rows: Vec<serde_json::Value> =
        files.iter().map(|f| serde_json::json!({ "name": f.name, "md5": f.md5 })).collect();
    serde_json::Value::Array(rows).to_string()
}

fn files_from_json(text: &str) -> std::result::Result<Vec<DataFile>, String> {
    #[derive(serde::Deserialize)]
    struct Row {
        name: String,
        md5: String,
    }
    let rows: Vec<Row> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(|r| DataFile { name: r.name, md5: r.md5 }).collect())
}

/// (worker, images/s) summed over each worker's running jobs, from each job's last stored epoch.
pub async fn running_throughput<'c, E>(ex: E) -> Result<Vec<(String, f64)>>
where
    E: Executor<'c, Database = Sqlite>,
{
    let rows = sqlx::query!(
        r#"SELECT j.worker_id AS "worker!: String", SUM(e.images_per_sec) AS "images_per_sec!: f64"
           FROM jobs j JOIN epochs e ON e.job_id = j.id
           WHERE j.state = 'running' AND j.worker_id IS NOT NULL
             AND e.epoch = (SELECT MAX(epoch) FROM epochs WHERE job_id = j.id)
           GROUP BY j.worker_id ORDER BY j.worker_id"#
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|r| (r.worker, r.images_per_sec)).collect())
}
