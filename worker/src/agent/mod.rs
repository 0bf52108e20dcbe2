//! The worker process's coordinator-facing side: registers with the coordinator, runs one
//! long-lived [`slot`] loop per (device, slot) and one heartbeat loop that renews every lease the
//! process holds and stops jobs the coordinator cancelled or gave to another attempt.
//!
//! Everything retries with backoff while the coordinator is unreachable; finished epochs wait in
//! the [`uploader`] until acknowledged.

pub mod attach;
pub mod backoff;
pub mod command;
pub mod command_checkpoints;
mod ending;
pub mod share;
pub mod slot;
mod slot_thread;
pub mod slots;
pub mod uploader;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sweep_proto::Fence;
use sweep_proto::connect::{self, AuthChannel, ClientSecurity};
use sweep_proto::pb::lease_status::Verdict;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use sweep_proto::pb::{self, HeartbeatRequest, RegisterWorkerRequest};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backend::open_runner_with;
pub use crate::checkpoint::Cadence;
use crate::checkpoint::DirectoryStore;
use crate::data::Cifar10;
use crate::device::DeviceChoice;
use crate::train_ops::KernelChoice;
use crate::training::{FuseChoice, FuseTarget, RunnerConfig};
use backoff::Backoff;
use share::SlotBoard;
use slot::{JobStores, SlotContext, run_slot};
use slot_thread::SlotThread;
pub use slots::SlotChoice;

/// How to reach the coordinator and what this worker offers (its credentials travel separately,
/// see [`run_agent_with`]).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// e.g. `https://10.0.0.5:50051` (TLS) or `http://127.0.0.1:50051`.
    pub coordinator: String,
    pub worker_id: String,
    pub hostname: String,
    pub devices: Vec<DeviceChoice>,
    /// Jobs (or fused groups) each device trains side by side.
    pub slots: SlotChoice,
    /// Implementation of the training nodes (same results, different speed), per device kind.
    pub kernels: KernelChoice,
    /// Where jobs checkpoint (a directory, local or shared between workers, or the coordinator)
    /// and every how many epochs; `None`: no checkpoints, a requeued job starts over.
    pub checkpoints: Option<CheckpointSettings>,
    /// Which jobs the slots lease.
    pub commands: Commands,
    /// How many built-in jobs of one shape each slot trains as one fused step.
    pub fuse: FuseChoice,
}

/// Whether a worker runs command jobs (the programs of sweeps that admins submitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Commands {
    /// Built-in jobs only.
    #[default]
    Refuse,
    /// Built-in and command jobs.
    Allow,
    /// Command jobs only: no data set is loaded and no training runner is opened.
    Only,
}

/// Checkpoints of an agent's jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    pub target: CheckpointTarget,
    /// When to save (and always at a graceful stop).
    pub cadence: Cadence,
}

/// Where an agent's jobs checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointTarget {
    /// A directory, local or shared between workers.
    Directory(std::path::PathBuf),
    /// The coordinator (uploaded in chunks, kept per job, removed when the job succeeds).
    Coordinator,
}

/// Errors that end the worker process.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    /// The coordinator refused this worker's credentials; retrying cannot help.
    #[error("the coordinator refused to register this worker: {}", sweep_proto::text::printable(.0.message()))]
    Refused(tonic::Status),
    #[error("could not open a runner on {device}: {source}")]
    Runner { device: String, source: crate::training::TrainError },
    #[error("no device to train on")]
    NoDevice,
    #[error("could not start a slot's thread: {0}")]
    Thread(std::io::Error),
}

/// The leases this process holds, shared by the slots (insert/remove) and the heartbeat loop
/// (renew, and raise a job's stop flag when the coordinator cancelled it or took it back).
#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: Mutex<HashMap<i64, (Fence, Arc<AtomicBool>)>>,
}

impl LeaseTable {
    /// Registers a new lease; the returned flag goes up when the job must stop.
    pub fn insert(&self, fence: Fence) -> Arc<AtomicBool> {
        let stop = Arc::new(AtomicBool::new(false));
        self.leases.lock().expect("lease table poisoned").insert(fence.job_id, (fence, stop.clone()));
        stop
    }

    pub fn remove(&self, job_id: i64) {
        self.leases.lock().expect("lease table poisoned").remove(&job_id);
    }

