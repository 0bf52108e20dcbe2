//! The worker side of the queue: registering, leasing, heartbeats, streamed epochs and the end of
//! an attempt, every write after the lease fenced by it; and the expiry of leases nobody renewed.

use std::future::Future;

use sweep_proto::domain::{
    CommandJob, EpochMetrics, EpochRecord, Fence, Job, JobAssignment, JobFields, JobId, JobKind,
    LeaseVerdict, SweepSpec, label_point,
};

use super::{Queue, Recorded};
use crate::auth::Principal;
use crate::db;
use crate::db::epochs::EpochWrite;
use crate::db::ingest::{HeartbeatWrite, LeaseWrite};
use crate::db::jobs::StoredJob;
use crate::db::workers::Registration;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::lifecycle;

/// Longest failure message kept (longer ones are truncated).
const MAX_ERROR_LEN: usize = 8192;

impl Queue {
    /// Records a worker, bound to `by`'s credential; registering again replaces its host, GPUs
    /// and slots. [`Error::PermissionDenied`] (and nothing changed) when the id is bound to
    /// another credential.
    pub async fn register(&self, mut worker: Registration, by: &Principal) -> Result<()> {
        worker.slots = worker.slots.max(1);
        let (owner, any_owner) = (by.owner().to_owned(), by.is_local());
        let id = worker.worker_id.clone();
        let recorded = self
            .db
            .write_single(move |mut tx| {
                Box::pin(async move { tx.register_worker(&worker, db::now_ms(), &owner, any_owner).await })
            })
            .await?;
        if !recorded {
            let id = sweep_proto::text::echo(&id);
            return Err(Error::PermissionDenied(format!("worker id {id} is bound to another credential")));
        }
        Ok(())
    }

    /// Leases the oldest queued job of `kinds` (sorted, distinct, not empty) to `worker_id` for
    /// [`Queue::lease_ttl`]; `None` when none is queued, [`Error::NotFound`] for a worker that
    /// never registered, [`Error::PermissionDenied`] when the id is bound to another credential
    /// than `by`'s.
    pub async fn lease(
        &self,
        worker_id: String,
        kinds: Vec<JobKind>,
        by: &Principal,
    ) -> Result<Option<JobAssignment>> {
        self.check_worker(&worker_id, by).await?;
        let lease = LeaseWrite {
            worker_id,
            kinds,
            lease_token: uuid::Uuid::new_v4().simple().to_string(),
            expires_at_ms: db::now_ms() + self.ttl_ms(),
        };
        let Some((stored, spec)) = self.db.lease(lease).await? else { return Ok(None) };
        let job = &stored.job;
        self.counters.leases_granted.inc();
        tracing::debug!(job = job.id.0, attempt = job.attempt, worker = ?job.worker_id, "job leased");
        self.events.jobs_changed([job]);
        Ok(Some(self.assignment(&stored, &spec)?))
    }

