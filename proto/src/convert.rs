//! Wire ↔ domain conversion, in one place. Every check on client input that does not need the
//! database happens here; a failed check is an [`InvalidInput`] naming the field, which becomes
//! `Status::invalid_argument`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::domain::{
    DEFAULT_MAX_ATTEMPTS, DataOptions, EpochMetrics, EpochRecord, Fence, Job, JobAssignment, JobState,
    LeaseVerdict, LossVariant, MAX_ATTEMPTS, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_NAME_LEN, MAX_SEEDS,
    MAX_WIDTH_MULTIPLIER, SweepSpec, SweepSummary, TEST_IMAGES, TRAIN_IMAGES, Worker,
};
use crate::pb;
use crate::text::echo;

/// Client input that breaks a rule; `field` names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub message: String,
}

impl InvalidInput {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        InvalidInput { field, message: message.into() }
    }
}

impl From<InvalidInput> for tonic::Status {
    fn from(e: InvalidInput) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

fn ensure(ok: bool, field: &'static str, message: impl FnOnce() -> String) -> Result<(), InvalidInput> {
    if ok { Ok(()) } else { Err(InvalidInput::new(field, message())) }
}

/// Checks a sweep name: 1..=128 characters of `[A-Za-z0-9._-]`.
pub fn validate_sweep_name(name: &str) -> Result<(), InvalidInput> {
    ensure(!name.is_empty(), "name", || "must not be empty".into())?;
    ensure(name.len() <= MAX_NAME_LEN, "name", || format!("longer than {MAX_NAME_LEN} bytes"))?;
    ensure(name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')), "name", || {
        format!("{} may only hold letters, digits, '.', '_' and '-'", echo(name))
    })
}

/// Parses a loss variant name.
pub fn parse_variant(name: &str) -> Result<LossVariant, InvalidInput> {
    name.parse().map_err(|e: crate::domain::UnknownVariant| InvalidInput::new("variant", e.to_string()))
}

/// Converts a wire state; UNSPECIFIED and unknown numbers are invalid.
pub fn state_from_wire(value: i32) -> Result<JobState, InvalidInput> {
    match pb::JobState::try_from(value) {
        Ok(pb::JobState::Queued) => Ok(JobState::Queued),
        Ok(pb::JobState::Running) => Ok(JobState::Running),
        Ok(pb::JobState::Succeeded) => Ok(JobState::Succeeded),
        Ok(pb::JobState::Failed) => Ok(JobState::Failed),
        Ok(pb::JobState::Cancelled) => Ok(JobState::Cancelled),
        _ => Err(InvalidInput::new("state", format!("{value} is not a job state"))),
    }
}

/// Converts a domain state to its wire number.
pub fn state_to_wire(state: JobState) -> pb::JobState {
    match state {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

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
        ensure(!s.variants.is_empty(), "variants", || "at least one loss variant is required".into())?;
        let mut variants = Vec::with_capacity(s.variants.len());
        for name in &s.variants {
            let v = parse_variant(name).map_err(|e| InvalidInput::new("variants", e.message))?;
            ensure(!variants.contains(&v), "variants", || format!("{name} is listed twice"))?;
            variants.push(v);
        }
        ensure(!s.seeds.is_empty(), "seeds", || "at least one seed is required".into())?;
        ensure(s.seeds.len() <= MAX_SEEDS, "seeds", || format!("more than {MAX_SEEDS} seeds"))?;
        let mut seen = HashSet::with_capacity(s.seeds.len());
        for seed in &s.seeds {
            ensure(seen.insert(*seed), "seeds", || format!("seed {seed} is listed twice"))?;
        }
        ensure((1..=MAX_EPOCHS).contains(&s.epochs), "epochs", || {
            format!("{} is not in 1..={MAX_EPOCHS}", s.epochs)
        })?;
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
        let max_attempts = if s.max_attempts == 0 { DEFAULT_MAX_ATTEMPTS } else { s.max_attempts };
        ensure(max_attempts <= MAX_ATTEMPTS, "max_attempts", || {
            format!("{} is more than {MAX_ATTEMPTS}", s.max_attempts)
        })?;
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
        })
    }
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
            data: Some(s.data.into()),
            max_attempts: s.max_attempts,
            seed_offsets: s.seed_offsets.iter().map(|(v, o)| (v.name().to_owned(), *o)).collect(),
        }
    }
}

