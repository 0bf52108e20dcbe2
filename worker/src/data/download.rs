//! Fetching the official CIFAR-10 tarball when the files are missing: download with a progress
//! bar, verify the tarball's MD5, unpack the six `.bin` files into the data directory.
//! Tests never reach the network; they exercise [`unpack_verified`] on local tarballs.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use super::DataError;
use super::official::{CIFAR10_FILES, CIFAR10_TARBALL_MD5, CIFAR10_TARBALL_URL};

/// File name the tarball is saved under inside the data directory.
pub const TARBALL_NAME: &str = "cifar-10-binary.tar.gz";

/// Downloads [`CIFAR10_TARBALL_URL`] into `dir`, verifies it and unpacks it into `dir`.
pub fn download_and_unpack(dir: &Path) -> Result<(), DataError> {
    fs::create_dir_all(dir).map_err(|source| DataError::Io { path: dir.to_owned(), source })?;
    let tarball = dir.join(TARBALL_NAME);
    let have_good_tarball = tarball.is_file() && file_md5(&tarball).is_ok_and(|m| m == CIFAR10_TARBALL_MD5);
    if !have_good_tarball {
        tracing::info!(url = CIFAR10_TARBALL_URL, dest = %tarball.display(), "downloading CIFAR-10");
        download(CIFAR10_TARBALL_URL, &tarball)?;
    }
    unpack_verified(&tarball, CIFAR10_TARBALL_MD5, dir)
}

fn download_error(url: &str, reason: impl ToString) -> DataError {
    DataError::Download { url: url.to_owned(), reason: reason.to_string() }
}

/// Streams `url` into `dest` (through a `.part` file) with an indicatif progress bar.
pub fn download(url: &str, dest: &Path) -> Result<(), DataError> {
    let mut response = ureq::get(url).call().map_err(|e| download_error(url, e))?;
    let total = response.body().content_length();
    let bar = match total {
        Some(len) => ProgressBar::new(len),
        None => ProgressBar::new_spinner(),
    };
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("CIFAR-10");
    let part = dest.with_extension("part");
    let io_err = |source| DataError::Io { path: part.clone(), source };
    let mut out = File::create(&part).map_err(io_err)?;
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| download_error(url, e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(io_err)?;
        bar.inc(n as u64);
    }
    out.flush().map_err(io_err)?;
    bar.finish();
    fs::rename(&part, dest).map_err(|source| DataError::Io { path: dest.to_owned(), source })
}

/// MD5 of a file, streamed.
pub fn file_md5(path: &Path) -> Result<String, DataError> {
    let io_err = |source| DataError::Io { path: path.to_owned(), source };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut hasher = Md5::new();
    io::copy(&mut reader, &mut hasher).map_err(io_err)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Checks `tarball` against `expected_md5`, then extracts every official `.bin` file it holds
/// (at any folder depth) directly into `dir`. Other entries are ignored.
pub fn unpack_verified(tarball: &Path, expected_md5: &str, dir: &Path) -> Result<(), DataError> {
    let actual = file_md5(tarball)?;
    if actual != expected_md5 {
        return Err(DataError::Checksum {
            path: tarball.to_owned(),
            expected: expected_md5.to_owned(),
            actual,
        });
    }
    let unpack_err = |reason: String| DataError::Unpack { path: tarball.to_owned(), reason };
    let file = File::open(tarball).map_err(|source| DataError::Io { path: tarball.to_owned(), source })?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let entries = archive.entries().map_err(|e| unpack_err(e.to_string()))?;
    let mut written: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| unpack_err(e.to_string()))?;
        let path = entry.path().map_err(|e| unpack_err(e.to_string()))?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if !CIFAR10_FILES.iter().any(|(official, _)| *official == name) {
            continue;
        }
        let dest = dir.join(&name);
        let mut out = File::create(&dest).map_err(|source| DataError::Io { path: dest.clone(), source })?;
        io::copy(&mut entry, &mut out).map_err(|e| unpack_err(format!("{name}: {e}")))?;
        written.push(dest);
    }
    tracing::info!(files = written.len(), dir = %dir.display(), "unpacked CIFAR-10 tarball");
    Ok(())
}
