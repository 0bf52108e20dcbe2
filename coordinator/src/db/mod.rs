//! Durable storage behind one handle, [`Database`], on either of two backends chosen by the
//! database URL: SQLite (`sqlite://…`, the default; [`sqlite`]) or PostgreSQL (`postgres://…`;
//! [`postgres`]). It hands back its own rows or domain types, never wire messages.
//!
//! SQLite: one module per table ([`sweeps`], [`jobs`], [`epochs`], [`workers`]), the multi-row
//! statements of the hot paths ([`job_batches`], [`ingest`]) and the single-writer task
//! ([`writer`]) every write goes through: queued writes run back to back in one transaction
//! (group commit; a savepoint for each write that asks for one). Statements fixed at compile time
//! are checked against the schema by `sqlx::query!` (offline data in `coordinator/.sqlx`).
//!
//! PostgreSQL: a connection pool, one transaction per write, row locks (`FOR UPDATE SKIP LOCKED`
//! for claims and the reaper) so that several coordinators can share one database.
//!
//! A multi-statement write is a closure over a [`Tx`], whose methods are the same primitives on
//! both backends, so the queue's rules are written once.

mod copy;
pub mod epochs;
pub mod ingest;
pub mod job_batches;
pub mod jobs;
pub mod postgres;
pub mod sqlite;
pub mod sweeps;
mod tx;
pub mod workers;
mod writer;

pub use copy::Copied;
pub use tx::Tx;

use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use sweep_proto::domain::{Fence, JobId, JobKind, JobState, StoredEpoch, Worker};

use crate::error::{Error, Result};
use jobs::{LeaseHolder, StateTotals, StoredJob};
use postgres::PgStore;
use sqlite::SqliteStore;
use sweeps::SweepRow;

/// Default database: `sweep.db` in the working directory, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://sweep.db?mode=rwc";

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

/// Which backend a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of `url` by its scheme; [`Error::InvalidInput`]-style config error otherwise.
    pub fn of(url: &str) -> Result<Backend> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(Error::Config(format!(
                "database URL {:?}: the scheme must be sqlite:// or postgres://",
                redacted(url)
            ))),
        }
    }
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A handle on the coordinator's database; cheap to clone.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Dispatches a read to the backend's function of the same name, with its reader.
macro_rules! read {
    ($self:expr, $module:ident :: $f:ident ( $($arg:expr),* )) => {
        match $self {
            Database::Sqlite(s) => $module::$f(s.reader(), $($arg),*).await,
            Database::Postgres(p) => postgres::$module::$f(p.pool(), $($arg),*).await,
        }
    };
}