    pub fn fences(&self) -> Vec<Fence> {
        self.leases.lock().expect("lease table poisoned").values().map(|(f, _)| f.clone()).collect()
    }

    /// Raises the stop flag of `job_id`, if this process still holds it.
    pub fn stop(&self, job_id: i64) {
        if let Some((_, stop)) = self.leases.lock().expect("lease table poisoned").get(&job_id) {
            stop.store(true, Ordering::Relaxed);
        }
    }

    pub fn len(&self) -> usize {
        self.leases.lock().expect("lease table poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The runner of a slot that runs command jobs only: it never leases a built-in one.
struct NoTraining(DeviceChoice);

impl crate::training::JobRunner for NoTraining {
    fn run_with_checkpoints(
        &mut self,
        _: &crate::training::TrainJob,
        _: Option<&crate::checkpoint::Checkpointing>,
        _: &mut dyn crate::training::EpochSink,
    ) -> Result<crate::training::JobOutcome, crate::training::TrainError> {
        Err(crate::training::TrainError::InvalidJob("this worker runs command jobs only".into()))
    }

    fn device(&self) -> &DeviceChoice {
        &self.0
    }
}

/// [`run_agent_with`] without credentials (a coordinator with authentication off).
pub async fn run_agent(
    config: AgentConfig,
    data: Arc<Cifar10>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    run_agent_with(config, ClientSecurity::default(), data, shutdown).await
}

/// Runs the worker until `shutdown` turns true: registers (presenting `security`: CA, client
/// certificate, token), then trains leased jobs on every slot. At shutdown a job still training
/// ends its epoch and checkpoints (with checkpoints on) or stops at once, its reported epochs are
/// delivered, and it is handed back to the coordinator, which queues it again without using an
/// attempt, so a restarted worker or another machine continues it.
pub async fn run_agent_with(
    config: AgentConfig,
    security: ClientSecurity,
    data: Arc<Cifar10>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    if config.devices.is_empty() {
        return Err(AgentError::NoDevice);
    }
    let channel = connect::endpoint(&config.coordinator, &security)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy();
    let client = WorkerServiceClient::new(connect::authorized(channel, &security)?);
    let plan =
        slots::plan(&config.devices, config.slots, config.kernels, data.device_bytes(), config.commands);
    let slots = plan.iter().map(|d| d.slots).sum();
    let identity = registration_request(&config, slots, &data);
    let Some(registration) = register(&client, &config.coordinator, &identity, shutdown.clone()).await?
    else {
        return Ok(());
    };
    info!(worker = %config.worker_id, slots, coordinator = %config.coordinator,
        heartbeat_ms = registration.heartbeat_interval_ms, "registered");

    let leases = Arc::new(LeaseTable::default());
    let shutdown_flag = Arc::new(AtomicBool::new(false));
    let checkpoints = config.checkpoints.as_ref().map(|c| {
        let stores = match &c.target {
            // The newest two: the newest may be cut short by a crash while it is written.
            CheckpointTarget::Directory(dir) => JobStores::Shared(Arc::new(DirectoryStore::new(dir, 2))),
            CheckpointTarget::Coordinator => JobStores::Coordinator,
        };
        (stores, c.cadence)
    });
    let board = SlotBoard::new(slots);
    let heartbeat = tokio::spawn(heartbeat_loop(
        client.clone(),
        config.clone(),
        identity,
        Duration::from_millis(u64::from(registration.heartbeat_interval_ms.max(100))),
        leases.clone(),
        board.clone(),
        shutdown.clone(),
    ));
    if crate::kernel_cache::starts_cold_on(&config.devices) {
        info!("{}", crate::kernel_cache::COLD_START);
    }
    let mut slot_tasks = Vec::new();
    let device_slots = plan.iter().flat_map(|at| std::iter::repeat_n(at, at.slots as usize));
    for (slot, at) in (0u32..).zip(device_slots) {
        let (dev, kernels, d) = (at.device, at.kernels, data.clone());
        let runner_config = RunnerConfig { kernels, ..RunnerConfig::default() };
        let thread = Arc::new(SlotThread::spawn(format!("slot-{slot}")).map_err(AgentError::Thread)?);
        let runner = if config.commands == Commands::Only {
            Box::new(NoTraining(dev))
        } else {
            // The runner's data set goes to the device from the thread that trains on it.
            thread
                .run(move || open_runner_with(dev, d, runner_config))
                .await
                .map_err(|source| AgentError::Runner { device: dev.to_string(), source })?
        };
        info!(device = %dev, slot, %kernels, "slot ready");
        let ctx = SlotContext {
            client: client.clone(),
            worker_id: config.worker_id.clone(),
            slot,
            leases: leases.clone(),
            board: board.clone(),
            shutdown: shutdown.clone(),
            shutdown_flag: shutdown_flag.clone(),
            checkpoints: checkpoints.clone(),
            commands: config.commands,
            fuse: config.fuse,
            target: FuseTarget::sharing(dev, kernels, at.free, at.slots, data.device_bytes()),
            thread,
        };
        slot_tasks.push(tokio::spawn(run_slot(ctx, runner)));
    }
    let mut watch_shutdown = shutdown.clone();
    while !*watch_shutdown.borrow() {
        if watch_shutdown.changed().await.is_err() {
            break;
        }
    }
    shutdown_flag.store(true, Ordering::Relaxed);
    for task in slot_tasks {
        let _ = task.await;
    }
    heartbeat.abort();
    info!(worker = %config.worker_id, "worker stopped");
    Ok(())
}

/// Whether the coordinator refused the credentials themselves (retrying cannot help).
fn refused(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)
}

/// What this worker tells the coordinator about itself: id, host, devices, slots, and the data
/// files whose checksums it verified (the report's provenance lists them).
fn registration_request(config: &AgentConfig, slots: u32, data: &Cifar10) -> RegisterWorkerRequest {
    RegisterWorkerRequest {
        worker_id: config.worker_id.clone(),
        hostname: config.hostname.clone(),
        gpus: config.devices.iter().map(|d| d.to_string()).collect(),
        slots,
        data_files: data
            .verified_files()
            .iter()
            .map(|(name, md5)| pb::DataFile { name: name.clone(), md5: md5.clone() })
            .collect(),
    }
}

/// Registers, retrying with backoff while the coordinator is unreachable; `None` if shutdown came
/// first, [`AgentError::Refused`] if the coordinator refused the credentials.
async fn register(
    client: &WorkerServiceClient<AuthChannel>,
    coordinator: &str,
    request: &RegisterWorkerRequest,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Option<pb::RegisterWorkerResponse>, AgentError> {
    let mut backoff = Backoff::default();
    loop {
        match client.clone().register_worker(request.clone()).await {
            Ok(response) => return Ok(Some(response.into_inner())),
            Err(status) if refused(&status) => return Err(AgentError::Refused(status)),
            Err(status) => {
                let wait = backoff.next_delay();
                let hint = connect::plaintext_hint(coordinator, &status);
                warn!(%coordinator, error = %status, ?wait, "cannot register; retrying{hint}");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return Ok(None);
                }
            }
        }
    }
}

/// Renews every held lease each `interval`; raises stop flags for cancelled or lost jobs and
/// re-registers if the coordinator forgot this worker (e.g. a fresh database).
async fn heartbeat_loop(
    client: WorkerServiceClient<AuthChannel>,
    config: AgentConfig,
    identity: RegisterWorkerRequest,
    interval: Duration,
    leases: Arc<LeaseTable>,
    board: Arc<SlotBoard>,
    shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let held = leases.fences();
        let request = HeartbeatRequest {
            worker_id: identity.worker_id.clone(),
            idle_slots: board.idle(),
            leases: held.into_iter().map(pb::Fence::from).collect(),
        };
        match client.clone().heartbeat(request).await {
            Ok(response) => {
                for status in response.into_inner().leases {
                    if matches!(status.verdict(), Verdict::Cancelled | Verdict::Lost) {
                        info!(job = status.job_id, verdict = ?status.verdict(), "stopping job");
                        leases.stop(status.job_id);
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                warn!("coordinator does not know this worker; registering again");
                if let Err(e) = register(&client, &config.coordinator, &identity, shutdown.clone()).await {
                    tracing::error!(error = %e, "registering again failed");
                }
            }
            Err(status) if refused(&status) => {
                tracing::error!(error = %status, "coordinator refused this worker's heartbeat; leases will expire");
            }
            Err(status) => warn!(error = %status, "heartbeat failed; leases may expire"),
        }
    }
}
