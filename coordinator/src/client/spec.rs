//! Sweep specs on the client edge: the one spec-file format (read by `coordinator submit` and
//! `sweep run`, written into reports), the seed parser, and the flags both commands share.
//! Values are only shaped here; the coordinator validates them (`sweep_proto::convert`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};
use sweep_proto::domain::{INDEPENDENT_SEED_STRIDE, MAX_SEEDS};
use sweep_proto::{LossVariant, pb};

use super::presets::Preset;
use super::spec_command::{CommandFile, ObjectiveArgs, ObjectiveFile};

/// Why the flags or the spec file do not make a sweep spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("spec file {path} is not a sweep spec: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("bad seeds {text:?}: {why}")]
    Seeds { text: String, why: String },
    #[error("{flag} {item:?} is not VARIANT=VALUE ({why})")]
    Pair { flag: &'static str, item: String, why: String },
    #[error("{0} is required without --preset or --spec")]
    Missing(&'static str),
}

/// The spec-file format: the fields of `sweep.v1.SweepSpec`, `seeds` as a list or a range text
/// ("0..5", "0..=4", "0,1,7"), options left out take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecFile {
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
    pub seeds: Option<SeedsField>,
    pub epochs: Option<u32>,
    pub batch_size: Option<u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub learning_rates: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub seed_offsets: BTreeMap<String, u64>,
    pub data: Option<DataFile>,
    pub max_attempts: Option<u32>,
    /// The user's own command instead of the built-in CNN's variants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objective: Option<ObjectiveFile>,
}

/// Seeds in a spec file: a list or a range text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SeedsField {
    List(Vec<u64>),
    Text(String),
}

/// The data and model options of a spec file (0 / false = the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataFile {
    pub train_limit: u32,
    pub test_limit: u32,
    pub augment: bool,
    pub width_multiplier: f32,
    pub bn_group: u32,
}

impl SpecFile {
    /// Reads a spec file.
    pub fn read(path: &Path) -> Result<Self, SpecError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|source| SpecError::Parse { path: path.into(), source })
    }

    /// The file a wire spec would be written as (what reports show, and `submit --spec` reads).
    pub fn from_wire(spec: &pb::SweepSpec) -> Self {
        let data = spec.data.unwrap_or_default();
        let command = spec.command.as_ref().map(CommandFile::from);
        SpecFile {
            name: Some(spec.name.clone()),
            variants: spec.variants.clone(),
            seeds: Some(SeedsField::List(spec.seeds.clone())),
            epochs: Some(spec.epochs),
            batch_size: Some(spec.batch_size),
            learning_rates: spec.learning_rates.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            seed_offsets: spec.seed_offsets.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            data: command.is_none().then_some(DataFile {
                train_limit: data.train_limit,
                test_limit: data.test_limit,
                augment: data.augment,
                width_multiplier: data.width_multiplier,
                bn_group: data.bn_group,
            }),
            max_attempts: Some(spec.max_attempts),
            command,
            objective: spec.objective.as_ref().map(ObjectiveFile::from),
        }
    }

    /// Pretty JSON in this format.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Parses "0..5" (end excluded), "0..=4" or "0,1,7"; at most [`MAX_SEEDS`] seeds.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, SpecError> {
    let text = text.trim();
    let bad = |why: String| SpecError::Seeds { text: text.to_owned(), why };
    let num = |s: &str| s.trim().parse::<u64>().map_err(|e| bad(format!("{:?}: {e}", s.trim())));
    let seeds: Vec<u64> = if let Some((a, b)) = text.split_once("..") {
        let (inclusive, b) = match b.strip_prefix('=') {
            Some(b) => (true, b),
            None => (false, b),
        };
        let (start, end) = (num(a)?, num(b)?);
        let end =
            if inclusive { end.checked_add(1).ok_or_else(|| bad("range too large".into()))? } else { end };
        if end <= start {
            return Err(bad("empty range".into()));
        }
        if end - start > MAX_SEEDS as u64 {
            return Err(bad(format!("more than the {MAX_SEEDS} seeds a sweep may hold")));
        }
        (start..end).collect()
    } else {
        text.split(',').filter(|s| !s.trim().is_empty()).map(num).collect::<Result<_, _>>()?
    };
    if seeds.is_empty() {
        return Err(bad("no seed".into()));
    }
    if seeds.len() > MAX_SEEDS {
        return Err(bad(format!("more than the {MAX_SEEDS} seeds a sweep may hold")));
    }
    Ok(seeds)
}

