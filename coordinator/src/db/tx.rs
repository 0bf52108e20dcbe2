//! [`Tx`]: the connection of one write in progress, on either backend, with the primitives the
//! queue's multi-statement writes are made of. Each method runs the backend's statement of the
//! same name, so a rule written against `Tx` holds on both.

use std::sync::Arc;

use sqlx::{PgConnection, SqliteConnection};
use sweep_proto::domain::{Fence, JobId, JobState, PlannedJob, StoredEpoch, SweepSpec};

use super::jobs::{self, StoredJob};
use super::sweeps::{self, SweepRow};
use super::workers::Registration;
use super::{epochs, job_batches, postgres, workers};
use crate::error::{Error, Result};
use crate::lifecycle::Event;

/// A write's connection, inside its transaction; on PostgreSQL with the id this process
/// announces its changes under ([`postgres::notify`]).
pub enum Tx<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection, Arc<str>),
}

/// `$sqlite` or `$pg`, with `$c` the backend's connection.
macro_rules! on {
    ($self:expr, |$c:ident| $sqlite:expr, $pg:expr) => {
        match $self {
            Tx::Sqlite($c) => $sqlite,
            Tx::Postgres($c, _) => $pg,
        }
    };
}

/// `$sqlite`, or on PostgreSQL `$pg` followed by the announcement of the jobs it changed.
macro_rules! changing {
    ($self:expr, |$c:ident| $sqlite:expr, $pg:expr, |$out:ident| $ids:expr) => {
        match $self {
            Tx::Sqlite($c) => $sqlite,
            Tx::Postgres($c, origin) => {
                let $out = $pg?;
                postgres::notify::jobs_changed($c, origin, &$ids).await?;
                Ok($out)
            }
        }
    };
}

impl Tx<'_> {
    pub async fn sweep(&mut self, name: &str) -> Result<Option<SweepRow>> {
        on!(self, |c| sweeps::get(&mut **c, name).await, postgres::sweeps::get_locked(c, name).await)
    }

    /// Like [`Tx::sweep`], but a missing sweep is [`Error::NotFound`].
    pub async fn require_sweep(&mut self, name: &str) -> Result<SweepRow> {
        self.sweep(name).await?.ok_or_else(|| Error::NotFound(format!("sweep {name:?}")))
    }

    /// Inserts a sweep owned by `owner`, or replaces the stored spec of an existing one.
    pub async fn upsert_sweep(&mut self, spec: &SweepSpec, owner: &str, now_ms: i64) -> Result<()> {
        on!(
            self,
            |c| sweeps::upsert(&mut **c, spec, owner, now_ms).await,
            postgres::sweeps::upsert(&mut **c, spec, owner, now_ms).await
        )
    }

    /// Inserts the jobs of `spec` the sweep does not have yet; returns the new ones.
    pub async fn insert_missing(
        &mut self,
        spec: &SweepSpec,
        planned: &[PlannedJob],
        now_ms: i64,
    ) -> Result<Vec<StoredJob>> {
        changing!(
            self,
            |c| job_batches::insert_missing(c, spec, planned, now_ms).await,
            postgres::jobs::insert_missing(c, spec, planned, now_ms).await,
            |new| new.iter().map(|s| s.job.id).collect::<Vec<_>>()
        )
    }

    /// Job `id`, locked for the rest of the write on PostgreSQL.
    pub async fn job(&mut self, id: JobId) -> Result<Option<StoredJob>> {
        on!(self, |c| jobs::get(&mut **c, id).await, postgres::jobs::get_for_update(c, id).await)
    }

    /// Like [`Tx::job`], but a missing job is [`Error::NotFound`].
    pub async fn require_job(&mut self, id: JobId) -> Result<StoredJob> {
        self.job(id).await?.ok_or_else(|| Error::NotFound(format!("job {id}")))
    }

    /// The job `fence` writes to (see [`jobs::check_fence`]).
    pub async fn fenced(&mut self, fence: &Fence, now_ms: i64) -> Result<StoredJob> {
        jobs::check_fence(self.require_job(fence.job()).await?, fence, now_ms)
    }

    /// Completes the job `fence` holds if every epoch is stored; `None` otherwise.
    pub async fn complete_fenced(&mut self, fence: &Fence, now_ms: i64) -> Result<Option<StoredJob>> {
        changing!(
            self,
            |c| jobs::complete_fenced(c, fence, now_ms).await,
            postgres::jobs::complete_fenced(c, fence, now_ms).await,
            |done| done.iter().map(|s| s.job.id).collect::<Vec<_>>()
        )
    }

    /// The job's stored epochs, by epoch.
    pub async fn epochs(&mut self, job: JobId) -> Result<Vec<StoredEpoch>> {
        on!(self, |c| epochs::for_job(&mut **c, job).await, postgres::epochs::for_job(&mut **c, job).await)
    }

    /// Moves `stored` along `event` as the lifecycle allows, guarded on the state and attempt read.
    pub async fn transition(&mut self, stored: &StoredJob, event: Event, now_ms: i64) -> Result<StoredJob> {
        changing!(
            self,
            |c| jobs::transition(c, stored, event, now_ms).await,
            postgres::jobs::transition(c, stored, event, now_ms).await,
            |next| [next.job.id]
        )
    }

    /// Moves every running lease's expiry to at least `until`; returns how many it moved.
    pub async fn extend_running_leases(&mut self, until: i64) -> Result<u64> {
        on!(
            self,
            |c| jobs::extend_running_leases(c, until).await,
            postgres::jobs::extend_running_leases(c, until).await
        )
    }

    /// Up to `limit` running jobs whose lease ran out by `now_ms`, oldest first (on PostgreSQL
    /// locked, skipping those another coordinator is reaping).
    pub async fn expired(&mut self, now_ms: i64, limit: usize) -> Result<Vec<StoredJob>> {
        on!(
            self,
            |c| jobs::expired(&mut **c, now_ms, limit).await,
            postgres::jobs::expired(c, now_ms, limit).await
        )
    }

    /// Cancels up to `limit` of the sweep's unfinished jobs; returns them.
    pub async fn cancel_some(&mut self, sweep: &str, limit: usize, now_ms: i64) -> Result<Vec<StoredJob>> {
        changing!(
            self,
            |c| jobs::cancel_some(c, sweep, limit, now_ms).await,
            postgres::jobs::cancel_some(c, sweep, limit, now_ms).await,
            |cancelled| cancelled.iter().map(|s| s.job.id).collect::<Vec<_>>()
        )
    }

    /// Up to `limit` of the sweep's jobs in `state`, oldest first.
    pub async fn in_state(&mut self, sweep: &str, state: JobState, limit: usize) -> Result<Vec<StoredJob>> {
        on!(
            self,
            |c| jobs::in_state(c, sweep, state, limit).await,
            postgres::jobs::in_state(c, sweep, state, limit).await
        )
    }

    /// Records a worker bound to `owner` (see [`workers::register`]); false when the id belongs
    /// to another credential.
    pub async fn register_worker(
        &mut self,
        worker: &Registration,
        now_ms: i64,
        owner: &str,
        any_owner: bool,
    ) -> Result<bool> {
        on!(
            self,
            |c| workers::register(&mut **c, worker, now_ms, owner, any_owner).await,
            postgres::workers::register(&mut **c, worker, now_ms, owner, any_owner).await
        )
    }
}
