//! The single writer: a task that owns the only connection allowed to write and commits queued
//! writes in batches (group commit). A general write that may fail after changing something runs
//! inside its own savepoint, so a failing write rolls back alone; results are handed back only after the batch's COMMIT reached the disk.
//! All epoch reports (heartbeats, lease requests) of a batch are handled together by
//! [`super::ingest::ingest`] ([`super::ingest::heartbeats`], [`super::ingest::leases`]) with a few
//! multi-row statements. The loop never waits for a timer: each transaction takes whatever is
//! queued when the previous one committed.

use futures::future::BoxFuture;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::epochs::EpochWrite;
use super::ingest::{self, Beat, HeartbeatWrite, Ingested, LeaseWrite, Leased};
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

/// A queued epoch report and where its outcome goes.
struct EpochMsg {
    write: EpochWrite,
    reply: oneshot::Sender<Ingested>,
}

/// A queued heartbeat and where its outcome goes.
struct BeatMsg {
    beat: HeartbeatWrite,
    reply: oneshot::Sender<Beat>,
}

/// A queued lease request and where its outcome goes.
struct LeaseMsg {
    lease: LeaseWrite,
    reply: oneshot::Sender<Leased>,
}

enum Msg {
    Op(Box<dyn WriteOp>),
    Epoch(EpochMsg),
    Beat(BeatMsg),
    Lease(LeaseMsg),
    Close(oneshot::Sender<()>),
}

/// Work taken from the queue for one transaction.
enum Item {
    Op(Box<dyn WriteOp>),
    Epoch(EpochMsg),
    Beat(BeatMsg),
    Lease(LeaseMsg),
}

impl Item {
    /// Answers without running (the writer is closing, or the transaction already failed).
    fn refuse(self, why: &str) -> Done {
        match self {
            Item::Op(op) => Done::Op(op),
            Item::Epoch(e) => Done::Replies(vec![deferred(e.reply, Err(Error::Unavailable(why.into())))]),
            Item::Beat(b) => Done::Replies(vec![deferred(b.reply, Err(Error::Unavailable(why.into())))]),
            Item::Lease(l) => Done::Replies(vec![deferred(l.reply, Err(Error::Unavailable(why.into())))]),
        }
    }
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

