//! The user side of the queue: submitting and cancelling sweeps and jobs, and the reads behind
//! the status, watch and report commands.

use sweep_proto::domain::{EpochMetrics, Job, JobId, JobState, LossVariant, SweepSpec, SweepSummary, Worker};

use super::{Queue, Submitted};
use crate::db::{self, epochs, jobs, sweeps, workers};
use crate::error::Result;
use crate::lifecycle::Event;

impl Queue {
    /// Creates the sweep `spec` names, or merges `spec` into the stored one (see
    /// [`sweeps::merge`]), and queues every job it does not have yet.
    pub async fn submit(&self, spec: SweepSpec) -> Result<Submitted> {
        let requested = spec.jobs().count() as u32;
        let name = spec.name.clone();
        let created: Vec<Job> = self
            .db
            .write(move |conn| {
                Box::pin(async move {
                    let now = db::now_ms();
                    let merged = match sweeps::get(&mut *conn, &spec.name).await? {
                        Some(row) => sweeps::merge(&row.spec()?, &spec)?,
                        None => spec.clone(),
                    };
                    sweeps::upsert(&mut *conn, &merged, now).await?;
                    let created = jobs::insert_missing(conn, &spec, now).await?;
                    Ok(created.into_iter().map(|stored| stored.job).collect())
                })
            })
            .await?;
        tracing::info!(sweep = %name, created = created.len(), "sweep submitted");
        self.events.jobs_changed(&created);
        let created = created.len() as u32;
        Ok(Submitted { created, existing: requested - created })
    }

    /// Cancels a queued or running job (a running job's worker learns it at its next heartbeat).
    pub async fn cancel(&self, id: JobId) -> Result<Job> {
        let job = self
            .db
            .write(move |conn| {
                Box::pin(async move {
                    let stored = jobs::require(&mut *conn, id).await?;
                    Ok(jobs::transition(conn, &stored, Event::Cancel, db::now_ms()).await?.job)
                })
            })
            .await?;
        tracing::info!(job = job.id.0, "job cancelled");
        self.events.jobs_changed([&job]);
        Ok(job)
    }

    /// Cancels every job of the sweep that has not ended; returns them.
    pub async fn cancel_sweep(&self, name: &str) -> Result<Vec<Job>> {
        let sweep = name.to_owned();
        let cancelled: Vec<Job> = self
            .db
            .write(move |conn| {
                Box::pin(async move {
                    sweeps::require(&mut *conn, &sweep).await?;
                    let now = db::now_ms();
                    let mut cancelled = Vec::new();
                    for stored in jobs::list(&mut *conn, &sweep, None, None).await? {
                        if !stored.job.state.is_terminal() {
                            cancelled.push(jobs::transition(conn, &stored, Event::Cancel, now).await?.job);
                        }
                    }
                    Ok(cancelled)
                })
            })
            .await?;
        tracing::info!(sweep = %name, cancelled = cancelled.len(), "sweep cancelled");
        self.events.jobs_changed(&cancelled);
        Ok(cancelled)
    }

    /// Where sweep `name` stands ([`crate::Error::NotFound`] if it does not exist).
    ///
    /// The ETA is the remaining epochs × the mean observed epoch time / max(1, running jobs).
    pub async fn summary(&self, name: &str) -> Result<SweepSummary> {
        let pool = self.db.reader();
        let row = sweeps::require(pool, name).await?;
        let mut summary = SweepSummary {
            spec: row.spec()?,
            created_at_ms: row.created_at_ms,
            queued: 0,
            running: 0,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            epochs_done: 0,
            epochs_total: 0,
            eta_seconds: None,
        };
        for t in jobs::totals_by_state(pool, name).await? {
            let (count, epochs) = match t.state {
                JobState::Queued => (&mut summary.queued, t.epochs),
                JobState::Running => (&mut summary.running, t.epochs),
                JobState::Succeeded => (&mut summary.succeeded, t.epochs),
                // An ended job will run no more epochs than it stored.
                JobState::Failed => (&mut summary.failed, t.epochs_done),
                JobState::Cancelled => (&mut summary.cancelled, t.epochs_done),
            };
            *count += t.jobs;
            summary.epochs_done += t.epochs_done;
            summary.epochs_total += epochs;
        }
        let remaining = summary.epochs_total.saturating_sub(summary.epochs_done);
        summary.eta_seconds = if remaining == 0 {
            Some(0.0)
        } else {
            let mean = epochs::mean_wall_seconds(pool, name).await?;
            mean.map(|mean| remaining as f64 * mean / f64::from(summary.running.max(1)))
        };
        Ok(summary)
    }

    /// The summary of every sweep, oldest first.
    pub async fn summaries(&self) -> Result<Vec<SweepSummary>> {
        let mut summaries = Vec::new();
        for row in sweeps::list(self.db.reader()).await? {
            summaries.push(self.summary(&row.name).await?);
        }
        Ok(summaries)
    }

    /// The jobs of sweep `name`, optionally only those in `state` and/or of `variant`, by id.
    pub async fn jobs(
        &self,
        name: &str,
        state: Option<JobState>,
        variant: Option<LossVariant>,
    ) -> Result<Vec<Job>> {
        let pool = self.db.reader();
        sweeps::require(pool, name).await?;
        let stored = jobs::list(pool, name, state, variant).await?;
        Ok(stored.into_iter().map(|stored| stored.job).collect())
    }

    /// A job and the epochs its current attempt stored.
    pub async fn job(&self, id: JobId) -> Result<(Job, Vec<EpochMetrics>)> {
        let pool = self.db.reader();
        let stored = jobs::require(pool, id).await?;
        Ok((stored.job, epochs::for_job(pool, id).await?))
    }

    /// Every registered worker, most recently seen first.
    pub async fn workers(&self) -> Result<Vec<Worker>> {
        workers::list(self.db.reader()).await
    }
}
