//! `worker --coordinator URL …`: the flags of a coordinator-attached worker process and the
//! start-up that turns them into a running [`super::run_agent`] (data loaded once, devices
//! chosen, Ctrl-C handled).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use sweep_proto::connect::ConnectArgs;
use tokio::sync::watch;

use super::{
    AgentConfig, AgentError, Cadence, CheckpointSettings, CheckpointTarget, Commands, SlotChoice,
    run_agent_with,
};
use crate::data::{Cifar10, DataArgs, DataError, DataSource};
use crate::device::{DeviceChoice, DeviceError, available_devices};
use crate::training::FuseChoice;

/// Where and how a machine's slots train (`worker` and `sweep run`'s local worker).
#[derive(Debug, Clone, Args)]
pub struct SlotArgs {
    /// auto (every CUDA GPU, else the CPU), cuda or cpu.
    #[arg(long, env = "SWEEP_DEVICE", default_value = "auto")]
    pub device: String,
    /// GPUs to use: `all` or a list like `0,1`.
    #[arg(long, env = "SWEEP_GPUS", default_value = "all")]
    pub gpus: String,
    /// Jobs (or fused groups) each device trains side by side, each slot with its own model,
    /// optimizer and stream: a number, or `auto` (3 on a GPU with replayed steps, as many as fit
    /// its free memory with a batch-512 job each; 1 on the CPU, without replayed steps or where
    /// command jobs run).
    #[arg(long, env = "SWEEP_SLOTS_PER_GPU", default_value = "auto")]
    pub slots_per_gpu: SlotChoice,
    /// Built-in jobs of one shape (epochs, batch size, data) each slot trains as one fused step:
    /// a number, or `auto` (jobs of a batch below 512, below 256 with replayed steps, in groups
    /// of up to 1,024 images on CUDA with cuDNN's convolutions, where fused steps were measured
    /// fast, as many as fit the slot's share of the free device memory; else one at a time).
    #[arg(long, env = "SWEEP_FUSE", default_value = "auto")]
    pub fuse: FuseChoice,
    #[arg(long, env = "SWEEP_KERNELS", default_value = "auto", help = crate::train_ops::KERNELS_HELP)]
    pub kernels: crate::train_ops::KernelChoice,
}

/// Flags of a coordinator-attached worker.
#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// The coordinator (e.g. --coordinator https://10.0.0.5:50051 --ca-cert ca.pem) and this
    /// worker's credentials (a worker token: --token-file or SWEEP_TOKEN).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The devices, slots and kernels that train.
    #[command(flatten)]
    pub slots: SlotArgs,
    /// The CIFAR-10 folder (--data-dir) and whether to download into it (--download).
    #[command(flatten)]
    pub data: DataArgs,
    /// Worker id reported to the coordinator (default: HOSTNAME-PID).
    #[arg(long, env = "SWEEP_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Checkpoint jobs into this directory (local, or shared by the workers so a requeued job
    /// continues on any of them); without it (or --checkpoint-to-coordinator) a requeued job
    /// starts over.
    #[arg(long, env = "SWEEP_CHECKPOINT_DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint jobs to the coordinator (started with --checkpoint-store), so a requeued job
    /// continues on any worker without a shared disk.
    #[arg(long, env = "SWEEP_CHECKPOINT_TO_COORDINATOR", conflicts_with = "checkpoint_dir")]
    pub checkpoint_to_coordinator: bool,
    /// Also run command jobs: sweeps of their own programs (only admins may submit them), each
    /// in a child process with the slot's GPU.
    #[arg(long, env = "SWEEP_ALLOW_COMMANDS")]
    pub allow_commands: bool,
    /// Run command jobs only: no CIFAR-10 data is loaded and no built-in job is leased.
    #[arg(long, env = "SWEEP_COMMANDS_ONLY", conflicts_with = "allow_commands")]
    pub commands_only: bool,
    #[command(flatten)]
    pub cadence: CadenceArgs,
}

/// When jobs checkpoint (`worker` and `sweep run`).
#[derive(Debug, Clone, Args)]
pub struct CadenceArgs {
    /// Checkpoint every N epochs (and always when a job is asked to stop).
    #[arg(long, env = "SWEEP_CHECKPOINT_EVERY", default_value_t = 5)]
    pub checkpoint_every: u32,
    /// Seconds a job trains between two checkpoints at the least (reading its tensors pauses it
    /// briefly; the file or upload is written while it trains on); a lost machine costs a job
    /// about this much work at most.
    #[arg(long, env = "SWEEP_CHECKPOINT_MIN_SECS", default_value_t = 30)]
    pub checkpoint_min_secs: u64,
}

