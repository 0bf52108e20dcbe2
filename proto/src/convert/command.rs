//! Command sweeps, objectives and rendered command jobs: wire → domain with every check.

use std::collections::BTreeMap;

use super::{InvalidInput, ensure};
use crate::domain::{
    CommandJob, CommandSpec, Direction, Distribution, JOB_FIELDS, MAX_LABEL_LEN, MAX_PARAM_NAME_LEN,
    MAX_PARAM_VALUE_LEN, MAX_PARAM_VALUES, MAX_PARAMS, MAX_POINTS, MAX_TEMPLATE_LEN, Objective,
    is_metric_name, point_label, split_words, substitute,
};
use crate::pb;
use crate::text::echo;

/// Most extra environment variables a command may set.
const MAX_ENV: usize = 64;
/// Longest timeout accepted: a week.
const MAX_TIMEOUT_SECONDS: u32 = 7 * 24 * 3600;

fn check_value(field: &'static str, name: &str, value: &str) -> Result<(), InvalidInput> {
    ensure(!value.is_empty() && value.len() <= MAX_PARAM_VALUE_LEN, field, || {
        format!("a value of {name} must hold 1..={MAX_PARAM_VALUE_LEN} bytes")
    })?;
    // Values become job labels ("a=1,b=2") and command words: no separators or control characters.
    ensure(!value.contains([',', '=']) && !value.chars().any(char::is_control), field, || {
        format!("value {} of {name} may not hold ',', '=' or control characters", echo(value))
    })
}

fn check_values(field: &'static str, name: &str, values: &[String]) -> Result<(), InvalidInput> {
    ensure(!values.is_empty() && values.len() <= MAX_PARAM_VALUES, field, || {
        format!("{name} must list 1..={MAX_PARAM_VALUES} values")
    })?;
    for (i, v) in values.iter().enumerate() {
        check_value(field, name, v)?;
        ensure(!values[..i].contains(v), field, || format!("{name} lists {} twice", echo(v)))?;
    }
    Ok(())
}

fn distribution(name: &str, d: pb::Distribution) -> Result<Distribution, InvalidInput> {
    const FIELD: &str = "command.distributions";
    let range = |r: pb::Range, positive: bool| -> Result<(f64, f64), InvalidInput> {
        ensure(r.low.is_finite() && r.high.is_finite() && r.low < r.high, FIELD, || {
            format!("{name}: [{}, {}] is not a range of finite numbers, low < high", r.low, r.high)
        })?;
        ensure(!positive || r.low > 0.0, FIELD, || format!("{name}: a log-uniform range must be above 0"))?;
        Ok((r.low, r.high))
    };
    Ok(match d.kind {
        Some(pb::distribution::Kind::Uniform(r)) => {
            let (low, high) = range(r, false)?;
            Distribution::Uniform { low, high }
        }
        Some(pb::distribution::Kind::LogUniform(r)) => {
            let (low, high) = range(r, true)?;
            Distribution::LogUniform { low, high }
        }
        Some(pb::distribution::Kind::IntUniform(r)) => {
            let (low, high) = range(r, false)?;
            let whole = |x: f64| x.fract() == 0.0 && x.abs() < 9.0e15;
            ensure(whole(low) && whole(high), FIELD, || {
                format!("{name}: int_uniform bounds must be integers")
            })?;
            Distribution::IntUniform { low: low as i64, high: high as i64 }
        }
        Some(pb::distribution::Kind::Choice(values)) => {
            check_values(FIELD, name, &values.values)?;
            Distribution::Choice(values.values)
        }
        None => return Err(InvalidInput::new(FIELD, format!("{name}: no distribution given"))),
    })
}

impl TryFrom<pb::CommandSpec> for CommandSpec {
    type Error = InvalidInput;
    fn try_from(c: pb::CommandSpec) -> Result<Self, InvalidInput> {
        ensure(c.template.len() <= MAX_TEMPLATE_LEN, "command.template", || {
            format!("longer than {MAX_TEMPLATE_LEN} bytes")
        })?;
        let words = split_words(&c.template).map_err(|e| InvalidInput::new("command.template", e))?;
        ensure(!words.is_empty(), "command.template", || "names no program".into())?;
        ensure(c.grid.len() + c.distributions.len() <= MAX_PARAMS, "command", || {
            format!("more than {MAX_PARAMS} parameters")
        })?;
        let mut grid = BTreeMap::new();
        for (name, values) in c.grid {
            ensure(is_metric_name(&name), "command.grid", || {
                format!("{} is not a parameter name", echo(&name))
            })?;
            check_values("command.grid", &name, &values.values)?;
            grid.insert(name, values.values);
        }
        let mut distributions = BTreeMap::new();
        for (name, d) in c.distributions {
            ensure(is_metric_name(&name), "command.distributions", || {
                format!("{} is not a parameter name", echo(&name))
            })?;
            ensure(!grid.contains_key(&name), "command.distributions", || {
                format!("{name} is also a grid parameter")
            })?;
            distributions.insert(name.clone(), distribution(&name, d)?);
        }
        ensure(c.samples == 0 || !distributions.is_empty(), "command.samples", || {
            "samples need at least one distribution".into()
        })?;
        ensure(distributions.is_empty() || c.samples > 0, "command.samples", || {
            "distributions need samples > 0".into()
        })?;
        for name in grid.keys().chain(distributions.keys()) {
            ensure(!JOB_FIELDS.contains(&name.as_str()), "command", || {
                format!("{name} is a job field; name the parameter otherwise")
            })?;
        }
        for word in &words {
            substitute(word, &|n| {
                (grid.contains_key(n) || distributions.contains_key(n) || JOB_FIELDS.contains(&n))
                    .then(String::new)
            })
            .map_err(|e| InvalidInput::new("command.template", e))?;
        }
        ensure(c.env.len() <= MAX_ENV, "command.env", || format!("more than {MAX_ENV} variables"))?;
        for (k, v) in &c.env {
            let name_ok = !k.is_empty()
                && k.len() <= MAX_PARAM_NAME_LEN
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            ensure(name_ok, "command.env", || format!("{} is not a variable name", echo(k)))?;
            ensure(!k.starts_with("SWEEP_"), "command.env", || {
                format!("{k}: SWEEP_ variables are the job's own")
            })?;
            ensure(v.len() <= MAX_TEMPLATE_LEN && !v.contains('\0'), "command.env", || {
                format!("the value of {k} is too long or holds NUL")
            })?;
        }
        ensure(c.workdir.len() <= MAX_TEMPLATE_LEN && !c.workdir.contains('\0'), "command.workdir", || {
            "too long or holds NUL".into()
        })?;
        ensure(c.timeout_seconds <= MAX_TIMEOUT_SECONDS, "command.timeout_seconds", || {
            format!("{} is more than a week", c.timeout_seconds)
        })?;
        let spec = CommandSpec {
            template: c.template,
            grid,
            samples: c.samples,
            distributions,
            workdir: (!c.workdir.is_empty()).then_some(c.workdir),
            env: c.env.into_iter().collect(),
            timeout_seconds: (c.timeout_seconds > 0).then_some(c.timeout_seconds),
        };
        ensure(spec.point_count() <= MAX_POINTS, "command", || {
            format!("{} parameter points is more than {MAX_POINTS}", spec.point_count())
        })?;
        let longest = spec.points("").iter().map(|p| point_label(p).len()).max().unwrap_or(0);
        ensure(longest <= MAX_LABEL_LEN, "command", || {
            format!("a parameter point's label would be {longest} bytes, more than {MAX_LABEL_LEN}")
        })?;
        Ok(spec)
    }
}

