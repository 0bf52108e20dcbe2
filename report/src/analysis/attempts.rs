//! How the jobs got through: which needed more than one attempt (a failure, a lost lease or a
//! hand-back before), which continued after an earlier attempt's stored epochs, and which failed
//! or were cancelled, with the reason the coordinator recorded.

use std::collections::{BTreeSet, HashMap};

use crate::input::{JobRow, ReportInput};
use crate::tables::jobs_in_display_order;

/// One job's attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct JobAttempts {
    pub job_id: i64,
    pub variant: String,
    pub seed: u64,
    pub state: String,
    /// The attempt the job is on.
    pub attempts: u32,
    /// The distinct (known) attempts its stored epochs come from, ascending.
    pub epoch_attempts: Vec<u32>,
    /// The last failure reason; empty if none.
    pub error: String,
}

impl JobAttempts {
    /// True when its stored epochs come from more than one attempt: a later attempt continued
    /// after an earlier one's epochs.
    pub fn continued(&self) -> bool {
        self.epoch_attempts.len() > 1
    }

    /// "`natural_softmax` seed 1".
    pub fn label(&self) -> String {
        format!("`{}` seed {}", self.variant, self.seed)
    }
}

/// The jobs worth a word, in display order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttemptSummary {
    /// Every job of the sweep.
    pub total: usize,
    /// Jobs on an attempt after the first.
    pub retried: Vec<JobAttempts>,
    /// Jobs neither succeeded, running nor queued (failed, cancelled or any other state).
    pub failed: Vec<JobAttempts>,
}

impl AttemptSummary {
    /// Retried jobs whose stored epochs come from more than one attempt.
    pub fn continued(&self) -> Vec<&JobAttempts> {
        self.retried.iter().filter(|j| j.continued()).collect()
    }
}

fn job_attempts(job: &JobRow, epoch_attempts: Option<&BTreeSet<u32>>) -> JobAttempts {
    JobAttempts {
        job_id: job.job_id,
        variant: job.variant.clone(),
        seed: job.seed,
        state: job.state.clone(),
        attempts: job.attempts,
        epoch_attempts: epoch_attempts.map(|a| a.iter().copied().collect()).unwrap_or_default(),
        error: job.error.clone(),
    }
}

/// The summary of `input`'s jobs, in the display `order` of the variants.
pub fn summarise(input: &ReportInput, order: &[String]) -> AttemptSummary {
    let mut by_job: HashMap<i64, BTreeSet<u32>> = HashMap::new();
    // Attempt 0 stands for "not known" (an epoch from before attempts were recorded).
    for e in input.epochs.iter().filter(|e| e.attempt > 0) {
        by_job.entry(e.job_id).or_default().insert(e.attempt);
    }
    let mut summary = AttemptSummary { total: input.jobs.len(), ..AttemptSummary::default() };
    for job in jobs_in_display_order(input, order) {
        let attempts = job_attempts(job, by_job.get(&job.job_id));
        if !matches!(job.state.as_str(), "succeeded" | "running" | "queued") {
            summary.failed.push(attempts.clone());
        }
        if job.attempts > 1 || attempts.continued() {
            summary.retried.push(attempts);
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::EpochRow;

    fn job(job_id: i64, seed: u64, state: &str, attempts: u32, error: &str) -> JobRow {
        JobRow {
            job_id,
            variant: "natural_softmax".into(),
            seed,
            state: state.into(),
            attempts,
            error: error.into(),
            ..JobRow::default()
        }
    }

    fn epochs(job_id: i64, attempts: &[u32]) -> Vec<EpochRow> {
        let epoch = |(i, &attempt): (usize, &u32)| EpochRow {
            job_id,
            epoch: i as u32 + 1,
            attempt,
            ..EpochRow::default()
        };
        attempts.iter().enumerate().map(epoch).collect()
    }

    #[test]
    fn retried_continued_and_failed_jobs_are_told_apart() {
        let input = ReportInput {
            sweep: "s".into(),
            variants: vec!["natural_softmax".into()],
            baseline_variant: "natural_softmax".into(),
            spec_json: String::new(),
            jobs: vec![
                job(1, 0, "succeeded", 1, ""),
                job(2, 1, "succeeded", 2, ""),
                job(3, 2, "running", 3, "lease expired during attempt 2"),
                job(4, 3, "failed", 5, "CUDA out of memory"),
                job(5, 4, "cancelled", 1, ""),
            ],
            epochs: [epochs(1, &[1, 1]), epochs(2, &[2, 2]), epochs(3, &[1, 1, 3]), epochs(4, &[0, 0])]
                .concat(),
            learning_rates: Default::default(),
            provenance: Default::default(),
            measure: Default::default(),
        };
        let s = summarise(&input, &input.variants);
        assert_eq!(s.total, 5);
        assert_eq!(s.retried.iter().map(|j| j.job_id).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(s.retried[1].epoch_attempts, [1, 3]);
        assert_eq!(s.continued().iter().map(|j| j.job_id).collect::<Vec<_>>(), [3]);
        assert!(s.retried[2].epoch_attempts.is_empty(), "attempt 0 is not known");
        assert_eq!(
            s.failed.iter().map(|j| (j.job_id, j.error.as_str())).collect::<Vec<_>>(),
            [(4, "CUDA out of memory"), (5, "")]
        );
        assert_eq!(s.failed[0].label(), "`natural_softmax` seed 3");
    }
}
