//! The domain types of jobs and their leases, epochs and workers, as both sides see them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DataOptions, JobState, LossVariant, SweepSpec};

/// Proof that a worker's write belongs to a job's current lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    pub job_id: i64,
    pub attempt: u32,
    pub lease_token: String,
}

impl Fence {
    /// The job the fence is for.
    pub fn job(&self) -> JobId {
        JobId(self.job_id)
    }
}

/// A job's id: the key of the coordinator's `jobs` table (`Fence::job_id` stays a plain `i64`
/// because the worker keys its lease table and log fields by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One (variant, seed) job of a sweep, as the coordinator reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub sweep: String,
    pub variant: LossVariant,
    /// The seed it trains with (its variant's offset included).
    pub seed: u64,
    pub state: JobState,
    /// The 1-based attempt the job is on.
    pub attempt: u32,
    pub max_attempts: u32,
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// Epochs the current attempt stored, and the best validation accuracy among them.
    pub epochs_done: u32,
    pub best_val_acc: f64,
    pub best_epoch: u32,
    pub worker_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

/// An epoch a job's current attempt stored, with the job it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    pub job_id: JobId,
    pub sweep: String,
    pub variant: LossVariant,
    pub seed: u64,
    pub metrics: EpochMetrics,
}

/// What a heartbeat learns about one lease it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseVerdict {
    /// Renewed; keep going.
    Renewed,
    /// The job was cancelled; stop.
    Cancelled,
    /// Expired or superseded by a newer attempt; stop, writes will be rejected.
    Lost,
}

/// A registered worker and how many jobs it runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub id: String,
    pub hostname: String,
    pub gpus: Vec<String>,
    pub slots: u32,
    pub registered_at_ms: i64,
    pub last_seen_ms: i64,
    pub running_jobs: u32,
    /// The data files it verified when it last registered.
    pub data_files: Vec<DataFile>,
}

/// An input file and the MD5 (lower-case hex) of its decompressed contents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataFile {
    pub name: String,
    pub md5: String,
}

/// Where a sweep stands: its jobs per state and its epochs done out of those it will run.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSummary {
    pub spec: SweepSpec,
    pub created_at_ms: i64,
    pub queued: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub epochs_done: u64,
    /// A failed or cancelled job counts only the epochs it stored, so an ended sweep is at 100 %.
    pub epochs_total: u64,
    /// `None` until an epoch is stored (nothing to extrapolate from).
    pub eta_seconds: Option<f64>,
}

impl SweepSummary {
    pub fn jobs_total(&self) -> u32 {
        self.queued + self.running + self.succeeded + self.failed + self.cancelled
    }

    pub fn progress_percent(&self) -> f64 {
        if self.epochs_total == 0 {
            100.0
        } else {
            self.epochs_done as f64 / self.epochs_total as f64 * 100.0
        }
    }
}

/// One leased job, as a worker receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobAssignment {
    pub fence: Fence,
    pub sweep: String,
    pub variant: LossVariant,
    pub seed: u64,
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub data: DataOptions,
    pub lease_ttl: Duration,
    /// Epochs 1..=N stored by earlier attempts (a checkpoint up to N may be continued from).
    pub epochs_stored: u32,
}

/// Metrics of one finished epoch (accuracies in [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: u32,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub wall_seconds: f64,
    pub images_per_sec: f64,
}

/// An epoch as stored: its metrics and the attempt that stored it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredEpoch {
    pub metrics: EpochMetrics,
    pub attempt: u32,
}

/// Which ended jobs a retry queues again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryTarget {
    /// One failed or cancelled job.
    Job(JobId),
    /// The sweep's jobs in the chosen states (at least one of the two).
    Sweep { name: String, failed: bool, cancelled: bool },
}

impl RetryTarget {
    /// The states a job must be in to be retried by this target.
    pub fn states(&self) -> Vec<JobState> {
        match self {
            RetryTarget::Job(_) => vec![JobState::Failed, JobState::Cancelled],
            RetryTarget::Sweep { failed, cancelled, .. } => {
                [(*failed, JobState::Failed), (*cancelled, JobState::Cancelled)]
                    .into_iter()
                    .filter_map(|(chosen, state)| chosen.then_some(state))
                    .collect()
            }
        }
    }
}
