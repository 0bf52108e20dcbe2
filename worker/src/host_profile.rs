//! Sampling profile of the host (CPU) side of `worker bench --host-profile FILE`: where the
//! process spends its CPU time while it records training steps (burn's autodiff, the fusion
//! stream, CubeCL launches, this crate's kernels' set-up). The GPU machines have no `perf`; this
//! samples in-process with pprof-rs (`SIGPROF` at [`FREQUENCY_HZ`]).
//!
//! [`HostProfiler::finish`] writes the samples as folded stacks (`thread;outer;…;inner count`
//! per line, the input of flamegraph tools) and returns a summary: the functions most often on
//! the stack (inclusive) and most often at its top (self), as shares of all samples.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

/// Samples per second of CPU time (prime, so it does not beat with periodic work).
pub const FREQUENCY_HZ: i32 = 997;

/// Functions listed in each half of the summary.
const TOP: usize = 30;

/// Why profiling failed.
#[derive(Debug, thiserror::Error)]
pub enum HostProfileError {
    #[error("host profiler: {0}")]
    Profiler(#[from] pprof::Error),
    #[error("host profile {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// A running profile of the whole process; stops when dropped.
pub struct HostProfiler {
    guard: pprof::ProfilerGuard<'static>,
}

impl HostProfiler {
    /// Starts sampling every thread of the process.
    pub fn start() -> Result<Self, HostProfileError> {
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(FREQUENCY_HZ)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()?;
        Ok(Self { guard })
    }

    /// Stops sampling, writes the folded stacks to `path` and returns the summary.
    pub fn finish(self, path: &Path) -> Result<String, HostProfileError> {
        let report = self.guard.report().build()?;
        let mut folded = String::new();
        let mut stacks = Vec::with_capacity(report.data.len());
        for (frames, &count) in &report.data {
            // Outermost first; inlined functions after the function they were inlined into.
            let names: Vec<String> = frames
                .frames
                .iter()
                .rev()
                .flat_map(|f| f.iter().rev().map(|s| short_name(&s.name())))
                .collect();
            let _ = writeln!(folded, "{};{} {count}", frames.thread_name_or_id(), names.join(";"));
            stacks.push((names, count.max(0) as u64));
        }
        std::fs::write(path, folded)
            .map_err(|source| HostProfileError::Write { path: path.display().to_string(), source })?;
        Ok(summarize(&stacks))
    }
}

/// The summary of `(stack outermost-first, samples)` pairs: inclusive and self shares.
pub fn summarize(stacks: &[(Vec<String>, u64)]) -> String {
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    let mut inclusive: HashMap<&str, u64> = HashMap::new();
    let mut own: HashMap<&str, u64> = HashMap::new();
    for (names, count) in stacks {
        let mut seen = std::collections::HashSet::new();
        for name in names.iter().filter(|n| seen.insert(n.as_str())) {
            *inclusive.entry(name).or_default() += count;
        }
        if let Some(leaf) = names.last() {
            *own.entry(leaf).or_default() += count;
        }
    }
    let mut out = format!("host profile: {total} samples at {FREQUENCY_HZ} Hz\n");
    for (title, table) in [("inclusive", inclusive), ("self", own)] {
        let mut rows: Vec<(&str, u64)> = table.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let _ = writeln!(out, "{title}:");
        for (name, n) in rows.into_iter().take(TOP) {
            let _ = writeln!(out, "  {:5.1}% {n:6} {name}", 100.0 * n as f64 / total.max(1) as f64);
        }
    }
    out
}

/// A demangled Rust symbol without generic arguments and hash: `a::b<T>::c::h0123…` → `a::b::c`.
pub fn short_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    match out.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head.to_owned()
        }
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_generics_and_hashes() {
        assert_eq!(
            short_name("burn_fusion::stream::Stream<R>::register::h0123456789abcdef"),
            "burn_fusion::stream::Stream::register"
        );
        assert_eq!(short_name("<T as core::clone::Clone>::clone"), "::clone");
        assert_eq!(short_name("main"), "main");
        assert_eq!(short_name("a::hash"), "a::hash", "not a 16-digit hash");
    }

    #[test]
    fn summary_counts_each_function_once_per_stack() {
        let stack = |s: &str| s.split(';').map(str::to_owned).collect::<Vec<_>>();
        let stacks = [(stack("main;step;launch"), 3), (stack("main;step;step"), 1), (stack("main;idle"), 4)];
        let summary = summarize(&stacks);
        assert!(summary.starts_with("host profile: 8 samples"), "{summary}");
        assert!(summary.contains(" 100.0%      8 main"), "{summary}");
        // Recursion counts once: `step` is on 4 of 8 stacks.
        assert!(summary.contains("  50.0%      4 step"), "{summary}");
        let own = summary.split("self:").nth(1).unwrap();
        assert!(own.contains("  37.5%      3 launch") && own.contains("  50.0%      4 idle"), "{summary}");
    }

    /// A real profile of a busy loop has samples and writes its folded stacks.
    #[test]
    fn profiles_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.folded");
        let profiler = HostProfiler::start().unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let summary = profiler.finish(&path).unwrap();
        let folded = std::fs::read_to_string(&path).unwrap();
        assert!(!folded.is_empty() && summary.contains("inclusive:"), "{summary}");
        let samples: u64 =
            folded.lines().map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap()).sum();
        assert!(samples >= 20, "300 ms of CPU at {FREQUENCY_HZ} Hz gave {samples} samples");
    }
}
