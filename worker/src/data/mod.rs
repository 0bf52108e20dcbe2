//! CIFAR-10 binary loader: reads and checks the six official files (`data_batch_1..5.bin`,
//! `test_batch.bin`) into host memory once per process ([`Cifar10`], share it as
//! `Arc<Cifar10>`), and uploads it to a device once per slot ([`DeviceDataset`]).
//!
//! Each record is 3073 bytes: one label byte, then the 1024 red, 1024 green and 1024 blue bytes
//! of a 32×32 image in row-major order, which is already the `[3, 32, 32]` (CHW) layout.
//! Which folder is read, and whether the official tarball may be downloaded into it, is
//! [`source`]'s.

pub mod download;
pub mod official;
pub mod source;

use std::fs;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use md5::{Digest, Md5};
use sweep_proto::domain::CIFAR10_CLASSES;

pub use official::{CIFAR10_FILES, CIFAR10_TARBALL_MD5, CIFAR10_TARBALL_URL};
pub use source::{DEFAULT_DATA_DIR, DataArgs, DataSource, Plan, missing_files};

/// Bytes of one image (3 × 32 × 32).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes of one record (label + image).
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records in each official file.
pub const RECORDS_PER_FILE: usize = 10_000;
/// Folder name inside the official tarball.
pub const TARBALL_FOLDER: &str = "cifar-10-batches-bin";
/// Name of the test file in [`CIFAR10_FILES`].
pub const TEST_FILE: &str = "test_batch.bin";

/// Why the data set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("CIFAR-10 file {path} is missing")]
    Missing { path: PathBuf },
    /// Files missing from a folder that must not be completed by a download.
    #[error("{}", source::missing_message(dir, *exists, missing))]
    MissingFiles { dir: PathBuf, exists: bool, missing: Vec<&'static str> },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "CIFAR-10 file {path} has {len} bytes, expected {expected} (truncated or not a CIFAR-10 binary file)"
    )]
    BadLength { path: PathBuf, len: usize, expected: String },
    #[error("CIFAR-10 file {path}: record {record} has label {label}, expected 0..=9")]
    BadLabel { path: PathBuf, record: usize, label: u8 },
    #[error("CIFAR-10 file {path} has MD5 {actual}, expected {expected} (corrupt or wrong file)")]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("downloading {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("cannot unpack {path}: {reason}")]
    Unpack { path: PathBuf, reason: String },
}

/// The whole CIFAR-10 data set in host memory (images as CHW bytes, labels 0..=9).
#[derive(Debug, Clone)]
pub struct Cifar10 {
    train_images: Vec<u8>,
    train_labels: Vec<u8>,
    test_images: Vec<u8>,
    test_labels: Vec<u8>,
    /// (file, MD5) of each file whose checksum this process verified.
    verified: Vec<(String, String)>,
}

/// Where `name` lives under `dir`: directly or in the tarball's folder, plain or xz-compressed
/// (`name.xz`, decompressed while reading). Defaults to `dir/name` when none exists.
pub fn locate(dir: &Path, name: &str) -> PathBuf {
    let xz = format!("{name}.xz");
    [dir.join(name), dir.join(TARBALL_FOLDER).join(name), dir.join(&xz), dir.join(TARBALL_FOLDER).join(&xz)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join(name))
}

/// The bytes of `path`, decompressed when it ends in `.xz`.
fn read_bytes(path: &Path) -> std::io::Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let mut bytes = Vec::new();
        let file = std::io::BufReader::new(fs::File::open(path)?);
        std::io::Read::read_to_end(&mut liblzma::read::XzDecoder::new(file), &mut bytes)?;
        Ok(bytes)
    } else {
        fs::read(path)
    }
}

/// True when all six files are present under `dir` (no content check).
pub fn files_present(dir: &Path) -> bool {
    missing_files(dir).is_empty()
}

