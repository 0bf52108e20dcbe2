//! The command-sweep part of the spec-file format (`command` and `objective`), and its wire form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sweep_proto::pb;

/// `command` in a spec file: the fields of `sweep.v1.CommandSpec`; grid values may be JSON
/// strings, numbers or booleans (numbers are passed on as JSON writes them: 0.001 → "0.001").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandFile {
    pub template: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub grid: BTreeMap<String, Vec<ParamValue>>,
    #[serde(skip_serializing_if = "is_zero")]
    pub samples: u32,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub distributions: BTreeMap<String, DistributionFile>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub workdir: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub timeout_seconds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A parameter value as a spec file may write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl ParamValue {
    fn text(&self) -> String {
        match self {
            ParamValue::Text(s) => s.clone(),
            ParamValue::Int(i) => i.to_string(),
            ParamValue::Float(f) => f.to_string(),
            ParamValue::Bool(b) => b.to_string(),
        }
    }
}

/// A random-search distribution: `{"log_uniform": [1e-5, 1e-2]}` and the like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DistributionFile {
    Uniform([f64; 2]),
    LogUniform([f64; 2]),
    IntUniform([i64; 2]),
    Choice(Vec<ParamValue>),
}

/// The flags that override a spec's objective.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ObjectiveArgs {
    /// The metric that ranks a job's epochs and the sweep's jobs [default: the spec's, else
    /// val_acc].
    #[arg(long, env = "SWEEP_OBJECTIVE")]
    pub objective: Option<String>,
    /// Whether a higher (max) or lower (min) objective is better [default: the spec's, else max].
    #[arg(long = "mode", env = "SWEEP_OBJECTIVE_MODE", value_enum)]
    pub mode: Option<Mode>,
}

impl ObjectiveArgs {
    /// Sets the objective's metric and mode the flags name.
    pub fn apply(&self, spec: &mut pb::SweepSpec) {
        if self.objective.is_none() && self.mode.is_none() {
            return;
        }
        let objective = spec.objective.get_or_insert_with(Default::default);
        if let Some(metric) = &self.objective {
            objective.metric = metric.clone();
        }
        if let Some(mode) = self.mode {
            objective.mode = pb::Objective::from(&ObjectiveFile { metric: String::new(), mode }).mode;
        }
    }
}

/// `objective` in a spec file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveFile {
    pub metric: String,
    #[serde(default)]
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Max,
    Min,
}

fn values(v: &[ParamValue]) -> pb::ParamValues {
    pb::ParamValues { values: v.iter().map(ParamValue::text).collect() }
}

impl From<&CommandFile> for pb::CommandSpec {
    fn from(c: &CommandFile) -> Self {
        use pb::distribution::Kind;
        let range = |[low, high]: [f64; 2]| pb::Range { low, high };
        pb::CommandSpec {
            template: c.template.clone(),
            grid: c.grid.iter().map(|(k, v)| (k.clone(), values(v))).collect(),
            samples: c.samples,
            distributions: c
                .distributions
                .iter()
                .map(|(k, d)| {
                    let kind = match d {
                        DistributionFile::Uniform(r) => Kind::Uniform(range(*r)),
                        DistributionFile::LogUniform(r) => Kind::LogUniform(range(*r)),
                        DistributionFile::IntUniform([low, high]) => {
                            Kind::IntUniform(pb::Range { low: *low as f64, high: *high as f64 })
                        }
                        DistributionFile::Choice(v) => Kind::Choice(values(v)),
                    };
                    (k.clone(), pb::Distribution { kind: Some(kind) })
                })
                .collect(),
            workdir: c.workdir.clone(),
            env: c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            timeout_seconds: c.timeout_seconds,
        }
    }
}

