//! Jobs, fences, assignments, epochs and summaries between wire and domain.

use std::time::Duration;

use super::{InvalidInput, check_bn_group, ensure, parse_variant, state_to_wire};
use crate::domain::{
    EpochMetrics, EpochRecord, Fence, Job, JobAssignment, LeaseVerdict, MAX_LABEL_LEN, MAX_METRICS,
    NAMED_METRICS, StoredEpoch, SweepSummary, is_metric_name,
};
use crate::pb;
use crate::text::echo;

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
        let non_negative = |field: &'static str, x: Option<f64>| {
            ensure(x.is_none_or(|x| x.is_finite() && x >= 0.0), field, || {
                format!("{x:?} must be a finite number ≥ 0")
            })
        };
        let fraction = |field: &'static str, x: Option<f64>| {
            ensure(x.is_none_or(|x| x.is_finite() && (0.0..=1.0).contains(&x)), field, || {
                format!("{x:?} is not in [0, 1]")
            })
        };
        non_negative("metrics.train_loss", m.train_loss)?;
        non_negative("metrics.val_loss", m.val_loss)?;
        fraction("metrics.train_acc", m.train_acc)?;
        fraction("metrics.val_acc", m.val_acc)?;
        non_negative("metrics.wall_seconds", Some(m.wall_seconds))?;
        non_negative("metrics.images_per_sec", m.images_per_sec)?;
        ensure(m.values.len() <= MAX_METRICS, "metrics.values", || {
            format!("more than {MAX_METRICS} metrics")
        })?;
        for (name, value) in &m.values {
            ensure(is_metric_name(name), "metrics.values", || {
                format!("{} is not a metric name", echo(name))
            })?;
            ensure(!NAMED_METRICS.contains(&name.as_str()), "metrics.values", || {
                format!("{name} has its own field")
            })?;
            ensure(value.is_finite(), "metrics.values", || format!("{name} = {value} is not finite"))?;
        }
        Ok(EpochMetrics {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_acc: m.train_acc,
            val_loss: m.val_loss,
            val_acc: m.val_acc,
            wall_seconds: m.wall_seconds,
            images_per_sec: m.images_per_sec,
            values: m.values.into_iter().collect(),
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
            attempt: 0,
            values: m.values.into_iter().collect(),
        }
    }
}

impl TryFrom<pb::JobAssignment> for JobAssignment {
    type Error = InvalidInput;
    fn try_from(a: pb::JobAssignment) -> Result<Self, InvalidInput> {
        Ok(JobAssignment {
            fence: required_fence(a.fence)?,
            sweep: a.sweep,
            variant: {
                let command = a.command.is_some();
                ensure(command || parse_variant(&a.variant).is_ok(), "variant", || {
                    format!("{} is not a loss variant", echo(&a.variant))
                })?;
                ensure(!a.variant.is_empty() && a.variant.len() <= MAX_LABEL_LEN, "variant", || {
                    format!("must hold 1..={MAX_LABEL_LEN} bytes")
                })?;
                a.variant
            },
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
            epochs_stored: a.epochs_stored.min(a.epochs),
            command: a.command.map(TryInto::try_into).transpose()?,
        })
    }
}

impl From<JobAssignment> for pb::JobAssignment {
    fn from(a: JobAssignment) -> Self {
        pb::JobAssignment {
            fence: Some(a.fence.into()),
            sweep: a.sweep,
            variant: a.variant,
            seed: a.seed,
            epochs: a.epochs,
            batch_size: a.batch_size,
            learning_rate: a.learning_rate,
            data: Some(a.data.into()),
            lease_ttl_ms: u32::try_from(a.lease_ttl.as_millis()).unwrap_or(u32::MAX),
            epochs_stored: a.epochs_stored,
            command: a.command.map(Into::into),
        }
    }
}

impl From<Job> for pb::Job {
    fn from(j: Job) -> Self {
        pb::Job {
            id: j.id.0,
            sweep: j.sweep,
            variant: j.variant,
            seed: j.seed,
            state: state_to_wire(j.state) as i32,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            epochs: j.epochs,
            epochs_done: j.epochs_done,
            learning_rate: j.learning_rate,
            best_value: j.best_value,
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
            variant: r.variant,
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

impl From<StoredEpoch> for pb::EpochMetrics {
    fn from(e: StoredEpoch) -> Self {
        pb::EpochMetrics { attempt: e.attempt, ..e.metrics.into() }
    }
}
