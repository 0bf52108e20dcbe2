//! What `sweep run` says about an existing sweep before it trains (what it keeps, what it will
//! train, what it will not rerun) and how a finished run ends (non-zero when jobs failed).

use sweep_proto::pb;
use sweep_proto::text::printable;

/// The plan for a sweep as submitted: one line for the user.
pub fn plan_line(s: &pb::SweepSummary, retried: u32) -> String {
    let name = printable(s.spec.as_ref().map_or("", |s| s.name.as_str())).into_owned();
    let mut line = format!("sweep {name}: {} jobs", s.jobs_total);
    if s.succeeded > 0 {
        line.push_str(&format!("; {} succeeded (kept, not rerun)", s.succeeded));
    }
    line.push_str(&format!("; {} to train", s.queued + s.running));
    if retried > 0 {
        line.push_str(&format!(" ({retried} of them failed or cancelled before, queued again)"));
    }
    if let Some(reduced) = s.spec.as_ref().and_then(|s| s.data.as_ref()).and_then(reduced_data) {
        line.push_str(&format!("; {reduced}"));
    }
    let ended = s.failed + s.cancelled;
    if ended > 0 {
        line.push_str(&format!(
            "; {} failed and {} cancelled will not run again (--retry-failed queues them)",
            s.failed, s.cancelled
        ));
    }
    line
}

/// What a sweep leaves out of the experiment's data and model, if anything: a run on part of it
/// says so before it trains, since its accuracy is not the experiment's.
fn reduced_data(d: &pb::DataOptions) -> Option<String> {
    let mut parts = Vec::new();
    if d.train_limit > 0 || d.test_limit > 0 {
        let count = |n: u32, all: u32| if n == 0 || n >= all { "all".to_owned() } else { n.to_string() };
        parts.push(format!(
            "{} training and {} test images",
            count(d.train_limit, 50_000),
            count(d.test_limit, 10_000)
        ));
    }
    if d.width_multiplier != 0.0 && d.width_multiplier != 1.0 {
        parts.push(format!("width {}", d.width_multiplier));
    }
    (!parts.is_empty()).then(|| format!("a reduced run: {}", parts.join(", ")))
}

/// Why a finished run is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "sweep {sweep}: {failed} job(s) failed; `coordinator status --sweep {sweep}` and the report give \
     the reasons, `sweep run --retry-failed` queues them again"
)]
pub struct JobsFailed {
    pub sweep: String,
    pub failed: u32,
}

/// `Ok` when no job of the finished sweep failed.
pub fn outcome(sweep: &str, failed: u32) -> Result<(), JobsFailed> {
    if failed == 0 { Ok(()) } else { Err(JobsFailed { sweep: printable(sweep).into_owned(), failed }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(queued: u32, succeeded: u32, failed: u32, cancelled: u32) -> pb::SweepSummary {
        pb::SweepSummary {
            spec: Some(pb::SweepSpec { name: "paper".into(), ..Default::default() }),
            jobs_total: queued + succeeded + failed + cancelled,
            queued,
            succeeded,
            failed,
            cancelled,
            ..Default::default()
        }
    }

    #[test]
    fn the_plan_says_what_is_kept_trained_and_left_out() {
        assert_eq!(plan_line(&summary(4, 0, 0, 0), 0), "sweep paper: 4 jobs; 4 to train");
        assert_eq!(
            plan_line(&summary(3, 5, 1, 1), 0),
            "sweep paper: 10 jobs; 5 succeeded (kept, not rerun); 3 to train; 1 failed and 1 cancelled will \
             not run again (--retry-failed queues them)"
        );
        assert_eq!(
            plan_line(&summary(2, 5, 0, 0), 2),
            "sweep paper: 7 jobs; 5 succeeded (kept, not rerun); 2 to train (2 of them failed or cancelled \
             before, queued again)"
        );
    }

    #[test]
    fn the_plan_says_when_the_data_or_model_is_reduced() {
        let with = |data: pb::DataOptions| {
            let mut s = summary(10, 0, 0, 0);
            s.spec.as_mut().unwrap().data = Some(data);
            plan_line(&s, 0)
        };
        let smoke = pb::DataOptions {
            train_limit: 512,
            test_limit: 256,
            width_multiplier: 0.125,
            ..Default::default()
        };
        assert_eq!(
            with(smoke),
            "sweep paper: 10 jobs; 10 to train; a reduced run: 512 training and 256 test images, width 0.125"
        );
        let half = pb::DataOptions { width_multiplier: 0.5, ..Default::default() };
        assert_eq!(with(half), "sweep paper: 10 jobs; 10 to train; a reduced run: width 0.5");
        let full = pb::DataOptions { width_multiplier: 1.0, augment: true, ..Default::default() };
        assert_eq!(with(full), "sweep paper: 10 jobs; 10 to train", "the experiment's data and width");
    }

    #[test]
    fn a_run_with_failed_jobs_is_an_error() {
        assert_eq!(outcome("paper", 0), Ok(()));
        let err = outcome("paper", 2).unwrap_err();
        assert_eq!(err.failed, 2);
        assert!(err.to_string().contains("--retry-failed"), "{err}");
    }
}