impl TryFrom<pb::Fence> for Fence {
    type Error = InvalidInput;
    fn try_from(f: pb::Fence) -> Result<Self, InvalidInput> {
        ensure(f.job_id > 0, "fence.job_id", || format!("{} is not a job id", f.job_id))?;
        ensure(f.attempt >= 1, "fence.attempt", || "attempts count from 1".into())?;
        ensure(!f.lease_token.is_empty() && f.lease_token.len() <= 64, "fence.lease_token", || {
            "must hold 1..=64 bytes".into()
        })?;
        Ok(Fence { job_id: f.job_id, attempt: f.attempt, lease_token: f.lease_token })
    }
}

impl From<Fence> for pb::Fence {
    fn from(f: Fence) -> Self {
        pb::Fence { job_id: f.job_id, attempt: f.attempt, lease_token: f.lease_token }
    }
}

/// Converts a required fence field of a request.
pub fn required_fence(f: Option<pb::Fence>) -> Result<Fence, InvalidInput> {
    f.ok_or_else(|| InvalidInput::new("fence", "is required"))?.try_into()
}

impl TryFrom<pb::EpochMetrics> for EpochMetrics {
    type Error = InvalidInput;
    fn try_from(m: pb::EpochMetrics) -> Result<Self, InvalidInput> {
        ensure(m.epoch >= 1, "metrics.epoch", || "epochs count from 1".into())?;
        let non_negative = |field: &'static str, x: f64| {
            ensure(x.is_finite() && x >= 0.0, field, || format!("{x} must be a finite number ≥ 0"))
        };
        let fraction = |field: &'static str, x: f64| {
            ensure(x.is_finite() && (0.0..=1.0).contains(&x), field, || format!("{x} is not in [0, 1]"))
        };
        non_negative("metrics.train_loss", m.train_loss)?;
        non_negative("metrics.val_loss", m.val_loss)?;
        fraction("metrics.train_acc", m.train_acc)?;
        fraction("metrics.val_acc", m.val_acc)?;
        non_negative("metrics.wall_seconds", m.wall_seconds)?;
        non_negative("metrics.images_per_sec", m.images_per_sec)?;
        Ok(EpochMetrics {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_acc: m.train_acc,
            val_loss: m.val_loss,
            val_acc: m.val_acc,
            wall_seconds: m.wall_seconds,
            images_per_sec: m.images_per_sec,
        })
    }
}

impl From<EpochMetrics> for pb::EpochMetrics {
    fn from(m: EpochMetrics) -> Self {
        pb::EpochMetrics {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_acc: m.train_acc,
            val_loss: m.val_loss,
            val_acc: m.val_acc,
            wall_seconds: m.wall_seconds,
            images_per_sec: m.images_per_sec,
        }
    }
}

impl TryFrom<pb::JobAssignment> for JobAssignment {
    type Error = InvalidInput;
    fn try_from(a: pb::JobAssignment) -> Result<Self, InvalidInput> {
        Ok(JobAssignment {
            fence: required_fence(a.fence)?,
            sweep: a.sweep,
            variant: parse_variant(&a.variant)?,
            seed: a.seed,
            epochs: a.epochs,
            batch_size: a.batch_size,
            learning_rate: a.learning_rate,
            data: {
                let data = a.data.unwrap_or_default().try_into()?;
                check_bn_group(&data, a.batch_size)?;
                data
            },
            lease_ttl: Duration::from_millis(u64::from(a.lease_ttl_ms)),
        })
    }
}

impl From<JobAssignment> for pb::JobAssignment {
    fn from(a: JobAssignment) -> Self {
        pb::JobAssignment {
            fence: Some(a.fence.into()),
            sweep: a.sweep,
            variant: a.variant.name().to_owned(),
            seed: a.seed,
            epochs: a.epochs,
            batch_size: a.batch_size,
            learning_rate: a.learning_rate,
            data: Some(a.data.into()),
            lease_ttl_ms: u32::try_from(a.lease_ttl.as_millis()).unwrap_or(u32::MAX),
        }
    }
}

