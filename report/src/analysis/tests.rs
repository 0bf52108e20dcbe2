//! The analysis core on hand-made jobs and epochs: epoch summaries, one value per seed, the design.

use super::*;
use crate::input::Provenance;

fn job(job_id: i64, variant: &str, seed: u64, state: &str, best: Option<f64>) -> JobRow {
    JobRow {
        job_id,
        variant: variant.to_string(),
        seed,
        state: state.to_string(),
        epochs: 12,
        epochs_done: 12,
        best_value: best,
        best_epoch: best.map(|_| 1),
        final_train_acc: None,
        final_val_acc: None,
        wall_seconds: 0.0,
        worker: String::new(),
        attempts: 1,
        error: String::new(),
    }
}

fn epoch(job: &JobRow, epoch: u32, val_acc: f64) -> EpochRow {
    EpochRow {
        job_id: job.job_id,
        variant: job.variant.clone(),
        seed: job.seed,
        epoch,
        train_loss: 0.0,
        train_acc: val_acc,
        val_loss: 0.0,
        val_acc,
        wall_seconds: 1.0,
        images_per_sec: 1.0,
        attempt: 1,
        value: None,
    }
}

fn input(jobs: Vec<JobRow>, epochs: Vec<EpochRow>) -> ReportInput {
    ReportInput {
        sweep: "t".to_string(),
        variants: vec!["a".to_string(), "base".to_string()],
        baseline_variant: "base".to_string(),
        spec_json: String::new(),
        jobs,
        epochs,
        learning_rates: Default::default(),
        provenance: Provenance::default(),
        measure: Default::default(),
    }
}

#[test]
fn final_and_last_ten_epochs_come_from_the_epoch_rows() {
    let j = job(1, "a", 0, "succeeded", Some(0.9));
    // Twelve epochs at 0.01 · epoch, stored out of order: final 12 %, last ten = mean(3..=12) = 7.5 %.
    let epochs = (1..=12).rev().map(|e| epoch(&j, e, e as f64 / 100.0)).collect();
    let a = analyse(&input(vec![j], epochs));
    let finished = &a.variant("a").unwrap().finished[0];
    assert!((finished.final_epoch.unwrap() - 12.0).abs() < 1e-9);
    assert!((finished.last_epochs_mean.unwrap() - 7.5).abs() < 1e-9);
    assert_eq!(finished.best, 90.0);
}

#[test]
fn fewer_than_ten_epochs_average_all_and_no_rows_give_none() {
    let (j1, j2) = (job(1, "a", 0, "succeeded", Some(0.5)), job(2, "a", 1, "succeeded", Some(0.5)));
    let epochs = vec![epoch(&j1, 1, 0.2), epoch(&j1, 2, 0.4)];
    let a = analyse(&input(vec![j1, j2], epochs));
    let v = a.variant("a").unwrap();
    assert!((v.finished[0].last_epochs_mean.unwrap() - 30.0).abs() < 1e-9);
    assert_eq!((v.finished[1].final_epoch, v.finished[1].last_epochs_mean), (None, None));
    assert_eq!(v.final_epoch_values().len(), 1);
}

#[test]
fn one_value_per_seed_and_running_jobs_apart() {
    let jobs = vec![
        job(3, "a", 1, "succeeded", Some(0.8)),
        job(1, "a", 0, "succeeded", Some(0.7)),
        job(2, "a", 0, "succeeded", Some(0.6)),
        job(4, "a", 2, "running", Some(0.5)),
        job(5, "a", 3, "failed", Some(0.4)),
    ];
    let a = analyse(&input(jobs, Vec::new()));
    let v = a.variant("a").unwrap();
    assert_eq!(v.seeds(), [0, 1]);
    assert_eq!(v.finished_best, [70.0, 80.0], "the lower job id of a duplicated seed is kept");
    assert_eq!(v.running_best, [(2, 50.0)]);
    assert_eq!((v.states.succeeded, v.states.running, v.states.failed), (3, 1, 1));
}

#[test]
fn design_follows_the_comparisons() {
    let paired = (0..3).flat_map(|s| {
        [
            job(s as i64 * 2, "a", s, "succeeded", Some(0.9)),
            job(s as i64 * 2 + 1, "base", s, "succeeded", Some(0.8)),
        ]
    });
    assert_eq!(analyse(&input(paired.collect(), Vec::new())).design(), SweepDesign::Paired);
    let unpaired = (0..3).flat_map(|s| {
        [
            job(s as i64 * 2, "a", s + 10, "succeeded", Some(0.9)),
            job(s as i64 * 2 + 1, "base", s, "succeeded", Some(0.8)),
        ]
    });
    assert_eq!(analyse(&input(unpaired.collect(), Vec::new())).design(), SweepDesign::Unpaired);
    assert_eq!(analyse(&input(Vec::new(), Vec::new())).design(), SweepDesign::Undetermined);
}

#[test]
fn seeds_are_written_as_runs() {
    assert_eq!(format_seeds(&[4, 0, 1, 2, 3, 7, 9, 10, 11]), "0–4, 7, 9–11");
    assert_eq!(format_seeds(&[]), "none");
    assert_eq!(format_seeds(&[5]), "5");
}

#[test]
fn only_named_variants_at_equal_learning_rates_train_like_the_baseline() {
    let jobs: Vec<JobRow> = ["natural_hardmax", "multi_softmax", "natural_softmax", "normal_lr1e-3"]
        .iter()
        .enumerate()
        .flat_map(|(v, name)| {
            (0..3).map(move |s| {
                job((v * 10 + s) as i64, name, s as u64, "succeeded", Some(0.9 + s as f64 / 100.0))
            })
        })
        .collect();
    let mut i = input(jobs, Vec::new());
    i.variants = vec!["natural_hardmax".into(), "multi_softmax".into(), "natural_softmax".into()];
    i.baseline_variant = "normal_lr1e-3".into();
    assert!(analyse(&i).trains_like_baseline.is_empty(), "learning rates unknown");
    i.learning_rates = [
        ("natural_hardmax", 1e-3),
        ("multi_softmax", 2e-3),
        ("natural_softmax", 1e-3),
        ("normal_lr1e-3", 1e-3),
    ]
    .iter()
    .map(|(v, lr)| (v.to_string(), *lr))
    .collect();
    let a = analyse(&i);
    assert_eq!(a.trains_like_baseline, ["natural_hardmax"]);
    let hardmax = &a.comparisons()[0];
    assert!(hardmax.identical && hardmax.identical_training, "equal values: bit for bit");
    assert!(!a.comparisons()[1].identical_training, "another learning rate");
    assert!(a.nondeterministic().is_empty());
}
