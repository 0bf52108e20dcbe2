//! One worker slot: a long-lived loop that owns a [`JobRunner`] (so its device, resident data
//! set and autotuned kernels are paid for once per process), leases a job (or, fusing, up to
//! `fuse` compatible built-in jobs trained as one step), trains on the slot's own thread, streams
//! each job's epochs as they end, and completes or fails each job. A panic in training fails the
//! jobs, not the worker.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sweep_proto::connect::AuthChannel;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use sweep_proto::pb::{self, LeaseJobRequest};
use sweep_proto::{EpochMetrics, Fence, JobAssignment};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::command::{StopRequest, run_command};
use super::command_checkpoints::Mirror;
use super::ending::{Tracked, conclude, release};
use super::share::{SlotBoard, group_share};
use super::slot_thread::SlotThread;
use super::uploader::upload_epochs;
use super::{Commands, LeaseTable};
use crate::checkpoint::{CheckpointStore, Checkpointing, CoordinatorStore};
use crate::device::panic_message;
use crate::training::{
    EpochSink, FuseChoice, FuseTarget, FusedRun, JobOutcome, JobRunner, TrainJob, fuses_with,
};

/// Everything a slot needs besides its runner.
#[derive(Clone)]
pub struct SlotContext {
    pub client: WorkerServiceClient<AuthChannel>,
    pub worker_id: String,
    pub slot: u32,
    pub leases: Arc<LeaseTable>,
    /// Which of the worker's slots are training (a fusing slot leaves the idle ones a share).
    pub board: Arc<SlotBoard>,
    pub shutdown: watch::Receiver<bool>,
    /// Mirror of `shutdown` readable from the blocking training thread.
    pub shutdown_flag: Arc<AtomicBool>,
    /// Where jobs checkpoint, and when.
    pub checkpoints: Option<(JobStores, crate::checkpoint::Cadence)>,
    /// Which jobs to lease (command jobs run the sweeps' own programs on this machine).
    pub commands: Commands,
    /// How many built-in jobs of one shape train as one fused step.
    pub fuse: FuseChoice,
    /// The device, kernels and memory of the slot's runner (what `fuse` chooses by).
    pub target: FuseTarget,
    /// Where the runner works on the device: always this one thread, so always one stream.
    pub thread: Arc<SlotThread>,
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
        // Counted before this slot trains: it is one of the idle slots the queue is shared by.
        let idle = ctx.board.idle();
        let _training = ctx.board.training();
        match JobAssignment::try_from(job) {
            Ok(assignment) => {
                let group = fill_group(&ctx, assignment, (lease.queued, idle)).await;
                runner = run_job(&ctx, runner, group).await;
            }
            Err(e) => error!(slot = ctx.slot, error = %e, "coordinator sent an invalid job; skipping"),
        }
    }
    info!(slot = ctx.slot, "slot stopped");
    runner
}

pub(super) async fn sleep_or_shutdown(wait: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => {}
    }
}

/// The leased `first` job and, when it is built in and the slot's group size for it
/// ([`FuseChoice::group_size`]) is more than one, more queued built-in jobs that can train in
/// one step with it ([`fuses_with`]), up to that size or the slot's share of the jobs `queued`
/// after `first` among the worker's `idle` slots ([`group_share`]). The first leased job that
/// does not fit is handed back for the next group.
async fn fill_group(
    ctx: &SlotContext,
    first: JobAssignment,
    (queued, idle): (Option<u32>, u32),
) -> Vec<JobAssignment> {
    let (lead, size) = match TrainJob::try_from(&first) {
        Ok(lead) if first.command.is_none() => {
            let size = ctx.fuse.group_size(lead.batch_size, lead.data.width_multiplier, ctx.target);
            (lead, group_share(size, queued, idle) as usize)
        }
        _ => return vec![first],
    };
    if size > 1 {
        info!(slot = ctx.slot, job = first.fence.job_id, size, ?queued, idle, fuse = %ctx.fuse, "filling a fused group");
    }
    let mut group = vec![first];
    while group.len() < size && !ctx.shutdown_flag.load(Ordering::Relaxed) {
        let kinds = vec![pb::JobKind::Builtin as i32];
        let request = LeaseJobRequest { worker_id: ctx.worker_id.clone(), slot: ctx.slot, kinds };
        let Some(job) = ctx.client.clone().lease_job(request).await.ok().and_then(|r| r.into_inner().job)
        else {
            break;
        };
        let next = match JobAssignment::try_from(job) {
            Ok(next) => next,
            Err(e) => {
                error!(slot = ctx.slot, error = %e, "coordinator sent an invalid job; skipping");
                break;
            }
        };
        match TrainJob::try_from(&next) {
            Ok(job) if next.command.is_none() && fuses_with(&lead, &job) => group.push(next),
            _ => {
                info!(
                    slot = ctx.slot,
                    job = next.fence.job_id,
                    "job does not fuse with the group; handing it back"
                );
                release(ctx, &next.fence).await;
                break;
            }
        }
    }
    group
}

