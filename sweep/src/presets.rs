//! The named sweeps a user can run with one flag, and custom sweeps from flags or a JSON spec.

use std::path::Path;

use clap::ValueEnum;
use sweep_proto::LossVariant;
use sweep_proto::pb::{DataOptions, SweepSpec};

/// Named sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The experiment's protocol: 5 variants × seeds 0..5 × 100 epochs, batch 512.
    Paper,
    /// natural_softmax and normal_lr1e-3 with 15 seeds each, 100 epochs.
    Paper15,
    /// 5 variants × 3 seeds × 15 epochs, full data and width.
    Quick,
    /// A tiny CPU-sized run (about a minute on 2 cores): 5 variants × 2 seeds × 2 epochs on
    /// 512 training / 256 test images with an eighth of the channels.
    Smoke,
}

impl Preset {
    /// The preset's sweep spec, named after the preset.
    pub fn spec(self) -> SweepSpec {
        let all: Vec<LossVariant> = LossVariant::ALL.to_vec();
        let (variants, seeds, epochs, data) = match self {
            Preset::Paper => (all, 0..5, 100, DataOptions::default()),
            Preset::Paper15 => (
                vec![LossVariant::NaturalSoftmax, LossVariant::NormalLr1e3],
                0..15,
                100,
                DataOptions::default(),
            ),
            Preset::Quick => (all, 0..3, 15, DataOptions::default()),
            Preset::Smoke => (
                all,
                0..2,
                2,
                DataOptions { train_limit: 512, test_limit: 256, augment: false, width_multiplier: 0.125 },
            ),
        };
        SweepSpec {
            name: self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default(),
            variants: variants.iter().map(|v| v.name().to_owned()).collect(),
            seeds: seeds.collect(),
            epochs,
            batch_size: if self == Preset::Smoke { 64 } else { 512 },
            learning_rates: Default::default(),
            data: Some(data),
            max_attempts: 0,
        }
    }
}

/// Reads a sweep spec from a JSON file with the fields of `sweep.v1.SweepSpec`
/// (e.g. `{"name": "mine", "variants": ["natural_softmax"], "seeds": [0, 1], "epochs": 10,
/// "batch_size": 512}`); validation happens in the coordinator like for any submission.
pub fn spec_from_file(path: &Path) -> Result<SweepSpec, SpecFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| SpecFileError::Read { path: path.display().to_string(), source })?;
    let file: SpecFile = serde_json::from_str(&text)
        .map_err(|source| SpecFileError::Parse { path: path.display().to_string(), source })?;
    Ok(file.into())
}

/// A spec file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecFileError {
    #[error("cannot read spec file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("spec file {path} is not a valid sweep spec: {source}")]
    Parse { path: String, source: serde_json::Error },
}

/// The JSON shape of a spec file (prost types carry no serde derives).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    variants: Vec<String>,
    seeds: Vec<u64>,
    epochs: u32,
    #[serde(default = "default_batch")]
    batch_size: u32,
    #[serde(default)]
    learning_rates: std::collections::HashMap<String, f64>,
    #[serde(default)]
    train_limit: u32,
    #[serde(default)]
    test_limit: u32,
    #[serde(default)]
    augment: bool,
    #[serde(default)]
    width_multiplier: f32,
    #[serde(default)]
    max_attempts: u32,
}

fn default_batch() -> u32 {
    512
}

impl From<SpecFile> for SweepSpec {
    fn from(f: SpecFile) -> Self {
        SweepSpec {
            name: f.name,
            variants: f.variants,
            seeds: f.seeds,
            epochs: f.epochs,
            batch_size: f.batch_size,
            learning_rates: f.learning_rates,
            data: Some(DataOptions {
                train_limit: f.train_limit,
                test_limit: f.test_limit,
                augment: f.augment,
                width_multiplier: f.width_multiplier,
            }),
            max_attempts: f.max_attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_protocols() {
        let jobs = |p: Preset| {
            let s = p.spec();
            s.variants.len() * s.seeds.len()
        };
        assert_eq!(jobs(Preset::Paper), 25);
        assert_eq!(Preset::Paper.spec().epochs, 100);
        assert_eq!(jobs(Preset::Paper15), 30);
        assert_eq!(jobs(Preset::Quick), 15);
        assert_eq!(Preset::Quick.spec().epochs, 15);
        assert_eq!(Preset::Paper.spec().batch_size, 512);
        for p in [Preset::Paper, Preset::Paper15, Preset::Quick, Preset::Smoke] {
            let spec = sweep_proto::SweepSpec::try_from(p.spec()).expect("preset must validate");
            assert_eq!(spec.name, p.to_possible_value().unwrap().get_name());
        }
    }

    #[test]
    fn spec_file_round_trips_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"name":"x","variants":["natural_softmax"],"seeds":[1,2],"epochs":3}"#)
            .unwrap();
        let spec = spec_from_file(&good).unwrap();
        assert_eq!((spec.seeds.len(), spec.batch_size), (2, 512));
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"name":"x","variants":[],"seeds":[],"epochs":3,"epoch":4}"#).unwrap();
        assert!(matches!(spec_from_file(&bad), Err(SpecFileError::Parse { .. })));
        assert!(matches!(spec_from_file(&dir.path().join("none.json")), Err(SpecFileError::Read { .. })));
    }
}
