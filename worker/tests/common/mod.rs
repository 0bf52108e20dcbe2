//! Helpers shared by the integration tests: the real CIFAR-10 files decompressed once per test
//! binary from ../shared/cifar10 beside the repository (never downloaded, never copied into the
//! repository) where they exist, and small synthetic data in the same format everywhere, so the
//! tests pass on a fresh machine and use the real images where they can.
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

/// Whether the six official `.xz` files are there; prints why a test is skipped when not.
pub fn real_data_or_skip(test: &str) -> bool {
    let dir = shared_cifar10();
    let present =
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
            .iter()
            .all(|name| dir.join(format!("{name}.bin.xz")).is_file());
    if !present {
        eprintln!("{test}: skipped, no CIFAR-10 .xz files in {} (set SWEEP_TEST_CIFAR10)", dir.display());
    }
    present
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

/// A small data set: the first `train` images of data_batch_1 and `test` of test_batch where the
/// real files are there, else [`learnable_dataset`].
pub fn small_dataset(train: usize, test: usize) -> worker::Cifar10 {
    if !real_data_or_skip("real images for training tests") {
        return learnable_dataset(train, test);
    }
    let (train_labels, train_images) = real_records("data_batch_1.bin", train);
    let (test_labels, test_images) = real_records("test_batch.bin", test);
    worker::Cifar10::from_parts(train_images, train_labels, test_images, test_labels)
}

/// Synthetic images a CNN can learn quickly: each class has its own colour per channel, with
/// noise that differs from image to image (labels cycle through the ten classes).
pub fn learnable_dataset(train: usize, test: usize) -> worker::Cifar10 {
    let make = |n: usize, salt: usize| {
        let labels: Vec<u8> = (0..n).map(|i| ((i * 7 + salt) % 10) as u8).collect();
        let mut images = Vec::with_capacity(n * IMAGE_BYTES);
        for (i, &label) in labels.iter().enumerate() {
            for p in 0..IMAGE_BYTES {
                let channel = p / 1024;
                let base = (usize::from(label) * 25 + channel * 83) % 200 + 28;
                let noise = (i * 131 + p * 17 + salt) % 41;
                images.push((base + noise - 20) as u8);
            }
        }
        (labels, images)
    };
    let (train_labels, train_images) = make(train, 1);
    let (test_labels, test_images) = make(test, 5);
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
