//! A command sweep's jobs as the report's variants: grouped by one parameter (or by their whole
//! parameter point), one job per group and seed, compared against a baseline group, on the
//! sweep's objective (its best value per job, in the objective's direction), which every stored
//! epoch must report.

use report::ReportInput;
use sweep_proto::InvalidInput;
use sweep_proto::domain::label_point;
use sweep_proto::text::printable;

use crate::error::{Error, Result};

/// How a command sweep's jobs become the report's variants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grouping {
    /// The parameter whose values are the variants (`None`: each parameter point is one).
    pub by: Option<String>,
    /// The variant the others are compared against (`None`: the first).
    pub baseline: Option<String>,
}

fn refuse(message: String) -> Error {
    Error::InvalidInput(InvalidInput::new("sweep", message))
}

/// The group of a job labelled `label` (`a=1,b=x`).
fn group_of(label: &str, by: Option<&str>) -> Result<String> {
    let Some(by) = by else { return Ok(label.to_owned()) };
    label_point(label)
        .remove(by)
        .ok_or_else(|| refuse(format!("job {} has no parameter {}", printable(label), printable(by))))
}

/// `input` (read from a command sweep) with its jobs and epochs relabelled by group.
pub fn grouped(mut input: ReportInput, grouping: &Grouping) -> Result<ReportInput> {
    let metric = &input.measure.metric;
    if let Some(e) = input.epochs.iter().find(|e| !e.measured().is_finite()) {
        return Err(refuse(format!(
            "job {} reported no {} (the sweep's objective) in epoch {}; the report compares it: read the sweep's \
             metrics with `coordinator export`",
            e.job_id,
            printable(metric),
            e.epoch
        )));
    }
    let by = grouping.by.as_deref();
    let mut variants: Vec<String> = Vec::new();
    for label in &input.variants {
        let group = group_of(label, by)?;
        if !variants.contains(&group) {
            variants.push(group);
        }
    }
    let mut seen = std::collections::HashSet::new();
    for job in &mut input.jobs {
        job.variant = group_of(&job.variant, by)?;
        if !seen.insert((job.variant.clone(), job.seed)) {
            return Err(refuse(format!(
                "more than one job of group {} has seed {}: group by a parameter that, with the seed, names one job",
                printable(&job.variant),
                job.seed
            )));
        }
    }
    for epoch in &mut input.epochs {
        epoch.variant = group_of(&epoch.variant, by)?;
    }
    input.baseline_variant = match &grouping.baseline {
        Some(b) if variants.contains(b) => b.clone(),
        Some(b) => {
            return Err(refuse(format!("baseline {} is not one of {}", printable(b), variants.join(", "))));
        }
        None => variants.first().cloned().unwrap_or_default(),
    };
    input.variants = variants;
    // No learning rates: no group is taken to train like the baseline by construction.
    input.learning_rates.clear();
    Ok(input)
}

#[cfg(test)]
mod tests {
    use report::{EpochRow, JobRow};

    use report::Measure;

    use super::*;

    fn input() -> ReportInput {
        let labels = ["loss=normal,lr=0.001", "loss=natural_softmax,lr=0.001"];
        let mut jobs = Vec::new();
        let mut epochs = Vec::new();
        for (i, label) in labels.iter().enumerate() {
            for seed in 0..2u64 {
                let job_id = (i * 2) as i64 + seed as i64 + 1;
                jobs.push(JobRow { job_id, variant: (*label).into(), seed, ..Default::default() });
                let e = EpochRow {
                    job_id,
                    variant: (*label).into(),
                    seed,
                    epoch: 1,
                    train_acc: 0.5,
                    val_acc: 0.4,
                    ..Default::default()
                };
                epochs.push(e);
            }
        }
        ReportInput {
            sweep: "torch".into(),
            variants: labels.map(String::from).to_vec(),
            baseline_variant: labels[0].into(),
            spec_json: String::new(),
            jobs,
            epochs,
            learning_rates: Default::default(),
            provenance: Default::default(),
            measure: Measure::default(),
        }
    }

    #[test]
    fn jobs_group_by_a_parameter_against_a_chosen_baseline() {
        let by = Grouping { by: Some("loss".into()), baseline: Some("normal".into()) };
        let out = grouped(input(), &by).unwrap();
        assert_eq!(out.variants, ["normal", "natural_softmax"]);
        assert_eq!(out.baseline_variant, "normal");
        assert_eq!(out.jobs[2].variant, "natural_softmax");
        assert_eq!(out.epochs[0].variant, "normal");
        let whole = grouped(input(), &Grouping::default()).unwrap();
        assert_eq!(whole.baseline_variant, "loss=normal,lr=0.001");
    }

    #[test]
    fn groups_that_do_not_make_a_report_are_refused() {
        let err = |g: Grouping, i: ReportInput| grouped(i, &g).unwrap_err().to_string();
        let by = |p: &str| Grouping { by: Some(p.into()), baseline: None };
        assert!(err(by("lr"), input()).contains("more than one job of group 0.001 has seed 0"));
        assert!(err(by("depth"), input()).contains("has no parameter depth"));
        let bad_baseline = Grouping { by: Some("loss".into()), baseline: Some("sgd".into()) };
        assert!(err(bad_baseline, input()).contains("baseline sgd is not one of normal, natural_softmax"));
        let mut no_val_acc = input();
        no_val_acc.epochs[1].val_acc = f64::NAN;
        assert!(
            err(by("loss"), no_val_acc)
                .contains("job 2 reported no val_acc (the sweep's objective) in epoch 1")
        );
        // Ranked by another metric, the report needs that one in every epoch, and no accuracy.
        let mut by_loss = input();
        by_loss.measure = Measure::of("val_loss", false);
        by_loss
            .epochs
            .iter_mut()
            .for_each(|e| (e.val_acc, e.train_acc, e.value) = (f64::NAN, f64::NAN, Some(0.7)));
        assert!(grouped(by_loss.clone(), &by("loss")).is_ok());
        by_loss.epochs[3].value = None;
        assert!(err(by("loss"), by_loss).contains("job 4 reported no val_loss"));
    }
}
