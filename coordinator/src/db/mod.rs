//! Durable storage: SQLite through sqlx, one module per table ([`sweeps`], [`jobs`], [`epochs`],
//! [`workers`]), the multi-row statements of the hot paths ([`job_batches`], [`ingest`]) and the
//! single-writer task ([`writer`]) every write goes through. It hands back its own rows or domain
//! types, never wire messages; statements fixed at compile time are checked against the schema
//! by `sqlx::query!` (offline data in `coordinator/.sqlx`, refreshed by `cargo sqlx prepare`).
//!
//! Reads use a small pool of reader connections; all writes are funnelled into one connection
//! owned by the writer task, which runs queued writes back to back in one transaction (group
//! commit; a savepoint for each write that asks for one). SQLite allows one writer at a time
//! anyway, so this removes `SQLITE_BUSY` retries and turns many small fsyncs into one. WAL
//! checkpoints run on a reader connection in the background, not inside the writer's COMMITs.

pub mod epochs;
pub mod ingest;
pub mod job_batches;
pub mod jobs;
pub mod sweeps;
pub mod workers;
mod writer;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, SqliteConnection};

use crate::error::{Error, Result};

/// Default database: `sweep.db` in the working directory, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://sweep.db?mode=rwc";

/// Reader connections in the pool (writes have their own connection).
const READERS: u32 = 4;

/// How often a reader connection copies the WAL back into the database file (a PASSIVE
/// checkpoint, which never blocks the writer). The writer's own automatic checkpoint is pushed out
/// to [`WRITER_AUTOCHECKPOINT_PAGES`], a backstop only: run inside a COMMIT it would stall every
/// queued write for a database-file write and fsync.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL pages after which the writer checkpoints itself (SQLite's default is 1,000).
const WRITER_AUTOCHECKPOINT_PAGES: &str = "10000";

/// The schema migrations in `/migrations`, applied by [`Database::open`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// An `Error::Internal` for a stored value that breaks the schema's rules (only a hand edit of
/// the database can store one; reads report it rather than guess).
fn corrupt(what: impl std::fmt::Display, column: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what}: the stored {column} is unreadable: {e}"))
}

/// Row counts of the multi-row statements: a chunk of `n` real rows is padded with rows that
/// match nothing up to the next of these shapes. Few shapes keep the statements in the prepared
/// statement cache (preparing a 256-row statement costs milliseconds, running it far less), and
/// one statement per chunk keeps round trips to the connection's thread down.
const SHAPES: [usize; 4] = [4, 16, 64, 256];

/// Splits `n` rows into chunks `(rows, shape)`: at most 256 real rows each, padded to `shape`.
pub(crate) fn padded_chunks(mut n: usize) -> impl Iterator<Item = (usize, usize)> {
    std::iter::from_fn(move || {
        let rows = n.min(SHAPES[SHAPES.len() - 1]);
        n -= rows;
        (rows > 0).then(|| (rows, SHAPES.into_iter().find(|s| *s >= rows).unwrap_or(rows)))
    })
}

/// A handle on the coordinator's database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    reader: SqlitePool,
    writer: writer::Writer,
}

/// Connection settings shared by the writer and the readers.
fn connect_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        // WAL: readers never block the writer and a commit is one append to the log.
        .journal_mode(SqliteJournalMode::Wal)
        // FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, so the last
        // transactions can vanish on power loss or an OS crash. Workers treat an EpochAck as
        // "stored" and will not resend, so an acknowledged row must be on disk before the ack:
        // FULL syncs the WAL on every commit. Group commit in the writer keeps that affordable.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        .statement_cache_capacity(256))
}

