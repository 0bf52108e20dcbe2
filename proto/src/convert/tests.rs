//! Tests of the wire ↔ domain conversion.

use super::*;
use crate::domain::*;

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
    assert_eq!(s.jobs().len(), 6);
    assert_eq!(s.job_count(), 6);
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
    let jobs: Vec<(String, u64)> = s.jobs().into_iter().map(|j| (j.variant, j.seed)).collect();
    assert_eq!(jobs[..3], [0, 1, 2].map(|seed| ("natural_softmax".to_string(), seed)));
    assert_eq!(jobs[3..], [1_000, 1_001, 1_002].map(|seed| ("normal_lr1e-2".to_string(), seed)));
    // A zero offset is the default and is not stored.
    assert_eq!(s.seed_offsets.len(), 1);
    let back = SweepSpec::try_from(pb::SweepSpec::from(s.clone())).unwrap();
    assert_eq!(back, s);
    assert!(SweepSpec::try_from(spec()).unwrap().shared_seeds());
}

#[test]
fn metrics_reject_nan_negative_and_out_of_range() {
    let good = pb::EpochMetrics {
        attempt: 0,
        epoch: 1,
        train_loss: Some(1.0),
        train_acc: Some(0.5),
        val_loss: Some(1.0),
        val_acc: Some(0.4),
        wall_seconds: 3.0,
        images_per_sec: Some(100.0),
        values: [("top5".to_string(), 0.9)].into(),
    };
    assert_eq!(EpochMetrics::try_from(good.clone()).unwrap().get("top5"), Some(0.9));
    let only_values =
        pb::EpochMetrics { epoch: 2, values: [("bleu".to_string(), 31.5)].into(), ..Default::default() };
    let m = EpochMetrics::try_from(only_values).unwrap();
    assert_eq!((m.val_acc, m.get("bleu")), (None, Some(31.5)));
    let with =
        |name: &str, v: f64| pb::EpochMetrics { values: [(name.to_string(), v)].into(), ..good.clone() };
    for (field, m) in [
        ("metrics.epoch", pb::EpochMetrics { epoch: 0, ..good.clone() }),
        ("metrics.train_loss", pb::EpochMetrics { train_loss: Some(f64::NAN), ..good.clone() }),
        ("metrics.val_loss", pb::EpochMetrics { val_loss: Some(-1.0), ..good.clone() }),
        ("metrics.val_acc", pb::EpochMetrics { val_acc: Some(1.5), ..good.clone() }),
        ("metrics.wall_seconds", pb::EpochMetrics { wall_seconds: f64::INFINITY, ..good.clone() }),
        ("metrics.values", with("bad name", 1.0)),
        ("metrics.values", with("top1", f64::NAN)),
        ("metrics.values", with("val_acc", 0.5)),
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

#[test]
fn a_retry_names_a_job_or_a_sweep_and_which_of_its_jobs() {
    let ok = |r: pb::RetryJobsRequest| RetryTarget::try_from(r);
    assert_eq!(ok(pb::RetryJobsRequest { job_id: 7, ..Default::default() }), Ok(RetryTarget::Job(JobId(7))));
    let sweep = pb::RetryJobsRequest { sweep: "s".into(), failed: true, ..Default::default() };
    assert_eq!(
        ok(sweep.clone()),
        Ok(RetryTarget::Sweep { name: "s".into(), failed: true, cancelled: false })
    );
    for (field, bad) in [
        ("job_id", pb::RetryJobsRequest::default()),
        ("job_id", pb::RetryJobsRequest { job_id: 7, ..sweep.clone() }),
        ("sweep", pb::RetryJobsRequest { failed: false, ..sweep.clone() }),
        ("sweep", pb::RetryJobsRequest { sweep: "bad name".into(), ..sweep }),
    ] {
        assert_eq!(ok(bad).unwrap_err().field, field);
    }
}
