//! Sweep specs, their data options and retry requests: wire → domain with every check.

use std::collections::{BTreeMap, HashSet};

use super::command::objective_from_wire;
use super::{InvalidInput, ensure, parse_variant, validate_sweep_name};
use crate::domain::{
    CommandSpec, DEFAULT_MAX_ATTEMPTS, DataOptions, MAX_ATTEMPTS, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_SEEDS,
    MAX_WIDTH_MULTIPLIER, SweepSpec, TEST_IMAGES, TRAIN_IMAGES,
};
use crate::pb;

impl TryFrom<pb::DataOptions> for DataOptions {
    type Error = InvalidInput;
    fn try_from(d: pb::DataOptions) -> Result<Self, InvalidInput> {
        ensure(d.train_limit <= TRAIN_IMAGES, "data.train_limit", || {
            format!("{} exceeds the {TRAIN_IMAGES} training images", d.train_limit)
        })?;
        ensure(d.test_limit <= TEST_IMAGES, "data.test_limit", || {
            format!("{} exceeds the {TEST_IMAGES} test images", d.test_limit)
        })?;
        let width = if d.width_multiplier == 0.0 { 1.0 } else { d.width_multiplier };
        ensure(
            width.is_finite() && width > 0.0 && width <= MAX_WIDTH_MULTIPLIER,
            "data.width_multiplier",
            || format!("{} is not in (0, {MAX_WIDTH_MULTIPLIER}]", d.width_multiplier),
        )?;
        ensure(d.bn_group <= MAX_BATCH_SIZE, "data.bn_group", || {
            format!("{} is more than the largest batch size, {MAX_BATCH_SIZE}", d.bn_group)
        })?;
        Ok(DataOptions {
            train_limit: (d.train_limit > 0).then_some(d.train_limit),
            test_limit: (d.test_limit > 0).then_some(d.test_limit),
            augment: d.augment,
            width_multiplier: width,
            bn_group: (d.bn_group > 0).then_some(d.bn_group),
        })
    }
}

impl From<DataOptions> for pb::DataOptions {
    fn from(d: DataOptions) -> Self {
        pb::DataOptions {
            train_limit: d.train_limit.unwrap_or(0),
            test_limit: d.test_limit.unwrap_or(0),
            augment: d.augment,
            width_multiplier: d.width_multiplier,
            bn_group: d.bn_group.unwrap_or(0),
        }
    }
}

/// The metrics the built-in CNN reports that may rank its epochs.
const BUILTIN_OBJECTIVES: [&str; 4] = ["val_acc", "val_loss", "train_acc", "train_loss"];

/// A BatchNorm group must split every full batch into equal groups.
pub fn check_bn_group(data: &DataOptions, batch_size: u32) -> Result<(), InvalidInput> {
    match data.bn_group {
        Some(group) => ensure(batch_size.is_multiple_of(group), "data.bn_group", || {
            format!("{group} does not divide the batch size {batch_size}")
        }),
        None => Ok(()),
    }
}

impl TryFrom<pb::SweepSpec> for SweepSpec {
    type Error = InvalidInput;
    fn try_from(s: pb::SweepSpec) -> Result<Self, InvalidInput> {
        validate_sweep_name(&s.name)?;
        if s.command.is_some() {
            return command_sweep(s);
        }
        ensure(!s.variants.is_empty(), "variants", || "at least one loss variant is required".into())?;
        let mut variants = Vec::with_capacity(s.variants.len());
        for name in &s.variants {
            let v = parse_variant(name).map_err(|e| InvalidInput::new("variants", e.message))?;
            ensure(!variants.contains(&v), "variants", || format!("{name} is listed twice"))?;
            variants.push(v);
        }
        check_seeds_and_epochs(&s)?;
        ensure((1..=MAX_BATCH_SIZE).contains(&s.batch_size), "batch_size", || {
            format!("{} is not in 1..={MAX_BATCH_SIZE}", s.batch_size)
        })?;
        let mut learning_rates = BTreeMap::new();
        for (name, lr) in &s.learning_rates {
            let v = parse_variant(name).map_err(|e| InvalidInput::new("learning_rates", e.message))?;
            ensure(variants.contains(&v), "learning_rates", || {
                format!("{name} is not a variant of this sweep")
            })?;
            ensure(lr.is_finite() && *lr > 0.0 && *lr <= 10.0, "learning_rates", || {
                format!("{lr} for {name} is not in (0, 10]")
            })?;
            learning_rates.insert(v, *lr);
        }
        for v in &variants {
            learning_rates.entry(*v).or_insert(v.default_learning_rate());
        }
        let max_attempts = max_attempts(s.max_attempts)?;
        let data = s.data.unwrap_or_default().try_into()?;
        check_bn_group(&data, s.batch_size)?;
        let mut seed_offsets = BTreeMap::new();
        let largest_seed = s.seeds.iter().copied().max().unwrap_or(0);
        for (name, offset) in &s.seed_offsets {
            let v = parse_variant(name).map_err(|e| InvalidInput::new("seed_offsets", e.message))?;
            ensure(variants.contains(&v), "seed_offsets", || {
                format!("{name} is not a variant of this sweep")
            })?;
            ensure(largest_seed.checked_add(*offset).is_some(), "seed_offsets", || {
                format!("{offset} for {name} overflows a 64-bit seed")
            })?;
            if *offset > 0 {
                seed_offsets.insert(v, *offset);
            }
        }
        Ok(SweepSpec {
            name: s.name,
            variants,
            seeds: s.seeds,
            epochs: s.epochs,
            batch_size: s.batch_size,
            learning_rates,
            data,
            max_attempts,
            seed_offsets,
            command: None,
            objective: {
                let objective = objective_from_wire(s.objective)?;
                ensure(BUILTIN_OBJECTIVES.contains(&objective.metric.as_str()), "objective.metric", || {
                    format!(
                        "the built-in CNN reports {}, not {}",
                        BUILTIN_OBJECTIVES.join(", "),
                        objective.metric
                    )
                })?;
                objective
            },
        })
    }
}

