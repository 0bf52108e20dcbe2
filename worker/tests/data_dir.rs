//! The CIFAR-10 folder a worker reads: a folder named with `--data-dir` that lacks files is an
//! error listing exactly the missing ones, with no download unless `--download` asks for one;
//! without `--data-dir` the default folder is used and completed by a download. The download is
//! replaced by a stand-in here: nothing touches the network.

mod common;

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use worker::data::{Cifar10, DEFAULT_DATA_DIR, DataArgs, DataError, DataSource, Plan, TARBALL_FOLDER};

/// A folder with four of the six files, each in a form the loader accepts (plain, `.xz`, in the
/// tarball's folder); data_batch_2.bin and data_batch_5.bin are missing.
fn partial_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let records = common::synthetic_records(&[1, 2, 3]);
    fs::write(dir.path().join("data_batch_1.bin"), &records).unwrap();
    fs::write(dir.path().join("data_batch_3.bin"), &records).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
    xz.write_all(&records).unwrap();
    fs::write(dir.path().join("data_batch_4.bin.xz"), xz.finish().unwrap()).unwrap();
    fs::create_dir(dir.path().join(TARBALL_FOLDER)).unwrap();
    fs::write(dir.path().join(TARBALL_FOLDER).join("test_batch.bin"), &records).unwrap();
    dir
}

/// Opens `source` with a download stand-in that records the folders it was called with and
/// fails as if offline.
fn open_recording(source: &DataSource) -> (Result<Cifar10, DataError>, Vec<PathBuf>) {
    let calls = RefCell::new(Vec::new());
    let result = Cifar10::open_with(source, |dir: &Path| {
        calls.borrow_mut().push(dir.to_owned());
        Err(DataError::Download { url: "offline".into(), reason: "no network in tests".into() })
    });
    (result, calls.into_inner())
}

/// Whether the flags parse as given: `SWEEP_DATA_DIR` / `SWEEP_DOWNLOAD` in the environment would
/// stand in for missing flags.
fn flags_alone(test: &str) -> bool {
    let set = ["SWEEP_DATA_DIR", "SWEEP_DOWNLOAD"].into_iter().find(|v| std::env::var_os(v).is_some());
    if let Some(var) = set {
        eprintln!("{test}: skipped, {var} is set");
    }
    set.is_none()
}

fn flags(args: &[&str]) -> DataArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        data: DataArgs,
    }
    Cli::try_parse_from(std::iter::once("worker").chain(args.iter().copied())).unwrap().data
}

#[test]
fn a_named_folder_missing_files_lists_exactly_those_and_downloads_nothing() {
    if !flags_alone("a_named_folder_missing_files_lists_exactly_those_and_downloads_nothing") {
        return;
    }
    let dir = partial_folder();
    let source = flags(&["--data-dir", dir.path().to_str().unwrap()]).source();
    assert_eq!(source, DataSource::named(dir.path()));
    let (result, downloads) = open_recording(&source);
    assert!(downloads.is_empty(), "no download into a named folder: {downloads:?}");
    let err = result.unwrap_err();
    match &err {
        DataError::MissingFiles { dir: named, exists, missing } => {
            assert_eq!(named, dir.path());
            assert!(*exists);
            assert_eq!(missing, &["data_batch_2.bin", "data_batch_5.bin"]);
        }
        other => panic!("expected the missing files, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains(": data_batch_2.bin, data_batch_5.bin;"), "{text}");
    assert!(text.contains("--download") && text.contains("SWEEP_DOWNLOAD"), "{text}");
    assert!(!text.contains("does not exist"), "{text}");
    // Nothing was written into the folder either.
    assert!(!dir.path().join("data_batch_2.bin").exists());
}

#[test]
fn a_named_folder_that_does_not_exist_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("cifar10");
    let (result, downloads) = open_recording(&DataSource::named(&absent));
    assert!(downloads.is_empty());
    let text = result.unwrap_err().to_string();
    assert!(text.contains("cifar10 (the folder does not exist)"), "{text}");
    assert!(text.contains("data_batch_1.bin") && text.contains("test_batch.bin"), "{text}");
    assert!(!absent.exists(), "the folder is not created");
}

#[test]
fn download_flag_fetches_into_the_named_folder() {
    if !flags_alone("download_flag_fetches_into_the_named_folder") {
        return;
    }
    let dir = partial_folder();
    let source = flags(&["--data-dir", dir.path().to_str().unwrap(), "--download"]).source();
    assert_eq!(source, DataSource { dir: dir.path().to_owned(), download: true });
    assert_eq!(
        source.plan().unwrap(),
        Plan::Download { missing: vec!["data_batch_2.bin", "data_batch_5.bin"] }
    );
    let (result, downloads) = open_recording(&source);
    assert_eq!(downloads, vec![dir.path().to_owned()]);
    assert!(matches!(result.unwrap_err(), DataError::Download { .. }));
}

#[test]
fn without_data_dir_the_default_folder_is_completed_by_a_download() {
    if !flags_alone("without_data_dir_the_default_folder_is_completed_by_a_download") {
        return;
    }
    let source = flags(&[]).source();
    assert_eq!(source, DataSource { dir: PathBuf::from(DEFAULT_DATA_DIR), download: true });
    assert_eq!(source, DataSource::default_dir());
    // The same decision on an empty folder standing in for it (the real one may hold the data).
    let empty = tempfile::tempdir().unwrap();
    let stand_in = DataSource { dir: empty.path().to_owned(), ..source };
    let (result, downloads) = open_recording(&stand_in);
    assert_eq!(downloads, vec![empty.path().to_owned()]);
    assert!(matches!(result.unwrap_err(), DataError::Download { .. }));
}

#[test]
fn a_complete_folder_is_loaded_without_a_download() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in worker::data::CIFAR10_FILES {
        fs::write(dir.path().join(name), common::synthetic_records(&[0, 1])).unwrap();
    }
    for download in [false, true] {
        let source = DataSource { dir: dir.path().to_owned(), download };
        assert_eq!(source.plan().unwrap(), Plan::Load);
        let (result, downloads) = open_recording(&source);
        assert!(downloads.is_empty());
        // Synthetic files are present but not the official ones: the checks still run.
        assert!(matches!(result.unwrap_err(), DataError::BadLength { .. }));
    }
}

/// The worker binary with `args`, no `SWEEP_*` settings from the environment; (exit code, stderr).
fn run_worker(args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    command.args(args).env_clear().env("RUST_LOG", "warn");
    if let Some(home) = std::env::var_os("HOME") {
        command.env("HOME", home);
    }
    let output = command.output().expect("run the worker binary");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn the_worker_exits_naming_the_missing_files() {
    let dir = partial_folder();
    let folder = dir.path().to_str().unwrap();
    let args = ["--coordinator", "http://127.0.0.1:1", "--device", "cpu", "--data-dir", folder];
    let (code, stderr) = run_worker(&args);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("data_batch_2.bin, data_batch_5.bin") && stderr.contains(folder), "{stderr}");
}

#[test]
fn the_worker_exits_at_once_on_an_address_without_a_scheme() {
    let dir = partial_folder();
    let args =
        ["--coordinator", "127.0.0.1:50051", "--device", "cpu", "--data-dir", dir.path().to_str().unwrap()];
    let (code, stderr) = run_worker(&args);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("use http://127.0.0.1:50051 (plaintext)"), "{stderr}");
    assert!(!stderr.contains("CIFAR-10"), "the address is checked before the data: {stderr}");
}
