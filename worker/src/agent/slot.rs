//! One worker slot: a long-lived loop that owns a [`JobRunner`] (so its device, resident data
//! set and autotuned kernels are paid for once per process), leases a job, trains it on a
//! blocking thread, streams each epoch as it ends, and completes or fails the job. A panic in
//! training fails the job, not the worker.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sweep_proto::connect::AuthChannel;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use sweep_proto::pb::{self, CompleteJobRequest, FailJobRequest, LeaseJobRequest, ReleaseJobRequest};
use sweep_proto::{EpochMetrics, Fence, JobAssignment};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::command::{StopRequest, run_command};
use super::command_checkpoints::Mirror;
use super::uploader::{UploadError, upload_epochs};
use super::{Commands, LeaseTable};
use crate::checkpoint::{CheckpointStore, Checkpointing, CoordinatorStore};
use crate::device::panic_message;
use crate::training::{EpochSink, JobOutcome, JobRunner, TrainJob};

/// Everything a slot needs besides its runner.
#[derive(Clone)]
pub struct SlotContext {
    pub client: WorkerServiceClient<AuthChannel>,
    pub worker_id: String,
    pub slot: u32,
    pub leases: Arc<LeaseTable>,
    pub shutdown: watch::Receiver<bool>,
    /// Mirror of `shutdown` readable from the blocking training thread.
    pub shutdown_flag: Arc<AtomicBool>,
    /// Where jobs checkpoint, and every how many epochs.
    pub checkpoints: Option<(JobStores, u32)>,
    /// Which jobs to lease (command jobs run the sweeps' own programs on this machine).
    pub commands: Commands,
}

/// The checkpoint store of each job a slot runs.
#[derive(Debug, Clone)]
pub enum JobStores {
    /// One store for every job (keyed by sweep and job).
    Shared(Arc<dyn CheckpointStore>),
    /// The coordinator, through the job's lease.
    Coordinator,
}

impl JobStores {
    fn for_job(&self, ctx: &SlotContext, fence: &Fence) -> Arc<dyn CheckpointStore> {
        match self {
            JobStores::Shared(store) => store.clone(),
            JobStores::Coordinator => {
                let runtime = tokio::runtime::Handle::current();
                Arc::new(CoordinatorStore::new(ctx.client.clone(), runtime, fence.clone()))
            }
        }
    }
}

/// Hands finished epochs to the uploader and tells the training loop when to stop: at once when
/// the job was cancelled or lost; at a worker's shutdown after the current epoch when the job
/// checkpoints (that epoch is kept), else at once.
struct ChannelSink {
    epochs: mpsc::UnboundedSender<EpochMetrics>,
    stop: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    checkpoints: bool,
}

impl EpochSink for ChannelSink {
    fn on_epoch(&mut self, metrics: EpochMetrics) {
        // The receiver only goes away once the lease is lost; the epoch is then unwanted.
        let _ = self.epochs.send(metrics);
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || (self.shutdown.load(Ordering::Relaxed) && !self.checkpoints)
    }

    fn stop_after_epoch(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    fn on_resumed(&mut self, epoch: u32) {
        info!(epoch, "continuing the job from its checkpoint");
    }
}

/// Runs the slot until shutdown. Returns the runner so callers may reuse it.
pub async fn run_slot(ctx: SlotContext, mut runner: Box<dyn JobRunner>) -> Box<dyn JobRunner> {
    let device = runner.device().to_string();
    info!(slot = ctx.slot, %device, "slot ready");
    let mut backoff = Backoff::default();
    let mut shutdown = ctx.shutdown.clone();
    while !*shutdown.borrow() {
        let kinds: Vec<i32> = match ctx.commands {
            Commands::Refuse => vec![pb::JobKind::Builtin as i32],
            Commands::Allow => vec![pb::JobKind::Builtin as i32, pb::JobKind::Command as i32],
            Commands::Only => vec![pb::JobKind::Command as i32],
        };
        let request = LeaseJobRequest { worker_id: ctx.worker_id.clone(), slot: ctx.slot, kinds };
        let lease = match ctx.client.clone().lease_job(request).await {
            Ok(response) => {
                backoff.reset();
                response.into_inner()
            }
            Err(status) => {
                let wait = backoff.next_delay();
                warn!(slot = ctx.slot, error = %status, ?wait, "lease failed; retrying");
                sleep_or_shutdown(wait, &mut shutdown).await;
                continue;
            }
        };
        let Some(job) = lease.job else {
            let wait = Duration::from_millis(u64::from(lease.retry_after_ms.clamp(100, 10_000)));
            sleep_or_shutdown(wait, &mut shutdown).await;
            continue;
        };
        match JobAssignment::try_from(job) {
            Ok(assignment) => runner = run_job(&ctx, runner, assignment).await,
            Err(e) => error!(slot = ctx.slot, error = %e, "coordinator sent an invalid job; skipping"),
        }
    }
    info!(slot = ctx.slot, "slot stopped");
    runner
}

async fn sleep_or_shutdown(wait: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => {}
    }
}

