//! [`DirectoryStore`]: checkpoints as files in a directory, local or shared between workers.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Checkpoint, CheckpointError, CheckpointStore};

/// Checkpoints as files in a directory (local or shared between workers):
/// `DIR/<key>/epoch-00042.ckpt`, each written to a temporary name and renamed into place, so a
/// reader never sees half a file from a live writer.
#[derive(Debug, Clone)]
pub struct DirectoryStore {
    dir: PathBuf,
    keep: usize,
}

impl DirectoryStore {
    /// A store in `dir` that keeps each job's newest `keep` checkpoints (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        DirectoryStore { dir: dir.into(), keep: keep.max(1) }
    }

    fn job_dir(&self, key: &str) -> PathBuf {
        // Keys come from sweep names and job ids; keep them to safe path characters.
        let safe: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/') { c } else { '_' })
            .collect();
        self.dir.join(safe.trim_matches('/').replace("..", "_"))
    }

    /// The job's checkpoint files, oldest first.
    fn files(&self, key: &str) -> Vec<(u32, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.job_dir(key)) else { return Vec::new() };
        let mut files: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?;
                let epoch = name.strip_prefix("epoch-")?.strip_suffix(".ckpt")?.parse().ok()?;
                Some((epoch, path))
            })
            .collect();
        files.sort();
        files
    }
}

impl CheckpointStore for DirectoryStore {
    fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let dir = self.job_dir(key);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CheckpointError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = super::file_name(checkpoint.header.epoch);
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        fs::write(&tmp, checkpoint.encode()).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        let files = self.files(key);
        for (_, old) in files.iter().take(files.len().saturating_sub(self.keep)) {
            let _ = fs::remove_file(old);
        }
        Ok(())
    }

    fn latest(&self, key: &str, max_epoch: u32) -> Option<Checkpoint> {
        for (epoch, path) in self.files(key).into_iter().rev().filter(|(epoch, _)| *epoch <= max_epoch) {
            let read = fs::read(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source });
            match read.and_then(|bytes| Checkpoint::decode(&bytes, &path)) {
                Ok(checkpoint) if checkpoint.header.epoch == epoch => return Some(checkpoint),
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "checkpoint's epoch differs from its name; trying an older one")
                }
                Err(e) => tracing::warn!(error = %e, "unreadable checkpoint; trying an older one"),
            }
        }
        None
    }

    fn directory(&self, key: &str) -> Option<PathBuf> {
        Some(self.job_dir(key))
    }

    fn forget(&self, key: &str) {
        let dir = self.job_dir(key);
        if let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a finished job's checkpoints");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::tests::sample;

    #[test]
    fn the_store_keeps_the_newest_and_falls_back_past_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectoryStore::new(dir.path(), 2);
        assert!(store.latest("s/job-1", u32::MAX).is_none());
        for epoch in 1..=3 {
            store.save("s/job-1", &sample(epoch)).unwrap();
        }
        assert_eq!(store.files("s/job-1").iter().map(|f| f.0).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(store.latest("s/job-1", u32::MAX).unwrap().header.epoch, 3);
        assert_eq!(store.latest("s/job-1", 2).unwrap().header.epoch, 2, "not past what was stored");
        assert!(store.latest("s/job-1", 1).is_none(), "epoch 1's checkpoint was pruned");
        // The newest truncated (a crash mid-copy on a shared disk): the older one is used.
        let newest = store.files("s/job-1")[1].1.clone();
        let bytes = fs::read(&newest).unwrap();
        fs::write(&newest, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(store.latest("s/job-1", u32::MAX).unwrap().header.epoch, 2);
        assert!(store.latest("s/job-2", u32::MAX).is_none(), "other jobs have none");
        // A key cannot leave the store's directory.
        store.save("../../escape", &sample(1)).unwrap();
        assert!(dir.path().join("_/_/escape").is_dir() || dir.path().join("escape").is_dir());
    }
}
