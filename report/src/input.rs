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
    /// What the report compares: the best validation accuracy unless the sweep ranks its jobs by
    /// another metric.
    #[serde(default)]
    pub measure: Measure,
}

/// The metric a report ranks epochs by and compares across variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// Its name in the stored epochs (`val_acc`, `val_loss`, `top5`).
    pub metric: String,
    /// How titles and tables name it ("validation accuracy").
    pub label: String,
    /// Higher is better (else lower).
    pub maximize: bool,
    /// Stored as a fraction, shown as a percentage.
    pub percent: bool,
}

impl Default for Measure {
    fn default() -> Self {
        Measure::of("val_acc", true)
    }
}

impl Measure {
    /// `metric` ranked in the given direction; the accuracies the workers report are fractions
    /// shown in %, every other metric as it is.
    pub fn of(metric: &str, maximize: bool) -> Self {
        let (label, percent) = match metric {
            "val_acc" => ("validation accuracy", true),
            "train_acc" => ("training accuracy", true),
            "val_loss" => ("validation loss", false),
            "train_loss" => ("training loss", false),
            other => (other, false),
        };
        Measure { metric: metric.to_owned(), label: label.to_owned(), maximize, percent }
    }

    /// The experiment's own measure: its claims are about the best validation accuracy.
    pub fn is_validation_accuracy(&self) -> bool {
        self.metric == "val_acc" && self.maximize && self.percent
    }

    /// A stored value as the report shows it (× 100 for a percentage).
    pub fn show(&self, value: f64) -> f64 {
        if self.percent { value * 100.0 } else { value }
    }

    /// Decimals of a shown value in the tables: hundredths of a point for a percentage, four for
    /// any other metric (a loss moves in its third decimal).
    pub fn decimals(&self) -> usize {
        if self.percent { 2 } else { 4 }
    }

    /// " (%)" after a percentage's name, nothing otherwise.
    pub fn unit(&self) -> &'static str {
        if self.percent { " (%)" } else { "" }
    }

    /// "best validation accuracy", "lowest validation loss".
    pub fn best_label(&self) -> String {
        let best = if self.maximize { "best" } else { "lowest" };
        format!("{best} {}", self.label)
    }

    /// The training-set metric drawn beside the measure in the curves: `train_acc` beside
    /// `val_acc`, `train_loss` beside `val_loss`; `None` for another measure or a missing value.
    pub fn training(&self, epoch: &EpochRow) -> Option<f64> {
        let value = match self.metric.as_str() {
            "val_acc" => epoch.train_acc,
            "val_loss" => epoch.train_loss,
            _ => return None,
        };
        value.is_finite().then_some(value)
    }

    /// What the curves' axis says of the measure and its training counterpart together.
    pub fn family(&self) -> &str {
        match self.metric.as_str() {
            "val_acc" | "train_acc" => "accuracy",
            "val_loss" | "train_loss" => "loss",
            _ => &self.label,
        }
    }

    /// The axis range of a figure with no values yet.
    pub fn empty_range(&self) -> (f64, f64) {
        if self.percent { (0.0, 100.0) } else { (0.0, 1.0) }
    }

    /// The range a shown value cannot leave: [0, 100] for a percentage.
    pub fn bounds(&self) -> (f64, f64) {
        if self.percent { (0.0, 100.0) } else { (f64::NEG_INFINITY, f64::INFINITY) }
    }
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
    /// The best value of the report's [`Measure`] over the job's epochs (as stored: a fraction
    /// for an accuracy); `None` until the job stored an epoch.
    #[serde(alias = "best_val_acc")]
    pub best_value: Option<f64>,
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
    /// The report's [`Measure`] in this epoch where it is not `val_acc` (NaN where the epoch
    /// lacks it).
    #[serde(default)]
    pub value: Option<f64>,
}

impl EpochRow {
    /// The report's measure in this epoch (as stored).
    pub fn measured(&self) -> f64 {
        self.value.unwrap_or(self.val_acc)
    }
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
