//! `WorkerService`: what GPU workers call to register, lease jobs, heartbeat, stream epoch
//! metrics and finish. Every write after the lease is fenced (job id, attempt, lease token). Its
//! interceptor admits worker credentials only; the queue checks that a worker id is used only by
//! the credential it is bound to.

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use sweep_proto::convert::{data_files_from_wire, required_fence};
use sweep_proto::domain::JobKind;
use sweep_proto::pb::lease_status::Verdict;
use sweep_proto::pb::worker_service_server::WorkerService;
use sweep_proto::{EpochMetrics, Fence, InvalidInput, pb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{RpcResult, Shared, checkpoint_transfer};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::queue::{Queue, Recorded, Registration};

/// Longest worker id, host name or GPU name accepted.
const MAX_ID_LEN: usize = 256;
/// Most GPUs one registration may list.
const MAX_GPUS: usize = 256;
/// Epoch reports of one stream being stored at the same time.
const MAX_EPOCHS_IN_FLIGHT: usize = 32;

/// Implementation of `sweep.v1.WorkerService`.
#[derive(Debug, Clone)]
pub struct WorkerApi {
    shared: Shared,
}

impl WorkerApi {
    pub fn new(shared: Shared) -> WorkerApi {
        WorkerApi { shared }
    }
}

fn checked_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(InvalidInput::new(field, format!("must hold 1..={MAX_ID_LEN} bytes")).into());
    }
    Ok(())
}