impl CadenceArgs {
    /// The cadence the flags give.
    pub fn cadence(&self) -> Cadence {
        Cadence::new(self.checkpoint_every, self.checkpoint_min_secs)
    }
}

/// Why an attached worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// What a local worker needs before it can serve: its devices, the data set (loaded, downloaded
/// if missing, and verified once per process) and the host name it reports.
#[derive(Debug)]
pub struct LocalResources {
    pub devices: Vec<DeviceChoice>,
    pub data: Arc<Cifar10>,
    pub hostname: String,
}

/// Picks the devices (`auto|cuda|cpu`, `all|0,1`) and loads the data from `data` (a bare folder
/// downloads into it when files are missing; see [`DataSource`]).
pub async fn prepare_local(
    device: &str,
    gpus: &str,
    data: impl Into<DataSource>,
) -> Result<LocalResources, AttachError> {
    let devices = available_devices(device, gpus)?;
    let source = data.into();
    let data = tokio::task::spawn_blocking(move || Cifar10::open(&source))
        .await
        .expect("data loading thread panicked")?;
    Ok(LocalResources { devices, data: Arc::new(data), hostname: host_name() })
}

/// The devices alone, for slots that run only command jobs: those read their own data.
pub fn prepare_commands_only(device: &str, gpus: &str) -> Result<LocalResources, AttachError> {
    let devices = available_devices(device, gpus)?;
    let data = Arc::new(Cifar10::from_parts(vec![], vec![], vec![], vec![]));
    Ok(LocalResources { devices, data, hostname: host_name() })
}

/// This machine's name, as the worker reports it.
fn host_name() -> String {
    hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "worker".into())
}

/// Loads the data, picks the devices and serves the coordinator until Ctrl-C.
pub async fn attach(args: AttachArgs) -> Result<(), AttachError> {
    // Bad addresses, TLS files or tokens fail before the data set is loaded.
    let security = args.connect.security().map_err(AgentError::from)?;
    args.connect.endpoint(&security).map_err(AgentError::from)?;
    let local = if args.commands_only {
        prepare_commands_only(&args.slots.device, &args.slots.gpus)?
    } else {
        prepare_local(&args.slots.device, &args.slots.gpus, args.data.source()).await?
    };
    let config = AgentConfig {
        commands: match (args.allow_commands, args.commands_only) {
            (_, true) => Commands::Only,
            (true, false) => Commands::Allow,
            (false, false) => Commands::Refuse,
        },
        coordinator: args.connect.coordinator,
        worker_id: args.worker_id.unwrap_or_else(|| format!("{}-{}", local.hostname, std::process::id())),
        hostname: local.hostname,
        devices: local.devices,
        slots: args.slots.slots_per_gpu,
        fuse: args.slots.fuse,
        kernels: args.slots.kernels,
        checkpoints: checkpoint_settings(
            args.checkpoint_dir,
            args.checkpoint_to_coordinator,
            args.cadence.cadence(),
        ),
    };
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!(
            "stopping: jobs end their epoch (checkpointing) or stop, deliver their epochs and are handed \
             back; a second Ctrl-C or SIGTERM (2 s or more later) exits at once"
        );
        let _ = stop_tx.send(true);
        let first = std::time::Instant::now();
        // One stop can arrive twice (a scheduler signals the job's shell and its processes).
        while {
            stop_signal().await;
            first.elapsed() < DUPLICATE_SIGNAL
        } {
            tracing::debug!("a second stop signal right after the first: taken for the same stop");
        }
        tracing::warn!(
            "second stop signal: exiting now; the coordinator requeues the jobs when their leases expire"
        );
        std::process::exit(130);
    });
    run_agent_with(config, security, local.data, stop).await?;
    Ok(())
}

/// A second stop signal sooner than this after the first is the same stop, delivered twice.
const DUPLICATE_SIGNAL: std::time::Duration = std::time::Duration::from_secs(2);

fn checkpoint_settings(
    dir: Option<PathBuf>,
    to_coordinator: bool,
    cadence: Cadence,
) -> Option<CheckpointSettings> {
    let target = match (dir, to_coordinator) {
        (Some(dir), _) => CheckpointTarget::Directory(dir),
        (None, true) => CheckpointTarget::Coordinator,
        (None, false) => return None,
    };
    Some(CheckpointSettings { target, cadence })
}

/// Ctrl-C, or SIGTERM (what Slurm, Kubernetes and `docker stop` send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