impl From<CommandSpec> for pb::CommandSpec {
    fn from(c: CommandSpec) -> Self {
        let range = |low: f64, high: f64| pb::Range { low, high };
        pb::CommandSpec {
            template: c.template,
            grid: c.grid.into_iter().map(|(k, values)| (k, pb::ParamValues { values })).collect(),
            samples: c.samples,
            distributions: c
                .distributions
                .into_iter()
                .map(|(k, d)| {
                    let kind = match d {
                        Distribution::Uniform { low, high } => {
                            pb::distribution::Kind::Uniform(range(low, high))
                        }
                        Distribution::LogUniform { low, high } => {
                            pb::distribution::Kind::LogUniform(range(low, high))
                        }
                        Distribution::IntUniform { low, high } => {
                            pb::distribution::Kind::IntUniform(range(low as f64, high as f64))
                        }
                        Distribution::Choice(values) => {
                            pb::distribution::Kind::Choice(pb::ParamValues { values })
                        }
                    };
                    (k, pb::Distribution { kind: Some(kind) })
                })
                .collect(),
            workdir: c.workdir.unwrap_or_default(),
            env: c.env.into_iter().collect(),
            timeout_seconds: c.timeout_seconds.unwrap_or(0),
        }
    }
}

/// An objective from the wire: unset metric = val_acc, unset mode = max.
pub fn objective_from_wire(o: Option<pb::Objective>) -> Result<Objective, InvalidInput> {
    let Some(o) = o else { return Ok(Objective::default()) };
    let metric = if o.metric.is_empty() { Objective::default().metric } else { o.metric };
    ensure(is_metric_name(&metric), "objective.metric", || {
        format!("{} is not a metric name", echo(&metric))
    })?;
    let direction = match pb::objective::Mode::try_from(o.mode) {
        Ok(pb::objective::Mode::Unspecified | pb::objective::Mode::Max) => Direction::Max,
        Ok(pb::objective::Mode::Min) => Direction::Min,
        Err(_) => return Err(InvalidInput::new("objective.mode", format!("{} is not a mode", o.mode))),
    };
    Ok(Objective { metric, direction })
}

impl From<Objective> for pb::Objective {
    fn from(o: Objective) -> Self {
        let mode = match o.direction {
            Direction::Max => pb::objective::Mode::Max,
            Direction::Min => pb::objective::Mode::Min,
        };
        pb::Objective { metric: o.metric, mode: mode as i32 }
    }
}

impl TryFrom<pb::CommandJob> for CommandJob {
    type Error = InvalidInput;
    fn try_from(c: pb::CommandJob) -> Result<Self, InvalidInput> {
        ensure(!c.argv.is_empty() && !c.argv[0].is_empty(), "command.argv", || "names no program".into())?;
        ensure(c.argv.iter().all(|a| !a.contains('\0')), "command.argv", || "an argument holds NUL".into())?;
        ensure(
            c.env.iter().all(|(k, v)| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0')),
            "command.env",
            || "a variable is not NAME=VALUE".into(),
        )?;
        Ok(CommandJob {
            argv: c.argv,
            workdir: (!c.workdir.is_empty()).then_some(c.workdir),
            env: c.env.into_iter().collect(),
            timeout_seconds: (c.timeout_seconds > 0).then_some(c.timeout_seconds),
            params: c.params.into_iter().collect(),
        })
    }
}

impl From<CommandJob> for pb::CommandJob {
    fn from(c: CommandJob) -> Self {
        pb::CommandJob {
            argv: c.argv,
            workdir: c.workdir.unwrap_or_default(),
            env: c.env.into_iter().collect(),
            timeout_seconds: c.timeout_seconds.unwrap_or(0),
            params: c.params.into_iter().collect(),
        }
    }
}
