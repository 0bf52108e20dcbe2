//! What a report is made from: plain rows, filled by whoever reads the sweep (the coordinator's
//! `report` command or the one-shot `sweep run`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything one report needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportInput {
    /// Sweep name.
    pub sweep: String,
    /// Variant names in the order figures and tables show them (the spec's order).
    pub variants: Vec<String>,
    /// The variant every other one is compared against (the experiment's `normal_lr1e-3`).
    pub baseline_variant: String,
    /// The sweep spec as pretty JSON, shown verbatim in the reproducibility block.
    pub spec_json: String,
    /// One row per job, whatever its state.
    pub jobs: Vec<JobRow>,
    /// Every stored epoch of every job.
    pub epochs: Vec<EpochRow>,
    /// The learning rate each variant trains with. A variant missing here is never taken to train
    /// like the baseline by construction (see [`crate::construction`]).
    #[serde(default)]
    pub learning_rates: BTreeMap<String, f64>,
    pub provenance: Provenance,
}

/// One job of the sweep. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub job_id: i64,
    pub variant: String,
    pub seed: u64,
    /// queued, running, succeeded, failed or cancelled.
    pub state: String,
    pub epochs: u32,
    pub epochs_done: u32,
    /// `None` until the job stored an epoch.
    pub best_val_acc: Option<f64>,
    pub best_epoch: Option<u32>,
    pub final_train_acc: Option<f64>,
    pub final_val_acc: Option<f64>,
    /// Sum of the stored epochs' wall seconds.
    pub wall_seconds: f64,
    /// Worker id that ran (or runs) it; empty if none.
    pub worker: String,
    /// The 1-based attempt the job is on (a queued job's next one); more than 1 when an earlier
    /// attempt failed, lost its lease or was handed back.
    #[serde(default)]
    pub attempts: u32,
    /// Why the last attempt failed; empty if none did (a success clears it).
    #[serde(default)]
    pub error: String,
}

/// One stored epoch. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub job_id: i64,
    pub variant: String,
    pub seed: u64,
    /// 1-based.
    pub epoch: u32,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub wall_seconds: f64,
    pub images_per_sec: f64,
    /// The attempt that stored it; 0 when not known.
    #[serde(default)]
    pub attempt: u32,
}

/// The reproducibility block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Commit of the code that made the report (`-dirty` with uncommitted changes), or "unknown".
    pub git_commit: String,
    /// `rustc --version` of the compiler that built it; empty if not known.
    #[serde(default)]
    pub rustc_version: String,
    /// (crate, version) pairs, e.g. ("burn", "0.21.0").
    pub crate_versions: Vec<(String, String)>,
    /// Device names of the workers that ran the sweep (e.g. "NVIDIA H100 80GB HBM3", "cpu").
    pub devices: Vec<String>,
    /// (file, md5) of the data files those workers loaded and verified.
    pub data_md5: Vec<(String, String)>,
    /// RFC 3339 time the report was made.
    pub generated_at: String,
}