/// Lower-case hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// Reads one file; with `expected_md5`, checks its exact length and MD5 first.
fn read_file(path: &Path, expected_md5: Option<&str>) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let bytes = read_bytes(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing { path: path.to_owned() },
        _ => DataError::Io { path: path.to_owned(), source },
    })?;
    match expected_md5 {
        Some(expected) => {
            if bytes.len() != RECORDS_PER_FILE * RECORD_BYTES {
                return Err(DataError::BadLength {
                    path: path.to_owned(),
                    len: bytes.len(),
                    expected: (RECORDS_PER_FILE * RECORD_BYTES).to_string(),
                });
            }
            let actual = md5_hex(&bytes);
            if actual != expected {
                return Err(DataError::Checksum {
                    path: path.to_owned(),
                    expected: expected.to_owned(),
                    actual,
                });
            }
        }
        None => {
            if bytes.is_empty() || bytes.len() % RECORD_BYTES != 0 {
                return Err(DataError::BadLength {
                    path: path.to_owned(),
                    len: bytes.len(),
                    expected: format!("a non-zero multiple of {RECORD_BYTES}"),
                });
            }
        }
    }
    let records = bytes.len() / RECORD_BYTES;
    let mut labels = Vec::with_capacity(records);
    let mut images = Vec::with_capacity(records * IMAGE_BYTES);
    for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = chunk[0];
        if label as usize >= CIFAR10_CLASSES.len() {
            return Err(DataError::BadLabel { path: path.to_owned(), record, label });
        }
        labels.push(label);
        images.extend_from_slice(&chunk[1..]);
    }
    Ok((images, labels))
}

impl Cifar10 {
    /// Loads the six official files from `dir` (or `dir/cifar-10-batches-bin/`), checking each
    /// file's length and official MD5.
    pub fn load(dir: &Path) -> Result<Cifar10, DataError> {
        Self::load_impl(dir, true)
    }

    /// Loads files without the MD5/length check (any whole number of records per file). Only
    /// for small generated files in tests; production paths use [`Cifar10::load`].
    pub fn load_unverified(dir: &Path) -> Result<Cifar10, DataError> {
        Self::load_impl(dir, false)
    }

    /// [`Cifar10::load`], downloading and unpacking the official tarball first when files are
    /// missing (see [`download`]).
    pub fn load_or_download(dir: &Path) -> Result<Cifar10, DataError> {
        Self::open(&DataSource::from(dir))
    }

    /// [`Cifar10::load`] from `source`'s folder, after downloading the official tarball into it
    /// when files are missing and `source` allows it (see [`DataSource::plan`]).
    pub fn open(source: &DataSource) -> Result<Cifar10, DataError> {
        Self::open_with(source, download::download_and_unpack)
    }

    /// [`Cifar10::open`] with `fetch` in place of the download (called with the folder only
    /// when files are missing and downloading is allowed).
    pub fn open_with(
        source: &DataSource,
        fetch: impl FnOnce(&Path) -> Result<(), DataError>,
    ) -> Result<Cifar10, DataError> {
        if let Plan::Download { missing } = source.plan()? {
            let (dir, missing) = (source.dir.display(), missing.join(", "));
            tracing::info!(%dir, %missing, "CIFAR-10 files missing; downloading the official tarball");
            fetch(&source.dir)?;
        }
        Self::load(&source.dir)
    }

    fn load_impl(dir: &Path, verify: bool) -> Result<Cifar10, DataError> {
        let mut data = Cifar10 {
            train_images: Vec::new(),
            train_labels: Vec::new(),
            test_images: Vec::new(),
            test_labels: Vec::new(),
            verified: Vec::new(),
        };
        for (name, md5) in CIFAR10_FILES {
            let path = locate(dir, name);
            let (images, labels) = read_file(&path, verify.then_some(md5))?;
            if verify {
                data.verified.push((name.to_owned(), md5.to_owned()));
            }
            if name == TEST_FILE {
                data.test_images = images;
                data.test_labels = labels;
            } else {
                data.train_images.extend_from_slice(&images);
                data.train_labels.extend_from_slice(&labels);
            }
        }
        tracing::info!(
            train = data.train_len(),
            test = data.test_len(),
            dir = %dir.display(),
            verified = verify,
            "loaded CIFAR-10"
        );
        Ok(data)
    }

    /// Builds a data set from raw parts (CHW bytes, labels 0..=9); for tests and benchmarks.
    pub fn from_parts(
        train_images: Vec<u8>,
        train_labels: Vec<u8>,
        test_images: Vec<u8>,
        test_labels: Vec<u8>,
    ) -> Cifar10 {
        assert_eq!(train_images.len(), train_labels.len() * IMAGE_BYTES);
        assert_eq!(test_images.len(), test_labels.len() * IMAGE_BYTES);
        Cifar10 { train_images, train_labels, test_images, test_labels, verified: Vec::new() }
    }

