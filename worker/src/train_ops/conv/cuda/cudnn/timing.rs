//! The choice among the algorithms cuDNN's benchmark timed: the fastest that ran within the
//! workspace over [`ROUNDS`] rounds, for any of the three passes, with every candidate's timing
//! for the log; and the passes' algorithms and math types by cuDNN's numbers.

use cudarc::cudnn::sys;

use super::call::Pass;
use super::ffi::WORKSPACE_BYTES;

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

/// Rounds of cuDNN's benchmark per shape and pass. One round chose other algorithms in some
/// processes than in others, one choice 1.57× slower over a whole batch-64 step on an H100; a
/// round that follows another runs on a GPU already busy at its clocks.
pub(super) const ROUNDS: usize = 2;

/// The candidates of [`ROUNDS`] calls of `round` (each one benchmark of every candidate).
pub(super) fn rounds<P>(mut round: impl FnMut() -> Result<Vec<P>, String>) -> Result<Vec<P>, String> {
    let mut timed = Vec::new();
    for _ in 0..ROUNDS {
        timed.extend(round()?);
    }
    Ok(timed)
}

/// The fastest of the `timed` candidates that ran within the workspace (a candidate timed in
/// several rounds counts with its best time).
pub(super) fn fastest<P: Timed>(timed: &[P], pass: Pass) -> Result<(P, Timing), String> {
    let ran = timed.iter().filter(|p| p.ran());
    let best = *ran
        .min_by(|a, b| a.measured().0.total_cmp(&b.measured().0))
        .ok_or_else(|| format!("no {pass:?} algorithm ran"))?;
    let (ms, bytes, math) = best.measured();
    let candidates = timed.iter().map(Timed::summary).collect::<Vec<_>>().join(" ");
    Ok((best, Timing { ms, bytes, math, candidates }))
}

/// A pass's algorithm.
#[derive(Clone, Copy)]
pub(super) enum Algorithm {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    FilterGrad(sys::cudnnConvolutionBwdFilterAlgo_t),
    DataGrad(sys::cudnnConvolutionBwdDataAlgo_t),
}

/// cuDNN's math types by number.
pub(super) const MATH: [sys::cudnnMathType_t; 4] = {
    use sys::cudnnMathType_t::*;
    [CUDNN_DEFAULT_MATH, CUDNN_TENSOR_OP_MATH, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, CUDNN_FMA_MATH]
};

/// cuDNN's algorithms of each pass by number.
const FORWARD: [sys::cudnnConvolutionFwdAlgo_t; 8] = {
    use sys::cudnnConvolutionFwdAlgo_t::*;
    [
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
    ]
};
const FILTER_GRAD: [sys::cudnnConvolutionBwdFilterAlgo_t; 7] = {
    use sys::cudnnConvolutionBwdFilterAlgo_t::*;
    [
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING,
    ]
};
const DATA_GRAD: [sys::cudnnConvolutionBwdDataAlgo_t; 6] = {
    use sys::cudnnConvolutionBwdDataAlgo_t::*;
    [
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
    ]
};

impl Algorithm {
    /// How many algorithms cuDNN numbers for `pass`.
    pub(super) fn count(pass: Pass) -> usize {
        match pass {
            Pass::Forward => FORWARD.len(),
            Pass::FilterGrad => FILTER_GRAD.len(),
            Pass::DataGrad => DATA_GRAD.len(),
        }
    }

    /// `pass`'s algorithm numbered `algo` (below [`Algorithm::count`]: kept choices are
    /// checked so).
    pub(super) fn numbered(pass: Pass, algo: u32) -> Self {
        let i = algo as usize;
        match pass {
            Pass::Forward => Algorithm::Forward(FORWARD[i]),
            Pass::FilterGrad => Algorithm::FilterGrad(FILTER_GRAD[i]),
            Pass::DataGrad => Algorithm::DataGrad(DATA_GRAD[i]),
        }
    }

    pub(super) fn name(self) -> String {
        match self {
            Algorithm::Forward(a) => format!("{a:?}"),
            Algorithm::FilterGrad(a) => format!("{a:?}"),
            Algorithm::DataGrad(a) => format!("{a:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::cudnnConvolutionFwdAlgo_t::{
        CUDNN_CONVOLUTION_FWD_ALGO_FFT, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
    };
    use sys::cudnnStatus_t::{CUDNN_STATUS_NOT_SUPPORTED, CUDNN_STATUS_SUCCESS};

    fn timed(
        algo: sys::cudnnConvolutionFwdAlgo_t,
        time: f32,
        memory: usize,
        ok: bool,
    ) -> sys::cudnnConvolutionFwdAlgoPerf_t {
        sys::cudnnConvolutionFwdAlgoPerf_t {
            algo,
            status: if ok { CUDNN_STATUS_SUCCESS } else { CUDNN_STATUS_NOT_SUPPORTED },
            time,
            memory,
            determinism: sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
            mathType: sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            reserved: [0; 3],
        }
    }

    #[test]
    fn the_choice_is_the_fastest_run_that_fits_over_every_round() {
        let mut round = 0;
        let both = rounds(|| {
            round += 1;
            Ok(match round {
                // A first round on a GPU still clocking up: implicit GEMM looks slowest.
                1 => vec![
                    timed(CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, 0.30, 0, true),
                    timed(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 0.40, 0, true),
                ],
                _ => vec![
                    timed(CUDNN_CONVOLUTION_FWD_ALGO_FFT, 0.05, WORKSPACE_BYTES + 1, true),
                    timed(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, 0.01, 0, false),
                    timed(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 0.12, 0, true),
                    timed(CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, 0.20, 0, true),
                ],
            })
        })
        .unwrap();
        assert_eq!((round, both.len()), (ROUNDS, 6));
        let (best, timing) = fastest(&both, Pass::Forward).unwrap();
        // Neither the one over the workspace nor the one that did not run.
        assert_eq!((best.algo, timing.ms), (CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 0.12));
        let none = fastest(&both[3..4], Pass::Forward).map(|_| ()).unwrap_err();
        assert!(none.contains("no Forward algorithm ran"), "{none}");
        let failed = rounds::<sys::cudnnConvolutionFwdAlgoPerf_t>(|| Err("cudnnFind: busy".into()));
        assert_eq!(failed.unwrap_err(), "cudnnFind: busy");
    }

    #[test]
    fn algorithms_and_math_types_by_number_are_cudnns() {
        for algo in 0..8 {
            let Algorithm::Forward(a) = Algorithm::numbered(Pass::Forward, algo) else { panic!() };
            assert_eq!(a as u32, algo);
        }
        for algo in 0..7 {
            let Algorithm::FilterGrad(a) = Algorithm::numbered(Pass::FilterGrad, algo) else { panic!() };
            assert_eq!(a as u32, algo);
        }
        for algo in 0..6 {
            let Algorithm::DataGrad(a) = Algorithm::numbered(Pass::DataGrad, algo) else { panic!() };
            assert_eq!(a as u32, algo);
        }
        assert!(MATH.iter().enumerate().all(|(i, m)| *m as usize == i));
    }
}
