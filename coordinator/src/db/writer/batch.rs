//! The batched kinds of write ([`Batch`]): epoch reports, heartbeats and lease requests, each run
//! of one kind in a transaction handled together by [`super::super::ingest`] with a few multi-row
//! statements, and their replies held back until the commit.

use sqlx::SqliteConnection;
use tokio::sync::oneshot;

use sweep_proto::domain::{LeaseVerdict, SweepSpec};

use super::Done;
use crate::db::epochs::EpochWrite;
use crate::db::ingest::{self, Beat, HeartbeatWrite, Ingested, JobKey, LeaseWrite, Leased};
use crate::db::jobs::StoredJob;
use crate::error::{Error, Result};

/// A kind of write the writer stores a whole run of at once, with a few multi-row statements
/// (fence checks included) instead of several statements per write.
pub(in crate::db) trait Batch: Sized + Send + 'static {
    type Write: Send + 'static;
    type Outcome: Send + 'static;
    /// What a run does, for the error that fails it.
    const WHAT: &'static str;
    /// Handles `writes` in order, one outcome per write. A per-write rejection is an outcome, not
    /// a failure: an `Err` is a database error, and it fails the whole transaction.
    async fn run(
        conn: &mut SqliteConnection,
        writes: &[Self::Write],
        now_ms: i64,
    ) -> Result<Vec<Result<Self::Outcome>>>;
    /// Where queued writes of this kind wait for the transaction.
    fn queue(runs: &mut Runs) -> &mut Vec<Queued<Self>>;
}

/// Streamed epoch reports ([`ingest::ingest`]).
pub(in crate::db) struct Epochs;
/// Heartbeats ([`ingest::heartbeats`]).
pub(in crate::db) struct Heartbeats;
/// LeaseJob calls ([`ingest::leases`]).
pub(in crate::db) struct Leases;

impl Batch for Epochs {
    type Write = EpochWrite;
    type Outcome = Option<JobKey>;
    const WHAT: &'static str = "storing epochs";
    async fn run(conn: &mut SqliteConnection, writes: &[EpochWrite], now_ms: i64) -> Result<Vec<Ingested>> {
        ingest::ingest(conn, writes, now_ms).await
    }
    fn queue(runs: &mut Runs) -> &mut Vec<Queued<Self>> {
        &mut runs.epochs
    }
}

impl Batch for Heartbeats {
    type Write = HeartbeatWrite;
    type Outcome = Vec<LeaseVerdict>;
    const WHAT: &'static str = "recording heartbeats";
    async fn run(conn: &mut SqliteConnection, writes: &[HeartbeatWrite], now_ms: i64) -> Result<Vec<Beat>> {
        ingest::heartbeats(conn, writes, now_ms).await
    }
    fn queue(runs: &mut Runs) -> &mut Vec<Queued<Self>> {
        &mut runs.beats
    }
}

impl Batch for Leases {
    type Write = LeaseWrite;
    type Outcome = Option<(StoredJob, std::sync::Arc<SweepSpec>)>;
    const WHAT: &'static str = "leasing jobs";
    async fn run(conn: &mut SqliteConnection, writes: &[LeaseWrite], now_ms: i64) -> Result<Vec<Leased>> {
        ingest::leases(conn, writes, now_ms).await
    }
    fn queue(runs: &mut Runs) -> &mut Vec<Queued<Self>> {
        &mut runs.leases
    }
}

/// A queued batched write and where its outcome goes.
pub(in crate::db) struct Queued<B: Batch> {
    pub(super) write: B::Write,
    pub(super) reply: oneshot::Sender<Result<B::Outcome>>,
}

/// A queued batched write of any kind.
pub(super) trait Pending: Send {
    /// Puts the write with the others of its kind.
    fn file(self: Box<Self>, runs: &mut Runs);
}

impl<B: Batch> Pending for Queued<B> {
    fn file(self: Box<Self>, runs: &mut Runs) {
        B::queue(runs).push(*self);
    }
}

/// The batched writes of one transaction, a run per kind, in the order the runs go.
#[derive(Default)]
pub(in crate::db) struct Runs {
    epochs: Vec<Queued<Epochs>>,
    beats: Vec<Queued<Heartbeats>>,
    leases: Vec<Queued<Leases>>,
}

impl Runs {
    /// Runs every non-empty run, unless an earlier statement of the transaction failed (then the
    /// writes are refused); the first failure is kept in `failure`.
    pub(super) async fn run(
        self,
        conn: &mut SqliteConnection,
        failure: &mut Option<String>,
        done: &mut Vec<Done>,
    ) {
        run_batch(conn, self.epochs, failure, done).await;
        run_batch(conn, self.beats, failure, done).await;
        run_batch(conn, self.leases, failure, done).await;
    }

    pub(super) fn len(&self) -> usize {
        self.epochs.len() + self.beats.len() + self.leases.len()
    }

    /// Answers every write without running it.
    pub(super) fn refuse(self, why: &str, done: &mut Vec<Done>) {
        done.push(Done::Replies(refused(self.epochs, why)));
        done.push(Done::Replies(refused(self.beats, why)));
        done.push(Done::Replies(refused(self.leases, why)));
    }
}

fn refused<B: Batch>(queued: Vec<Queued<B>>, why: &str) -> Vec<Deferred> {
    queued.into_iter().map(|q| deferred(q.reply, Err(Error::Unavailable(why.into())))).collect()
}

/// Runs one kind's writes together (see [`Batch::run`]).
async fn run_batch<B: Batch>(
    conn: &mut SqliteConnection,
    queued: Vec<Queued<B>>,
    failure: &mut Option<String>,
    done: &mut Vec<Done>,
) {
    if queued.is_empty() {
        return;
    }
    if failure.is_some() {
        done.push(Done::Replies(refused(queued, "the write transaction failed")));
        return;
    }
    let (writes, replies): (Vec<B::Write>, Vec<_>) = queued.into_iter().map(|q| (q.write, q.reply)).unzip();
    let replies = match B::run(conn, &writes, crate::db::now_ms()).await {
        Ok(outcomes) => replies.into_iter().zip(outcomes).map(|(r, o)| deferred(r, o)).collect(),
        Err(e) => {
            let message = format!("{} failed: {e}", B::WHAT);
            *failure = Some(message.clone());
            replies.into_iter().map(|r| deferred(r, Err(Error::Unavailable(message.clone())))).collect()
        }
    };
    done.push(Done::Replies(replies));
}

/// A reply held back until the commit.
pub(super) type Deferred = Box<dyn FnOnce(&Result<(), String>) + Send>;

pub(super) fn deferred<T: Send + 'static>(reply: oneshot::Sender<Result<T>>, result: Result<T>) -> Deferred {
    Box::new(move |commit| {
        let result = match (commit, result) {
            (Err(e), Ok(_)) => Err(Error::Unavailable(format!("commit failed: {e}"))),
            (_, result) => result,
        };
        let _ = reply.send(result);
    })
}
