//! The SQLite store: a pool of reader connections and the single writer task every write goes
//! through (group commit), with WAL checkpoints on a reader in the background.

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, SqliteConnection};

use super::{epochs, ingest, writer};
use crate::error::Result;

/// Reader connections in the pool (writes have their own connection).
const READERS: u32 = 4;

/// How often a reader connection copies the WAL back into the database file (a PASSIVE
/// checkpoint, which never blocks the writer). The writer's own automatic checkpoint is pushed out
/// to [`WRITER_AUTOCHECKPOINT_PAGES`], a backstop only: run inside a COMMIT it would stall every
/// queued write for a database-file write and fsync.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL pages after which the writer checkpoints itself (SQLite's default is 1,000).
const WRITER_AUTOCHECKPOINT_PAGES: &str = "10000";

/// The SQLite schema migrations in `/migrations`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A handle on a SQLite database; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
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

impl SqliteStore {
    /// Opens (creating if needed) the database at `url`, applies pending migrations and starts
    /// the writer task.
    pub async fn open(url: &str) -> Result<SqliteStore> {
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
        Ok(SqliteStore { reader, writer: writer::Writer::spawn(conn)? })
    }

    /// Writes queued for the single writer.
    pub fn writer_queue_depth(&self) -> usize {
        self.writer.queue_depth()
    }

    /// Writes per committed transaction, as the writer observes them.
    pub fn write_batch_sizes(&self) -> prometheus::Histogram {
        self.writer.batch_sizes()
    }

    /// Pool for reads (any number of concurrent readers in WAL mode).
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Runs `f` on the writer connection inside a transaction shared with other queued writes
    /// (see [`super::Database::write`]); `savepoint` false only for a write of one statement.
    pub async fn write<R, F>(&self, savepoint: bool, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        self.writer.write(savepoint, f).await
    }

    /// Claims a job through the writer's batched path (see [`ingest::leases`]).
    pub async fn lease(&self, lease: ingest::LeaseWrite) -> ingest::Leased {
        self.writer.enqueue::<writer::Leases>(lease).await?.await
    }

    /// Queues one epoch for the writer's batched path (see [`ingest::ingest`]).
    pub async fn enqueue_epoch(
        &self,
        write: epochs::EpochWrite,
    ) -> Result<impl std::future::Future<Output = ingest::Ingested> + Send + 'static> {
        self.writer.enqueue::<writer::Epochs>(write).await
    }

    /// Records a heartbeat through the writer's batched path (see [`ingest::heartbeats`]).
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