impl Database {
    /// Opens (creating if needed) the database at `url`, e.g. `sqlite://sweep.db?mode=rwc`,
    /// applies pending migrations and starts the writer task.
    pub async fn open(url: &str) -> Result<Database> {
        let options = connect_options(url)?;
        let mut conn =
            options.clone().pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES).connect().await?;
        MIGRATOR.run(&mut conn).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .connect_with(options)
            .await?;
        tokio::spawn(checkpoints(reader.clone()));
        Ok(Database { reader, writer: writer::Writer::spawn(conn)? })
    }

    /// Pool for reads (any number of concurrent readers in WAL mode).
    /// Writes queued for the single writer (a gauge for `/metrics`).
    pub fn writer_queue_depth(&self) -> usize {
        self.writer.queue_depth()
    }

    /// Writes per committed transaction, as the writer observes them.
    pub fn write_batch_sizes(&self) -> prometheus::Histogram {
        self.writer.batch_sizes()
    }

    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Runs `f` on the writer connection inside a transaction shared with other queued writes.
    /// If `f` fails, its own changes are rolled back (savepoint) and its error returned; its result
    /// is only returned once the transaction is committed to disk.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        self.writer.write(true, f).await
    }

    /// [`Database::write`] without the savepoint (two fewer statements): only for an `f` that
    /// changes at most one thing, with one statement, and fails only before or in that statement,
    /// so a failure leaves nothing to roll back.
    pub async fn write_single<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        self.writer.write(false, f).await
    }

    /// Claims a job for a LeaseJob call through the writer's batched path (see
    /// [`ingest::leases`]); returns once the claim is committed.
    pub async fn lease(&self, lease: ingest::LeaseWrite) -> ingest::Leased {
        self.writer.enqueue::<writer::Leases>(lease).await?.await
    }

    /// Queues one streamed epoch for the writer's batched path (see [`ingest::ingest`]; writes
    /// queued in order are stored in order) and returns a future of its outcome, so a stream can
    /// queue the next one meanwhile.
    pub async fn enqueue_epoch(
        &self,
        write: epochs::EpochWrite,
    ) -> Result<impl std::future::Future<Output = ingest::Ingested> + Send + 'static> {
        self.writer.enqueue::<writer::Epochs>(write).await
    }

    /// Records a heartbeat through the writer's batched path (see [`ingest::heartbeats`]);
    /// returns once it is committed.
    pub async fn heartbeat(&self, beat: ingest::HeartbeatWrite) -> ingest::Beat {
        self.writer.enqueue::<writer::Heartbeats>(beat).await?.await
    }

    /// Waits for queued writes, then closes every connection.
    pub async fn close(self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Runs a PASSIVE checkpoint every [`CHECKPOINT_EVERY`] until the pool is closed.
async fn checkpoints(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn padded_chunks_use_few_shapes_and_cover_n() {
        assert_eq!(super::padded_chunks(0).count(), 0);
        assert_eq!(super::padded_chunks(1).collect::<Vec<_>>(), vec![(1, 4)]);
        assert_eq!(super::padded_chunks(39).collect::<Vec<_>>(), vec![(39, 64)]);
        assert_eq!(super::padded_chunks(300).collect::<Vec<_>>(), vec![(256, 256), (44, 64)]);
        for n in 0..1000 {
            assert_eq!(super::padded_chunks(n).map(|(rows, _)| rows).sum::<usize>(), n);
            assert!(
                super::padded_chunks(n).all(|(rows, shape)| rows <= shape && super::SHAPES.contains(&shape))
            );
        }
    }

    #[tokio::test]
    async fn hot_statements_use_primary_keys() {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await.unwrap();
        super::MIGRATOR.run(&mut conn).await.unwrap();
        let statements = [
            super::epochs::insert_sql(16),
            super::job_batches::renew_sql(16),
            super::job_batches::progress_sql(16),
            super::job_batches::claim_sql(
                16,
                &[sweep_proto::domain::JobKind::Builtin, sweep_proto::domain::JobKind::Command],
            ),
        ];
        for sql in statements {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            let plan: Vec<String> = plan.into_iter().map(|row| row.3).collect();
            let plan = plan.join("; ");
            assert!(plan.contains("USING INTEGER PRIMARY KEY"), "{plan}");
            assert!(!plan.contains("jobs_by_lease") && !plan.contains("SCAN j"), "{plan}");
        }
    }
}
