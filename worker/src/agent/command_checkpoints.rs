//! A command job's own checkpoint files kept by the coordinator, for workers without a shared
//! directory: the newest one the coordinator has the epochs up to is fetched into a scratch
//! directory before the program starts, and each `epoch-NNNNN.ckpt` the program writes there
//! (renamed into place, so whole) is uploaded once the program reports that epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sweep_proto::EpochMetrics;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::checkpoint::{Checkpoint, CheckpointStore, file_name};

/// The scratch directory of one job and the store its files go to.
pub struct Mirror {
    dir: tempfile::TempDir,
    store: Arc<dyn CheckpointStore>,
    key: String,
}

impl Mirror {
    /// A fresh directory holding the store's newest checkpoint of an epoch up to `epochs_stored`,
    /// if there is one.
    pub async fn prepare(
        store: Arc<dyn CheckpointStore>,
        key: String,
        epochs_stored: u32,
    ) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sweep-job-").tempdir()?;
        let (path, fetch_store, fetch_key) = (dir.path().to_owned(), store.clone(), key.clone());
        let fetched = tokio::task::spawn_blocking(move || {
            let Some(found) = fetch_store.latest(&fetch_key, epochs_stored) else { return Ok(None) };
            let epoch = found.header.epoch;
            std::fs::write(path.join(file_name(epoch)), found.model).map(|()| Some(epoch))
        })
        .await
        .map_err(std::io::Error::other)??;
        if let Some(epoch) = fetched {
            info!(key = %key, epoch, "fetched the command's checkpoint from the coordinator");
        }
        Ok(Mirror { dir, store, key })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Passes the program's epochs from `from` on to `to` and uploads the checkpoint file of each
    /// (the newest waiting one when uploads fall behind). The task ends when `from` closes and the
    /// last upload is done.
    pub fn forward(
        &self,
        mut from: mpsc::UnboundedReceiver<EpochMetrics>,
        to: mpsc::UnboundedSender<EpochMetrics>,
    ) -> JoinHandle<()> {
        let (uploads, mut pending) = mpsc::unbounded_channel::<u32>();
        let (dir, store, key) = (self.dir.path().to_owned(), self.store.clone(), self.key.clone());
        let uploader = tokio::spawn(async move {
            while let Some(mut epoch) = pending.recv().await {
                while let Ok(newer) = pending.try_recv() {
                    epoch = epoch.max(newer);
                }
                let (dir, store, key) = (dir.clone(), store.clone(), key.clone());
                let _ = tokio::task::spawn_blocking(move || upload(&dir, &*store, &key, epoch)).await;
            }
        });
        tokio::spawn(async move {
            while let Some(metrics) = from.recv().await {
                let epoch = metrics.epoch;
                // The receiver is gone once the lease is; the epoch is then unwanted.
                let _ = to.send(metrics);
                let _ = uploads.send(epoch);
            }
            drop(uploads);
            let _ = uploader.await;
        })
    }
}

/// Uploads the program's checkpoint after `epoch`, if it wrote one.
fn upload(dir: &Path, store: &dyn CheckpointStore, key: &str, epoch: u32) {
    let path: PathBuf = dir.join(file_name(epoch));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        // Not every epoch is checkpointed, and the program may have pruned it already.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return warn!(path = %path.display(), error = %e, "cannot read the command's checkpoint"),
    };
    if let Err(e) = store.save(key, &Checkpoint::file(epoch, bytes)) {
        warn!(epoch, error = %e, "could not hand the command's checkpoint to the coordinator");
    }
}