    /// Jobs of `kinds` (sorted, distinct, not empty) still queued, over every sweep, up to
    /// [`db::job_batches::QUEUED_COUNT_CAP`].
    pub async fn queued(&self, kinds: &[JobKind]) -> Result<u32> {
        let count = self.db.queued_jobs(kinds).await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    fn assignment(&self, stored: &StoredJob, spec: &SweepSpec) -> Result<JobAssignment> {
        let job = &stored.job;
        let lease_token = stored
            .lease_token
            .clone()
            .ok_or_else(|| Error::Internal(format!("job {} was leased without a token", job.id)))?;
        Ok(JobAssignment {
            fence: Fence { job_id: job.id.0, attempt: job.attempt, lease_token },
            sweep: job.sweep.clone(),
            variant: job.variant.clone(),
            seed: job.seed,
            epochs: job.epochs,
            batch_size: job.batch_size,
            learning_rate: job.learning_rate,
            data: spec.data,
            lease_ttl: self.lease_ttl,
            // The stored epochs are always 1..=epochs_done: every attempt writes its epochs in
            // order, starting at most one past them.
            epochs_stored: job.epochs_done,
            command: match stored.kind {
                JobKind::Builtin => None,
                JobKind::Command => Some(command_job(job, spec)?),
            },
        })
    }

    /// Notes that `worker_id` is alive with `idle_slots` free and renews each lease in `fences`
    /// that is still its job's running, unexpired one; says per fence, in order, what became of
    /// it. [`Error::NotFound`] (and nothing renewed) for a worker that never registered,
    /// [`Error::PermissionDenied`] when the id is bound to another credential than `by`'s.
    pub async fn heartbeat(
        &self,
        worker_id: String,
        idle_slots: u32,
        fences: Vec<Fence>,
        by: &Principal,
    ) -> Result<Vec<(JobId, LeaseVerdict)>> {
        self.check_worker(&worker_id, by).await?;
        let jobs: Vec<JobId> = fences.iter().map(Fence::job).collect();
        let beat = HeartbeatWrite { worker_id, idle_slots, fences, lease_ttl_ms: self.ttl_ms() };
        let verdicts = self.db.heartbeat(beat).await?;
        Ok(jobs.into_iter().zip(verdicts).collect())
    }

    /// Queues one streamed epoch for storage behind the ones queued before it and returns a
    /// future of its outcome, so a stream can queue the next one meanwhile. The epoch is stored
    /// if `fence` is its job's running, unexpired lease and the epoch is within the job's epochs;
    /// otherwise the future resolves to why not ([`Error::StaleLease`], [`Error::NotFound`],
    /// [`Error::InvalidInput`], or [`Error::PermissionDenied`] for a lease of another
    /// credential's worker).
    pub async fn record_epoch(
        &self,
        fence: Fence,
        metrics: EpochMetrics,
        by: &Principal,
    ) -> Result<impl Future<Output = Result<Recorded>> + Send + 'static> {
        self.check_fence(&fence, by).await?;
        let outcome = self.db.enqueue_epoch(EpochWrite { fence, metrics: metrics.clone() }).await?;
        let (events, stored) = (self.events.clone(), self.counters.epochs_stored.clone());
        Ok(async move {
            let Some(job) = outcome.await? else { return Ok(Recorded::Duplicate) };
            stored.inc();
            let record = EpochRecord {
                job_id: job.id,
                sweep: job.sweep,
                variant: job.variant,
                seed: job.seed,
                metrics,
            };
            events.publish(Event::EpochRecorded(record));
            Ok(Recorded::Stored)
        })
    }

    /// Completes the job `fence` holds once every epoch is stored ([`Error::Precondition`]
    /// naming the missing ones otherwise).
    pub async fn complete(&self, fence: Fence, by: &Principal) -> Result<Job> {
        self.check_fence(&fence, by).await?;
        let job: Job = self
            .db
            .write_single(move |mut tx| {
                Box::pin(async move {
                    let now = db::now_ms();
                    if let Some(stored) = tx.complete_fenced(&fence, now).await? {
                        return Ok(stored.job);
                    }
                    // Not completable: find out why (the checks below only read).
                    let stored = tx.fenced(&fence, now).await?;
                    let job = &stored.job;
                    if job.epochs_done < job.epochs {
                        let stored_epochs: Vec<u32> =
                            tx.epochs(job.id).await?.iter().map(|e| e.metrics.epoch).collect();
                        let missing: Vec<String> = (1..=job.epochs)
                            .filter(|e| !stored_epochs.contains(e))
                            .map(|e| e.to_string())
                            .collect();
                        return Err(Error::Precondition(format!(
                            "missing epochs: job {} stored {} of {} epochs (missing {})",
                            job.id,
                            job.epochs_done,
                            job.epochs,
                            abbreviated(&missing)
                        )));
                    }
                    Err(Error::Precondition(format!("job {} changed while being completed", job.id)))
                })
            })
            .await?;
        tracing::info!(job = job.id.0, best_value = job.best_value, "job succeeded");
        self.events.jobs_changed([&job]);
        Ok(job)
    }

    /// Ends the attempt `fence` holds with `error`: the job is requeued as the next attempt
    /// while attempts remain, else it fails for good, keeping the error.
    pub async fn fail(&self, fence: Fence, error: String, by: &Principal) -> Result<Job> {
        self.check_fence(&fence, by).await?;
        let error = if error.trim().is_empty() {
            "the worker reported a failure without a message".to_owned()
        } else {
            truncated(error, MAX_ERROR_LEN)
        };
        let job: Job = self
            .db
            .write_single(move |mut tx| {
                Box::pin(async move {
                    let now = db::now_ms();
                    let stored = tx.fenced(&fence, now).await?;
                    Ok(tx.transition(&stored, lifecycle::Event::Fail { error }, now).await?.job)
                })
            })
            .await?;
        tracing::warn!(job = job.id.0, state = %job.state, error = ?job.last_error, "job attempt failed");
        self.events.jobs_changed([&job]);
        Ok(job)
    }