/// What training needs of a leased job besides its description.
struct Training {
    checkpointing: Option<Checkpointing>,
    sink: ChannelSink,
}

/// Starts following `job`: its lease in the heartbeat table, its epoch uploader, its
/// checkpoint store and sink.
fn track(ctx: &SlotContext, job: &JobAssignment) -> (Tracked, Training) {
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
    let key = job_key(job);
    let checkpointing = ctx.checkpoints.as_ref().map(|(stores, cadence)| Checkpointing {
        store: stores.for_job(ctx, &fence),
        key: key.clone(),
        cadence: *cadence,
        resume_at_most: job.epochs_stored,
    });
    let sink = ChannelSink {
        epochs: epoch_tx,
        stop: stop.clone(),
        shutdown: ctx.shutdown_flag.clone(),
        checkpoints: checkpointing.is_some(),
    };
    (Tracked { fence, key, stop, uploader }, Training { checkpointing, sink })
}

/// Trains a group of leased jobs (one, or several fused built-in ones) and reports each one's
/// end. Returns the runner for the next group.
async fn run_job(
    ctx: &SlotContext,
    runner: Box<dyn JobRunner>,
    group: Vec<JobAssignment>,
) -> Box<dyn JobRunner> {
    let (tracked, training): (Vec<Tracked>, Vec<Training>) = group.iter().map(|job| track(ctx, job)).unzip();
    let (runner, outcomes) = match (group.as_slice(), training) {
        ([job], mut training) if job.command.is_some() => {
            let command = job.command.clone().expect("matched");
            let Training { checkpointing, sink } = training.pop().expect("one job");
            let (stop, flag) = (tracked[0].stop.clone(), ctx.shutdown_flag.clone());
            let should_stop = || match (stop.load(Ordering::Relaxed), flag.load(Ordering::Relaxed)) {
                (true, _) => StopRequest::Now,
                (false, true) => StopRequest::Gracefully,
                (false, false) => StopRequest::No,
            };
            let device = *runner.device();
            let store = checkpointing.as_ref().map(|c| c.store.clone());
            let (dir, mirror) = command_directory(store, &tracked[0].key, job.epochs_stored).await;
            let (epochs, forwarder) = match &mirror {
                Some(mirror) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    (tx, Some(mirror.forward(rx, sink.epochs)))
                }
                None => (sink.epochs, None),
            };
            let outcome = run_command(job, &command, &device, dir.as_deref(), epochs, &should_stop).await;
            if let Some(forwarder) = forwarder {
                let _ = forwarder.await;
            }
            (runner, vec![outcome])
        }
        (_, training) => train_on_slot_thread(&ctx.thread, runner, group, training).await,
    };
    for (tracked, outcome) in tracked.into_iter().zip(outcomes) {
        conclude(ctx, tracked, outcome).await;
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

/// Trains `jobs` (one, or several fused) with `runner` on the slot's thread.
async fn train_on_slot_thread(
    thread: &SlotThread,
    runner: Box<dyn JobRunner>,
    jobs: Vec<JobAssignment>,
    training: Vec<Training>,
) -> (Box<dyn JobRunner>, Vec<Result<JobOutcome, String>>) {
    thread.run(move || train_group(runner, jobs, training)).await
}

/// Trains `jobs` with `runner` on the calling thread, turning a panic into every job's error
/// text.
fn train_group(
    mut runner: Box<dyn JobRunner>,
    jobs: Vec<JobAssignment>,
    mut training: Vec<Training>,
) -> (Box<dyn JobRunner>, Vec<Result<JobOutcome, String>>) {
    let described: Vec<_> = jobs.iter().map(TrainJob::try_from).collect();
    let mut outcomes: Vec<Option<Result<JobOutcome, String>>> = Vec::with_capacity(jobs.len());
    let (mut runs, mut trained) = (Vec::new(), Vec::new());
    for (i, (job, t)) in described.iter().zip(&mut training).enumerate() {
        match job {
            Ok(job) => {
                runs.push(FusedRun { job, checkpoints: t.checkpointing.as_ref(), sink: &mut t.sink });
                trained.push(i);
                outcomes.push(None);
            }
            Err(e) => outcomes.push(Some(Err(e.to_string()))),
        }
    }
    let results = match catch_unwind(AssertUnwindSafe(|| runner.run_fused(runs))) {
        Ok(results) => results.into_iter().map(|r| r.map_err(|e| e.to_string())).collect(),
        Err(panic) => {
            vec![Err(format!("training panicked: {}", panic_message(panic.as_ref()))); trained.len()]
        }
    };
    for (i, result) in trained.into_iter().zip(results) {
        outcomes[i] = Some(result);
    }
    let outcomes = outcomes.into_iter().map(|o| o.expect("every job has an outcome")).collect();
    (runner, outcomes)
}
