//! Domain types shared by the coordinator and the workers. Values of these types are valid by
//! construction: they are only built from wire messages through [`crate::convert`] or by code
//! that upholds the same limits (see the `MAX_*` constants).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most epochs a job may ask for.
pub const MAX_EPOCHS: u32 = 10_000;
/// Largest batch size accepted.
pub const MAX_BATCH_SIZE: u32 = 65_536;
/// Most seeds one sweep may hold.
pub const MAX_SEEDS: usize = 10_000;
/// Longest sweep name.
pub const MAX_NAME_LEN: usize = 128;
/// Most data files a worker may report.
pub const MAX_DATA_FILES: usize = 16;
/// Most attempts a job may be given.
pub const MAX_ATTEMPTS: u32 = 100;
/// Attempts a job gets when the spec says 0.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// CIFAR-10 training images.
pub const TRAIN_IMAGES: u32 = 50_000;
/// CIFAR-10 test images.
pub const TEST_IMAGES: u32 = 10_000;
/// Widest channel multiplier accepted.
pub const MAX_WIDTH_MULTIPLIER: f32 = 4.0;

/// CIFAR-10 class names in label order; labels 2..=7 are the "natural" classes.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// The experiment's five loss variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LossVariant {
    /// Cross-entropy + natural/artificial term on the arg-max of the softmax.
    NaturalHardmax,
    /// Cross-entropy + natural/artificial term on the summed softmax of classes 2..=7.
    NaturalSoftmax,
    /// Cross-entropy + the 45 contiguous class-range terms.
    MultiSoftmax,
    /// Plain cross-entropy, learning rate 1e-3.
    NormalLr1e3,
    /// Plain cross-entropy, learning rate 1e-2.
    NormalLr1e2,
}

impl LossVariant {
    /// Every variant, in the experiment's order.
    pub const ALL: [LossVariant; 5] = [
        LossVariant::NaturalHardmax,
        LossVariant::NaturalSoftmax,
        LossVariant::MultiSoftmax,
        LossVariant::NormalLr1e3,
        LossVariant::NormalLr1e2,
    ];

    /// The name used on the wire, in the database and in reports.
    pub fn name(self) -> &'static str {
        match self {
            LossVariant::NaturalHardmax => "natural_hardmax",
            LossVariant::NaturalSoftmax => "natural_softmax",
            LossVariant::MultiSoftmax => "multi_softmax",
            LossVariant::NormalLr1e3 => "normal_lr1e-3",
            LossVariant::NormalLr1e2 => "normal_lr1e-2",
        }
    }

    /// The learning rate the experiment used for this variant.
    pub fn default_learning_rate(self) -> f64 {
        match self {
            LossVariant::NormalLr1e2 => 1e-2,
            _ => 1e-3,
        }
    }
}

impl fmt::Display for LossVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A loss variant name that is not one of [`LossVariant::ALL`].
/// Its message quotes at most [`crate::text::ECHO_CHARS`] characters of the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown loss variant {} (expected one of natural_hardmax, natural_softmax, multi_softmax, normal_lr1e-3, normal_lr1e-2)",
    crate::text::echo(.0)
)]
pub struct UnknownVariant(pub String);

impl FromStr for LossVariant {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LossVariant::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| UnknownVariant(s.to_owned()))
    }
}

/// Where a job is in its life (transitions live in the coordinator's `lifecycle` module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 5] =
        [JobState::Queued, JobState::Running, JobState::Succeeded, JobState::Failed, JobState::Cancelled];

    /// Lower-case name, as stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True for states a job never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job state name that is not one of [`JobState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {} (expected queued, running, succeeded, failed or cancelled)", crate::text::echo(.0))]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Data and model options shared by every job of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DataOptions {
    /// Train on the first N images only (`None` = all 50,000).
    pub train_limit: Option<u32>,
    /// Validate on the first N test images only (`None` = all 10,000).
    pub test_limit: Option<u32>,
    /// Random crop + horizontal flip (off in the experiment).
    pub augment: bool,
    /// Channel width multiplier of the CNN (1.0 = the experiment's 64/128/256 filters).
    pub width_multiplier: f32,
    /// BatchNorm statistics per group of this many images in training (`None` = the whole
    /// batch): the ghost batches of a data-parallel run whose replicas normalise their own share.
    #[serde(default)]
    pub bn_group: Option<u32>,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            train_limit: None,
            test_limit: None,
            augment: false,
            width_multiplier: 1.0,
            bn_group: None,
        }
    }
}