/// The kinds of job a lease asks for: none named means built-in only (workers from before
/// command jobs existed never run one).
fn kinds_from_wire(kinds: &[i32]) -> Result<Vec<JobKind>> {
    let mut out = Vec::with_capacity(2);
    for k in kinds {
        let kind = match pb::JobKind::try_from(*k) {
            Ok(pb::JobKind::Builtin) => JobKind::Builtin,
            Ok(pb::JobKind::Command) => JobKind::Command,
            _ => return Err(InvalidInput::new("kinds", format!("{k} is not a job kind")).into()),
        };
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    if out.is_empty() {
        out.push(JobKind::Builtin);
    }
    out.sort();
    Ok(out)
}

fn millis(d: std::time::Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> RpcResult<pb::RegisterWorkerResponse> {
        let by = self.shared.writer(&request)?;
        let req = request.into_inner();
        checked_id("worker_id", &req.worker_id)?;
        checked_id("hostname", &req.hostname)?;
        if req.gpus.len() > MAX_GPUS {
            return Err(InvalidInput::new("gpus", format!("more than {MAX_GPUS} GPUs")).into());
        }
        for gpu in &req.gpus {
            checked_id("gpus", gpu)?;
        }
        let worker = Registration {
            worker_id: req.worker_id,
            hostname: req.hostname,
            gpus: req.gpus,
            slots: req.slots,
            data_files: data_files_from_wire(req.data_files)?,
        };
        self.shared.queue.register(worker, &by).await?;
        let config = &self.shared.config;
        Ok(Response::new(pb::RegisterWorkerResponse {
            lease_ttl_ms: millis(config.lease_ttl),
            heartbeat_interval_ms: millis(config.heartbeat_interval),
        }))
    }

    async fn lease_job(&self, request: Request<pb::LeaseJobRequest>) -> RpcResult<pb::LeaseJobResponse> {
        let by = self.shared.writer(&request)?;
        let req = request.into_inner();
        checked_id("worker_id", &req.worker_id)?;
        let kinds = kinds_from_wire(&req.kinds)?;
        let response = match self.shared.queue.lease(req.worker_id, kinds.clone(), &by).await? {
            Some(assignment) => pb::LeaseJobResponse {
                job: Some(assignment.into()),
                retry_after_ms: 0,
                queued: Some(self.shared.queue.queued(&kinds).await?),
            },
            None => pb::LeaseJobResponse {
                job: None,
                retry_after_ms: millis(self.shared.config.idle_retry_after),
                queued: None,
            },
        };
        Ok(Response::new(response))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> RpcResult<pb::HeartbeatResponse> {
        let by = self.shared.writer(&request)?;
        let req = request.into_inner();
        checked_id("worker_id", &req.worker_id)?;
        let max = self.shared.config.limits.max_fences_per_heartbeat;
        if req.leases.len() > max as usize {
            return Err(InvalidInput::new(
                "leases",
                format!(
                    "{} leases is more than the max_fences_per_heartbeat limit of {max}",
                    req.leases.len()
                ),
            )
            .into());
        }
        let fences = req.leases.into_iter().map(Fence::try_from).collect::<Result<Vec<_>, _>>()?;
        let verdicts = self.shared.queue.heartbeat(req.worker_id, req.idle_slots, fences, &by).await?;
        let leases = verdicts
            .into_iter()
            .map(|(job, verdict)| pb::LeaseStatus { job_id: job.0, verdict: Verdict::from(verdict) as i32 })
            .collect();
        Ok(Response::new(pb::HeartbeatResponse { leases }))
    }

    type ReportEpochsStream = ReceiverStream<Result<pb::EpochAck, Status>>;

    async fn report_epochs(
        &self,
        request: Request<Streaming<pb::EpochReport>>,
    ) -> RpcResult<Self::ReportEpochsStream> {
        let by = crate::auth::principal(&request)?;
        let reports = request.into_inner();
        let (tx, rx) = mpsc::channel(MAX_EPOCHS_IN_FLIGHT * 2);
        tokio::spawn(pump_epochs(self.shared.clone(), by, reports, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> RpcResult<pb::CompleteJobResponse> {
        let by = self.shared.writer(&request)?;
        let fence = required_fence(request.into_inner().fence)?;
        let job = self.shared.queue.complete(fence, &by).await?;
        if let Some(files) = &self.shared.checkpoints {
            // A finished job is never resumed; a file left behind only costs disk.
            if let Err(e) = files.remove_job(job.id).await {
                tracing::warn!(job = job.id.0, error = %e, "could not remove the finished job's checkpoints");
            }
        }
        Ok(Response::new(pb::CompleteJobResponse { job: Some(job.into()) }))
    }

    async fn fail_job(&self, request: Request<pb::FailJobRequest>) -> RpcResult<pb::FailJobResponse> {
        let by = self.shared.writer(&request)?;
        let req = request.into_inner();
        let fence = required_fence(req.fence)?;
        let job = self.shared.queue.fail(fence, req.error, &by).await?;
        Ok(Response::new(pb::FailJobResponse { job: Some(job.into()) }))
    }

    async fn release_job(
        &self,
        request: Request<pb::ReleaseJobRequest>,
    ) -> RpcResult<pb::ReleaseJobResponse> {
        let by = self.shared.writer(&request)?;
        let fence = required_fence(request.into_inner().fence)?;
        self.shared.queue.release(fence, &by).await?;
        Ok(Response::new(pb::ReleaseJobResponse {}))
    }

    async fn put_checkpoint(
        &self,
        request: Request<Streaming<pb::CheckpointChunk>>,
    ) -> RpcResult<pb::PutCheckpointResponse> {
        checkpoint_transfer::put(&self.shared, request).await?;
        Ok(Response::new(pb::PutCheckpointResponse {}))
    }

    type GetCheckpointStream = checkpoint_transfer::ChunkStream;

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> RpcResult<Self::GetCheckpointStream> {
        Ok(Response::new(checkpoint_transfer::get(&self.shared, request).await?))
    }
}

/// Reads a worker's epoch reports and stores up to [`MAX_EPOCHS_IN_FLIGHT`] of them at once
/// (they share the writer's group commits), answering with one ack per report, in order. The
/// first rejected report ends the stream with its status; reports already in flight behind it may
/// have been stored, and re-sending them is acknowledged as a duplicate. A message that cannot be
/// read (malformed: INVALID_ARGUMENT; over the size limit: OUT_OF_RANGE) ends the stream with its
/// status after the acks of the reports before it. Each report takes one unit of the caller's
/// rate budget.
async fn pump_epochs(
    shared: Shared,
    by: Principal,
    mut reports: Streaming<pb::EpochReport>,
    tx: mpsc::Sender<Result<pb::EpochAck, Status>>,
) {
    let mut stop = shared.stop.clone();
    let mut pending: FuturesOrdered<BoxFuture<'static, Result<pb::EpochAck>>> = FuturesOrdered::new();
    let mut open = true;
    // Sent once the reports read before it are acked: ending without it would read as success.
    let mut broken: Option<Error> = None;
    while open || !pending.is_empty() {
        tokio::select! {
            () = stopped(&mut stop) => return,
            Some(reply) = pending.next(), if !pending.is_empty() => {
                let reply = reply.map_err(Status::from);
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
            next = reports.message(), if open && pending.len() < MAX_EPOCHS_IN_FLIGHT => match next {
                Ok(Some(report)) => pending.push_back(record_epoch(&shared, &by, report).await),
                Ok(None) => open = false,
                Err(status) => {
                    tracing::debug!(%status, "epoch stream broke");
                    broken = Some(Error::inbound(status));
                    open = false;
                }
            },
        }
    }
    if let Some(e) = broken {
        let _ = tx.send(Err(e.into())).await;
    }
}

/// Resolves once the server stops (the watch guard is dropped at once: it is not `Send`).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Decodes one streamed epoch and queues it for storage, in stream order; the returned future
/// resolves to its ack (`duplicate` when this attempt had already stored it) or its rejection.
async fn record_epoch(
    shared: &Shared,
    by: &Principal,
    report: pb::EpochReport,
) -> BoxFuture<'static, Result<pb::EpochAck>> {
    let queue: &Queue = &shared.queue;
    let decoded = shared.limiter.check(by).and_then(|()| {
        let fence = required_fence(report.fence)?;
        let metrics = report.metrics.ok_or_else(|| InvalidInput::new("metrics", "is required"))?;
        Ok((fence, EpochMetrics::try_from(metrics)?))
    });
    let (fence, metrics) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => return Box::pin(futures::future::ready(Err(e))),
    };
    let (job_id, epoch) = (fence.job_id, metrics.epoch);
    match queue.record_epoch(fence, metrics, by).await {
        Ok(recorded) => Box::pin(async move {
            let duplicate = recorded.await? == Recorded::Duplicate;
            Ok(pb::EpochAck { job_id, epoch, duplicate })
        }),
        Err(e) => Box::pin(futures::future::ready(Err(e))),
    }
}