    /// Queues an epoch write; the returned future resolves once it is committed.
    pub(super) async fn enqueue_epoch(
        &self,
        write: EpochWrite,
    ) -> Result<impl Future<Output = Ingested> + Send + 'static> {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::Unavailable("the database writer is closed".into());
        self.tx.send(Msg::Epoch(EpochMsg { write, reply })).await.map_err(|_| gone())?;
        Ok(async move { rx.await.map_err(|_| gone())? })
    }

    /// Queues a heartbeat and waits until it is committed.
    pub(super) async fn heartbeat(&self, beat: HeartbeatWrite) -> Beat {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::Unavailable("the database writer is closed".into());
        self.tx.send(Msg::Beat(BeatMsg { beat, reply })).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Queues a lease request and waits until its claim (if any) is committed.
    pub(super) async fn lease(&self, lease: LeaseWrite) -> Leased {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::Unavailable("the database writer is closed".into());
        self.tx.send(Msg::Lease(LeaseMsg { lease, reply })).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
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
        let mut items = Vec::with_capacity(batch.len());
        for msg in batch.drain(..) {
            match msg {
                Msg::Op(op) => items.push(Item::Op(op)),
                Msg::Epoch(e) => items.push(Item::Epoch(e)),
                Msg::Beat(b) => items.push(Item::Beat(b)),
                Msg::Lease(l) => items.push(Item::Lease(l)),
                Msg::Close(done) => closing = Some(done),
            }
        }
        if !items.is_empty() {
            commit_batch(&mut conn, items).await;
        }
    }
    rx.close();
    let closed = Err("the database writer is closed".to_owned());
    while let Ok(msg) = rx.try_recv() {
        let item = match msg {
            Msg::Op(op) => Item::Op(op),
            Msg::Epoch(e) => Item::Epoch(e),
            Msg::Beat(b) => Item::Beat(b),
            Msg::Lease(l) => Item::Lease(l),
            Msg::Close(_) => continue,
        };
        item.refuse("the database writer is closed").finish(&closed);
    }
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

/// Stores a run of epoch reports. No savepoint: per-write rejections are outcomes, not statement
/// failures, so only a database error can fail the run, and that fails the whole transaction.
async fn run_epochs(conn: &mut SqliteConnection, msgs: Vec<EpochMsg>) -> (Done, Option<String>) {
    let (writes, replies): (Vec<EpochWrite>, Vec<_>) = msgs.into_iter().map(|m| (m.write, m.reply)).unzip();
    match ingest::ingest(conn, &writes, super::now_ms()).await {
        Ok(outcomes) => {
            (Done::Replies(replies.into_iter().zip(outcomes).map(|(r, o)| deferred(r, o)).collect()), None)
        }
        Err(e) => failed_run(replies, format!("storing epochs failed: {e}")),
    }
}

/// Records a run of heartbeats; like [`run_epochs`], only a database error fails it.
async fn run_beats(conn: &mut SqliteConnection, msgs: Vec<BeatMsg>) -> (Done, Option<String>) {
    let (beats, replies): (Vec<HeartbeatWrite>, Vec<_>) = msgs.into_iter().map(|m| (m.beat, m.reply)).unzip();
    match ingest::heartbeats(conn, &beats, super::now_ms()).await {
        Ok(outcomes) => {
            (Done::Replies(replies.into_iter().zip(outcomes).map(|(r, o)| deferred(r, o)).collect()), None)
        }
        Err(e) => failed_run(replies, format!("recording heartbeats failed: {e}")),
    }
}

/// Claims jobs for a run of lease requests; like [`run_epochs`], only a database error fails it.
async fn run_leases(conn: &mut SqliteConnection, msgs: Vec<LeaseMsg>) -> (Done, Option<String>) {
    let (leases, replies): (Vec<LeaseWrite>, Vec<_>) = msgs.into_iter().map(|m| (m.lease, m.reply)).unzip();
    match ingest::leases(conn, &leases, super::now_ms()).await {
        Ok(outcomes) => {
            (Done::Replies(replies.into_iter().zip(outcomes).map(|(r, o)| deferred(r, o)).collect()), None)
        }
        Err(e) => failed_run(replies, format!("leasing jobs failed: {e}")),
    }
}

fn failed_run<T: Send + 'static>(
    replies: Vec<oneshot::Sender<Result<T>>>,
    message: String,
) -> (Done, Option<String>) {
    let failed = replies.into_iter().map(|r| deferred(r, Err(Error::Unavailable(message.clone())))).collect();
    (Done::Replies(failed), Some(message))
}

/// Runs one batch in one transaction: the general writes in queue order, then every epoch report
/// of the batch together, then every heartbeat together, then every lease request. Moving the epochs and heartbeats behind
/// the general writes is safe: they were in flight at the same time, and each caller only hears
/// back after the COMMIT, so a write made after a caller's reply lands in a later batch.
async fn commit_batch(conn: &mut SqliteConnection, items: Vec<Item>) {
    let started = std::time::Instant::now();
    let size = items.len();
    let mut done = Vec::with_capacity(items.len());
    let (mut ops, mut epochs, mut beats, mut leases) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for item in items {
        match item {
            Item::Op(op) => ops.push(op),
            Item::Epoch(e) => epochs.push(e),
            Item::Beat(b) => beats.push(b),
            Item::Lease(l) => leases.push(l),
        }
    }
    let mut failure = exec(conn, "BEGIN IMMEDIATE").await.err();
    for mut op in ops {
        if failure.is_none() {
            failure = run_op(conn, &mut op).await.err();
        }
        done.push(Done::Op(op));
    }
    if !epochs.is_empty() {
        if failure.is_none() {
            let (d, error) = run_epochs(conn, epochs).await;
            done.push(d);
            failure = error;
        } else {
            done.extend(epochs.into_iter().map(|e| Item::Epoch(e).refuse("the write transaction failed")));
        }
    }
    if !beats.is_empty() {
        if failure.is_none() {
            let (d, error) = run_beats(conn, beats).await;
            done.push(d);
            failure = error;
        } else {
            done.extend(beats.into_iter().map(|b| Item::Beat(b).refuse("the write transaction failed")));
        }
    }
    if !leases.is_empty() {
        if failure.is_none() {
            let (d, error) = run_leases(conn, leases).await;
            done.push(d);
            failure = error;
        } else {
            done.extend(leases.into_iter().map(|l| Item::Lease(l).refuse("the write transaction failed")));
        }
    }
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
