//! `SweepService`: what users call to submit sweeps, inspect them, watch them, and cancel or
//! retry jobs.
//! Its interceptor admits user and admin credentials; reads are open to both, and the queue
//! checks that only a sweep's owner or an admin grows, cancels or retries it.

use std::sync::Arc;

use sweep_proto::convert::{state_from_wire, validate_sweep_name};
use sweep_proto::domain::{JobId, MAX_LABEL_LEN, RetryTarget, SweepSpec, SweepSummary};
use sweep_proto::pb::sweep_service_server::SweepService;
use sweep_proto::{InvalidInput, pb};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{RpcResult, Shared};
use crate::error::Error;
use crate::events::Event;

/// Implementation of `sweep.v1.SweepService`.
#[derive(Debug, Clone)]
pub struct SweepApi {
    shared: Shared,
}

impl SweepApi {
    pub fn new(shared: Shared) -> SweepApi {
        SweepApi { shared }
    }
}

fn checked_name(name: &str) -> Result<(), Error> {
    validate_sweep_name(name).map_err(|e| InvalidInput::new("sweep", e.message).into())
}

/// A job label filter: a loss variant's name or a parameter point's label.
fn checked_label(label: &str) -> Result<&str, Error> {
    if label.is_empty() || label.len() > MAX_LABEL_LEN {
        return Err(InvalidInput::new("variant", format!("must hold 1..={MAX_LABEL_LEN} bytes")).into());
    }
    Ok(label)
}

fn encode_all<T, W: From<T>>(values: Vec<T>) -> Vec<W> {
    values.into_iter().map(W::from).collect()
}

#[tonic::async_trait]
impl SweepService for SweepApi {
    async fn submit_sweep(
        &self,
        request: Request<pb::SubmitSweepRequest>,
    ) -> RpcResult<pb::SubmitSweepResponse> {
        let by = self.shared.writer(&request)?;
        let wire = request.into_inner().spec.ok_or_else(|| InvalidInput::new("spec", "is required"))?;
        let spec = SweepSpec::try_from(wire)?;
        let sweep = spec.name.clone();
        let submitted = self.shared.queue.submit(spec, &by).await?;
        Ok(Response::new(pb::SubmitSweepResponse {
            sweep,
            jobs_created: submitted.created,
            jobs_existing: submitted.existing,
        }))
    }

    async fn list_sweeps(&self, _: Request<pb::ListSweepsRequest>) -> RpcResult<pb::ListSweepsResponse> {
        let sweeps = self.shared.queue.summaries().await?;
        Ok(Response::new(pb::ListSweepsResponse { sweeps: encode_all(sweeps) }))
    }