fn check_seeds_and_epochs(s: &pb::SweepSpec) -> Result<(), InvalidInput> {
    ensure(!s.seeds.is_empty(), "seeds", || "at least one seed is required".into())?;
    ensure(s.seeds.len() <= MAX_SEEDS, "seeds", || format!("more than {MAX_SEEDS} seeds"))?;
    let mut seen = HashSet::with_capacity(s.seeds.len());
    for seed in &s.seeds {
        ensure(seen.insert(*seed), "seeds", || format!("seed {seed} is listed twice"))?;
    }
    ensure((1..=MAX_EPOCHS).contains(&s.epochs), "epochs", || {
        format!("{} is not in 1..={MAX_EPOCHS}", s.epochs)
    })
}

fn max_attempts(asked: u32) -> Result<u32, InvalidInput> {
    let max_attempts = if asked == 0 { DEFAULT_MAX_ATTEMPTS } else { asked };
    ensure(max_attempts <= MAX_ATTEMPTS, "max_attempts", || format!("{asked} is more than {MAX_ATTEMPTS}"))?;
    Ok(max_attempts)
}

/// A sweep of the user's own command: the built-in CNN's fields must be left out.
fn command_sweep(s: pb::SweepSpec) -> Result<SweepSpec, InvalidInput> {
    let unused = [
        ("variants", !s.variants.is_empty()),
        ("learning_rates", !s.learning_rates.is_empty()),
        ("seed_offsets", !s.seed_offsets.is_empty()),
        ("data", s.data.is_some_and(|d| d != pb::DataOptions::default())),
    ];
    for (field, set) in unused {
        ensure(!set, field, || "belongs to the built-in CNN; a command sweep leaves it out".into())?;
    }
    check_seeds_and_epochs(&s)?;
    ensure(s.batch_size <= MAX_BATCH_SIZE, "batch_size", || {
        format!("{} is more than {MAX_BATCH_SIZE}", s.batch_size)
    })?;
    let command: CommandSpec = s.command.unwrap_or_default().try_into()?;
    Ok(SweepSpec {
        name: s.name,
        variants: Vec::new(),
        seeds: s.seeds,
        epochs: s.epochs,
        batch_size: s.batch_size,
        learning_rates: BTreeMap::new(),
        data: DataOptions::default(),
        max_attempts: max_attempts(s.max_attempts)?,
        seed_offsets: BTreeMap::new(),
        command: Some(command),
        objective: objective_from_wire(s.objective)?,
    })
}

impl From<SweepSpec> for pb::SweepSpec {
    fn from(s: SweepSpec) -> Self {
        pb::SweepSpec {
            name: s.name,
            variants: s.variants.iter().map(|v| v.name().to_owned()).collect(),
            seeds: s.seeds,
            epochs: s.epochs,
            batch_size: s.batch_size,
            learning_rates: s.learning_rates.iter().map(|(v, lr)| (v.name().to_owned(), *lr)).collect(),
            // A command sweep has no data options (its command reads its own data).
            data: s.command.is_none().then(|| s.data.into()),
            max_attempts: s.max_attempts,
            seed_offsets: s.seed_offsets.iter().map(|(v, o)| (v.name().to_owned(), *o)).collect(),
            command: s.command.map(Into::into),
            objective: Some(s.objective.into()),
        }
    }
}

impl TryFrom<pb::RetryJobsRequest> for crate::domain::RetryTarget {
    type Error = InvalidInput;

    fn try_from(r: pb::RetryJobsRequest) -> Result<Self, InvalidInput> {
        use crate::domain::{JobId, RetryTarget};
        match (r.job_id, r.sweep.is_empty()) {
            (0, true) => Err(InvalidInput::new("job_id", "give a job id or a sweep")),
            (id, true) => Ok(RetryTarget::Job(JobId(id))),
            (0, false) => {
                validate_sweep_name(&r.sweep).map_err(|e| InvalidInput::new("sweep", e.message))?;
                ensure(r.failed || r.cancelled, "sweep", || {
                    "choose the jobs to retry: failed, cancelled or both".into()
                })?;
                Ok(RetryTarget::Sweep { name: r.sweep, failed: r.failed, cancelled: r.cancelled })
            }
            (_, false) => Err(InvalidInput::new("job_id", "give a job id or a sweep, not both")),
        }
    }
}
