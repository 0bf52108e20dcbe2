//! The user side of the queue: submitting and cancelling sweeps and jobs, and the reads behind
//! the status, watch and report commands.

use std::sync::Arc;

use sweep_proto::InvalidInput;
use sweep_proto::domain::{
    Job, JobId, JobState, PlannedJob, RetryTarget, StoredEpoch, SweepSpec, SweepSummary, Worker,
};

use super::{Queue, Submitted};
use crate::auth::Principal;
use crate::db::{self, sweeps};
use crate::error::{Error, Result};
use crate::lifecycle::Event;

impl Queue {
    /// Creates the sweep `spec` names (owned by `by`), or merges `spec` into the stored one (see
    /// [`sweeps::merge`]; only the owner or an admin may), and queues every job it does not have
    /// yet.
    ///
    /// The sweep's spec is settled in one short write; the jobs follow in chunks of
    /// `Limits::write_chunk`, one write each, so a large submission never holds the writer for
    /// long. A submission cut short (the coordinator stopped) leaves some jobs missing; submitting
    /// the same spec again adds them.
    pub async fn submit(&self, spec: SweepSpec, by: &Principal) -> Result<Submitted> {
        let limits = self.limits;
        if spec.command.is_some() {
            by.check_command_sweep(&spec.name)?;
        }
        // Counted before the jobs are built: a command sweep's grid can be huge.
        let count = spec.job_count();
        if count > limits.max_jobs_per_submission as usize {
            return Err(InvalidInput::new(
                "spec",
                format!(
                    "{} jobs (variants × seeds) is more than the max_jobs_per_submission limit of {}; \
                     submit the sweep in parts",
                    count, limits.max_jobs_per_submission
                ),
            )
            .into());
        }
        let wanted: Vec<PlannedJob> = spec.jobs();
        let spec = Arc::new(spec);
        let (settled, owner) = (spec.clone(), by.clone());
        self.db
            .write(move |mut tx| {
                Box::pin(async move {
                    let merged = match tx.sweep(&settled.name).await? {
                        Some(row) => {
                            owner.check_sweep(&row.name, &row.owner)?;
                            sweeps::merge(&row.spec()?, &settled)?
                        }
                        None => (*settled).clone(),
                    };
                    let total = merged.job_count();
                    if total > limits.max_jobs_per_sweep as usize {
                        return Err(Error::ResourceExhausted(format!(
                            "sweep {:?} would hold {total} jobs, more than the max_jobs_per_sweep limit of {}",
                            merged.name, limits.max_jobs_per_sweep
                        )));
                    }
                    tx.upsert_sweep(&merged, owner.owner(), db::now_ms()).await
                })
            })
            .await?;
        let mut created = 0usize;
        for chunk in wanted.chunks(limits.write_chunk.max(1)) {
            let (spec, chunk) = (spec.clone(), chunk.to_vec());
            // One multi-row INSERT: it fails before changing anything, so no savepoint.
            let new: Vec<Job> = self
                .db
                .write_single(move |mut tx| {
                    Box::pin(async move {
                        let stored = tx.insert_missing(&spec, &chunk, db::now_ms()).await?;
                        Ok(stored.into_iter().map(|stored| stored.job).collect())
                    })
                })
                .await?;
            self.events.jobs_changed(&new);
            created += new.len();
        }
        tracing::info!(sweep = %spec.name, created, by = %by, "sweep submitted");
        Ok(Submitted { created: created as u32, existing: (wanted.len() - created) as u32 })
    }

    /// Cancels a queued or running job (a running job's worker learns it at its next heartbeat).
    /// Only the owner of the job's sweep or an admin may.
    pub async fn cancel(&self, id: JobId, by: &Principal) -> Result<Job> {
        let who = by.clone();
        let job = self
            .db
            .write(move |mut tx| {
                Box::pin(async move {
                    let stored = tx.require_job(id).await?;
                    let sweep = tx.require_sweep(&stored.job.sweep).await?;
                    who.check_sweep(&sweep.name, &sweep.owner)?;
                    Ok(tx.transition(&stored, Event::Cancel, db::now_ms()).await?.job)
                })
            })
            .await?;
        tracing::info!(job = job.id.0, by = %by, "job cancelled");
        self.events.jobs_changed([&job]);
        Ok(job)
    }

    /// Cancels every job of the sweep that has not ended (only its owner or an admin may); returns
    /// them. The jobs are cancelled in chunks of `Limits::write_chunk`, one write each, every
    /// chunk checking ownership again.
    pub async fn cancel_sweep(&self, name: &str, by: &Principal) -> Result<Vec<Job>> {
        let chunk = self.limits.write_chunk.max(1);
        let mut cancelled = Vec::new();
        loop {
            let (sweep, who) = (name.to_owned(), by.clone());
            let batch: Vec<Job> = self
                .db
                .write(move |mut tx| {
                    Box::pin(async move {
                        let row = tx.require_sweep(&sweep).await?;
                        who.check_sweep(&row.name, &row.owner)?;
                        let done = tx.cancel_some(&sweep, chunk, db::now_ms()).await?;
                        Ok(done.into_iter().map(|stored| stored.job).collect())
                    })
                })
                .await?;
            self.events.jobs_changed(&batch);
            let last = batch.len() < chunk;
            cancelled.extend(batch);
            if last {
                break;
            }
        }
        tracing::info!(sweep = %name, cancelled = cancelled.len(), by = %by, "sweep cancelled");
        Ok(cancelled)
    }

