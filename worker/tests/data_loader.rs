//! CIFAR-10 loader tests: the real files (from ../shared/cifar10 beside the repository), corrupt and
//! missing files, synthetic files without MD5 checks, and tarball verification/unpacking.
//! Nothing here touches the network.

mod common;

use std::fs;
use std::io::Write;

use worker::data::CIFAR10_FILES;
use worker::data::download::unpack_verified;
use worker::data::{Cifar10, DataError, RECORD_BYTES, RECORDS_PER_FILE, md5_hex};

const ALL: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

#[test]
fn real_files_match_the_published_facts() {
    if !common::real_data_or_skip("real_files_match_the_published_facts") {
        return;
    }
    let dir = common::real_files(&ALL);
    for (name, md5) in CIFAR10_FILES {
        assert_eq!(md5_hex(&fs::read(dir.join(name)).unwrap()), md5, "{name}");
    }
    let data = Cifar10::load(&dir).expect("verified load");
    let verified: Vec<(&str, &str)> =
        data.verified_files().iter().map(|(f, m)| (f.as_str(), m.as_str())).collect();
    assert_eq!(verified, CIFAR10_FILES.to_vec(), "every file's checksum is recorded as verified");
    assert_eq!(data.train_len(), 50_000);
    assert_eq!(data.test_len(), 10_000);
    assert_eq!(data.train_images().len(), 50_000 * 3072);
    assert_eq!(Cifar10::class_counts(data.train_labels()), [5_000; 10]);
    assert_eq!(Cifar10::class_counts(data.test_labels()), [1_000; 10]);
    assert_eq!(&data.train_labels()[..10], &[6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    assert_eq!(&data.test_labels()[..10], &[3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    // load_or_download must not download when the files are present.
    let again = Cifar10::load_or_download(&dir).unwrap();
    assert_eq!(again.test_labels(), data.test_labels());
}

#[test]
fn xz_compressed_files_load_directly_with_the_same_checks() {
    if !common::real_data_or_skip("xz_compressed_files_load_directly_with_the_same_checks") {
        return;
    }
    let data = Cifar10::load(&common::shared_cifar10()).expect("verified load of the .xz files");
    assert_eq!((data.train_len(), data.test_len()), (50_000, 10_000));
    assert_eq!(&data.train_labels()[..10], &[6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in CIFAR10_FILES {
        fs::copy(common::shared_cifar10().join(format!("{name}.xz")), dir.path().join(format!("{name}.xz")))
            .unwrap();
    }
    let mut broken = fs::read(dir.path().join("test_batch.bin.xz")).unwrap();
    broken.truncate(broken.len() / 2);
    fs::write(dir.path().join("test_batch.bin.xz"), broken).unwrap();
    let err = Cifar10::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("test_batch.bin.xz"), "{err}");
}

/// A file of the official length (10,000 records) that is not the official file.
fn full_length_file() -> Vec<u8> {
    let labels: Vec<u8> = (0..10_000).map(|i| (i % 10) as u8).collect();
    common::synthetic_records(&labels)
}

#[test]
fn truncated_file_is_a_length_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = full_length_file();
    fs::write(dir.path().join("data_batch_1.bin"), &bytes[..bytes.len() - 1000]).unwrap();
    let err = Cifar10::load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::BadLength { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
}

#[test]
fn wrong_md5_is_a_checksum_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // The official length with other pixels: only the checksum can tell.
    let bytes = full_length_file();
    fs::write(dir.path().join("data_batch_1.bin"), &bytes).unwrap();
    let err = Cifar10::load(dir.path()).unwrap_err();
    match &err {
        DataError::Checksum { path, expected, .. } => {
            assert!(path.ends_with("data_batch_1.bin"));
            assert_eq!(expected, CIFAR10_FILES[0].1);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
}

#[test]
fn missing_files_fail_fast_without_download() {
    let dir = tempfile::tempdir().unwrap();
    let err = Cifar10::load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_1.bin"), "{err}");
}

fn write_synthetic(dir: &std::path::Path, per_file: &[u8]) {
    for (name, _) in CIFAR10_FILES {
        fs::write(dir.join(name), common::synthetic_records(per_file)).unwrap();
    }
}

#[test]
fn synthetic_files_load_unverified_but_not_verified() {
    assert!(common::learnable_dataset(10, 10).verified_files().is_empty());
    let dir = tempfile::tempdir().unwrap();
    write_synthetic(dir.path(), &[0, 3, 9]);
    let data = Cifar10::load_unverified(dir.path()).unwrap();
    assert_eq!(data.train_len(), 15);
    assert_eq!(data.test_len(), 3);
    assert_eq!(&data.train_labels()[..6], &[0, 3, 9, 0, 3, 9]);
    assert_eq!(data.test_images()[3072], 30); // second record: label 3 → pixel 30 + 0
    let err = Cifar10::load(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::BadLength { .. }), "{err:?}");
}

#[test]
fn bad_label_and_partial_record_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic(dir.path(), &[1, 2]);
    let mut bad = common::synthetic_records(&[1, 2]);
    bad[RECORD_BYTES] = 12;
    fs::write(dir.path().join("data_batch_3.bin"), &bad).unwrap();
    let err = Cifar10::load_unverified(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::BadLabel { record: 1, label: 12, .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_3.bin"));
    fs::write(dir.path().join("data_batch_3.bin"), &bad[..RECORD_BYTES + 5]).unwrap();
    let err = Cifar10::load_unverified(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::BadLength { .. }), "{err:?}");
    assert!(err.to_string().contains("data_batch_3.bin"));
}

fn tarball_with(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), bytes.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn tarball_is_verified_then_unpacked_flat() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> =
        CIFAR10_FILES.iter().map(|(n, _)| (*n, common::synthetic_records(&[4, 7]))).collect();
    let mut extra = files.clone();
    extra.push(("readme.html", b"<html/>".to_vec()));
    let tarball = dir.path().join("cifar.tar.gz");
    let bytes = tarball_with(&extra);
    fs::File::create(&tarball).unwrap().write_all(&bytes).unwrap();

    let wrong = "0".repeat(32);
    let err = unpack_verified(&tarball, &wrong, dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err:?}");
    assert!(err.to_string().contains("cifar.tar.gz"));
    assert!(!dir.path().join("test_batch.bin").exists(), "nothing unpacked on a bad MD5");

    unpack_verified(&tarball, &md5_hex(&bytes), dir.path()).unwrap();
    assert!(!dir.path().join("readme.html").exists());
    let data = Cifar10::load_unverified(dir.path()).unwrap();
    assert_eq!(data.test_labels(), &[4, 7]);
    assert_eq!(data.train_len(), 10);
    let _ = RECORDS_PER_FILE;
}