impl Database {
    /// Opens (creating if needed) the database at `url`, e.g. `sqlite://sweep.db?mode=rwc` or
    /// `postgres://user:password@host/sweeps`, and applies pending migrations.
    pub async fn open(url: &str) -> Result<Database> {
        Ok(match Backend::of(url)? {
            Backend::Sqlite => Database::Sqlite(SqliteStore::open(url).await?),
            Backend::Postgres => Database::Postgres(PgStore::open(url).await?),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Database::Sqlite(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite reader pool, for tools that run SQL of their own (`None` on PostgreSQL).
    pub fn sqlite_reader(&self) -> Option<&sqlx::SqlitePool> {
        match self {
            Database::Sqlite(s) => Some(s.reader()),
            Database::Postgres(_) => None,
        }
    }

    /// Writes queued for SQLite's single writer (a gauge for `/metrics`; 0 on PostgreSQL).
    pub fn writer_queue_depth(&self) -> usize {
        match self {
            Database::Sqlite(s) => s.writer_queue_depth(),
            Database::Postgres(_) => 0,
        }
    }

    /// Writes per committed transaction (SQLite's group commit; PostgreSQL commits each alone).
    pub fn write_batch_sizes(&self) -> prometheus::Histogram {
        match self {
            Database::Sqlite(s) => s.write_batch_sizes(),
            Database::Postgres(p) => p.write_batch_sizes(),
        }
    }

    /// Runs `f` in a transaction. On SQLite it shares the writer's transaction with other queued
    /// writes, inside a savepoint of its own; on PostgreSQL it is a transaction of its own. If
    /// `f` fails its changes are rolled back and its error returned; its result is returned only
    /// once the transaction is committed.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(Tx<'c>) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        self.write_with(true, f).await
    }

    /// [`Database::write`] without SQLite's savepoint (two fewer statements): only for an `f`
    /// that changes at most one thing, with one statement, and fails only before or in that
    /// statement, so a failure leaves nothing to roll back.
    pub async fn write_single<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(Tx<'c>) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        self.write_with(false, f).await
    }

    async fn write_with<R, F>(&self, savepoint: bool, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(Tx<'c>) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        match self {
            Database::Sqlite(s) => s.write(savepoint, move |conn| f(Tx::Sqlite(conn))).await,
            Database::Postgres(p) => {
                let origin = p.origin().clone();
                p.write(move |conn| f(Tx::Postgres(conn, origin))).await
            }
        }
    }

    /// Claims the oldest queued job of the request's kinds for a LeaseJob call; returns once the
    /// claim is committed.
    pub async fn lease(&self, lease: ingest::LeaseWrite) -> ingest::Leased {
        match self {
            Database::Sqlite(s) => s.lease(lease).await,
            Database::Postgres(p) => p.lease(lease).await,
        }
    }

    /// Queues one streamed epoch (writes queued in order are stored in order) and returns a
    /// future of its outcome, so a stream can queue the next one meanwhile.
    pub async fn enqueue_epoch(
        &self,
        write: epochs::EpochWrite,
    ) -> Result<BoxFuture<'static, ingest::Ingested>> {
        match self {
            Database::Sqlite(s) => Ok(Box::pin(s.enqueue_epoch(write).await?)),
            Database::Postgres(p) => {
                let outcome = p.record_epoch(write).await;
                Ok(Box::pin(std::future::ready(outcome)))
            }
        }
    }

    /// Records a heartbeat; returns once it is committed.
    pub async fn heartbeat(&self, beat: ingest::HeartbeatWrite) -> ingest::Beat {
        match self {
            Database::Sqlite(s) => s.heartbeat(beat).await,
            Database::Postgres(p) => p.heartbeat(beat).await,
        }
    }

    /// Waits for queued writes, then closes every connection.
    pub async fn close(self) {
        match self {
            Database::Sqlite(s) => s.close().await,
            Database::Postgres(p) => p.close().await,
        }
    }

    pub async fn sweep(&self, name: &str) -> Result<Option<SweepRow>> {
        read!(self, sweeps::get(name))
    }

    /// Like [`Database::sweep`], but a missing sweep is [`Error::NotFound`].
    pub async fn require_sweep(&self, name: &str) -> Result<SweepRow> {
        self.sweep(name).await?.ok_or_else(|| Error::NotFound(format!("sweep {name:?}")))
    }

    /// Every sweep, oldest first.
    pub async fn sweeps(&self) -> Result<Vec<SweepRow>> {
        read!(self, sweeps::list())
    }

    pub async fn job(&self, id: JobId) -> Result<Option<StoredJob>> {
        read!(self, jobs::get(id))
    }

    /// Like [`Database::job`], but a missing job is [`Error::NotFound`].
    pub async fn require_job(&self, id: JobId) -> Result<StoredJob> {
        self.job(id).await?.ok_or_else(|| Error::NotFound(format!("job {id}")))
    }

    /// Jobs of a sweep, optionally only those in `state` and/or of `variant`, by id.
    pub async fn jobs(
        &self,
        sweep: &str,
        state: Option<JobState>,
        variant: Option<&str>,
    ) -> Result<Vec<StoredJob>> {
        read!(self, jobs::list(sweep, state, variant))
    }

    /// The job `fence` writes to, if the fence is its current, running, unexpired lease (see
    /// [`jobs::check_fence`]).
    pub async fn fenced(&self, fence: &Fence, now_ms: i64) -> Result<StoredJob> {
        jobs::check_fence(self.require_job(fence.job()).await?, fence, now_ms)
    }

    /// Who holds job `id`'s lease (see [`jobs::lease_holder`]).
    pub async fn lease_holder(&self, id: JobId) -> Result<Option<LeaseHolder>> {
        read!(self, jobs::lease_holder(id))
    }

    /// Totals of a sweep's jobs per state.
    pub async fn totals_by_state(&self, sweep: &str) -> Result<Vec<StateTotals>> {
        read!(self, jobs::totals_by_state(sweep))
    }

    /// The job's stored epochs, by epoch.
    pub async fn epochs(&self, job: JobId) -> Result<Vec<StoredEpoch>> {
        read!(self, epochs::for_job(job))
    }

    /// Every stored epoch of the sweep's jobs, by job and epoch.
    pub async fn sweep_epochs(&self, sweep: &str) -> Result<Vec<(JobId, StoredEpoch)>> {
        read!(self, epochs::for_sweep(sweep))
    }

    /// Mean wall seconds of the sweep's stored epochs, `None` before the first.
    pub async fn mean_wall_seconds(&self, sweep: &str) -> Result<Option<f64>> {
        read!(self, epochs::mean_wall_seconds(sweep))
    }

    /// Stored epoch rows, of every sweep.
    pub async fn epoch_rows(&self) -> Result<i64> {
        let sql = "SELECT COUNT(*) FROM epochs";
        Ok(match self {
            Database::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(s.reader()).await?,
            Database::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p.pool()).await?,
        })
    }

    /// Jobs of `kinds` waiting in the queue, over every sweep (up to a cap: [`job_batches::queued_sql`]).
    pub async fn queued_jobs(&self, kinds: &[JobKind]) -> Result<i64> {
        let sql = sqlx::AssertSqlSafe(job_batches::queued_sql(kinds));
        Ok(match self {
            Database::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(s.reader()).await?,
            Database::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p.pool()).await?,
        })
    }

