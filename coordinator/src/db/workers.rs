//! The `workers` table: every worker that registered, its host, GPUs and slots, and when it was
//! last heard from (registration and heartbeats).

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, Executor, FromRow, Sqlite, SqliteConnection};
use sweep_proto::pb;

use crate::error::{Error, Result};

/// A registered worker and how many jobs it runs now.
#[derive(Debug, Clone, FromRow)]
pub struct WorkerRow {
    pub id: String,
    pub hostname: String,
    pub gpus_json: String,
    pub slots: i64,
    pub idle_slots: i64,
    pub registered_at_ms: i64,
    pub last_seen_ms: i64,
    pub running_jobs: i64,
}

impl WorkerRow {
    pub fn gpus(&self) -> Vec<String> {
        serde_json::from_str(&self.gpus_json).unwrap_or_default()
    }

    pub fn to_pb(&self) -> pb::Worker {
        pb::Worker {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            gpus: self.gpus(),
            slots: self.slots as u32,
            registered_at_ms: self.registered_at_ms,
            last_seen_ms: self.last_seen_ms,
            running_jobs: self.running_jobs as u32,
        }
    }
}

/// Records a worker; registering again replaces its host, GPUs and slots.
pub async fn register<'c, E>(
    ex: E,
    id: &str,
    hostname: &str,
    gpus: &[String],
    slots: u32,
    now_ms: i64,
) -> Result<()>
where
    E: Executor<'c, Database = Sqlite>,
{
    sqlx::query(
        "INSERT INTO workers (id, hostname, gpus_json, slots, idle_slots, registered_at_ms, last_seen_ms) \
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?5) ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, \
         gpus_json = excluded.gpus_json, slots = excluded.slots, idle_slots = excluded.idle_slots, \
         registered_at_ms = excluded.registered_at_ms, last_seen_ms = excluded.last_seen_ms",
    )
    .bind(id)
    .bind(hostname)
    .bind(serde_json::to_string(gpus)?)
    .bind(i64::from(slots))
    .bind(now_ms)
    .execute(ex)
    .await?;
    Ok(())
}

/// Notes that the worker was heard from; [`Error::NotFound`] if it never registered.
pub async fn touch<'c, E>(ex: E, id: &str, idle_slots: Option<u32>, now_ms: i64) -> Result<()>
where
    E: Executor<'c, Database = Sqlite>,
{
    let done = sqlx::query(
        "UPDATE workers SET last_seen_ms = ?2, idle_slots = COALESCE(?3, idle_slots) WHERE id = ?1",
    )
    .bind(id)
    .bind(now_ms)
    .bind(idle_slots.map(i64::from))
    .execute(ex)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("worker {id:?} (register it first)")));
    }
    Ok(())
}

/// [`touch`] for many workers at once (`(id, idle slots)`), with one multi-row UPDATE per chunk;
/// returns the ids that exist.
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
pub async fn list<'c, E>(ex: E) -> Result<Vec<WorkerRow>>
where
    E: Executor<'c, Database = Sqlite>,
{
    Ok(sqlx::query_as(
        "SELECT w.id, w.hostname, w.gpus_json, w.slots, w.idle_slots, w.registered_at_ms, w.last_seen_ms, \
         (SELECT COUNT(*) FROM jobs j WHERE j.worker_id = w.id AND j.state = 'running') AS running_jobs \
         FROM workers w ORDER BY w.last_seen_ms DESC, w.id",
    )
    .fetch_all(ex)
    .await?)
}
