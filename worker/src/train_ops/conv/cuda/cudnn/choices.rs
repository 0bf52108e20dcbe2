//! cuDNN's algorithm choices, one per GPU model, cuDNN version, shape and pass, shared by a
//! process's threads and kept next to the kernel cache (`cudnn-choices.tsv`): a shape's pass is
//! benchmarked once per machine, and every slot and later process runs what it chose.
//!
//! Each thread benchmarked its own shapes before, and the choice varied: the same batch-64 job
//! ran at 31.5k or 49.7k img/s on an H100 as its process chose; slots started together also
//! timed each other's kernels. One benchmark at a time, kept, removes both.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::call::{Conv3x3, Pass};
use super::ffi::WORKSPACE_BYTES;
use super::timing::{Algorithm, MATH};

/// The file under the kernel cache directory.
pub(super) const FILE: &str = "cudnn-choices.tsv";

/// An algorithm cuDNN's benchmark chose: its number for the pass, the math type it was timed
/// with, its workspace and time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Choice {
    pub algo: u32,
    pub math: u32,
    pub bytes: usize,
    pub ms: f32,
}

impl Choice {
    /// Whether cuDNN has such an algorithm for `pass` and it runs within today's workspace.
    fn fits(&self, pass: Pass) -> bool {
        (self.algo as usize) < Algorithm::count(pass)
            && (self.math as usize) < MATH.len()
            && self.bytes <= WORKSPACE_BYTES
    }
}

/// What a choice is for: the machine (GPU model and cuDNN version), the pass and the shape.
pub(super) fn key(machine: &str, pass: Pass, conv: &Conv3x3) -> String {
    let Conv3x3 { n, c_in, c_out, h, w, groups, precision } = conv;
    format!("{machine}\t{pass:?} n={n} c_in={c_in} c_out={c_out} h={h} w={w} groups={groups} {precision:?}")
}

/// The choices known to a process, and the file they are kept in.
pub(super) struct Choices {
    path: Option<PathBuf>,
    known: Mutex<HashMap<String, Choice>>,
    /// Held while a benchmark runs: one at a time, and a thread wanting the same shape waits
    /// for it instead of timing it again.
    benchmarking: Mutex<()>,
}

/// The process's choices, kept under the kernel cache directory where one is in use.
pub(super) fn shared() -> &'static Choices {
    static SHARED: OnceLock<Choices> = OnceLock::new();
    SHARED.get_or_init(|| Choices::at(crate::kernel_cache::installed_dir().map(|dir| dir.join(FILE))))
}

impl Choices {
    /// Choices kept in the file `path` (none: in memory only), with those it holds.
    pub fn at(path: Option<PathBuf>) -> Self {
        let known = path.as_deref().map(read).unwrap_or_default();
        Choices { path, known: Mutex::new(known), benchmarking: Mutex::new(()) }
    }

    /// The choice for `key`'s `pass`: a known one, or `benchmark`'s, which is then kept. The
    /// flag says whether it was benchmarked here.
    pub fn choose(
        &self,
        key: &str,
        pass: Pass,
        benchmark: impl FnOnce() -> Result<Choice, String>,
    ) -> Result<(Choice, bool), String> {
        let known = |choices: &HashMap<String, Choice>| choices.get(key).copied().filter(|c| c.fits(pass));
        if let Some(choice) = known(&self.lock()) {
            return Ok((choice, false));
        }
        let _one_at_a_time = self.benchmarking.lock().unwrap_or_else(|e| e.into_inner());
        // Another thread, or another process writing the file, may have chosen meanwhile.
        if let Some(path) = &self.path {
            self.lock().extend(read(path));
        }
        if let Some(choice) = known(&self.lock()) {
            return Ok((choice, false));
        }
        let choice = benchmark()?;
        self.lock().insert(key.to_owned(), choice);
        if let Some(path) = &self.path
            && let Err(err) = append(path, key, &choice)
        {
            tracing::warn!(path = %path.display(), %err, "cuDNN's algorithm choice not kept");
        }
        Ok((choice, true))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Choice>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The choices a file holds (the last of a key's lines wins); lines that do not parse are
/// skipped, as is a missing file.
fn read(path: &Path) -> HashMap<String, Choice> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(parse).collect()
}

/// `machine \t pass-and-shape \t algo \t math \t bytes \t ms`.
fn parse(line: &str) -> Option<(String, Choice)> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [machine, shape, algo, math, bytes, ms] = fields[..] else { return None };
    let choice = Choice {
        algo: algo.parse().ok()?,
        math: math.parse().ok()?,
        bytes: bytes.parse().ok()?,
        ms: ms.parse().ok()?,
    };
    Some((format!("{machine}\t{shape}"), choice))
}

/// Appends one line in a single write, so processes appending at once do not interleave.
fn append(path: &Path, key: &str, c: &Choice) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let line = format!("{key}\t{}\t{}\t{}\t{}\n", c.algo, c.math, c.bytes, c.ms);
    OpenOptions::new().create(true).append(true).open(path)?.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::call::Precision;
    use super::*;

