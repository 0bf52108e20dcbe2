//! Build provenance for reports: the git commit of the workspace (`SWEEP_GIT_COMMIT`), the
//! compiler (`SWEEP_RUSTC_VERSION`) and the locked versions of the crates a report names
//! (`SWEEP_LOCKED_VERSIONS`, `name=version` pairs separated by `;`).
//!
//! Reruns only when HEAD moves (a commit, a checkout), Cargo.lock or the fallback variable
//! changes: an edited source file does not rerun it, so a `-dirty` suffix is as of the last run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates whose locked versions a report's provenance lists.
const LOCKED_CRATES: [&str; 4] = ["burn", "cubecl", "tonic", "sqlx"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().unwrap_or(&manifest_dir).to_path_buf();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SWEEP_GIT_COMMIT");

    let commit = git_commit(&workspace)
        .or_else(|| std::env::var("SWEEP_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty()))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SWEEP_GIT_COMMIT={}", one_line(&commit));

    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc_version = run(Command::new(rustc).arg("--version")).unwrap_or_default();
    println!("cargo:rustc-env=SWEEP_RUSTC_VERSION={}", one_line(&rustc_version));

    let lock = workspace.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let locked = std::fs::read_to_string(&lock).map(|text| locked_versions(&text)).unwrap_or_default();
    println!("cargo:rustc-env=SWEEP_LOCKED_VERSIONS={}", one_line(&locked));
}

/// Trimmed stdout of a successful command.
fn run(command: &mut Command) -> Option<String> {
    let output = command.output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_string())
}

fn git(workspace: &Path, args: &[&str]) -> Option<String> {
    run(Command::new("git").arg("-C").arg(workspace).args(args))
}

/// `git rev-parse --short=12 HEAD`, with `-dirty` when the work tree has changes; `None` without
/// git or outside a checkout. Watches HEAD and the branch it points to (loose or packed).
fn git_commit(workspace: &Path) -> Option<String> {
    let commit = git(workspace, &["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty())?;
    let mut watched = vec!["HEAD".to_string()];
    if let Some(branch) = git(workspace, &["symbolic-ref", "-q", "HEAD"]) {
        watched.extend([branch, "packed-refs".to_string()]);
    }
    for name in watched {
        let Some(path) = git(workspace, &["rev-parse", "--git-path", &name]) else { continue };
        let path = workspace.join(path);
        // A missing file would rerun the script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    // Without optional locks: a build must not hold the index lock a concurrent git command needs.
    let dirty =
        git(workspace, &["--no-optional-locks", "status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{commit}-dirty") } else { commit })
}

/// `burn=0.21.0;tonic=…` for [`LOCKED_CRATES`] found in a Cargo.lock (first version of each).
fn locked_versions(lock: &str) -> String {
    let mut found: Vec<(&str, String)> = Vec::new();
    for package in lock.split("[[package]]") {
        let field = |key: &str| {
            package.lines().find_map(|line| {
                let value = line.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_string())
            })
        };
        let (Some(name), Some(version)) = (field("name"), field("version")) else { continue };
        if let Some(&wanted) = LOCKED_CRATES.iter().find(|c| **c == name)
            && !found.iter().any(|(n, _)| *n == wanted)
        {
            found.push((wanted, version));
        }
    }
    found.sort_by_key(|(name, _)| LOCKED_CRATES.iter().position(|c| c == name));
    found.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(";")
}

/// A value for `cargo:rustc-env`, which ends at the line break.
fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}
