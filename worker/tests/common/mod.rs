//! Helpers shared by the integration tests: the real CIFAR-10 files decompressed once per test
//! binary from ../shared/cifar10 beside the repository (never downloaded, never copied into the repository), and
//! small synthetic files in the same format.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use worker::data::{IMAGE_BYTES, RECORD_BYTES};

/// Where the xz-compressed official files live: `$SWEEP_TEST_CIFAR10`, else `shared/cifar10`
/// beside the repository (as CI lays it out).
pub fn shared_cifar10() -> PathBuf {
    std::env::var_os("SWEEP_TEST_CIFAR10")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/cifar10"))
}

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
static LOCK: Mutex<()> = Mutex::new(());

/// A temp dir holding the decompressed `names` (decompressed at most once per binary).
pub fn real_files(names: &[&str]) -> PathBuf {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path().to_owned();
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for name in names {
        let dest = dir.join(name);
        if dest.exists() {
            continue;
        }
        let src = shared_cifar10().join(format!("{name}.xz"));
        let mut decoder = liblzma::read::XzDecoder::new(BufReader::new(
            File::open(&src).unwrap_or_else(|e| panic!("{} (set SWEEP_TEST_CIFAR10): {e}", src.display())),
        ));
        let mut bytes = Vec::new();
        decoder.read_to_end(&mut bytes).expect("xz decode");
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
    }
    dir
}

/// The first `n` (label, CHW image) records of a real file.
pub fn real_records(name: &str, n: usize) -> (Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(real_files(&[name]).join(name)).unwrap();
    let mut labels = Vec::new();
    let mut images = Vec::new();
    for chunk in bytes.chunks_exact(RECORD_BYTES).take(n) {
        labels.push(chunk[0]);
        images.extend_from_slice(&chunk[1..]);
    }
    (labels, images)
}

/// A small data set made of the first `train` images of data_batch_1 and `test` of test_batch.
pub fn small_real_dataset(train: usize, test: usize) -> worker::Cifar10 {
    let (train_labels, train_images) = real_records("data_batch_1.bin", train);
    let (test_labels, test_images) = real_records("test_batch.bin", test);
    worker::Cifar10::from_parts(train_images, train_labels, test_images, test_labels)
}

/// Synthetic file bytes: `labels.len()` records whose pixels are `label * 10 + i % 7`.
pub fn synthetic_records(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(labels.len() * RECORD_BYTES);
    for &l in labels {
        out.push(l);
        out.extend((0..IMAGE_BYTES).map(|i| l.wrapping_mul(10).wrapping_add((i % 7) as u8)));
    }
    out
}