    /// Queues failed or cancelled jobs again ([`Event::Retry`]), each as a new attempt with a
    /// fresh budget of the sweep's `max_attempts`: one job, or the sweep's jobs in the target's
    /// states; returns them. Only the sweep's owner or an admin may. A sweep's jobs are retried
    /// in chunks of `Limits::write_chunk`, one write each, every chunk checking ownership again.
    pub async fn retry(&self, target: RetryTarget, by: &Principal) -> Result<Vec<Job>> {
        let chunk = self.limits.write_chunk.max(1);
        let mut retried = Vec::new();
        match &target {
            RetryTarget::Job(id) => retried = self.retry_some(RetryPick::Job(*id), by).await?,
            RetryTarget::Sweep { name, .. } => {
                for state in target.states() {
                    loop {
                        let pick = RetryPick::State { sweep: name.clone(), state, limit: chunk };
                        let batch = self.retry_some(pick, by).await?;
                        let last = batch.len() < chunk;
                        retried.extend(batch);
                        if last {
                            break;
                        }
                    }
                }
            }
        }
        tracing::info!(?target, retried = retried.len(), by = %by, "jobs retried");
        Ok(retried)
    }

    /// One write of [`Queue::retry`].
    async fn retry_some(&self, pick: RetryPick, by: &Principal) -> Result<Vec<Job>> {
        let who = by.clone();
        let retried: Vec<Job> = self
            .db
            .write(move |mut tx| {
                Box::pin(async move {
                    let (sweep, picked) = match pick {
                        RetryPick::Job(id) => {
                            let stored = tx.require_job(id).await?;
                            (stored.job.sweep.clone(), vec![stored])
                        }
                        RetryPick::State { sweep, state, limit } => {
                            let picked = tx.in_state(&sweep, state, limit).await?;
                            (sweep, picked)
                        }
                    };
                    let row = tx.require_sweep(&sweep).await?;
                    who.check_sweep(&row.name, &row.owner)?;
                    let event = Event::Retry { budget: row.spec()?.max_attempts };
                    let mut retried = Vec::with_capacity(picked.len());
                    for stored in &picked {
                        retried.push(tx.transition(stored, event.clone(), db::now_ms()).await?.job);
                    }
                    Ok(retried)
                })
            })
            .await?;
        self.events.jobs_changed(&retried);
        Ok(retried)
    }

    /// Where sweep `name` stands ([`crate::Error::NotFound`] if it does not exist).
    ///
    /// The ETA is the remaining epochs × the mean observed epoch time / max(1, running jobs).
    pub async fn summary(&self, name: &str) -> Result<SweepSummary> {
        let row = self.db.require_sweep(name).await?;
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
        for t in self.db.totals_by_state(name).await? {
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
            let mean = self.db.mean_wall_seconds(name).await?;
            mean.map(|mean| remaining as f64 * mean / f64::from(summary.running.max(1)))
        };
        Ok(summary)
    }

    /// The summary of every sweep, oldest first.
    pub async fn summaries(&self) -> Result<Vec<SweepSummary>> {
        let mut summaries = Vec::new();
        for row in self.db.sweeps().await? {
            summaries.push(self.summary(&row.name).await?);
        }
        Ok(summaries)
    }

    /// The jobs of sweep `name`, optionally only those in `state` and/or of `variant`, by id.
    pub async fn jobs(&self, name: &str, state: Option<JobState>, variant: Option<&str>) -> Result<Vec<Job>> {
        self.db.require_sweep(name).await?;
        let stored = self.db.jobs(name, state, variant).await?;
        Ok(stored.into_iter().map(|stored| stored.job).collect())
    }

    /// A job and the epochs its current attempt stored.
    pub async fn job(&self, id: JobId) -> Result<(Job, Vec<StoredEpoch>)> {
        let stored = self.db.require_job(id).await?;
        Ok((stored.job, self.db.epochs(id).await?))
    }

    /// The sweep's jobs, each with the epochs stored for it, in one pass over the epochs.
    pub async fn jobs_with_epochs(&self, name: &str) -> Result<Vec<(Job, Vec<StoredEpoch>)>> {
        let jobs = self.jobs(name, None, None).await?;
        let mut epochs: std::collections::HashMap<JobId, Vec<StoredEpoch>> = Default::default();
        for (job, epoch) in self.db.sweep_epochs(name).await? {
            epochs.entry(job).or_default().push(epoch);
        }
        Ok(jobs
            .into_iter()
            .map(|job| {
                let stored = epochs.remove(&job.id).unwrap_or_default();
                (job, stored)
            })
            .collect())
    }

    /// Every registered worker, most recently seen first.
    pub async fn workers(&self) -> Result<Vec<Worker>> {
        self.db.workers().await
    }
}

/// The jobs one write of [`Queue::retry`] takes.
enum RetryPick {
    Job(JobId),
    State { sweep: String, state: JobState, limit: usize },
}
