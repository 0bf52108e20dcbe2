//! The choice among the algorithms cuDNN's benchmark timed: the fastest that ran within the
//! workspace, for any of the three passes, with every candidate's timing for the log.

use cudarc::cudnn::sys;

use super::ffi::{Pass, WORKSPACE_BYTES};

/// What cuDNN's benchmark reports of an algorithm, whichever pass it timed.
pub(super) trait Timed: Copy {
    /// It ran, and within the workspace.
    fn ran(&self) -> bool;
    /// `(algorithm, ms, workspace bytes)`, for the log.
    fn summary(&self) -> String;
    /// Its time, workspace and math type.
    fn measured(&self) -> (f32, usize, sys::cudnnMathType_t);
}

macro_rules! timed {
    ($($perf:ty),*) => {$(
        impl Timed for $perf {
            fn ran(&self) -> bool {
                self.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && self.memory <= WORKSPACE_BYTES
            }
            fn summary(&self) -> String {
                format!("{:?}", (self.algo, self.time, self.memory))
            }
            fn measured(&self) -> (f32, usize, sys::cudnnMathType_t) {
                (self.time, self.memory, self.mathType)
            }
        }
    )*};
}

timed!(
    sys::cudnnConvolutionFwdAlgoPerf_t,
    sys::cudnnConvolutionBwdFilterAlgoPerf_t,
    sys::cudnnConvolutionBwdDataAlgoPerf_t
);

/// The chosen algorithm's time (ms), workspace (bytes) and math type, and every candidate's
/// [`Timed::summary`].
pub(super) struct Timing {
    pub ms: f32,
    pub bytes: usize,
    pub math: sys::cudnnMathType_t,
    pub candidates: String,
}

/// The first of the `found` timed candidates (fastest first) that ran within the workspace.
pub(super) fn fastest<P: Timed>(
    perf: &[P],
    found: std::ffi::c_int,
    pass: Pass,
) -> Result<(P, Timing), String> {
    let timed = &perf[..(found.max(0) as usize).min(perf.len())];
    let best = *timed.iter().find(|p| p.ran()).ok_or_else(|| format!("no {pass:?} algorithm ran"))?;
    let (ms, bytes, math) = best.measured();
    let candidates = timed.iter().map(Timed::summary).collect::<Vec<_>>().join(" ");
    Ok((best, Timing { ms, bytes, math, candidates }))
}