/// The sweep-describing flags of `coordinator submit` and `sweep run`: a preset or a spec file,
/// then overrides (applied to every submission of a preset).
#[derive(Debug, Clone, Default, Args)]
pub struct SpecArgs {
    /// Named sweep: protocol (the experiment: 45 jobs × 100 epochs), paper, paper15, ghost64,
    /// quick, smoke. Flags below override its values.
    #[arg(long, env = "SWEEP_PRESET", value_enum, conflicts_with = "spec")]
    pub preset: Option<Preset>,
    /// JSON spec file (the format of a report's "Sweep spec" block); flags below override it.
    #[arg(long, env = "SWEEP_SPEC")]
    pub spec: Option<PathBuf>,
    /// Sweep name: letters, digits, '.', '_', '-' [required without --preset/--spec].
    #[arg(long, env = "SWEEP_NAME")]
    pub name: Option<String>,
    /// Loss variants, comma separated [default: all five].
    #[arg(long, env = "SWEEP_VARIANTS", value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Seeds: "0..5" (end excluded), "0..=4" or "0,1,7" [required without --preset/--spec].
    #[arg(long, env = "SWEEP_SEEDS")]
    pub seeds: Option<String>,
    /// Epochs per job [required without --preset/--spec].
    #[arg(long, env = "SWEEP_EPOCHS")]
    pub epochs: Option<u32>,
    /// Images per training batch [required without --preset/--spec].
    #[arg(long, env = "SWEEP_BATCH_SIZE")]
    pub batch_size: Option<u32>,
    /// Learning-rate overrides, VARIANT=LR, comma separated.
    #[arg(long = "lr", env = "SWEEP_LEARNING_RATES", value_delimiter = ',')]
    pub learning_rates: Vec<String>,
    /// Train on the first N images only (0 = all 50,000).
    #[arg(long, env = "SWEEP_TRAIN_LIMIT")]
    pub train_limit: Option<u32>,
    /// Validate on the first N test images only (0 = all 10,000).
    #[arg(long, env = "SWEEP_TEST_LIMIT")]
    pub test_limit: Option<u32>,
    /// Random crop (4 px padding) + horizontal flip (off in the experiment).
    #[arg(long, env = "SWEEP_AUGMENT")]
    pub augment: Option<bool>,
    /// CNN channel width multiplier (1.0 = the experiment's 64/128/256 filters).
    #[arg(long, alias = "width", env = "SWEEP_WIDTH_MULTIPLIER")]
    pub width_multiplier: Option<f32>,
    /// BatchNorm statistics per group of N images in training (0 = the whole batch; must
    /// divide the batch size).
    #[arg(long, env = "SWEEP_BN_GROUP")]
    pub bn_group: Option<u32>,
    /// Attempts before a job fails for good [default: the preset's, else 3].
    #[arg(long, env = "SWEEP_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Give each variant its own seeds (variant i of the five trains seed s as
    /// s + i·1,000,000): independent runs, compared unpaired.
    #[arg(long, env = "SWEEP_INDEPENDENT_SEEDS")]
    pub independent_seeds: bool,
    /// Seed offsets, VARIANT=N, comma separated (added to that variant's seeds).
    #[arg(long = "seed-offset", env = "SWEEP_SEED_OFFSETS", value_delimiter = ',')]
    pub seed_offsets: Vec<String>,
    #[command(flatten)]
    pub objective: ObjectiveArgs,
}