    /// (file, MD5) of the files whose official checksum this process verified (none for data
    /// built from parts or loaded unverified): what reports cite as the data actually used.
    pub fn verified_files(&self) -> &[(String, String)] {
        &self.verified
    }

    /// Training images held.
    pub fn train_len(&self) -> usize {
        self.train_labels.len()
    }

    /// Test images held.
    pub fn test_len(&self) -> usize {
        self.test_labels.len()
    }

    /// Device memory the data set takes once uploaded ([`DeviceDataset`]: f32 pixels, i64
    /// labels).
    pub fn device_bytes(&self) -> u64 {
        ((self.train_len() + self.test_len()) * (IMAGE_BYTES * 4 + 8)) as u64
    }

    /// Training labels, in file order.
    pub fn train_labels(&self) -> &[u8] {
        &self.train_labels
    }

    /// Test labels, in file order.
    pub fn test_labels(&self) -> &[u8] {
        &self.test_labels
    }

    /// Training images, `train_len() × 3072` CHW bytes.
    pub fn train_images(&self) -> &[u8] {
        &self.train_images
    }

    /// Test images, `test_len() × 3072` CHW bytes.
    pub fn test_images(&self) -> &[u8] {
        &self.test_images
    }

    /// Images per class in `labels`.
    pub fn class_counts(labels: &[u8]) -> [usize; 10] {
        let mut counts = [0; 10];
        for &l in labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// One split on a device: images `[N, 3, 32, 32]` as f32 in [0, 1] and labels `[N]`.
#[derive(Debug, Clone)]
pub struct DeviceSplit<B: Backend> {
    pub images: Tensor<B, 4>,
    pub labels: Tensor<B, 1, Int>,
}

impl<B: Backend> DeviceSplit<B> {
    fn upload(images: &[u8], labels: &[u8], device: &B::Device) -> Self {
        let n = labels.len();
        let pixels: Vec<f32> = images.iter().map(|&b| b as f32 / 255.0).collect();
        let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        DeviceSplit {
            images: Tensor::from_data(TensorData::new(pixels, [n, 3, 32, 32]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }

    /// Images held.
    pub fn len(&self) -> usize {
        self.labels.dims()[0]
    }

    /// True when no image is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` images (clamped to the split size).
    pub fn first(&self, n: usize) -> Self {
        let n = n.min(self.len());
        DeviceSplit {
            images: self.images.clone().narrow(0, 0, n),
            labels: self.labels.clone().narrow(0, 0, n),
        }
    }

    /// Batch gathered on the device by `indices` (`[n]`).
    pub fn gather(&self, indices: Tensor<B, 1, Int>) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        (self.images.clone().select(0, indices.clone()), self.labels.clone().select(0, indices))
    }

    /// Contiguous batch `[start, start + len)`.
    pub fn range(&self, start: usize, len: usize) -> (Tensor<B, 4>, Tensor<B, 1, Int>) {
        (self.images.clone().narrow(0, start, len), self.labels.clone().narrow(0, start, len))
    }
}

impl<B: AutodiffBackend> DeviceSplit<B> {
    /// The same tensors on the inner (non-autodiff) backend, for validation.
    pub fn inner(self) -> DeviceSplit<B::InnerBackend> {
        DeviceSplit { images: self.images.inner(), labels: self.labels.inner() }
    }
}

/// The whole data set uploaded once to a device.
#[derive(Debug, Clone)]
pub struct DeviceDataset<B: Backend> {
    pub train: DeviceSplit<B>,
    pub test: DeviceSplit<B>,
}

impl<B: Backend> DeviceDataset<B> {
    /// Uploads both splits (pixels scaled by 1/255) to `device`.
    pub fn upload(data: &Cifar10, device: &B::Device) -> Self {
        DeviceDataset {
            train: DeviceSplit::upload(&data.train_images, &data.train_labels, device),
            test: DeviceSplit::upload(&data.test_images, &data.test_labels, device),
        }
    }
}