/// Trains one leased job and reports its end. Returns the runner for the next job.
async fn run_job(ctx: &SlotContext, runner: Box<dyn JobRunner>, job: JobAssignment) -> Box<dyn JobRunner> {
    let fence = job.fence.clone();
    info!(slot = ctx.slot, job = fence.job_id, attempt = fence.attempt, variant = %job.variant,
        seed = job.seed, epochs = job.epochs, "training job");
    let stop = ctx.leases.insert(fence.clone());
    let (epoch_tx, epoch_rx) = mpsc::unbounded_channel();
    let uploader = {
        let (client, fence, stop, flag) =
            (ctx.client.clone(), fence.clone(), stop.clone(), ctx.shutdown_flag.clone());
        tokio::spawn(async move {
            let result = upload_epochs(client, fence, epoch_rx, flag).await;
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            result
        })
    };
    let key = job_key(&job);
    let checkpointing = ctx.checkpoints.as_ref().map(|(stores, every)| Checkpointing {
        store: stores.for_job(ctx, &fence),
        key: key.clone(),
        every: *every,
        resume_at_most: job.epochs_stored,
    });
    let sink = ChannelSink {
        epochs: epoch_tx,
        stop: stop.clone(),
        shutdown: ctx.shutdown_flag.clone(),
        checkpoints: checkpointing.is_some(),
    };
    let (runner, outcome) = match job.command.clone() {
        Some(command) => {
            let flag = ctx.shutdown_flag.clone();
            let should_stop = || match (stop.load(Ordering::Relaxed), flag.load(Ordering::Relaxed)) {
                (true, _) => StopRequest::Now,
                (false, true) => StopRequest::Gracefully,
                (false, false) => StopRequest::No,
            };
            let device = *runner.device();
            let store = checkpointing.as_ref().map(|c| c.store.clone());
            let (dir, mirror) = command_directory(store, &key, job.epochs_stored).await;
            let (epochs, forwarder) = match &mirror {
                Some(mirror) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    (tx, Some(mirror.forward(rx, sink.epochs)))
                }
                None => (sink.epochs, None),
            };
            let outcome = run_command(&job, &command, &device, dir.as_deref(), epochs, &should_stop).await;
            if let Some(forwarder) = forwarder {
                let _ = forwarder.await;
            }
            (runner, outcome)
        }
        None => train_on_blocking_thread(runner, job, checkpointing, sink).await,
    };
    let upload = uploader.await.unwrap_or_else(|e| Err(UploadError::Rejected(e.to_string())));
    ctx.leases.remove(fence.job_id);

    match (outcome, upload) {
        (_, Err(UploadError::LeaseLost(why))) => {
            warn!(job = fence.job_id, %why, "lease lost or job cancelled; dropped it")
        }
        (_, Err(UploadError::Shutdown)) => info!(job = fence.job_id, "left to lease expiry at shutdown"),
        (Ok(JobOutcome::Completed { best_val_acc, best_epoch, epochs }), Ok(_)) => {
            // A command job's best is the coordinator's to find (by the sweep's objective).
            if best_epoch > 0 {
                info!(job = fence.job_id, best_val_acc, best_epoch, "job finished");
            } else {
                info!(job = fence.job_id, epochs, "job finished");
            }
            if finish(ctx, &fence, None).await
                && let Some((JobStores::Shared(store), _)) = &ctx.checkpoints
            {
                store.forget(&key);
            }
        }
        (Ok(JobOutcome::Stopped { epochs_done }), Ok(_)) if ctx.shutdown_flag.load(Ordering::Relaxed) => {
            info!(job = fence.job_id, epochs_done, "worker stopping: handing the job back");
            release(ctx, &fence).await;
        }
        (Ok(JobOutcome::Stopped { epochs_done }), Ok(_)) => {
            info!(job = fence.job_id, epochs_done, "job stopped (cancelled or lost)")
        }
        (Err(error), Ok(_)) => {
            error!(job = fence.job_id, %error, "training failed");
            finish(ctx, &fence, Some(error)).await;
        }
        (Ok(JobOutcome::Completed { .. }), Err(e)) => {
            finish(ctx, &fence, Some(format!("epoch upload failed: {e}"))).await;
        }
        (Ok(JobOutcome::Stopped { .. }), Err(e)) | (Err(_), Err(e)) => {
            warn!(job = fence.job_id, error = %e, "epoch upload failed")
        }
    }
    runner
}