/// Seed offset between variants under `--independent-seeds`: variant `i` of
/// [`LossVariant::ALL`] trains seed `s` as `s + i · INDEPENDENT_SEED_STRIDE`.
pub const INDEPENDENT_SEED_STRIDE: u64 = 1_000_000;

/// A validated sweep: the cross product of `variants` × `seeds` (each seed plus its variant's
/// offset) is its set of jobs; for a command sweep, its parameter points × `seeds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    pub name: String,
    /// Distinct, in submission order.
    pub variants: Vec<LossVariant>,
    /// Distinct, in submission order.
    pub seeds: Vec<u64>,
    pub epochs: u32,
    pub batch_size: u32,
    /// Learning rate of every variant in `variants` (defaults filled in).
    pub learning_rates: BTreeMap<LossVariant, f64>,
    pub data: DataOptions,
    pub max_attempts: u32,
    /// Added to the seeds of a variant (absent = 0); validated not to overflow.
    #[serde(default)]
    pub seed_offsets: BTreeMap<LossVariant, u64>,
    /// The user's own command instead of the built-in CNN (then `variants` is empty).
    #[serde(default)]
    pub command: Option<CommandSpec>,
    #[serde(default)]
    pub objective: Objective,
}

/// One job a spec defines.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// A loss variant's name, or a command sweep's parameter point as [`point_label`] writes it.
    pub variant: String,
    /// The seed it trains with (its variant's offset included).
    pub seed: u64,
    /// The built-in CNN's learning rate (0 for a command job).
    pub learning_rate: f64,
}

impl SweepSpec {
    /// The learning rate jobs of `variant` train with.
    pub fn learning_rate(&self, variant: LossVariant) -> f64 {
        self.learning_rates.get(&variant).copied().unwrap_or(variant.default_learning_rate())
    }

    /// The offset added to `variant`'s seeds.
    pub fn seed_offset(&self, variant: LossVariant) -> u64 {
        self.seed_offsets.get(&variant).copied().unwrap_or(0)
    }

    /// Every job of the sweep, variant-major (parameter-point-major for a command sweep).
    pub fn jobs(&self) -> Vec<PlannedJob> {
        if let Some(command) = &self.command {
            return command
                .points(&self.name)
                .iter()
                .flat_map(|p| {
                    let variant = point_label(p);
                    self.seeds.iter().map(move |s| PlannedJob {
                        variant: variant.clone(),
                        seed: *s,
                        learning_rate: 0.0,
                    })
                })
                .collect();
        }
        self.variants
            .iter()
            .flat_map(|v| {
                let offset = self.seed_offset(*v);
                self.seeds.iter().map(move |s| PlannedJob {
                    variant: v.name().to_owned(),
                    seed: s.wrapping_add(offset),
                    learning_rate: self.learning_rate(*v),
                })
            })
            .collect()
    }

    /// How many jobs [`SweepSpec::jobs`] yields, without building them (saturating).
    pub fn job_count(&self) -> usize {
        let groups = match &self.command {
            Some(command) => command.point_count(),
            None => self.variants.len(),
        };
        groups.saturating_mul(self.seeds.len())
    }

    /// The kind of job this sweep runs.
    pub fn kind(&self) -> JobKind {
        if self.command.is_some() { JobKind::Command } else { JobKind::Builtin }
    }

    /// True when every variant trains the same seeds, so runs pair up seed for seed.
    pub fn shared_seeds(&self) -> bool {
        self.variants.iter().all(|v| self.seed_offset(*v) == self.seed_offset(self.variants[0]))
    }
}

mod command;
mod jobs;
pub use command::*;
pub use jobs::*;

/// What a job runs: the built-in CNN or a sweep's own command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobKind {
    Builtin,
    Command,
}

impl JobKind {
    /// Lower-case name, as stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Builtin => "builtin",
            JobKind::Command => "command",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_round_trip() {
        for v in LossVariant::ALL {
            assert_eq!(v.name().parse::<LossVariant>().unwrap(), v);
        }
        assert!("normal".parse::<LossVariant>().is_err());
    }

    #[test]
    fn only_lr1e2_variant_defaults_to_1e2() {
        let lrs: Vec<f64> = LossVariant::ALL.iter().map(|v| v.default_learning_rate()).collect();
        assert_eq!(lrs, vec![1e-3, 1e-3, 1e-3, 1e-3, 1e-2]);
    }

    #[test]
    fn states_round_trip_and_terminality() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!(!JobState::Queued.is_terminal());
        assert!(!JobState::Running.is_terminal());
        assert!(JobState::Cancelled.is_terminal());
    }
}
