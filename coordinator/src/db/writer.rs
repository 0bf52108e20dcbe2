//! The single writer: a task that owns the only connection allowed to write and commits queued
//! writes in batches (group commit). A general write that may fail after changing something runs
//! inside its own savepoint, so a failing write rolls back alone; results are handed back only
//! after the batch's COMMIT reached the disk. The hot writes (epoch reports, heartbeats, lease
//! requests) are [`Batch`] kinds: all writes of one kind in a transaction are handled together by
//! [`super::ingest`] with a few multi-row statements. The loop never waits for a timer: each
//! transaction takes whatever is queued when the previous one committed.

use futures::future::BoxFuture;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use sweep_proto::domain::{DataOptions, LeaseVerdict};

use super::epochs::EpochWrite;
use super::ingest::{self, Beat, HeartbeatWrite, Ingested, JobKey, LeaseWrite, Leased};
use super::jobs::StoredJob;
use crate::error::{Error, Result};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Queued writes before callers wait for room.
const QUEUE: usize = 8192;

/// A write queued for the writer task, with its result slot erased.
trait WriteOp: Send {
    /// Whether the write needs its own savepoint (it may fail after changing something).
    fn savepoint(&self) -> bool;
    /// Runs the write; true when it succeeded (its savepoint is then released, not rolled back).
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool>;
    /// Hands the result back, or the commit error if the batch did not commit.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct TypedOp<R, F> {
    savepoint: bool,
    f: Option<F>,
    result: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

impl<R, F> WriteOp for TypedOp<R, F>
where
    R: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<R>> + Send + 'static,
{
    fn savepoint(&self) -> bool {
        self.savepoint
    }

    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool> {
        let f = self.f.take();
        Box::pin(async move {
            let Some(f) = f else { return false };
            let result = f(conn).await;
            let ok = result.is_ok();
            self.result = Some(result);
            ok
        })
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let result = match (commit, self.result) {
            (_, None) => Err(Error::Unavailable("the write was not run".into())),
            (Ok(()), Some(result)) => result,
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), Some(Ok(_))) => Err(Error::Unavailable(format!("commit failed: {e}"))),
        };
        let _ = self.reply.send(result);
    }
}

/// A kind of write the writer stores a whole run of at once, with a few multi-row statements
/// (fence checks included) instead of several statements per write.
pub(super) trait Batch: Sized + Send + 'static {
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
pub(super) struct Epochs;
/// Heartbeats ([`ingest::heartbeats`]).
pub(super) struct Heartbeats;
/// LeaseJob calls ([`ingest::leases`]).
pub(super) struct Leases;

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
    type Outcome = Option<(StoredJob, DataOptions)>;
    const WHAT: &'static str = "leasing jobs";
    async fn run(conn: &mut SqliteConnection, writes: &[LeaseWrite], now_ms: i64) -> Result<Vec<Leased>> {
        ingest::leases(conn, writes, now_ms).await
    }
    fn queue(runs: &mut Runs) -> &mut Vec<Queued<Self>> {
        &mut runs.leases
    }
}

/// A queued batched write and where its outcome goes.
pub(super) struct Queued<B: Batch> {
    write: B::Write,
    reply: oneshot::Sender<Result<B::Outcome>>,
}

/// A queued batched write of any kind.
trait Pending: Send {
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
pub(super) struct Runs {
    epochs: Vec<Queued<Epochs>>,
    beats: Vec<Queued<Heartbeats>>,
    leases: Vec<Queued<Leases>>,
}

impl Runs {
    /// Runs every non-empty run, unless an earlier statement of the transaction failed (then the
    /// writes are refused); the first failure is kept in `failure`.
    async fn run(self, conn: &mut SqliteConnection, failure: &mut Option<String>, done: &mut Vec<Done>) {
        run_batch(conn, self.epochs, failure, done).await;
        run_batch(conn, self.beats, failure, done).await;
        run_batch(conn, self.leases, failure, done).await;
    }

    fn len(&self) -> usize {
        self.epochs.len() + self.beats.len() + self.leases.len()
    }