impl From<&pb::CommandSpec> for CommandFile {
    fn from(c: &pb::CommandSpec) -> Self {
        use pb::distribution::Kind;
        let texts = |v: &pb::ParamValues| v.values.iter().cloned().map(ParamValue::Text).collect();
        CommandFile {
            template: c.template.clone(),
            grid: c.grid.iter().map(|(k, v)| (k.clone(), texts(v))).collect(),
            samples: c.samples,
            distributions: c
                .distributions
                .iter()
                .filter_map(|(k, d)| {
                    let file = match d.kind.as_ref()? {
                        Kind::Uniform(r) => DistributionFile::Uniform([r.low, r.high]),
                        Kind::LogUniform(r) => DistributionFile::LogUniform([r.low, r.high]),
                        Kind::IntUniform(r) => DistributionFile::IntUniform([r.low as i64, r.high as i64]),
                        Kind::Choice(v) => DistributionFile::Choice(texts(v)),
                    };
                    Some((k.clone(), file))
                })
                .collect(),
            workdir: c.workdir.clone(),
            env: c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            timeout_seconds: c.timeout_seconds,
        }
    }
}

impl From<&ObjectiveFile> for pb::Objective {
    fn from(o: &ObjectiveFile) -> Self {
        let mode = match o.mode {
            Mode::Max => pb::objective::Mode::Max,
            Mode::Min => pb::objective::Mode::Min,
        };
        pb::Objective { metric: o.metric.clone(), mode: mode as i32 }
    }
}

impl From<&pb::Objective> for ObjectiveFile {
    fn from(o: &pb::Objective) -> Self {
        let mode = if o.mode == pb::objective::Mode::Min as i32 { Mode::Min } else { Mode::Max };
        ObjectiveFile { metric: o.metric.clone(), mode }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::SpecFile;

    #[test]
    fn the_example_command_sweep_reads_validates_and_round_trips() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cifar10_torch/sweep.json");
        let file = SpecFile::read(&path).unwrap();
        let command = file.command.as_ref().unwrap();
        let wire = pb::CommandSpec::from(command);
        assert_eq!(wire.grid["loss"].values, ["normal", "natural_softmax"]);
        assert_eq!(
            CommandFile::from(&wire),
            CommandFile {
                grid: command
                    .grid
                    .iter()
                    .map(|(k, v)| (k.clone(), v.iter().map(|p| ParamValue::Text(p.text())).collect()))
                    .collect(),
                ..command.clone()
            }
        );
        let objective = pb::Objective::from(file.objective.as_ref().unwrap());
        assert_eq!(ObjectiveFile::from(&objective), *file.objective.as_ref().unwrap());
    }

    #[test]
    fn objective_flags_override_the_spec() {
        let mut spec = pb::SweepSpec::default();
        ObjectiveArgs::default().apply(&mut spec);
        assert_eq!(spec.objective, None, "no flag: the spec's own (or the default)");
        let flags = ObjectiveArgs { objective: Some("val_loss".into()), mode: Some(Mode::Min) };
        flags.apply(&mut spec);
        assert_eq!(
            spec.objective,
            Some(pb::Objective { metric: "val_loss".into(), mode: pb::objective::Mode::Min as i32 })
        );
        ObjectiveArgs { objective: None, mode: Some(Mode::Max) }.apply(&mut spec);
        assert_eq!(spec.objective.unwrap().metric, "val_loss");
    }

    #[test]
    fn numbers_and_distributions_become_their_wire_text() {
        let file: CommandFile = serde_json::from_str(
            r#"{"template": "run {lr} {depth} {act}", "grid": {"depth": [3, 5], "act": ["relu", true]},
                "samples": 4, "distributions": {"lr": {"log_uniform": [1e-4, 0.1]}}}"#,
        )
        .unwrap();
        let wire = pb::CommandSpec::from(&file);
        assert_eq!(wire.grid["depth"].values, ["3", "5"]);
        assert_eq!(wire.grid["act"].values, ["relu", "true"]);
        let lr = wire.distributions["lr"].kind.clone().unwrap();
        assert_eq!(lr, pb::distribution::Kind::LogUniform(pb::Range { low: 1e-4, high: 0.1 }));
        assert!(
            serde_json::from_str::<CommandFile>(r#"{"template": "x", "gird": {}}"#).is_err(),
            "unknown keys"
        );
    }
}