impl From<Job> for pb::Job {
    fn from(j: Job) -> Self {
        pb::Job {
            id: j.id.0,
            sweep: j.sweep,
            variant: j.variant.name().to_owned(),
            seed: j.seed,
            state: state_to_wire(j.state) as i32,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            epochs: j.epochs,
            epochs_done: j.epochs_done,
            learning_rate: j.learning_rate,
            best_val_acc: j.best_val_acc,
            best_epoch: j.best_epoch,
            worker_id: j.worker_id.unwrap_or_default(),
            last_error: j.last_error.unwrap_or_default(),
            created_at_ms: j.created_at_ms,
            started_at_ms: j.started_at_ms.unwrap_or(0),
            finished_at_ms: j.finished_at_ms.unwrap_or(0),
        }
    }
}

impl From<EpochRecord> for pb::EpochRecorded {
    fn from(r: EpochRecord) -> Self {
        pb::EpochRecorded {
            job_id: r.job_id.0,
            variant: r.variant.name().to_owned(),
            seed: r.seed,
            metrics: Some(r.metrics.into()),
        }
    }
}

impl From<LeaseVerdict> for pb::lease_status::Verdict {
    fn from(v: LeaseVerdict) -> Self {
        match v {
            LeaseVerdict::Renewed => pb::lease_status::Verdict::Renewed,
            LeaseVerdict::Cancelled => pb::lease_status::Verdict::Cancelled,
            LeaseVerdict::Lost => pb::lease_status::Verdict::Lost,
        }
    }
}

impl From<Worker> for pb::Worker {
    fn from(w: Worker) -> Self {
        pb::Worker {
            id: w.id,
            hostname: w.hostname,
            gpus: w.gpus,
            slots: w.slots,
            registered_at_ms: w.registered_at_ms,
            last_seen_ms: w.last_seen_ms,
            running_jobs: w.running_jobs,
        }
    }
}

