//! Checkpoints workers upload to the coordinator, kept as files beside the database rather than
//! in it (they are megabytes each and the database holds one writer): `DIR/job-<id>/epoch-<n>.ckpt`.
//! A file is written under a temporary name, synced and renamed, so a reader never sees half of
//! one; each job keeps its newest `keep`; a job's files go once it succeeds.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sweep_proto::domain::JobId;

use crate::error::{Error, Result};

/// Chunk size of checkpoint transfers (each message's data part).
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Where and how many checkpoints the coordinator keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    pub dir: PathBuf,
    /// Newest checkpoints kept per job (at least 1).
    pub keep: usize,
    /// Largest checkpoint accepted, in bytes.
    pub max_bytes: u64,
}

impl CheckpointSettings {
    /// Two per job, up to 1 GiB each.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        CheckpointSettings { dir: dir.into(), keep: 2, max_bytes: 1 << 30 }
    }
}

/// A stored checkpoint: the epoch it ends with and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub epoch: u32,
    pub bytes: Vec<u8>,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The checkpoint files of every job.
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    settings: CheckpointSettings,
}

impl CheckpointFiles {
    pub fn new(settings: CheckpointSettings) -> Self {
        CheckpointFiles { settings: CheckpointSettings { keep: settings.keep.max(1), ..settings } }
    }

    pub fn max_bytes(&self) -> u64 {
        self.settings.max_bytes
    }

    fn job_dir(&self, job: JobId) -> PathBuf {
        self.settings.dir.join(format!("job-{}", job.0))
    }

    /// Stores `bytes` as `job`'s checkpoint after `epoch` (replacing one of the same epoch) and
    /// prunes the job's older ones beyond the newest `keep`.
    pub async fn save(&self, job: JobId, epoch: u32, bytes: Vec<u8>) -> Result<()> {
        let (dir, keep) = (self.job_dir(job), self.settings.keep);
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("epoch-{epoch:05}.ckpt"));
            let tmp = dir.join(format!(".epoch-{epoch:05}.ckpt.{}", uuid::Uuid::new_v4().simple()));
            let written = (|| {
                let mut file = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut file, &bytes)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)
            })();
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            let files = list(&dir)?;
            for (_, old) in files.iter().take(files.len().saturating_sub(keep)) {
                std::fs::remove_file(old)?;
            }
            Ok(())
        })
        .await
    }

    /// `job`'s newest checkpoint after an epoch no later than `max_epoch`, if any.
    pub async fn latest(&self, job: JobId, max_epoch: u32) -> Result<Option<StoredCheckpoint>> {
        let dir = self.job_dir(job);
        blocking(move || {
            let newest = list(&dir)?.into_iter().rev().find(|(epoch, _)| *epoch <= max_epoch);
            match newest {
                Some((epoch, path)) => Ok(Some(StoredCheckpoint { epoch, bytes: std::fs::read(path)? })),
                None => Ok(None),
            }
        })
        .await
    }

    /// Deletes every checkpoint of `job`.
    pub async fn remove_job(&self, job: JobId) -> Result<()> {
        let dir = self.job_dir(job);
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }
}

/// A job directory's checkpoint files as (epoch, path), oldest first (none if it does not exist).
fn list(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let epoch = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("epoch-")?.strip_suffix(".ckpt")?.parse::<u32>().ok());
        if let Some(epoch) = epoch {
            files.push((epoch, path));
        }
    }
    files.sort();
    Ok(files)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("checkpoint i/o task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_newest_per_job_and_removes_a_jobs_files() {
        let dir = tempfile::tempdir().unwrap();
        let files =
            CheckpointFiles::new(CheckpointSettings { keep: 2, ..CheckpointSettings::in_dir(dir.path()) });
        let (a, b) = (JobId(1), JobId(2));
        assert_eq!(files.latest(a, u32::MAX).await.unwrap(), None);
        for epoch in [5, 10, 15] {
            files.save(a, epoch, vec![epoch as u8; 3]).await.unwrap();
        }
        files.save(b, 5, vec![7]).await.unwrap();
        let epochs: Vec<u32> = list(&dir.path().join("job-1")).unwrap().into_iter().map(|f| f.0).collect();
        assert_eq!(epochs, [10, 15], "epoch 5 was pruned");
        assert_eq!(
            files.latest(a, u32::MAX).await.unwrap(),
            Some(StoredCheckpoint { epoch: 15, bytes: vec![15; 3] })
        );
        assert_eq!(files.latest(a, 14).await.unwrap().map(|c| c.epoch), Some(10));
        assert_eq!(files.latest(a, 9).await.unwrap(), None);
        files.remove_job(a).await.unwrap();
        assert_eq!(files.latest(a, u32::MAX).await.unwrap(), None);
        files.remove_job(a).await.unwrap();
        assert_eq!(
            files.latest(b, u32::MAX).await.unwrap().map(|c| c.bytes),
            Some(vec![7]),
            "other jobs keep theirs"
        );
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
