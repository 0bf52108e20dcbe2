//! [`CoordinatorStore`]: a job's checkpoints kept by the coordinator (`PutCheckpoint` /
//! `GetCheckpoint`, in chunks), so workers without a shared disk resume each other's jobs.

use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sweep_proto::Fence;
use sweep_proto::connect::AuthChannel;
use sweep_proto::pb::checkpoint_chunk::Part;
use sweep_proto::pb::worker_service_client::WorkerServiceClient;
use sweep_proto::pb::{CheckpointChunk, CheckpointHeader, GetCheckpointRequest};
use tokio::runtime::Handle;

use super::{Checkpoint, CheckpointError, CheckpointStore};

/// Bytes per uploaded message (the coordinator's default message limit is 4 MiB).
const CHUNK_BYTES: usize = 1024 * 1024;
/// Longest a transfer may take before the job goes on without it.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// The checkpoints of the one job a lease covers, kept by the coordinator. Its methods block the
/// calling (training) thread on `runtime`; the store key is unused (the fence names the job).
#[derive(Debug, Clone)]
pub struct CoordinatorStore {
    client: WorkerServiceClient<AuthChannel>,
    runtime: Handle,
    fence: Fence,
}

impl CoordinatorStore {
    pub fn new(client: WorkerServiceClient<AuthChannel>, runtime: Handle, fence: Fence) -> Self {
        CoordinatorStore { client, runtime, fence }
    }

    fn place(&self, epoch: u32) -> PathBuf {
        PathBuf::from(format!("coordinator:job-{}/epoch-{epoch}", self.fence.job_id))
    }

    fn remote(&self, epoch: u32, why: String) -> CheckpointError {
        CheckpointError::Io { path: self.place(epoch), source: std::io::Error::other(why) }
    }

    /// Downloads the newest checkpoint no later than `max_epoch`: `Ok(None)` when there is none,
    /// else its epoch and the bytes, whose size and SHA-256 were checked against the header.
    async fn download(&self, max_epoch: u32) -> Result<Option<(u32, Vec<u8>)>, CheckpointError> {
        let request = GetCheckpointRequest { fence: Some(self.fence.clone().into()), max_epoch };
        let mut stream = match self.client.clone().get_checkpoint(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
            Err(status) => return Err(self.remote(max_epoch, status.message().to_owned())),
        };
        let bad = |why: String| self.remote(max_epoch, why);
        let header = match stream.message().await.map_err(|s| bad(s.message().to_owned()))? {
            Some(CheckpointChunk { part: Some(Part::Header(header)) }) => header,
            _ => return Err(bad("the coordinator sent no checkpoint header".into())),
        };
        let mut bytes = Vec::with_capacity(usize::try_from(header.size).unwrap_or(0).min(1 << 30));
        while let Some(chunk) = stream.message().await.map_err(|s| bad(s.message().to_owned()))? {
            match chunk.part {
                Some(Part::Data(data)) if bytes.len() + data.len() <= header.size as usize => {
                    bytes.extend_from_slice(&data)
                }
                _ => return Err(bad("unexpected message in the checkpoint stream".into())),
            }
        }
        if bytes.len() as u64 != header.size || hex::encode(Sha256::digest(&bytes)) != header.sha256 {
            return Err(CheckpointError::Corrupt {
                path: self.place(header.epoch),
                why: "size or SHA-256 differs from the coordinator's header (damaged in transfer)".into(),
            });
        }
        Ok(Some((header.epoch, bytes)))
    }
}

impl CheckpointStore for CoordinatorStore {
    fn save(&self, _key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let epoch = checkpoint.header.epoch;
        let bytes = checkpoint.encode();
        let header = CheckpointHeader {
            fence: Some(self.fence.clone().into()),
            epoch,
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        };
        let mut messages = vec![CheckpointChunk { part: Some(Part::Header(header)) }];
        messages.extend(
            bytes.chunks(CHUNK_BYTES).map(|c| CheckpointChunk { part: Some(Part::Data(c.to_vec())) }),
        );
        let mut client = self.client.clone();
        let upload = client.put_checkpoint(tokio_stream::iter(messages));
        // The timer is made inside the runtime: the calling thread may not have entered it.
        match self.runtime.block_on(async { tokio::time::timeout(TRANSFER_TIMEOUT, upload).await }) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(self.remote(epoch, format!("{:?}: {}", status.code(), status.message()))),
            Err(_) => Err(self.remote(epoch, format!("upload took over {} s", TRANSFER_TIMEOUT.as_secs()))),
        }
    }

    fn latest(&self, _key: &str, max_epoch: u32) -> Option<Checkpoint> {
        let mut max_epoch = max_epoch;
        loop {
            let fetched = self
                .runtime
                .block_on(async { tokio::time::timeout(TRANSFER_TIMEOUT, self.download(max_epoch)).await });
            let (epoch, bytes) = match fetched {
                Ok(Ok(Some(found))) => found,
                Ok(Ok(None)) => return None,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot fetch the job's checkpoint; starting over");
                    return None;
                }
                Err(_) => {
                    tracing::warn!("fetching the job's checkpoint timed out; starting over");
                    return None;
                }
            };
            match Checkpoint::decode(&bytes, &self.place(epoch)) {
                Ok(checkpoint) if checkpoint.header.epoch == epoch => return Some(checkpoint),
                Ok(_) => {
                    tracing::warn!(epoch, "checkpoint's epoch differs from its header; trying an older one")
                }
                Err(e) => tracing::warn!(error = %e, "unreadable checkpoint; trying an older one"),
            }
            // An older one, if the coordinator keeps one.
            max_epoch = epoch.checked_sub(1)?;
        }
    }
}