impl From<SweepSummary> for pb::SweepSummary {
    fn from(s: SweepSummary) -> Self {
        pb::SweepSummary {
            jobs_total: s.jobs_total(),
            progress_percent: s.progress_percent(),
            // The wire has no "unknown": -1 stands for it.
            eta_seconds: s.eta_seconds.unwrap_or(-1.0),
            spec: Some(s.spec.into()),
            created_at_ms: s.created_at_ms,
            queued: s.queued,
            running: s.running,
            succeeded: s.succeeded,
            failed: s.failed,
            cancelled: s.cancelled,
            epochs_done: s.epochs_done,
            epochs_total: s.epochs_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> pb::SweepSpec {
        pb::SweepSpec {
            name: "paper".into(),
            variants: vec!["natural_softmax".into(), "normal_lr1e-2".into()],
            seeds: vec![0, 1, 2],
            epochs: 100,
            batch_size: 512,
            ..Default::default()
        }
    }

    #[test]
    fn valid_spec_fills_defaults() {
        let s = SweepSpec::try_from(spec()).unwrap();
        assert_eq!(s.learning_rate(LossVariant::NormalLr1e2), 1e-2);
        assert_eq!(s.learning_rate(LossVariant::NaturalSoftmax), 1e-3);
        assert_eq!(s.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(s.data.width_multiplier, 1.0);
        assert_eq!(s.jobs().count(), 6);
        let back = SweepSpec::try_from(pb::SweepSpec::from(s.clone())).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn bad_specs_name_the_field() {
        type Mutation = Box<dyn Fn(&mut pb::SweepSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("variants", Box::new(|s| s.variants = vec!["bogus".into()])),
            ("variants", Box::new(|s| s.variants.clear())),
            ("variants", Box::new(|s| s.variants.push("natural_softmax".into()))),
            ("seeds", Box::new(|s| s.seeds.clear())),
            ("seeds", Box::new(|s| s.seeds = vec![1, 1])),
            ("epochs", Box::new(|s| s.epochs = 0)),
            ("epochs", Box::new(|s| s.epochs = MAX_EPOCHS + 1)),
            ("batch_size", Box::new(|s| s.batch_size = 0)),
            ("batch_size", Box::new(|s| s.batch_size = MAX_BATCH_SIZE + 1)),
            ("name", Box::new(|s| s.name = "a b".into())),
            ("name", Box::new(|s| s.name.clear())),
            (
                "learning_rates",
                Box::new(|s| {
                    s.learning_rates.insert("natural_softmax".into(), f64::NAN);
                }),
            ),
            (
                "learning_rates",
                Box::new(|s| {
                    s.learning_rates.insert("multi_softmax".into(), 1e-3);
                }),
            ),
            (
                "data.train_limit",
                Box::new(|s| s.data = Some(pb::DataOptions { train_limit: 60_000, ..Default::default() })),
            ),
            (
                "data.bn_group",
                Box::new(|s| s.data = Some(pb::DataOptions { bn_group: 60, ..Default::default() })),
            ),
            (
                "seed_offsets",
                Box::new(|s| {
                    s.seed_offsets.insert("natural_softmax".into(), u64::MAX);
                }),
            ),
            (
                "seed_offsets",
                Box::new(|s| {
                    s.seed_offsets.insert("multi_softmax".into(), 7);
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = SweepSpec::try_from(s).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert_eq!(tonic::Status::from(err).code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn seed_offsets_shift_a_variants_jobs_and_bn_group_divides_the_batch() {
        let mut wire = spec();
        wire.seed_offsets.insert("normal_lr1e-2".into(), 1_000);
        wire.seed_offsets.insert("natural_softmax".into(), 0);
        wire.data = Some(pb::DataOptions { bn_group: 64, ..Default::default() });
        let s = SweepSpec::try_from(wire).unwrap();
        assert_eq!(s.data.bn_group, Some(64));
        assert!(!s.shared_seeds());
        let jobs: Vec<(LossVariant, u64)> = s.jobs().collect();
        assert_eq!(jobs[..3], [0, 1, 2].map(|seed| (LossVariant::NaturalSoftmax, seed)));
        assert_eq!(jobs[3..], [1_000, 1_001, 1_002].map(|seed| (LossVariant::NormalLr1e2, seed)));
        // A zero offset is the default and is not stored.
        assert_eq!(s.seed_offsets.len(), 1);
        let back = SweepSpec::try_from(pb::SweepSpec::from(s.clone())).unwrap();
        assert_eq!(back, s);
        assert!(SweepSpec::try_from(spec()).unwrap().shared_seeds());
    }

    #[test]
    fn metrics_reject_nan_negative_and_out_of_range() {
        let good = pb::EpochMetrics {
            epoch: 1,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss: 1.0,
            val_acc: 0.4,
            wall_seconds: 3.0,
            images_per_sec: 100.0,
        };
        assert!(EpochMetrics::try_from(good).is_ok());
        for (field, m) in [
            ("metrics.epoch", pb::EpochMetrics { epoch: 0, ..good }),
            ("metrics.train_loss", pb::EpochMetrics { train_loss: f64::NAN, ..good }),
            ("metrics.val_loss", pb::EpochMetrics { val_loss: -1.0, ..good }),
            ("metrics.val_acc", pb::EpochMetrics { val_acc: 1.5, ..good }),
            ("metrics.wall_seconds", pb::EpochMetrics { wall_seconds: f64::INFINITY, ..good }),
        ] {
            assert_eq!(EpochMetrics::try_from(m).unwrap_err().field, field);
        }
    }

    #[test]
    fn fence_needs_positive_id_attempt_and_token() {
        assert!(required_fence(None).is_err());
        let f = pb::Fence { job_id: 3, attempt: 1, lease_token: "t".into() };
        assert!(Fence::try_from(f.clone()).is_ok());
        assert!(Fence::try_from(pb::Fence { job_id: 0, ..f.clone() }).is_err());
        assert!(Fence::try_from(pb::Fence { attempt: 0, ..f.clone() }).is_err());
        assert!(Fence::try_from(pb::Fence { lease_token: String::new(), ..f }).is_err());
    }

    #[test]
    fn unspecified_state_is_invalid() {
        assert!(state_from_wire(0).is_err());
        assert!(state_from_wire(99).is_err());
        for s in JobState::ALL {
            assert_eq!(state_from_wire(state_to_wire(s) as i32).unwrap(), s);
        }
    }
}