    async fn get_sweep(&self, request: Request<pb::GetSweepRequest>) -> RpcResult<pb::SweepSummary> {
        let name = request.into_inner().sweep;
        checked_name(&name)?;
        Ok(Response::new(self.shared.queue.summary(&name).await?.into()))
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> RpcResult<pb::ListJobsResponse> {
        let req = request.into_inner();
        checked_name(&req.sweep)?;
        let state = req.state.map(state_from_wire).transpose()?;
        let variant = req.variant.as_deref().map(checked_label).transpose()?;
        let jobs = self.shared.queue.jobs(&req.sweep, state, variant).await?;
        Ok(Response::new(pb::ListJobsResponse { jobs: encode_all(jobs) }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> RpcResult<pb::JobDetail> {
        let id = JobId(request.into_inner().job_id);
        let (job, epochs) = self.shared.queue.job(id).await?;
        Ok(Response::new(pb::JobDetail { job: Some(job.into()), epochs: encode_all(epochs) }))
    }

    type ExportSweepStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::JobDetail, Status>>>;

    async fn export_sweep(
        &self,
        request: Request<pb::ExportSweepRequest>,
    ) -> RpcResult<Self::ExportSweepStream> {
        let name = request.into_inner().sweep;
        checked_name(&name)?;
        let details: Vec<Result<pb::JobDetail, Status>> = self
            .shared
            .queue
            .jobs_with_epochs(&name)
            .await?
            .into_iter()
            .map(|(job, epochs)| Ok(pb::JobDetail { job: Some(job.into()), epochs: encode_all(epochs) }))
            .collect();
        Ok(Response::new(tokio_stream::iter(details)))
    }

    async fn list_workers(&self, _: Request<pb::ListWorkersRequest>) -> RpcResult<pb::ListWorkersResponse> {
        let workers = self.shared.queue.workers().await?;
        let lease_ttl_ms = u32::try_from(self.shared.queue.lease_ttl().as_millis()).unwrap_or(u32::MAX);
        Ok(Response::new(pb::ListWorkersResponse { workers: encode_all(workers), lease_ttl_ms }))
    }

    type WatchSweepStream = ReceiverStream<Result<pb::SweepEvent, Status>>;

    async fn watch_sweep(
        &self,
        request: Request<pb::WatchSweepRequest>,
    ) -> RpcResult<Self::WatchSweepStream> {
        let name = request.into_inner().sweep;
        checked_name(&name)?;
        // Subscribe before the snapshot so nothing between the two is missed; a change in
        // between may then come twice (in the snapshot and as an event), which applies as a no-op.
        let events = self.shared.queue.events().subscribe();
        let snapshot = self.shared.queue.summary(&name).await?;
        let (tx, rx) = mpsc::channel(256);
        tx.send(Ok(snapshot_event(snapshot))).await.ok();
        tokio::spawn(forward_events(self.shared.clone(), name, events, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel_job(&self, request: Request<pb::CancelJobRequest>) -> RpcResult<pb::CancelResponse> {
        let by = self.shared.writer(&request)?;
        let id = JobId(request.into_inner().job_id);
        self.shared.queue.cancel(id, &by).await?;
        Ok(Response::new(pb::CancelResponse { cancelled: 1 }))
    }

    async fn cancel_sweep(&self, request: Request<pb::CancelSweepRequest>) -> RpcResult<pb::CancelResponse> {
        let by = self.shared.writer(&request)?;
        let name = request.into_inner().sweep;
        checked_name(&name)?;
        let cancelled = self.shared.queue.cancel_sweep(&name, &by).await?;
        Ok(Response::new(pb::CancelResponse { cancelled: cancelled.len() as u32 }))
    }

    async fn retry_jobs(&self, request: Request<pb::RetryJobsRequest>) -> RpcResult<pb::RetryJobsResponse> {
        let by = self.shared.writer(&request)?;
        let target = RetryTarget::try_from(request.into_inner())?;
        let retried = self.shared.queue.retry(target, &by).await?;
        Ok(Response::new(pb::RetryJobsResponse { retried: retried.len() as u32 }))
    }
}

fn snapshot_event(summary: SweepSummary) -> pb::SweepEvent {
    pb::SweepEvent { event: Some(pb::sweep_event::Event::Snapshot(summary.into())) }
}

/// Encodes an event for the watch stream.
fn encode_event(event: &Event) -> pb::SweepEvent {
    let event = match event {
        Event::JobChanged(job) => pb::sweep_event::Event::JobChanged(job.clone().into()),
        Event::EpochRecorded(record) => pb::sweep_event::Event::EpochRecorded(record.clone().into()),
    };
    pb::SweepEvent { event: Some(event) }
}

/// Forwards the sweep's events to one watcher until it hangs up or the server stops. A watcher
/// that falls behind the broadcast buffer gets a fresh snapshot instead of an error.
async fn forward_events(
    shared: Shared,
    sweep: String,
    mut events: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Result<pb::SweepEvent, Status>>,
) {
    let mut stop = shared.stop.clone();
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            _ = tx.closed() => return,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let message = match received {
            Ok(event) if event.sweep() == sweep => Ok(encode_event(&event)),
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(sweep = %sweep, missed, "watcher lagged; sending a fresh snapshot");
                shared.queue.summary(&sweep).await.map(snapshot_event).map_err(Status::from)
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(message).await.is_err() {
            return;
        }
    }
}
