//! The single writer: a task that owns the only connection allowed to write and commits queued
//! writes in batches (group commit). A general write that may fail after changing something runs
//! inside its own savepoint, so a failing write rolls back alone; results are handed back only
//! after the batch's COMMIT reached the disk. The hot writes (epoch reports, heartbeats, lease
//! requests) are [`Batch`] kinds: all writes of one kind in a transaction are handled together by
//! [`super::ingest`] with a few multi-row statements. The loop never waits for a timer: each
//! transaction takes whatever is queued when the previous one committed, except that general
//! writes past a small time budget wait for the next transaction.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

mod batch;

pub(super) use batch::{Batch, Epochs, Heartbeats, Leases};
use batch::{Deferred, Pending, Queued, Runs};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Queued writes before callers wait for room.
const QUEUE: usize = 8192;
/// Once this much of a transaction went by, the general writes not started yet go to the next
/// one: several large writes in flight at once (the chunks of big submissions or cancels) then
/// never add up to one long transaction. Batched writes (heartbeats, leases, epochs) that find
/// general writes queued get a transaction of their own every other time and share the others
/// with one general write only, so they wait behind one general write at most while general
/// writes still take turns.
const GENERAL_WRITES_BUDGET: Duration = Duration::from_millis(5);

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

/// What callers send the writer task.
enum Msg {
    Op(Box<dyn WriteOp>),
    Batched(Box<dyn Pending>),
    Close(oneshot::Sender<()>),
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
    /// Writes per committed transaction (exported as a metric).
    batch_sizes: prometheus::Histogram,
}

impl Writer {
    /// Starts the writer on its own thread with a single-threaded runtime: its many short
    /// awaits on the connection then never queue behind the server's request tasks.
    pub(super) fn spawn(conn: SqliteConnection) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let opts = prometheus::HistogramOpts::new(
            "sweep_db_write_batch_size",
            "Writes committed per write transaction",
        )
        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]);
        let batch_sizes = prometheus::Histogram::with_opts(opts).expect("valid histogram options");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let sizes = batch_sizes.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || runtime.block_on(run(conn, rx, sizes)))?;
        Ok(Writer { tx, batch_sizes })
    }

    /// Writes waiting for the writer task.
    pub(super) fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    pub(super) fn batch_sizes(&self) -> prometheus::Histogram {
        self.batch_sizes.clone()
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

async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>, sizes: prometheus::Histogram) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut carried: VecDeque<Box<dyn WriteOp>> = VecDeque::new();
    let mut closing = None;
    let mut general_ran = false;
    loop {
        if closing.is_some() {
            if carried.is_empty() {
                break;
            }
        } else if carried.is_empty() {
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                break;
            }
        } else {
            // Writes are waiting already: take what else is queued, without waiting for more.
            while batch.len() < MAX_BATCH
                && let Ok(msg) = rx.try_recv()
            {
                batch.push(msg);
            }
        }
        let mut runs = Runs::default();
        for msg in batch.drain(..) {
            match msg {
                Msg::Op(op) => carried.push_back(op),
                Msg::Batched(write) => write.file(&mut runs),
                Msg::Close(done) => closing = Some(done),
            }
        }
        let general = runs.len() == 0 || !general_ran;
        general_ran = commit_batch(&mut conn, &mut carried, general, runs, &sizes).await;
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

/// Runs one batch in one transaction: if `general`, general writes in queue order until
/// [`GENERAL_WRITES_BUDGET`] is spent (at least one, exactly one when batched writes wait; the
/// rest stay in `ops` for the next transaction), then each kind of batched write as one run
/// (epoch reports, heartbeats, lease requests). Returns whether it ran a general write. Moving the
/// batched writes behind the general ones is safe: they were in flight at the same time, and
/// each caller only hears back after the COMMIT, so a write made after a caller's reply lands in
/// a later batch.
async fn commit_batch(
    conn: &mut SqliteConnection,
    ops: &mut VecDeque<Box<dyn WriteOp>>,
    general: bool,
    runs: Runs,
    sizes: &prometheus::Histogram,
) -> bool {
    let started = Instant::now();
    let general = general && !ops.is_empty();
    if !general && runs.len() == 0 {
        return false;
    }
    let mut done = Vec::with_capacity(ops.len().min(MAX_BATCH) + 3);
    let mut failure = exec(conn, "BEGIN IMMEDIATE").await.err();
    let mut size = runs.len();
    let budget = if runs.len() > 0 { Duration::ZERO } else { GENERAL_WRITES_BUDGET };
    while general && let Some(mut op) = ops.pop_front() {
        if failure.is_none() {
            failure = run_op(conn, &mut op).await.err();
        }
        done.push(Done::Op(op));
        size += 1;
        if failure.is_none() && started.elapsed() >= budget {
            break;
        }
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
    sizes.observe(size as f64);
    done.into_iter().for_each(|d| d.finish(&commit));
    general
}
