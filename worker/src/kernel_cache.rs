//! Where burn's CUDA backend keeps its kernels between processes: the autotune results (which
//! conv/matmul/reduce kernel is fastest for each shape) and the compiled PTX. Both go to one
//! directory per machine, `--kernel-cache` / `SWEEP_KERNEL_CACHE`, by default
//! `~/.cache/sweep/cubecl`. cuDNN's algorithm choices are kept there too
//! (`train_ops::conv::cuda::cudnn`'s `cudnn-choices.tsv`).
//!
//! CubeCL's own defaults make start-up slow: autotune results land in the `target/` of the
//! nearest `Cargo.toml` above the working directory (so the cache depends on where the worker
//! was started), and compiled kernels are not cached at all. Measured on an H100: 315 s to the
//! first training step with nothing cached, 37 s with autotune results only, 7 s for a whole
//! `worker bench` process with both cached. A `cubecl.toml` found by CubeCL's usual search
//! (working directory and parents) still wins for whatever it sets.
//!
//! Compiled kernels go one level down, into a directory per build ([`build_id`]): CubeCL keys
//! its PTX cache by a kernel's name and compile-time arguments, not by its source, so a new
//! build whose kernel body changed would load the old build's PTX. It did: an H100 run of a
//! build with a rewritten im2col kernel loaded the previous kernel's PTX from a carried cache,
//! launched it over a ninth of the threads it expects, and trained on a partly written matrix
//! (loss stuck at ln 10) while the same kernel passed its GPU test in a process without the
//! cache. Autotune results stay shared: they name kernels, and a stale choice is slow at worst.

use std::path::{Path, PathBuf};

/// The default cache directory: `$XDG_CACHE_HOME/sweep/cubecl` or `~/.cache/sweep/cubecl`.
pub fn default_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(cache.join("sweep").join("cubecl"))
}

/// Identifies this build's compiled kernels: a hash of the running executable (16 hex digits),
/// `None` if it cannot be read. ~50 ms for the worker's 57 MB binary, once a process.
pub fn build_id() -> Option<String> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        use std::hash::Hasher;
        let bytes = std::fs::read(std::env::current_exe().ok()?).ok()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        hasher.write(&bytes);
        Some(format!("{:016x}", hasher.finish()))
    })
    .clone()
}

/// The compilation (PTX) cache directory of this build under the cache directory `dir`.
pub fn compiled_dir(dir: &Path) -> PathBuf {
    match build_id() {
        Some(id) => dir.join(format!("build-{id}")),
        None => dir.join("build-unknown"),
    }
}

/// The directory [`install`] set, once it has, when its compiled kernels are this build's.
static INSTALLED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The cache directory in use, when [`install`] set one and a `cubecl.toml` did not move the
/// compiled kernels elsewhere.
pub fn installed_dir() -> Option<&'static Path> {
    INSTALLED.get().map(PathBuf::as_path)
}

/// Whether the kernels a GPU runs still have to be compiled and tuned by this build: a cache
/// directory is in use and holds none of its compiled kernels ([`has_compiled_kernels`]).
pub fn starts_cold() -> bool {
    installed_dir().is_some_and(|dir| !has_compiled_kernels(dir))
}

/// [`starts_cold`] where one of `devices` is a GPU (a CPU compiles nothing).
pub fn starts_cold_on(devices: &[crate::device::DeviceChoice]) -> bool {
    devices.iter().any(|d| matches!(d, crate::device::DeviceChoice::Cuda(_))) && starts_cold()
}

/// What a run on a GPU without this build's compiled kernels says (a fresh H100's first epoch
/// took 102–112 s with three slots while ~90 s of it tuned the head's matmuls, which the bf16
/// sets now run untuned; later epochs ~1 s).
pub const COLD_START: &str = "no compiled GPU kernels for this build yet: the first steps on each GPU compile and \
     tune them (one to two minutes); later runs reuse them";

/// Whether this build has compiled kernels under the cache directory `dir` (its
/// [`compiled_dir`] exists and holds anything): without them the first steps on a device
/// compile every kernel, and tune those CubeCL tunes, before training runs at speed.
pub fn has_compiled_kernels(dir: &Path) -> bool {
    std::fs::read_dir(compiled_dir(dir)).is_ok_and(|mut entries| entries.next().is_some())
}

