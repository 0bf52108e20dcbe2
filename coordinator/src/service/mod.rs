//! The two gRPC services ([`sweep_service::SweepApi`] for users, [`worker_service::WorkerApi`]
//! for GPU workers) and the state they share.

pub mod sweep_service;
pub mod worker_service;

use sweep_proto::JobState;
use sweep_proto::pb;
use tokio::sync::watch;

use crate::config::Config;
use crate::db::{Database, epochs, jobs, sweeps};
use crate::error::Result;
use crate::events::Events;

/// What every handler needs: the database, the event channel, the settings and the shutdown
/// signal (streams end when it turns true, so graceful shutdown does not wait on them).
#[derive(Debug, Clone)]
pub struct Shared {
    pub db: Database,
    pub events: Events,
    pub config: Config,
    pub stop: watch::Receiver<bool>,
}

/// Builds the summary of sweep `name` ([`crate::Error::NotFound`] if it does not exist).
///
/// Progress counts the epochs jobs will actually run: a failed or cancelled job contributes only
/// the epochs it stored, so a sweep whose jobs all ended is at 100 %. The ETA is the remaining
/// epochs × the mean observed epoch time / max(1, running jobs); -1 before the first epoch.
pub async fn sweep_summary(db: &Database, name: &str) -> Result<pb::SweepSummary> {
    let pool = db.reader();
    let row = sweeps::require(pool, name).await?;
    let spec = row.spec()?;
    let mut summary = pb::SweepSummary {
        spec: Some(spec.into()),
        created_at_ms: row.created_at_ms,
        eta_seconds: -1.0,
        ..Default::default()
    };
    for t in jobs::totals_by_state(pool, name).await? {
        let n = t.jobs as u32;
        let state: JobState = t.state.parse().unwrap_or(JobState::Failed);
        match state {
            JobState::Queued => summary.queued += n,
            JobState::Running => summary.running += n,
            JobState::Succeeded => summary.succeeded += n,
            JobState::Failed => summary.failed += n,
            JobState::Cancelled => summary.cancelled += n,
        }
        summary.jobs_total += n;
        summary.epochs_done += t.epochs_done as u64;
        summary.epochs_total += if state == JobState::Failed || state == JobState::Cancelled {
            t.epochs_done as u64
        } else {
            t.epochs as u64
        };
    }
    summary.progress_percent = if summary.epochs_total == 0 {
        100.0
    } else {
        summary.epochs_done as f64 / summary.epochs_total as f64 * 100.0
    };
    let remaining = summary.epochs_total.saturating_sub(summary.epochs_done);
    if remaining == 0 {
        summary.eta_seconds = 0.0;
    } else if let Some(mean) = epochs::mean_wall_seconds(pool, name).await? {
        summary.eta_seconds = remaining as f64 * mean / f64::from(summary.running.max(1));
    }
    Ok(summary)
}
