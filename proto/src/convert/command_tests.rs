//! Tests of command sweeps, objectives and command jobs on the wire.

use super::*;
use crate::domain::*;

fn values(v: &[&str]) -> pb::ParamValues {
    pb::ParamValues { values: v.iter().map(|s| s.to_string()).collect() }
}

fn command_spec() -> pb::SweepSpec {
    pb::SweepSpec {
        name: "byo".into(),
        seeds: vec![0, 1],
        epochs: 10,
        command: Some(pb::CommandSpec {
            template: "python3 train.py --lr {lr} --seed {seed}".into(),
            grid: [("lr".to_string(), values(&["0.1", "0.01"]))].into(),
            timeout_seconds: 60,
            ..Default::default()
        }),
        objective: Some(pb::Objective { metric: "loss".into(), mode: pb::objective::Mode::Min as i32 }),
        ..Default::default()
    }
}

#[test]
fn a_command_sweep_is_its_points_times_its_seeds_and_round_trips() {
    let s = SweepSpec::try_from(command_spec()).unwrap();
    assert_eq!(s.kind(), JobKind::Command);
    let jobs: Vec<(String, u64)> = s.jobs().into_iter().map(|j| (j.variant, j.seed)).collect();
    assert_eq!(
        jobs,
        [("lr=0.1", 0), ("lr=0.1", 1), ("lr=0.01", 0), ("lr=0.01", 1)].map(|(v, s)| (v.to_string(), s))
    );
    assert_eq!(s.objective, Objective { metric: "loss".into(), direction: Direction::Min });
    assert_eq!(s.command.as_ref().unwrap().timeout_seconds, Some(60));
    assert_eq!(SweepSpec::try_from(pb::SweepSpec::from(s.clone())).unwrap(), s);
    // The stored form (serde JSON) reads back, and a spec stored before commands existed too.
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<SweepSpec>(&json).unwrap(), s);
}

#[test]
fn random_samples_round_trip_with_their_distributions() {
    let mut wire = command_spec();
    let c = wire.command.as_mut().unwrap();
    c.template = "run --wd {wd} --depth {depth}".into();
    c.grid.clear();
    c.samples = 5;
    let d = |kind| pb::Distribution { kind: Some(kind) };
    c.distributions
        .insert("wd".into(), d(pb::distribution::Kind::LogUniform(pb::Range { low: 1e-5, high: 1e-2 })));
    c.distributions
        .insert("depth".into(), d(pb::distribution::Kind::IntUniform(pb::Range { low: 2.0, high: 8.0 })));
    let s = SweepSpec::try_from(wire).unwrap();
    assert_eq!(s.jobs().len(), 10);
    assert_eq!(SweepSpec::try_from(pb::SweepSpec::from(s.clone())).unwrap(), s);
}

#[test]
fn bad_command_sweeps_name_their_field() {
    fn cmd(s: &mut pb::SweepSpec) -> &mut pb::CommandSpec {
        s.command.as_mut().unwrap()
    }
    let bad = |f: &dyn Fn(&mut pb::SweepSpec)| {
        let mut s = command_spec();
        f(&mut s);
        SweepSpec::try_from(s).unwrap_err().field
    };
    assert_eq!(bad(&|s| s.variants = vec!["normal_lr1e-3".into()]), "variants");
    assert_eq!(bad(&|s| s.seeds.clear()), "seeds");
    assert_eq!(bad(&|s| s.epochs = 0), "epochs");
    assert_eq!(bad(&|s| cmd(s).template = "  ".into()), "command.template");
    assert_eq!(bad(&|s| cmd(s).template = "run '{lr}".into()), "command.template");
    assert_eq!(bad(&|s| cmd(s).template = "run {momentum}".into()), "command.template");
    assert_eq!(
        bad(&|s| {
            cmd(s).grid.insert("bad name".into(), values(&["1"]));
        }),
        "command.grid"
    );
    assert_eq!(
        bad(&|s| {
            cmd(s).grid.insert("seed".into(), values(&["1"]));
        }),
        "command"
    );
    assert_eq!(
        bad(&|s| {
            cmd(s).grid.insert("x".into(), values(&["a,b"]));
        }),
        "command.grid"
    );
    assert_eq!(
        bad(&|s| {
            cmd(s).grid.insert("x".into(), values(&["1", "1"]));
        }),
        "command.grid"
    );
    assert_eq!(
        bad(&|s| {
            cmd(s).grid.insert("x".into(), values(&[]));
        }),
        "command.grid"
    );
    assert_eq!(bad(&|s| cmd(s).samples = 3), "command.samples");
    assert_eq!(
        bad(&|s| {
            cmd(s).env.insert("SWEEP_SEED".into(), "1".into());
        }),
        "command.env"
    );
    assert_eq!(
        bad(&|s| {
            cmd(s).env.insert("A=B".into(), "1".into());
        }),
        "command.env"
    );
    assert_eq!(bad(&|s| cmd(s).timeout_seconds = 8 * 24 * 3600), "command.timeout_seconds");
    assert_eq!(
        bad(&|s| s.objective = Some(pb::Objective { metric: "a b".into(), mode: 0 })),
        "objective.metric"
    );
    assert_eq!(bad(&|s| s.objective = Some(pb::Objective { metric: "x".into(), mode: 9 })), "objective.mode");
    let range = |low, high| pb::Distribution {
        kind: Some(pb::distribution::Kind::LogUniform(pb::Range { low, high })),
    };
    let with_dist = |d: pb::Distribution| {
        move |s: &mut pb::SweepSpec| {
            let c = s.command.as_mut().unwrap();
            c.samples = 2;
            c.distributions.insert("wd".into(), d.clone());
        }
    };
    assert_eq!(bad(&with_dist(range(0.0, 1.0))), "command.distributions");
    assert_eq!(bad(&with_dist(range(1.0, 1.0))), "command.distributions");
    assert_eq!(bad(&with_dist(pb::Distribution { kind: None })), "command.distributions");
}

#[test]
fn a_builtin_sweep_ranks_by_a_metric_it_reports() {
    let builtin = |metric: &str| pb::SweepSpec {
        name: "b".into(),
        variants: vec!["normal_lr1e-3".into()],
        seeds: vec![0],
        epochs: 1,
        batch_size: 8,
        objective: Some(pb::Objective { metric: metric.into(), mode: 0 }),
        ..Default::default()
    };
    assert_eq!(SweepSpec::try_from(builtin("val_loss")).unwrap().objective.metric, "val_loss");
    assert_eq!(SweepSpec::try_from(builtin("")).unwrap().objective, Objective::default());
    assert_eq!(SweepSpec::try_from(builtin("bleu")).unwrap_err().field, "objective.metric");
}

#[test]
fn command_jobs_carry_a_program() {
    let job = pb::CommandJob {
        argv: vec!["python3".into(), "x.py".into()],
        timeout_seconds: 5,
        ..Default::default()
    };
    let domain = CommandJob::try_from(job.clone()).unwrap();
    assert_eq!(domain.timeout_seconds, Some(5));
    assert_eq!(pb::CommandJob::from(domain), job);
    assert_eq!(CommandJob::try_from(pb::CommandJob::default()).unwrap_err().field, "command.argv");
    let nul = pb::CommandJob { argv: vec!["a\0b".into()], ..Default::default() };
    assert_eq!(CommandJob::try_from(nul).unwrap_err().field, "command.argv");
}