    /// Ends the attempt `fence` holds because its worker is stopping: the job is queued again as a
    /// new attempt that does not count against its budget, keeping its stored epochs.
    pub async fn release(&self, fence: Fence, by: &Principal) -> Result<Job> {
        self.check_fence(&fence, by).await?;
        let job: Job = self
            .db
            .write_single(move |mut tx| {
                Box::pin(async move {
                    let now = db::now_ms();
                    let stored = tx.fenced(&fence, now).await?;
                    Ok(tx.transition(&stored, lifecycle::Event::Release, now).await?.job)
                })
            })
            .await?;
        tracing::info!(job = job.id.0, attempt = job.attempt, "job handed back by its worker");
        self.events.jobs_changed([&job]);
        Ok(job)
    }

    /// Gives every running lease a whole TTL from now: after a restart, workers could not renew
    /// them while the coordinator was down. Returns how many leases it extended.
    pub async fn grant_restart_grace(&self) -> Result<u64> {
        let until = db::now_ms() + self.ttl_ms();
        self.db
            .write_single(move |mut tx| Box::pin(async move { tx.extend_running_leases(until).await }))
            .await
    }

    /// Requeues (or fails, once attempts run out) every running job whose lease expired without
    /// a heartbeat, in chunks of `Limits::write_chunk` jobs per write; returns the jobs it changed.
    pub async fn reap_expired(&self) -> Result<Vec<Job>> {
        let chunk = self.limits.write_chunk.max(1);
        let mut changed = Vec::new();
        loop {
            let batch: Vec<Job> = self
                .db
                .write(move |mut tx| {
                    Box::pin(async move {
                        let now = db::now_ms();
                        let mut changed = Vec::new();
                        for stored in tx.expired(now, chunk).await? {
                            let next = tx.transition(&stored, lifecycle::Event::LeaseExpired, now).await?;
                            changed.push(next.job);
                        }
                        Ok(changed)
                    })
                })
                .await?;
            for job in &batch {
                tracing::info!(job = job.id.0, state = %job.state, attempt = job.attempt, "lease expired");
            }
            self.counters.leases_expired.inc_by(batch.len() as u64);
            self.events.jobs_changed(&batch);
            let last = batch.len() < chunk;
            changed.extend(batch);
            if last {
                return Ok(changed);
            }
        }
    }

    /// Checks that `fence` is its job's current, running, unexpired lease and that `by` may use
    /// it (for writes kept outside the database, such as checkpoints); returns the job.
    pub async fn holds_lease(&self, fence: &Fence, by: &Principal) -> Result<Job> {
        self.check_fence(fence, by).await?;
        Ok(self.db.fenced(fence, db::now_ms()).await?.job)
    }

    /// Checks that a write under `fence` comes from the credential its worker is bound to. Only a
    /// fence that is the job's current lease is checked: a stale one is refused by the write
    /// itself (FAILED_PRECONDITION), so a worker that lost its lease learns that.
    async fn check_fence(&self, fence: &Fence, by: &Principal) -> Result<()> {
        if by.is_local() {
            return Ok(());
        }
        match self.db.lease_holder(fence.job()).await? {
            Some(holder) if holder.holds(fence) && holder.owner.as_deref() != Some(by.owner()) => {
                Err(Error::PermissionDenied(format!(
                    "job {} is leased by a worker bound to another credential",
                    fence.job_id
                )))
            }
            _ => Ok(()),
        }
    }
}

fn abbreviated(items: &[String]) -> String {
    if items.len() <= 10 {
        items.join(", ")
    } else {
        format!("{}, … ({} in all)", items[..10].join(", "), items.len())
    }
}

fn truncated(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The command line of a leased command job: its parameter point (its label read back; no values
/// hold ',' or '=') rendered into the sweep's template.
fn command_job(job: &Job, spec: &SweepSpec) -> Result<CommandJob> {
    let command = spec
        .command
        .as_ref()
        .ok_or_else(|| Error::Internal(format!("job {} is a command job of a sweep without one", job.id)))?;
    let params = label_point(&job.variant);
    let fields = JobFields {
        seed: job.seed,
        job_id: job.id.0,
        attempt: job.attempt,
        epochs: job.epochs,
        sweep: &job.sweep,
    };
    Ok(CommandJob {
        argv: command.render(&params, &fields),
        workdir: command.workdir.clone(),
        env: command.env.clone(),
        timeout_seconds: command.timeout_seconds,
        params,
    })
}
