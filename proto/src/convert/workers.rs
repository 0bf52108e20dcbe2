//! Workers and the data checksums they report, between wire and domain.

use super::{InvalidInput, ensure};
use crate::domain::{DataFile, MAX_DATA_FILES, Worker};
use crate::pb;
use crate::text::echo;

/// Longest data file name accepted.
const MAX_DATA_FILE_NAME: usize = 128;

impl From<Worker> for pb::Worker {
    fn from(w: Worker) -> Self {
        pb::Worker {
            id: w.id,
            hostname: w.hostname,
            gpus: w.gpus,
            slots: w.slots,
            registered_at_ms: w.registered_at_ms,
            last_seen_ms: w.last_seen_ms,
            running_jobs: w.running_jobs,
            idle_slots: w.idle_slots,
            data_files: w.data_files.into_iter().map(pb::DataFile::from).collect(),
        }
    }
}

impl From<DataFile> for pb::DataFile {
    fn from(f: DataFile) -> Self {
        pb::DataFile { name: f.name, md5: f.md5 }
    }
}

impl TryFrom<pb::DataFile> for DataFile {
    type Error = InvalidInput;

    /// A file name of 1..=128 bytes of `[A-Za-z0-9._-]` and an MD5 of 32 lower-case hex digits.
    fn try_from(f: pb::DataFile) -> Result<Self, InvalidInput> {
        let name_ok = !f.name.is_empty()
            && f.name.len() <= MAX_DATA_FILE_NAME
            && f.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        ensure(name_ok, "data_files.name", || {
            format!(
                "{} must hold 1..={MAX_DATA_FILE_NAME} bytes of letters, digits, '.', '_' and '-'",
                echo(&f.name)
            )
        })?;
        let md5_ok = f.md5.len() == 32 && f.md5.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
        ensure(md5_ok, "data_files.md5", || format!("{} is not 32 lower-case hex digits", echo(&f.md5)))?;
        Ok(DataFile { name: f.name, md5: f.md5 })
    }
}

/// Converts a worker's reported data files: at most [`MAX_DATA_FILES`], each valid, sorted by
/// name (duplicates dropped).
pub fn data_files_from_wire(files: Vec<pb::DataFile>) -> Result<Vec<DataFile>, InvalidInput> {
    ensure(files.len() <= MAX_DATA_FILES, "data_files", || {
        format!("{} files is more than {MAX_DATA_FILES}", files.len())
    })?;
    let mut files = files.into_iter().map(DataFile::try_from).collect::<Result<Vec<_>, _>>()?;
    files.sort();
    files.dedup();
    Ok(files)
}
