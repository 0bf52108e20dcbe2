//! Which folder the CIFAR-10 files come from and whether the official tarball may be downloaded
//! into it: the `--data-dir` / `--download` flags ([`DataArgs`]), the folder and permission they
//! give ([`DataSource`]) and the decision taken before loading ([`DataSource::plan`]).

use std::path::{Path, PathBuf};

use super::official::CIFAR10_FILES;
use super::{DataError, locate};

/// The data folder used when none is named (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "data/cifar10";

/// Flags choosing the CIFAR-10 folder, shared by every command that loads the data.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DataArgs {
    /// Folder with the CIFAR-10 binary files (data_batch_1..5.bin, test_batch.bin; plain or .xz).
    /// Files missing there are an error unless --download is given. Without --data-dir:
    /// data/cifar10, where missing files are downloaded.
    #[arg(long, env = "SWEEP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Download the official CIFAR-10 tarball into --data-dir when files are missing there.
    #[arg(long, env = "SWEEP_DOWNLOAD")]
    pub download: bool,
}

impl DataArgs {
    /// The folder and whether a download into it is allowed: always for the default folder, for
    /// a named one only with `--download` (it may hold data a download must not be mixed with).
    pub fn source(&self) -> DataSource {
        match &self.data_dir {
            Some(dir) => DataSource { dir: dir.clone(), download: self.download },
            None => DataSource::default_dir(),
        }
    }
}

/// A data folder and whether the official tarball may be downloaded into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    pub dir: PathBuf,
    pub download: bool,
}

/// A bare folder, from callers without a download choice: missing files are downloaded there.
impl From<&Path> for DataSource {
    fn from(dir: &Path) -> DataSource {
        DataSource { dir: dir.to_owned(), download: true }
    }
}

impl From<&PathBuf> for DataSource {
    fn from(dir: &PathBuf) -> DataSource {
        DataSource::from(dir.as_path())
    }
}

/// What loading from a [`DataSource`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// All six files are there.
    Load,
    /// These files are missing, and downloading into the folder is allowed.
    Download { missing: Vec<&'static str> },
}

impl DataSource {
    /// [`DEFAULT_DATA_DIR`], downloading there when files are missing.
    pub fn default_dir() -> DataSource {
        DataSource { dir: PathBuf::from(DEFAULT_DATA_DIR), download: true }
    }

    /// A folder the user named: its files are used as they are, never completed by a download.
    pub fn named(dir: impl Into<PathBuf>) -> DataSource {
        DataSource { dir: dir.into(), download: false }
    }

    /// Load, download first, or [`DataError::MissingFiles`] naming the folder and each missing
    /// file when downloading is not allowed.
    pub fn plan(&self) -> Result<Plan, DataError> {
        let missing = missing_files(&self.dir);
        if missing.is_empty() {
            Ok(Plan::Load)
        } else if self.download {
            Ok(Plan::Download { missing })
        } else {
            Err(DataError::MissingFiles { dir: self.dir.clone(), exists: self.dir.is_dir(), missing })
        }
    }
}

/// The official files found nowhere [`locate`] looks under `dir`, in the official order.
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    CIFAR10_FILES.iter().map(|(name, _)| *name).filter(|name| !locate(dir, name).is_file()).collect()
}

/// The text of [`DataError::MissingFiles`].
pub(super) fn missing_message(dir: &Path, exists: bool, missing: &[&str]) -> String {
    let folder = if exists { "" } else { " (the folder does not exist)" };
    format!(
        "CIFAR-10 files missing in {}{folder}: {}; put them there (plain, .xz, or in the tarball's \
         cifar-10-batches-bin/ folder), pass --download (or set SWEEP_DOWNLOAD=true) to fetch the \
         official tarball into it, or leave --data-dir out to use {DEFAULT_DATA_DIR}",
        dir.display(),
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_default_folder_downloads_without_being_asked() {
        assert_eq!(DataArgs::default().source(), DataSource::default_dir());
        assert!(DataSource::default_dir().download);
        let named = DataArgs { data_dir: Some("/data/cifar10".into()), download: false };
        assert_eq!(named.source(), DataSource::named("/data/cifar10"));
        let asked = DataArgs { download: true, ..named };
        assert_eq!(asked.source(), DataSource { dir: "/data/cifar10".into(), download: true });
    }

    #[test]
    fn the_missing_files_message_names_folder_files_and_remedies() {
        let text = missing_message(Path::new("/data/c10"), false, &["data_batch_2.bin", "test_batch.bin"]);
        assert!(
            text.starts_with("CIFAR-10 files missing in /data/c10 (the folder does not exist): "),
            "{text}"
        );
        assert!(text.contains("data_batch_2.bin, test_batch.bin;"), "{text}");
        assert!(text.contains("--download") && text.contains("SWEEP_DOWNLOAD=true"), "{text}");
        assert!(text.contains(DEFAULT_DATA_DIR), "{text}");
    }
}
