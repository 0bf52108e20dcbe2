//! What the dashboard shows of a sweep, read from the queue: its summary, the report's rows (the
//! same assembly as `coordinator report`, so the page and the report agree) and the workers.

use sweep_proto::domain::{SweepSummary, Worker};
use sweep_proto::pb;

use crate::client::report_input::report_input;
use crate::error::Result;
use crate::queue::Queue;

/// One sweep as the dashboard draws it.
pub struct SweepView {
    pub summary: SweepSummary,
    pub input: report::ReportInput,
    pub workers: Vec<Worker>,
}

/// Reads sweep `name` (NOT_FOUND when it does not exist).
pub async fn load(queue: &Queue, name: &str) -> Result<SweepView> {
    let summary = queue.summary(name).await?;
    let details = queue
        .jobs_with_epochs(name)
        .await?
        .into_iter()
        .map(|(job, epochs)| pb::JobDetail {
            job: Some(job.into()),
            epochs: epochs.into_iter().map(pb::EpochMetrics::from).collect(),
        })
        .collect();
    let workers = queue.workers().await?;
    let wire_workers: Vec<pb::Worker> = workers.iter().cloned().map(pb::Worker::from).collect();
    let input = report_input(name, summary.spec.clone().into(), details, &wire_workers)?;
    Ok(SweepView { summary, input, workers })
}