    /// Every worker with its running job count, most recently seen first.
    pub async fn workers(&self) -> Result<Vec<Worker>> {
        read!(self, workers::list())
    }

    /// The credential worker `id` is bound to (`""`: none), `None` for an unknown worker.
    pub async fn worker_owner(&self, id: &str) -> Result<Option<String>> {
        read!(self, workers::owner(id))
    }

    /// (worker, images/s) summed over each worker's running jobs.
    pub async fn running_throughput(&self) -> Result<Vec<(String, f64)>> {
        read!(self, workers::running_throughput())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_url_scheme_picks_the_backend_and_messages_hide_the_password() {
        use super::{Backend, redacted};
        assert_eq!(Backend::of("sqlite://sweep.db?mode=rwc").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgres://u:pw@db/s").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of("postgresql://db/s").unwrap(), Backend::Postgres);
        let err = Backend::of("mysql://u:secret@db/s").unwrap_err().to_string();
        assert!(err.contains("sqlite:// or postgres://") && !err.contains("secret"), "{err}");
        assert_eq!(redacted("postgres://u:secret@db:5432/s"), "postgres://u:***@db:5432/s");
        assert_eq!(redacted("postgres://u@db/s"), "postgres://u@db/s");
        assert_eq!(redacted("sqlite://sweep.db"), "sqlite://sweep.db");
    }

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
        super::sqlite::MIGRATOR.run(&mut conn).await.unwrap();
        let statements = [
            super::epochs::insert_sql(16),
            super::job_batches::renew_sql(16),
            super::job_batches::progress_sql(16),
            super::job_batches::best_epoch_sql(16),
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