    /// Answers every write without running it.
    fn refuse(self, why: &str, done: &mut Vec<Done>) {
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
    let replies = match B::run(conn, &writes, super::now_ms()).await {
        Ok(outcomes) => replies.into_iter().zip(outcomes).map(|(r, o)| deferred(r, o)).collect(),
        Err(e) => {
            let message = format!("{} failed: {e}", B::WHAT);
            *failure = Some(message.clone());
            replies.into_iter().map(|r| deferred(r, Err(Error::Unavailable(message.clone())))).collect()
        }
    };
    done.push(Done::Replies(replies));
}

/// What callers send the writer task.
enum Msg {
    Op(Box<dyn WriteOp>),
    Batched(Box<dyn Pending>),
    Close(oneshot::Sender<()>),
}

/// A reply held back until the commit.
type Deferred = Box<dyn FnOnce(&Result<(), String>) + Send>;

fn deferred<T: Send + 'static>(reply: oneshot::Sender<Result<T>>, result: Result<T>) -> Deferred {
    Box::new(move |commit| {
        let result = match (commit, result) {
            (Err(e), Ok(_)) => Err(Error::Unavailable(format!("commit failed: {e}"))),
            (_, result) => result,
        };
        let _ = reply.send(result);
    })
}

/// Work done in the transaction, waiting for the commit to hand its results back.
enum Done {
    Op(Box<dyn WriteOp>),
    Replies(Vec<Deferred>),
}

impl Done {
    fn finish(self, commit: &Result<(), String>) {
        match self {
            Done::Op(op) => op.finish(commit.clone()),
            Done::Replies(replies) => replies.into_iter().for_each(|reply| reply(commit)),
        }
    }
}

/// Handle on the writer task.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    /// Starts the writer on its own thread with a single-threaded runtime: its many short
    /// awaits on the connection then never queue behind the server's request tasks.
    pub(super) fn spawn(conn: SqliteConnection) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || runtime.block_on(run(conn, rx)))?;
        Ok(Writer { tx })
    }

    /// Queues a general write (`savepoint`: run it in its own savepoint) and waits for its
    /// committed result.
    pub(super) async fn write<R, F>(&self, savepoint: bool, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<R>> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let op = TypedOp { savepoint, f: Some(f), result: None, reply };
        let gone = || Error::Unavailable("the database writer is closed".into());
        self.tx.send(Msg::Op(Box::new(op))).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Queues a batched write; the returned future resolves to its outcome once it is committed.
    /// Writes of one kind queued in order are handled in order.
    pub(super) async fn enqueue<B: Batch>(
        &self,
        write: B::Write,
    ) -> Result<impl Future<Output = Result<B::Outcome>> + Send + 'static> {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::Unavailable("the database writer is closed".into());
        self.tx.send(Msg::Batched(Box::new(Queued::<B> { write, reply }))).await.map_err(|_| gone())?;
        Ok(async move { rx.await.map_err(|_| gone())? })
    }

    pub(super) async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while closing.is_none() && rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (mut ops, mut runs) = (Vec::new(), Runs::default());
        for msg in batch.drain(..) {
            match msg {
                Msg::Op(op) => ops.push(op),
                Msg::Batched(write) => write.file(&mut runs),
                Msg::Close(done) => closing = Some(done),
            }
        }
        commit_batch(&mut conn, ops, runs).await;
    }
    rx.close();
    let why = "the database writer is closed";
    let (mut done, mut runs) = (Vec::new(), Runs::default());
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Op(op) => done.push(Done::Op(op)),
            Msg::Batched(write) => write.file(&mut runs),
            Msg::Close(_) => {}
        }
    }
    runs.refuse(why, &mut done);
    let closed = Err(why.to_owned());
    done.into_iter().for_each(|d| d.finish(&closed));
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the writer connection failed");
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), String> {
    sqlx::query(sql).execute(&mut *conn).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Runs one write, inside its own savepoint if it asked for one. A write without one validates
/// before it changes anything and changes at most one thing, so a failure leaves nothing behind.
async fn run_op(conn: &mut SqliteConnection, op: &mut Box<dyn WriteOp>) -> Result<(), String> {
    if !op.savepoint() {
        op.run(conn).await;
        return Ok(());
    }
    exec(conn, "SAVEPOINT op").await?;
    if !op.run(conn).await {
        exec(conn, "ROLLBACK TO op").await?;
    }
    exec(conn, "RELEASE op").await
}

/// Runs one batch in one transaction: the general writes in queue order, then each kind of
/// batched write as one run (epoch reports, heartbeats, lease requests). Moving the batched
/// writes behind the general ones is safe: they were in flight at the same time, and each caller
/// only hears back after the COMMIT, so a write made after a caller's reply lands in a later batch.
async fn commit_batch(conn: &mut SqliteConnection, ops: Vec<Box<dyn WriteOp>>, runs: Runs) {
    let started = std::time::Instant::now();
    let size = ops.len() + runs.len();
    if size == 0 {
        return;
    }
    let mut done = Vec::with_capacity(ops.len() + 3);
    let mut failure = exec(conn, "BEGIN IMMEDIATE").await.err();
    for mut op in ops {
        if failure.is_none() {
            failure = run_op(conn, &mut op).await.err();
        }
        done.push(Done::Op(op));
    }
    runs.run(conn, &mut failure, &mut done).await;
    let statements_took = started.elapsed();
    let commit = match failure {
        Some(e) => {
            tracing::error!(error = %e, "write transaction failed; rolling the batch back");
            let _ = exec(conn, "ROLLBACK").await;
            Err(e)
        }
        None => {
            let commit = exec(conn, "COMMIT").await;
            if let Err(e) = &commit {
                tracing::error!(error = %e, "commit failed");
                let _ = exec(conn, "ROLLBACK").await;
            }
            commit
        }
    };
    tracing::trace!(
        writes = size,
        statements_us = statements_took.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "write batch committed"
    );
    done.into_iter().for_each(|d| d.finish(&commit));
}
