//! The `sweeps` table on PostgreSQL (see [`crate::db::sweeps`]).

use sqlx::{Executor, PgConnection, Postgres};
use sweep_proto::SweepSpec;

use crate::db::sweeps::SweepRow;
use crate::error::Result;

pub async fn get<'c, E>(ex: E, name: &str) -> Result<Option<SweepRow>>
where
    E: Executor<'c, Database = Postgres>,
{
    let row: Option<(String, String, i64, String)> =
        sqlx::query_as("SELECT name, spec_json, created_at_ms, owner FROM sweeps WHERE name = $1")
            .bind(name)
            .fetch_optional(ex)
            .await?;
    Ok(row.map(|(name, spec_json, created_at_ms, owner)| SweepRow { name, spec_json, created_at_ms, owner }))
}

/// [`get`] inside a write, after taking the transaction's lock on the name: two coordinators
/// submitting to one sweep at once then merge one after the other instead of overwriting each
/// other's spec (a row lock cannot cover a sweep that does not exist yet).
pub async fn get_locked(conn: &mut PgConnection, name: &str) -> Result<Option<SweepRow>> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    get(conn, name).await
}

/// Every sweep, oldest first.
pub async fn list<'c, E>(ex: E) -> Result<Vec<SweepRow>>
where
    E: Executor<'c, Database = Postgres>,
{
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT name, spec_json, created_at_ms, owner FROM sweeps ORDER BY created_at_ms, name",
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, spec_json, created_at_ms, owner)| SweepRow { name, spec_json, created_at_ms, owner })
        .collect())
}

/// Inserts a sweep owned by `owner`, or replaces the stored spec of an existing one.
pub async fn upsert<'c, E>(ex: E, spec: &SweepSpec, owner: &str, now_ms: i64) -> Result<()>
where
    E: Executor<'c, Database = Postgres>,
{
    let spec_json = serde_json::to_string(spec)?;
    sqlx::query(
        "INSERT INTO sweeps (name, spec_json, created_at_ms, owner) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET spec_json = excluded.spec_json",
    )
    .bind(spec.name.as_str())
    .bind(spec_json)
    .bind(now_ms)
    .bind(owner)
    .execute(ex)
    .await?;
    Ok(())
}