/// Points CubeCL's autotune cache at `dir` (or [`default_dir`]) and its compilation cache at
/// this build's directory under it ([`compiled_dir`]) unless a `cubecl.toml` configures them. Call once, before the first GPU operation; returns the
/// directory in use, or `None` when CubeCL's configuration was already fixed or no directory
/// is known (the run still works, only slower to start).
#[cfg(feature = "cuda")]
pub fn install(dir: Option<&Path>) -> Option<PathBuf> {
    use cubecl_runtime::config::cache::CacheConfig;
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};

    let dir = dir.map(Path::to_path_buf).or_else(default_dir)?;
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    let compiled_here = config.compilation.cache.is_none();
    if compiled_here {
        config.compilation.cache = Some(CacheConfig::File(compiled_dir(&dir)));
    }
    if matches!(config.autotune.cache, CacheConfig::Target) {
        config.autotune.cache = CacheConfig::File(dir.clone());
    }
    let mut global = CubeClRuntimeConfig::storage().lock();
    if global.is_some() {
        tracing::warn!("CubeCL configuration already in use; kernel cache directory not changed");
        return None;
    }
    *global = Some(std::sync::Arc::new(config));
    tracing::info!(dir = %dir.display(), "GPU kernel cache");
    if compiled_here {
        let _ = INSTALLED.set(dir.clone());
    }
    Some(dir)
}

/// Without CUDA there are no GPU kernels to cache.
#[cfg(not(feature = "cuda"))]
pub fn install(_dir: Option<&Path>) -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this binary that touches CubeCL's process-wide configuration.
    #[cfg(feature = "cuda")]
    #[test]
    fn install_points_both_caches_at_the_directory_once() {
        use cubecl_runtime::config::cache::CacheConfig;
        use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};

        let dir = std::env::temp_dir().join(format!("sweep-kernel-cache-test-{}", std::process::id()));
        assert_eq!(install(Some(&dir)), Some(dir.clone()));
        let config = CubeClRuntimeConfig::get();
        let compiled = compiled_dir(&dir);
        assert!(compiled.starts_with(&dir) && compiled != dir, "{}", compiled.display());
        assert!(matches!(&config.compilation.cache, Some(CacheConfig::File(d)) if *d == compiled));
        assert!(matches!(&config.autotune.cache, CacheConfig::File(d) if *d == dir));
        assert_eq!(installed_dir(), Some(dir.as_path()));
        assert!(starts_cold(), "nothing compiled in a new directory");
        // Fixed for the process now: a second call changes nothing and says so.
        assert_eq!(install(Some(Path::new("/elsewhere"))), None);
        assert!(matches!(&CubeClRuntimeConfig::get().autotune.cache, CacheConfig::File(d) if *d == dir));
        assert_eq!(installed_dir(), Some(dir.as_path()));
        std::fs::create_dir_all(&compiled).unwrap();
        std::fs::write(compiled.join("kernel.ptx"), b"ptx").unwrap();
        assert!(!starts_cold());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The same executable gives the same id, so a warm cache is found again, and its
    /// compiled kernels live in their own directory under the cache.
    #[test]
    fn build_id_is_a_stable_hash_of_the_executable() {
        let id = build_id().expect("the test executable is readable");
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_eq!(build_id(), Some(id.clone()));
        assert_ne!(compiled_dir(Path::new("/cache")), Path::new("/cache"));
        assert!(compiled_dir(Path::new("/cache")).ends_with(format!("build-{id}")));
    }

    #[test]
    fn compiled_kernels_are_found_only_in_this_builds_directory() {
        let dir = std::env::temp_dir().join(format!("sweep-kernel-cache-probe-{}", std::process::id()));
        assert!(!has_compiled_kernels(&dir), "no directory yet");
        std::fs::create_dir_all(compiled_dir(&dir)).unwrap();
        assert!(!has_compiled_kernels(&dir), "an empty directory");
        std::fs::write(dir.join("autotune.json"), b"{}").unwrap();
        assert!(!has_compiled_kernels(&dir), "autotune results are not compiled kernels");
        std::fs::write(compiled_dir(&dir).join("kernel.ptx"), b"ptx").unwrap();
        assert!(has_compiled_kernels(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_dir_is_under_the_user_cache() {
        let dir = default_dir().expect("HOME is set in tests");
        assert!(dir.ends_with("sweep/cubecl"), "{}", dir.display());
    }
}
