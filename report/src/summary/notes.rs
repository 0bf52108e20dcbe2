//! The sentences on variants that train like the baseline by construction, on the noise floor
//! their differences give, and on the jobs' attempts; shared by `summary.md` and `index.html`.

use crate::analysis::noise::noise_versus_seeds;
use crate::analysis::{Analysis, JobAttempts, SeedSetAnalysis};
use crate::construction::{WHY_IDENTICAL, WHY_THEY_DIFFER};

/// Jobs named in a sentence before "and N more".
const LISTED_JOBS: usize = 10;

fn quoted_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" and ")
}

/// The note on variants that train like the baseline but whose values differ, if any.
pub fn nondeterminism_note(analysis: &Analysis) -> Option<String> {
    let names = analysis.nondeterministic();
    if names.is_empty() {
        return None;
    }
    let (verb, its) = if names.len() == 1 { ("trains", "its") } else { ("train", "their") };
    Some(format!(
        "{} {verb} exactly like the baseline `{}` by construction ({WHY_IDENTICAL}), yet {its} values differ \
         from the baseline's: the differences measure {WHY_THEY_DIFFER}, not an effect of the loss. They are \
         reported as a noise floor, not tested.",
        quoted_list(&names),
        analysis.baseline,
    ))
}

/// What the noise-floor table shows.
pub fn noise_floor_intro() -> String {
    format!(
        "These variants train exactly like the baseline by construction ({WHY_IDENTICAL}), so their paired \
         differences Δ = variant − baseline in best validation accuracy measure {WHY_THEY_DIFFER}, not an effect of \
         the loss. Pairs that agree bit for bit ran with the same kernels."
    )
}

/// One sentence setting the widest noise floor against the baseline's seed-to-seed spread.
pub fn noise_versus_seeds_sentence(set: &SeedSetAnalysis, baseline: &str) -> Option<String> {
    let v = noise_versus_seeds(set, baseline)?;
    let lead = if v.comparable() {
        "Nondeterminism alone is about as large as the effects being tested"
    } else {
        "Nondeterminism is smaller than the seed-to-seed spread"
    };
    Some(format!(
        "{lead}: the sd of Δ of `{}` ({:.2} points) is {:.2} × the sd of the difference between two seeds of \
         the baseline (√2 × its seed-to-seed sd {:.2} = {:.2} points).",
        v.variant,
        v.noise_sd,
        v.ratio(),
        v.seed_sd,
        v.seed_difference_sd()
    ))
}

fn job_list(jobs: &[&JobAttempts], describe: impl Fn(&JobAttempts) -> String) -> String {
    let mut items: Vec<String> = jobs.iter().take(LISTED_JOBS).map(|j| describe(j)).collect();
    if jobs.len() > LISTED_JOBS {
        items.push(format!("and {} more", jobs.len() - LISTED_JOBS));
    }
    items.join("; ")
}

/// How many jobs needed more than one attempt, and how many continued after an earlier
/// attempt's stored epochs.
pub fn attempts_sentence(analysis: &Analysis) -> String {
    let a = &analysis.attempts;
    if a.retried.is_empty() {
        return format!("Attempts: none of the {} jobs needed more than one attempt.", a.total);
    }
    let retried: Vec<&JobAttempts> = a.retried.iter().collect();
    let mut text = format!(
        "Attempts: {} of {} jobs needed more than one attempt ({}); ",
        retried.len(),
        a.total,
        job_list(&retried, |j| format!("{}: attempt {}", j.label(), j.attempts))
    );
    let continued = a.continued();
    if continued.is_empty() {
        text.push_str(
            "none continued after an earlier attempt's stored epochs (each job's epochs come from one attempt).",
        );
    } else {
        let attempts = |j: &JobAttempts| j.epoch_attempts.iter().map(u32::to_string).collect::<Vec<_>>();
        text.push_str(&format!(
            "{} continued after an earlier attempt's stored epochs (epochs from more than one attempt: {}).",
            continued.len(),
            job_list(&continued, |j| format!("{}, attempts {}", j.label(), attempts(j).join(", ")))
        ));
    }
    text
}

/// The line above the failed-jobs table; `None` when no job failed.
pub fn failed_jobs_sentence(analysis: &Analysis) -> Option<String> {
    let n = analysis.attempts.failed.len();
    (n > 0).then(|| {
        let jobs = if n == 1 { "job" } else { "jobs" };
        format!("{n} {jobs} failed or were cancelled, with the reason the coordinator recorded last:")
    })
}

/// At or below these a sweep cannot tell the loss variants apart: it tests the plumbing.
const PLUMBING_MAX_EPOCHS: u64 = 5;
const PLUMBING_MAX_TRAIN_IMAGES: u64 = 5_000;

/// A plain warning for sweeps too short or too small to learn (the `smoke` preset), read from
/// the spec file the report embeds; `None` for real experiments.
pub fn plumbing_note(spec_json: &str) -> Option<String> {
    let spec: serde_json::Value = serde_json::from_str(spec_json).ok()?;
    let epochs = spec["epochs"].as_u64()?;
    let train = spec["data"]["train_limit"].as_u64().filter(|n| *n > 0);
    let small_data = train.is_some_and(|n| n < PLUMBING_MAX_TRAIN_IMAGES);
    if epochs > PLUMBING_MAX_EPOCHS && !small_data {
        return None;
    }
    let images = train.map_or_else(|| "all training images".to_owned(), |n| format!("{n} training images"));
    Some(format!(
        "This sweep is a plumbing test ({epochs} epoch(s) on {images}): accuracy near chance (10 %) is expected \
         and says nothing about the loss variants. The experiment itself is the `protocol` preset (100 epochs, \
         full data)."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_or_tiny_sweeps_are_called_plumbing_tests() {
        let spec = |epochs: u32, train: &str| {
            format!(r#"{{"epochs": {epochs}, "data": {{"train_limit": {train}}}}}"#)
        };
        let smoke = plumbing_note(&spec(2, "512")).expect("the smoke preset");
        assert!(
            smoke.contains("2 epoch(s) on 512 training images") && smoke.contains("chance (10 %)"),
            "{smoke}"
        );
        assert!(plumbing_note(&spec(3, "null")).unwrap().contains("all training images"));
        assert!(
            plumbing_note(&spec(100, "1000")).is_some(),
            "100 epochs of 1,000 images teach nothing either"
        );
        assert_eq!(plumbing_note(&spec(100, "null")), None, "the protocol");
        assert_eq!(plumbing_note(&spec(15, "null")), None, "the quick preset");
        assert_eq!(plumbing_note("not json"), None);
    }
}