fn pairs<T: std::str::FromStr>(flag: &'static str, items: &[String]) -> Result<Vec<(String, T)>, SpecError>
where
    T::Err: std::fmt::Display,
{
    items
        .iter()
        .map(|item| {
            let bad = |why: String| SpecError::Pair { flag, item: item.clone(), why };
            let (key, value) = item.split_once('=').ok_or_else(|| bad("no '='".into()))?;
            let value = value.trim().parse::<T>().map_err(|e| bad(e.to_string()))?;
            Ok((key.trim().to_owned(), value))
        })
        .collect()
}

impl SpecArgs {
    /// Whether the flags shape a sweep themselves (seeds, epochs or batch size; no preset or file).
    pub fn shapes_a_sweep(&self) -> bool {
        let shaped = self.seeds.is_some() || self.epochs.is_some() || self.batch_size.is_some();
        shaped && self.preset.is_none() && self.spec.is_none()
    }

    /// The submissions these flags describe: the preset's (or `default_preset`'s when neither a
    /// preset nor a file is given), the file's, or the flags' alone; each with the overrides.
    pub fn submissions(&self, default_preset: Option<Preset>) -> Result<Vec<pb::SweepSpec>, SpecError> {
        let base: Vec<pb::SweepSpec> = match (&self.spec, self.preset.or(default_preset)) {
            (Some(path), _) => vec![self.spec_from_file(SpecFile::read(path)?)?],
            (None, Some(preset)) => preset.submissions(),
            (None, None) => vec![self.spec_from_file(SpecFile::default())?],
        };
        base.into_iter().map(|spec| self.apply(spec)).collect()
    }

    /// A spec from a file's values; what neither the file nor a flag gives is an error.
    fn spec_from_file(&self, file: SpecFile) -> Result<pb::SweepSpec, SpecError> {
        let seeds = match (&self.seeds, file.seeds) {
            (Some(_), _) => Vec::new(), // set by `apply`
            (None, Some(SeedsField::List(seeds))) => seeds,
            (None, Some(SeedsField::Text(text))) => parse_seeds(&text)?,
            (None, None) => return Err(SpecError::Missing("--seeds")),
        };
        let required = |v: Option<u32>, flag| v.ok_or(SpecError::Missing(flag));
        let data = file.data.unwrap_or_default();
        let command = file.command.as_ref().map(pb::CommandSpec::from);
        Ok(pb::SweepSpec {
            name: self.name.clone().or(file.name).ok_or(SpecError::Missing("--name"))?,
            variants: if file.variants.is_empty() && command.is_none() {
                LossVariant::ALL.iter().map(|v| v.name().to_owned()).collect()
            } else {
                file.variants
            },
            seeds,
            epochs: required(self.epochs.or(file.epochs), "--epochs")?,
            batch_size: match &command {
                Some(_) => self.batch_size.or(file.batch_size).unwrap_or(0),
                None => required(self.batch_size.or(file.batch_size), "--batch-size")?,
            },
            learning_rates: file.learning_rates.into_iter().collect(),
            seed_offsets: file.seed_offsets.into_iter().collect(),
            data: command.is_none().then_some(pb::DataOptions {
                train_limit: data.train_limit,
                test_limit: data.test_limit,
                augment: data.augment,
                width_multiplier: data.width_multiplier,
                bn_group: data.bn_group,
            }),
            max_attempts: file.max_attempts.unwrap_or(0),
            command,
            objective: file.objective.as_ref().map(pb::Objective::from),
        })
    }

    /// The flags' overrides on one submission.
    fn apply(&self, mut spec: pb::SweepSpec) -> Result<pb::SweepSpec, SpecError> {
        if let Some(name) = &self.name {
            spec.name = name.clone();
        }
        if !self.variants.is_empty() {
            spec.variants = self.variants.clone();
        }
        if let Some(text) = &self.seeds {
            spec.seeds = parse_seeds(text)?;
        }
        spec.epochs = self.epochs.unwrap_or(spec.epochs);
        spec.batch_size = self.batch_size.unwrap_or(spec.batch_size);
        spec.max_attempts = self.max_attempts.unwrap_or(spec.max_attempts);
        for (variant, lr) in pairs::<f64>("--lr", &self.learning_rates)? {
            spec.learning_rates.insert(variant, lr);
        }
        if self.independent_seeds {
            for (i, v) in LossVariant::ALL.iter().enumerate() {
                if spec.variants.iter().any(|name| name == v.name()) {
                    spec.seed_offsets.insert(v.name().to_owned(), i as u64 * INDEPENDENT_SEED_STRIDE);
                }
            }
        }
        for (variant, offset) in pairs::<u64>("--seed-offset", &self.seed_offsets)? {
            spec.seed_offsets.insert(variant, offset);
        }
        let data = spec.data.get_or_insert_with(Default::default);
        data.train_limit = self.train_limit.unwrap_or(data.train_limit);
        data.test_limit = self.test_limit.unwrap_or(data.test_limit);
        data.augment = self.augment.unwrap_or(data.augment);
        data.width_multiplier = self.width_multiplier.unwrap_or(data.width_multiplier);
        data.bn_group = self.bn_group.unwrap_or(data.bn_group);
        self.objective.apply(&mut spec);
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        spec: SpecArgs,
    }

    fn parse(args: &[&str]) -> SpecArgs {
        Cli::parse_from(std::iter::once("test").chain(args.iter().copied())).spec
    }

    #[test]
    fn seeds_parse_ranges_and_lists_within_the_limit() {
        assert_eq!(parse_seeds("0..5").unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(parse_seeds("2..=4").unwrap(), vec![2, 3, 4]);
        assert_eq!(parse_seeds("7, 3,9").unwrap(), vec![7, 3, 9]);
        for bad in ["5..5", "a..3", "1,x", "", "0..20000", "18446744073709551615..=18446744073709551615"] {
            assert!(matches!(parse_seeds(bad), Err(SpecError::Seeds { .. })), "{bad:?}");
        }
    }

    #[test]
    fn presets_take_overrides_on_every_submission() {
        let specs = parse(&["--preset", "protocol", "--epochs", "3", "--name", "try", "--bn-group", "64"])
            .submissions(None)
            .unwrap();
        assert_eq!(specs.len(), 2);
        for s in &specs {
            assert_eq!((s.name.as_str(), s.epochs, s.data.unwrap().bn_group), ("try", 3, 64));
        }
        assert_eq!(specs[1].seeds.len(), 15);
        let smoke = parse(&[]).submissions(Some(Preset::Smoke)).unwrap();
        assert_eq!(smoke[0].name, "smoke");
    }

    #[test]
    fn flags_alone_need_name_seeds_epochs_and_batch_size() {
        let err = parse(&["--name", "x", "--seeds", "0..2", "--epochs", "3"]).submissions(None).unwrap_err();
        assert!(matches!(err, SpecError::Missing("--batch-size")), "{err}");
        let err =
            parse(&["--name", "x", "--epochs", "3", "--batch-size", "8"]).submissions(None).unwrap_err();
        assert!(matches!(err, SpecError::Missing("--seeds")), "{err}");
        let specs = parse(&[
            "--name",
            "x",
            "--seeds",
            "0..2",
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--variants",
            "natural_softmax,normal_lr1e-3",
            "--lr",
            "natural_softmax=0.002",
            "--independent-seeds",
            "--width-multiplier",
            "0.5",
        ])
        .submissions(None)
        .unwrap();
        let s = &specs[0];
        assert_eq!(s.variants.len(), 2);
        assert_eq!(s.learning_rates["natural_softmax"], 0.002);
        assert_eq!(s.seed_offsets["natural_softmax"], INDEPENDENT_SEED_STRIDE);
        assert_eq!(s.seed_offsets["normal_lr1e-3"], 3 * INDEPENDENT_SEED_STRIDE);
        assert_eq!(s.data.unwrap().width_multiplier, 0.5);
        let err = parse(&["--preset", "smoke", "--lr", "natural_softmax:1"]).submissions(None).unwrap_err();
        assert!(matches!(err, SpecError::Pair { flag: "--lr", .. }), "{err}");
    }

    #[test]
    fn the_written_spec_file_reads_back_as_the_same_spec() {
        let dir = tempfile::tempdir().unwrap();
        let mut wire = Preset::Ghost64.submissions().remove(0);
        wire.seed_offsets.insert("natural_softmax".into(), 7);
        wire.learning_rates.insert("normal_lr1e-3".into(), 0.002);
        let path = dir.path().join("spec.json");
        std::fs::write(&path, SpecFile::from_wire(&wire).to_json()).unwrap();
        let back = parse(&["--spec", path.to_str().unwrap()]).submissions(None).unwrap();
        assert_eq!(back, vec![wire]);
        std::fs::write(&path, r#"{"name":"x","seeds":"0..2","epochs":1,"batch_size":8,"epoch":4}"#).unwrap();
        let err = parse(&["--spec", path.to_str().unwrap()]).submissions(None).unwrap_err();
        assert!(matches!(err, SpecError::Parse { .. }), "{err}");
        let err = parse(&["--spec", "/nonexistent/spec.json"]).submissions(None).unwrap_err();
        assert!(matches!(err, SpecError::Read { .. }), "{err}");
    }
}