/// A command job's checkpoint directory: its own in a shared store's directory, else a scratch one
/// mirrored to the store (the coordinator); none without checkpoints or when the scratch
/// directory cannot be made.
async fn command_directory(
    store: Option<Arc<dyn CheckpointStore>>,
    key: &str,
    epochs_stored: u32,
) -> (Option<std::path::PathBuf>, Option<Mirror>) {
    let Some(store) = store else { return (None, None) };
    if let Some(dir) = store.directory(key) {
        return (Some(dir), None);
    }
    match Mirror::prepare(store, key.to_owned(), epochs_stored).await {
        Ok(mirror) => (Some(mirror.path().to_owned()), Some(mirror)),
        Err(e) => {
            warn!(error = %e, "no checkpoint directory for the command: it starts over if it is requeued");
            (None, None)
        }
    }
}

/// Where a job's checkpoints are kept in a store.
fn job_key(job: &JobAssignment) -> String {
    format!("{}/job-{}", job.sweep, job.fence.job_id)
}

/// Runs `runner.run` on a blocking thread, turning a panic into an error text.
async fn train_on_blocking_thread(
    mut runner: Box<dyn JobRunner>,
    job: JobAssignment,
    checkpointing: Option<Checkpointing>,
    mut sink: ChannelSink,
) -> (Box<dyn JobRunner>, Result<JobOutcome, String>) {
    let task = tokio::task::spawn_blocking(move || {
        let train_job = match TrainJob::try_from(&job) {
            Ok(train_job) => train_job,
            Err(e) => return (runner, Err(e.to_string())),
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            runner.run_with_checkpoints(&train_job, checkpointing.as_ref(), &mut sink)
        }));
        let outcome = match result {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!("training panicked: {}", panic_message(panic.as_ref()))),
        };
        (runner, outcome)
    });
    match task.await {
        Ok(done) => done,
        Err(e) => panic!("training thread could not be joined: {e}"),
    }
}

/// Hands a job back at shutdown (requeued at once without using an attempt), trying for a few
/// seconds; if it cannot, the lease expires and the coordinator requeues the job anyway.
async fn release(ctx: &SlotContext, fence: &Fence) {
    let mut backoff = Backoff::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let request = ReleaseJobRequest { fence: Some(pb::Fence::from(fence.clone())) };
        match ctx.client.clone().release_job(request).await {
            Ok(_) => return info!(job = fence.job_id, "job handed back"),
            Err(s) if s.code() != tonic::Code::Unavailable => {
                return warn!(job = fence.job_id, error = %s, "coordinator refused to take the job back");
            }
            Err(s) if tokio::time::Instant::now() >= deadline => {
                return warn!(job = fence.job_id, error = %s, "could not hand the job back; its lease will expire");
            }
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

/// Completes (`error == None`) or fails the job, retrying while the coordinator is away.
/// Returns whether the coordinator took it.
async fn finish(ctx: &SlotContext, fence: &Fence, error: Option<String>) -> bool {
    let mut backoff = Backoff::default();
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let mut client = ctx.client.clone();
        let wire_fence = Some(pb::Fence::from(fence.clone()));
        let result = match &error {
            None => client.complete_job(CompleteJobRequest { fence: wire_fence }).await.map(|_| ()),
            Some(text) => {
                let request = FailJobRequest { fence: wire_fence, error: text.clone() };
                client.fail_job(request).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => return true,
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition
                        | tonic::Code::InvalidArgument
                        | tonic::Code::PermissionDenied
                ) =>
            {
                warn!(job = fence.job_id, error = %s, "coordinator refused the job's end");
                return false;
            }
            Err(s) => {
                let wait = backoff.next_delay();
                warn!(job = fence.job_id, error = %s, ?wait, "could not report the job's end; retrying");
                if *shutdown.borrow() {
                    return false;
                }
                sleep_or_shutdown(wait, &mut shutdown).await;
            }
        }
    }
}
