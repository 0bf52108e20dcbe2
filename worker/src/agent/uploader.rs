//! Streams one job's finished epochs to the coordinator and keeps every epoch until it is
//! acknowledged: if the stream breaks, it reconnects with backoff and re-sends what is pending
//! (the coordinator stores an epoch once per attempt and acknowledges re-sends as duplicates), so
//! nothing measured is lost while the coordinator is briefly away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sweep_proto::connect::AuthChannel;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use sweep_proto::pb::{self, EpochReport};
use sweep_proto::{EpochMetrics, Fence};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use super::backoff::Backoff;

/// Why an upload ended without every epoch acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The coordinator rejected the fence: the job was cancelled, the lease expired and another
    /// attempt owns the job, or the job is not this credential's. The epochs of this attempt are
    /// not wanted any more.
    #[error("lease no longer valid: {0}")]
    LeaseLost(String),
    /// The coordinator refused an epoch as invalid; retrying cannot help.
    #[error("coordinator rejected an epoch: {0}")]
    Rejected(String),
    /// The worker is shutting down.
    #[error("worker is shutting down")]
    Shutdown,
}

/// How long a stopping worker keeps trying to deliver its pending epochs.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Uploads every epoch that arrives on `epochs` until that channel closes and all are
/// acknowledged. Returns how many epochs the coordinator acknowledged. Once `shutdown` is up it
/// still delivers what training hands it, for up to [`DRAIN_TIMEOUT`].
pub async fn upload_epochs(
    client: WorkerServiceClient<AuthChannel>,
    fence: Fence,
    mut epochs: mpsc::UnboundedReceiver<EpochMetrics>,
    shutdown: Arc<AtomicBool>,
) -> Result<u32, UploadError> {
    let mut pending: BTreeMap<u32, EpochMetrics> = BTreeMap::new();
    let mut acked = 0u32;
    let mut input_open = true;
    let mut backoff = Backoff::default();
    let mut stopping_since: Option<Instant> = None;
    loop {
        if !input_open && pending.is_empty() {
            return Ok(acked);
        }
        if shutdown.load(Ordering::Relaxed) {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if since.elapsed() > DRAIN_TIMEOUT {
                return Err(UploadError::Shutdown);
            }
        }
        // Wait for something to send before opening a stream.
        if pending.is_empty() {
            match epochs.recv().await {
                Some(m) => {
                    pending.insert(m.epoch, m);
                }
                None => {
                    input_open = false;
                    continue;
                }
            }
        }
        match stream_once(client.clone(), &fence, &mut epochs, &mut pending, &mut input_open, &mut acked)
            .await
        {
            Ok(()) => backoff.reset(),
            Err(status) => match status.code() {
                tonic::Code::FailedPrecondition | tonic::Code::NotFound | tonic::Code::PermissionDenied => {
                    return Err(UploadError::LeaseLost(status.message().to_owned()));
                }
                tonic::Code::InvalidArgument => {
                    return Err(UploadError::Rejected(status.message().to_owned()));
                }
                _ => {
                    let wait = backoff.next_delay();
                    warn!(job = fence.job_id, pending = pending.len(), ?wait, error = %status,
                        "epoch stream broke; will re-send pending epochs");
                    tokio::time::sleep(wait).await;
                }
            },
        }
    }
}

/// One stream: sends everything pending, then new epochs as they come, and removes each epoch
/// from `pending` when its ack arrives. Returns when the input is closed and nothing is pending.
async fn stream_once(
    mut client: WorkerServiceClient<AuthChannel>,
    fence: &Fence,
    epochs: &mut mpsc::UnboundedReceiver<EpochMetrics>,
    pending: &mut BTreeMap<u32, EpochMetrics>,
    input_open: &mut bool,
    acked: &mut u32,
) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel::<EpochReport>(64);
    let report = |m: &EpochMetrics| EpochReport {
        fence: Some(pb::Fence::from(fence.clone())),
        metrics: Some(pb::EpochMetrics::from(m.clone())),
    };
    for m in pending.values() {
        tx.send(report(m)).await.map_err(|_| tonic::Status::unavailable("stream closed"))?;
    }
    let mut acks = client.report_epochs(ReceiverStream::new(rx)).await?.into_inner();
    let mut tx = Some(tx);
    loop {
        if !*input_open && pending.is_empty() {
            return Ok(());
        }
        tokio::select! {
            next = epochs.recv(), if *input_open => match next {
                Some(m) => {
                    let sent = report(&m);
                    pending.insert(m.epoch, m);
                    if let Some(tx) = &tx {
                        tx.send(sent).await.map_err(|_| tonic::Status::unavailable("stream closed"))?;
                    }
                }
                None => *input_open = false,
            },
            ack = acks.message() => match ack? {
                Some(ack) => {
                    if pending.remove(&ack.epoch).is_some() {
                        *acked += 1;
                    }
                    debug!(job = ack.job_id, epoch = ack.epoch, duplicate = ack.duplicate, "epoch acknowledged");
                    if !*input_open && pending.is_empty() {
                        tx = None; // half-close: tells the coordinator we are done
                    }
                }
                None if pending.is_empty() => return Ok(()),
                None => return Err(tonic::Status::unavailable("coordinator closed the epoch stream early")),
            },
        }
        if tx.is_some() && !*input_open && pending.is_empty() {
            tx = None;
        }
    }
}