    const CONV: Conv3x3 =
        Conv3x3 { n: 64, c_in: 64, c_out: 128, h: 16, w: 16, groups: 1, precision: Precision::Bf16 };

    fn choice(algo: u32) -> Choice {
        Choice { algo, math: 1, bytes: 4096, ms: 0.125 }
    }

    #[test]
    fn a_choice_is_benchmarked_once_and_read_back_by_the_next_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache").join(FILE);
        let key = key("NVIDIA H100 80GB HBM3 cudnn 91400", Pass::Forward, &CONV);
        let choices = Choices::at(Some(path.clone()));
        assert_eq!(choices.choose(&key, Pass::Forward, || Ok(choice(6))).unwrap(), (choice(6), true));
        let again = choices.choose(&key, Pass::Forward, || panic!("benchmarked twice"));
        assert_eq!(again.unwrap(), (choice(6), false));
        // The same shape's other pass, or the same pass on another machine, is its own choice.
        let data = key.replace("Forward", "DataGrad");
        assert_eq!(choices.choose(&data, Pass::DataGrad, || Ok(choice(1))).unwrap(), (choice(1), true));
        let next = Choices::at(Some(path));
        assert_eq!(next.choose(&key, Pass::Forward, || panic!("not read back")).unwrap(), (choice(6), false));
        let other = key.replace("H100 80GB HBM3", "H200");
        assert_eq!(next.choose(&other, Pass::Forward, || Ok(choice(1))).unwrap(), (choice(1), true));
    }

    #[test]
    fn threads_asking_at_once_wait_for_one_benchmark() {
        let choices = Choices::at(None);
        let key = key("gpu", Pass::FilterGrad, &CONV);
        let benchmarks = std::sync::atomic::AtomicUsize::new(0);
        let got: Vec<_> = std::thread::scope(|scope| {
            let asks: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        choices.choose(&key, Pass::FilterGrad, || {
                            benchmarks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(choice(3))
                        })
                    })
                })
                .collect();
            asks.into_iter().map(|a| a.join().unwrap().unwrap().0).collect()
        });
        assert_eq!(benchmarks.into_inner(), 1);
        assert!(got.iter().all(|c| *c == choice(3)), "{got:?}");
    }

    #[test]
    fn lines_that_do_not_parse_or_fit_are_benchmarked_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let keys = [Pass::Forward, Pass::DataGrad, Pass::FilterGrad].map(|p| key("gpu", p, &CONV));
        let too_big = WORKSPACE_BYTES + 1;
        let text = format!(
            "torn line\n{}\t9\t1\t0\t0.1\n{}\t1\t1\t{too_big}\t0.1\n{}\t2\t1\tmany\t0.1\n",
            keys[0], keys[1], keys[2]
        );
        std::fs::write(&path, text).unwrap();
        let choices = Choices::at(Some(path.clone()));
        for (key, pass) in keys.iter().zip([Pass::Forward, Pass::DataGrad, Pass::FilterGrad]) {
            // An algorithm cuDNN does not have, a workspace over today's, a bad number.
            assert_eq!(choices.choose(key, pass, || Ok(choice(0))).unwrap(), (choice(0), true), "{key}");
        }
        let kept = read(&path);
        assert!(keys.iter().all(|k| kept[k] == choice(0)), "{kept:?}");
    }

    #[test]
    fn a_failed_benchmark_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let choices = Choices::at(Some(path.clone()));
        let key = key("gpu", Pass::Forward, &CONV);
        let err = choices.choose(&key, Pass::Forward, || Err("cudnnFind: busy".into())).unwrap_err();
        assert_eq!(err, "cudnnFind: busy");
        assert!(!path.exists());
        assert_eq!(choices.choose(&key, Pass::Forward, || Ok(choice(2))).unwrap(), (choice(2), true));
    }
}
