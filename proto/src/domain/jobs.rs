//! The domain types of jobs and their leases, epochs and workers, as both sides see them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{CommandJob, DataOptions, JobState, SweepSpec};

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
    /// A loss variant's name, or a command sweep's parameter point (`lr=0.01,wd=0`).
    pub variant: String,
    /// The seed it trains with (its variant's offset included).
    pub seed: u64,
    pub state: JobState,
    /// The 1-based attempt the job is on.
    pub attempt: u32,
    pub max_attempts: u32,
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// Epochs stored, and the best value of the sweep's objective among them (`best_epoch` 0:
    /// none yet).
    pub epochs_done: u32,
    pub best_value: f64,
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
    pub variant: String,
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
    /// Slots not training a job, as of its last heartbeat.
    pub idle_slots: u32,
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
    /// A loss variant's name (built-in) or the parameter point's label (command).
    pub variant: String,
    pub seed: u64,
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub data: DataOptions,
    pub lease_ttl: Duration,
    /// Epochs 1..=N stored by earlier attempts (a checkpoint up to N may be continued from).
    pub epochs_stored: u32,
    /// Set for a command job: what to run.
    pub command: Option<CommandJob>,
}

/// Metrics of one finished epoch (accuracies in [0, 1]). The built-in CNN reports every named
/// field; a command job the ones it prints, and any others in `values`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: u32,
    pub train_loss: Option<f64>,
    pub train_acc: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub wall_seconds: f64,
    pub images_per_sec: Option<f64>,
    /// Every other metric, by name ([`super::is_metric_name`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
}

impl EpochMetrics {
    /// The metrics the built-in CNN reports for every epoch.
    pub fn builtin(
        epoch: u32,
        [train_loss, train_acc, val_loss, val_acc]: [f64; 4],
        wall_seconds: f64,
        images_per_sec: f64,
    ) -> Self {
        EpochMetrics {
            epoch,
            train_loss: Some(train_loss),
            train_acc: Some(train_acc),
            val_loss: Some(val_loss),
            val_acc: Some(val_acc),
            wall_seconds,
            images_per_sec: Some(images_per_sec),
            values: BTreeMap::new(),
        }
    }

    /// The value of metric `name`, named field or not.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "train_loss" => self.train_loss,
            "train_acc" => self.train_acc,
            "val_loss" => self.val_loss,
            "val_acc" => self.val_acc,
            "images_per_sec" => self.images_per_sec,
            "wall_seconds" => Some(self.wall_seconds),
            _ => self.values.get(name).copied(),
        }
    }
}

/// The metric names that are fields of [`EpochMetrics`] (the rest live in `values`).
pub const NAMED_METRICS: [&str; 6] =
    ["train_loss", "train_acc", "val_loss", "val_acc", "wall_seconds", "images_per_sec"];

/// An epoch as stored: its metrics and the attempt that stored it.
#[derive(Debug, Clone, PartialEq)]
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
