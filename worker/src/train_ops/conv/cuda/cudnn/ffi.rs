//! The cuDNN calls behind [`super`]: per stream one cuDNN handle bound to it and a workspace,
//! and per convolution shape and pass the descriptors and the algorithm cuDNN's own benchmark
//! picked.
//! Everything `unsafe` about cuDNN lives in this module.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, c_void};
use std::ptr::null_mut;
use std::sync::Arc;

use cudarc::cudnn::sys;
use cudarc::driver::CudaContext;
use cudarc::driver::sys::CUstream;

use super::call::{Conv3x3, Either, Pass, Precision};
use super::choices::{self, Choice};
use super::timing::{Algorithm, MATH, Timing, fastest, rounds};

/// Bytes of each stream's workspace; the benchmark only considers algorithms that fit.
pub(super) const WORKSPACE_BYTES: usize = crate::train_ops::conv::CUDNN_WORKSPACE_BYTES as usize;
/// Algorithms the benchmark times, at most.
const CANDIDATES: usize = 8;

/// cuDNN's version (`cudnnGetVersion`, e.g. 91400), or why the library cannot be loaded
/// (cudarc panics when no `libcudnn` is on the library path).
pub fn library_version() -> Result<usize, String> {
    let probe = || {
        // SAFETY: both only load the library and read a constant from it.
        if unsafe { sys::is_culib_present() } { Ok(unsafe { sys::cudnnGetVersion() }) } else { Err(()) }
    };
    match crate::device::quiet_catch_unwind(probe) {
        Ok(Ok(version)) => Ok(version),
        Ok(Err(())) => Err("no libcudnn on the library path (LD_LIBRARY_PATH)".to_owned()),
        Err(panic) => Err(format!("libcudnn could not be loaded ({panic})")),
    }
}

/// Queues `pass` of `conv` on device `device` in `stream`, the stream on which every kernel
/// queued before it has been issued: `pointers` as [`Pass`] lists them.
pub fn run(
    pass: Pass,
    conv: Conv3x3,
    pointers: [u64; 3],
    stream: CUstream,
    device: usize,
) -> Result<(), String> {
    on_device(device, |state| {
        let bound = state.bound(stream)?;
        state.run(pass, conv, pointers, stream, bound)
    })
}

/// `f` on this thread's state of device `device`, made at its first call.
fn on_device<R>(device: usize, f: impl FnOnce(&mut DeviceState) -> Result<R, String>) -> Result<R, String> {
    STATES.with(|states| {
        let mut states = states.borrow_mut();
        let state = match states.entry(device) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(DeviceState::new(device)?),
        };
        f(state)
    })
}

/// Queues whichever of `either`'s calls cuDNN timed faster (both chosen, or benchmarked, at
/// the first call), on `pointers` (each call's, as [`Pass`] lists them).
pub fn run_fastest(
    either: Either,
    pointers: [[u64; 3]; 2],
    stream: CUstream,
    device: usize,
) -> Result<(), String> {
    on_device(device, |state| {
        let bound = state.bound(stream)?;
        let calls = [(either.first, pointers[0]), (either.second, pointers[1])];
        let new = !calls.iter().all(|((pass, conv), _)| state.plans.contains_key(&(*pass, *conv)));
        let mut ms = [0.0f32; 2];
        for (i, ((pass, conv), p)) in calls.into_iter().enumerate() {
            ms[i] = state.plan(pass, conv, p, stream, bound)?.ms;
        }
        let pick = forced_call().unwrap_or(usize::from(ms[1] < ms[0]));
        if new {
            tracing::debug!(?either, ms = ?ms, chosen = ?calls[pick].0.0, "cuDNN call chosen");
        }
        let ((pass, conv), p) = calls[pick];
        state.run(pass, conv, p, stream, bound)
    })
}

/// Which of two calls [`run_fastest`] runs whatever their times, so that the GPU tests check
/// each (`None`: the faster).
#[cfg(test)]
pub static FORCED_CALL: std::sync::Mutex<Option<usize>> = std::sync::Mutex::new(None);

fn forced_call() -> Option<usize> {
    #[cfg(test)]
    return *FORCED_CALL.lock().unwrap_or_else(|e| e.into_inner());
    #[cfg(not(test))]
    None
}

thread_local! {
    static STATES: RefCell<HashMap<usize, DeviceState>> = RefCell::new(HashMap::new());
}

/// A device's streams and plans, on the thread that runs its convolutions.
struct DeviceState {
    context: Arc<CudaContext>,
    /// One per stream: jobs on different streams of a device run and record their
    /// convolutions at the same time. A handle moved between streams while they recorded
    /// invalidated both recordings (fused groups side by side on an H100).
    streams: HashMap<usize, StreamState>,
    plans: HashMap<(Pass, Conv3x3), Plan>,
    /// The GPU model and cuDNN version, which key the algorithm choices ([`choices`]).
    machine: String,
}

/// A stream's cuDNN handle, bound to it for good, and its workspace, which a replayed graph
/// keeps from its recording.
#[derive(Clone, Copy)]
struct StreamState {
    handle: sys::cudnnHandle_t,
    workspace: u64,
}

/// What a shape's pass needs at each call.
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    filter: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    algorithm: Algorithm,
    /// The time cuDNN's benchmark measured for it.
    ms: f32,
}

fn check(status: sys::cudnnStatus_t, what: &str) -> Result<(), String> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    // SAFETY: cuDNN returns a static, NUL-terminated string for every status.
    let text = unsafe { CStr::from_ptr(sys::cudnnGetErrorString(status)) };
    Err(format!("{what}: {status:?} ({})", text.to_string_lossy()))
}

impl DeviceState {
    fn new(device: usize) -> Result<Self, String> {
        // The primary context, which CubeCL's CUDA runtime uses too.
        let context = CudaContext::new(device).map_err(|e| format!("CUDA context: {e:?}"))?;
        let name = context.name().map_err(|e| format!("CUDA device name: {e:?}"))?;
        let machine = format!("{name} cudnn {}", library_version()?);
        Ok(DeviceState { context, streams: HashMap::new(), plans: HashMap::new(), machine })
    }

    /// The handle and workspace of `stream`, made at its first convolution.
    fn stream(&mut self, stream: CUstream) -> Result<StreamState, String> {
        if let Some(state) = self.streams.get(&(stream as usize)) {
            return Ok(*state);
        }
        let mut handle = null_mut();
        // SAFETY: `handle` is a valid out-pointer; the context is current on this thread, and
        // `stream` is a live stream of it (CubeCL's).
        unsafe {
            check(sys::cudnnCreate(&mut handle), "cudnnCreate")?;
            check(sys::cudnnSetStream(handle, stream as sys::cudaStream_t), "cudnnSetStream")?;
        }
        // SAFETY: a plain synchronous device allocation (allowed while a stream records),
        // owned by this state for the life of the thread.
        let workspace = unsafe { cudarc::driver::result::malloc_sync(WORKSPACE_BYTES) }
            .map_err(|e| format!("workspace of {WORKSPACE_BYTES} bytes: {e:?}"))?;
        let state = StreamState { handle, workspace };
        self.streams.insert(stream as usize, state);
        Ok(state)
    }

    /// The context bound to this thread, and `stream`'s handle and workspace.
    fn bound(&mut self, stream: CUstream) -> Result<StreamState, String> {
        self.context.bind_to_thread().map_err(|e| format!("CUDA context: {e:?}"))?;
        self.stream(stream)
    }

    /// The plan of `pass` on `conv`, chosen (and benchmarked on `pointers`) at its first call,
    /// with the context bound and `stream`'s state (`bound`).
    fn plan(
        &mut self,
        pass: Pass,
        conv: Conv3x3,
        pointers: [u64; 3],
        stream: CUstream,
        bound: StreamState,
    ) -> Result<&Plan, String> {
        let machine = &self.machine;
        Ok(match self.plans.entry((pass, conv)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            // SAFETY: the pointers are device buffers of the sizes `conv` implies.
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(unsafe { Plan::chosen(bound, stream, pass, conv, pointers, machine) }?)
            }
        })
    }

    /// Queues `pass` of `conv` with the context bound and `stream`'s state (`bound`).
    fn run(
        &mut self,
        pass: Pass,
        conv: Conv3x3,
        [a, b, out]: [u64; 3],
        stream: CUstream,
        bound: StreamState,
    ) -> Result<(), String> {
        let StreamState { handle, workspace } = bound;
        let workspace = workspace as *mut c_void;
        let plan = self.plan(pass, conv, [a, b, out], stream, bound)?;
        let (one, zero) = (1.0f32, 0.0f32);
        let (alpha, beta) = (&one as *const f32 as *const c_void, &zero as *const f32 as *const c_void);
        let [a, b, out] = [a, b, out].map(|p| p as *mut c_void);
        // SAFETY: descriptors match the buffers (checked shapes and dtypes in `super`), the
        // workspace holds `WORKSPACE_BYTES`, and the call is queued on `stream` after their producers.
        let status = unsafe {
            match plan.algorithm {
                Algorithm::Forward(algo) => sys::cudnnConvolutionForward(
                    handle,
                    alpha,
                    plan.x,
                    a,
                    plan.filter,
                    b,
                    plan.conv,
                    algo,
                    workspace,
                    WORKSPACE_BYTES,
                    beta,
                    plan.y,
                    out,
                ),
                Algorithm::FilterGrad(algo) => sys::cudnnConvolutionBackwardFilter(
                    handle,
                    alpha,
                    plan.x,
                    a,
                    plan.y,
                    b,
                    plan.conv,
                    algo,
                    workspace,
                    WORKSPACE_BYTES,
                    beta,
                    plan.filter,
                    out,
                ),
                Algorithm::DataGrad(algo) => sys::cudnnConvolutionBackwardData(
                    handle,
                    alpha,
                    plan.filter,
                    b,
                    plan.y,
                    a,
                    plan.conv,
                    algo,
                    workspace,
                    WORKSPACE_BYTES,
                    beta,
                    plan.x,
                    out,
                ),
            }
        };
        check(status, "convolution")
    }
}

impl Plan {
    /// The descriptors of `conv` and the fastest algorithm for `pass` that fits the workspace:
    /// the one `machine` chose before ([`choices`]), or timed by cuDNN on these buffers
    /// (`cudnnFind…AlgorithmEx`, as PyTorch's `cudnn.benchmark` does).
    ///
    /// # Safety
    /// The pointers are device buffers of the sizes `conv` implies; the context is bound to
    /// this thread and `stream` is a live stream of it, whose workspace holds
    /// [`WORKSPACE_BYTES`].
    unsafe fn chosen(
        StreamState { handle, workspace }: StreamState,
        stream: CUstream,
        pass: Pass,
        conv: Conv3x3,
        [a, b, out]: [u64; 3],
        machine: &str,
    ) -> Result<Plan, String> {
        let workspace = workspace as *mut c_void;
        use sys::cudnnDataType_t::{CUDNN_DATA_BFLOAT16, CUDNN_DATA_FLOAT};
        use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
        let data = match conv.precision {
            Precision::Bf16 => CUDNN_DATA_BFLOAT16,
            Precision::F32 => CUDNN_DATA_FLOAT,
        };
        let dim = |v: usize| v as std::ffi::c_int;
        let tensor = |c: usize| -> Result<sys::cudnnTensorDescriptor_t, String> {
            let mut d = null_mut();
            // SAFETY: `d` is a valid out-pointer, then a live descriptor.
            unsafe {
                check(sys::cudnnCreateTensorDescriptor(&mut d), "cudnnCreateTensorDescriptor")?;
                let (n, h, w) = (dim(conv.n), dim(conv.h), dim(conv.w));
                check(
                    sys::cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NHWC, data, n, dim(c), h, w),
                    "cudnnSetTensor4dDescriptor",
                )?;
            }
            Ok(d)
        };
        let (x, y) = (tensor(conv.groups * conv.c_in)?, tensor(conv.groups * conv.c_out)?);
        let (mut filter, mut desc) = (null_mut(), null_mut());
        // SAFETY: valid out-pointers, then live descriptors.
        unsafe {
            check(sys::cudnnCreateFilterDescriptor(&mut filter), "cudnnCreateFilterDescriptor")?;
            let (k, c) = (dim(conv.groups * conv.c_out), dim(conv.c_in));
            let set = sys::cudnnSetFilter4dDescriptor(filter, data, CUDNN_TENSOR_NHWC, k, c, 3, 3);
            check(set, "cudnnSetFilter4dDescriptor")?;
            check(sys::cudnnCreateConvolutionDescriptor(&mut desc), "cudnnCreateConvolutionDescriptor")?;
            let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
            check(
                sys::cudnnSetConvolution2dDescriptor(desc, 1, 1, 1, 1, 1, 1, mode, CUDNN_DATA_FLOAT),
                "cudnnSetConvolution2dDescriptor",
            )?;
            let math = sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH;
            check(sys::cudnnSetConvolutionMathType(desc, math), "cudnnSetConvolutionMathType")?;
            check(
                sys::cudnnSetConvolutionGroupCount(desc, dim(conv.groups)),
                "cudnnSetConvolutionGroupCount",
            )?;
        }
        let [a, b, out] = [a, b, out].map(|p| p as *mut c_void);
        // One benchmark of every candidate by cuDNN's `$find` on the buffers `$args` (in its
        // order, between the handle and the candidates' count): a round of `rounds`.
        macro_rules! round {
            ($find:ident, $perf:ty, $($args:expr),*) => {
                || {
                    let mut found: std::ffi::c_int = 0;
                    // SAFETY: zeroed plain-data structs, filled by cuDNN.
                    let mut perf: [$perf; CANDIDATES] = unsafe { std::mem::zeroed() };
                    // SAFETY: the caller's buffers in the order `$find` takes them; `perf` holds
                    // `CANDIDATES` results.
                    let status = unsafe {
                        sys::$find(handle, $($args),*, CANDIDATES as _, &mut found, perf.as_mut_ptr(),
                            workspace, WORKSPACE_BYTES)
                    };
                    check(status, stringify!($find))?;
                    Ok(perf[..found.clamp(0, CANDIDATES as _) as usize].to_vec())
                }
            };
        }
        // `rounds` of `$find`'s benchmark, then `fastest` picks: the algorithm's number and timing.
        macro_rules! best {
            ($find:ident, $perf:ty, $($args:expr),*) => {{
                let (best, timing) = fastest(&rounds(round!($find, $perf, $($args),*))?, pass)?;
                (best.algo as u32, timing)
            }};
        }
        let benchmark = || -> Result<Choice, String> {
            // It writes `out` and reads the inputs: let what produced them finish.
            // SAFETY: `stream` is a live stream of the bound context.
            unsafe { cudarc::driver::result::stream::synchronize(stream) }
                .map_err(|e| format!("stream synchronize: {e:?}"))?;
            use sys::{cudnnConvolutionBwdDataAlgoPerf_t as D, cudnnConvolutionBwdFilterAlgoPerf_t as F};
            let (algo, Timing { ms, bytes, math, candidates }) = match pass {
                Pass::Forward => {
                    use sys::cudnnConvolutionFwdAlgoPerf_t as W;
                    best!(cudnnFindConvolutionForwardAlgorithmEx, W, x, a, filter, b, desc, y, out)
                }
                // `a` is x, `b` is dy, `out` the filter gradient.
                Pass::FilterGrad => {
                    best!(cudnnFindConvolutionBackwardFilterAlgorithmEx, F, x, a, y, b, desc, filter, out)
                }
                // `a` is dy, `b` the filter, `out` dx.
                Pass::DataGrad => {
                    best!(cudnnFindConvolutionBackwardDataAlgorithmEx, D, filter, b, y, a, desc, x, out)
                }
            };
            tracing::debug!(?pass, ?conv, algo, ms, bytes, %candidates, "cuDNN benchmark");
            Ok(Choice { algo, math: math as u32, bytes, ms })
        };
        let key = choices::key(machine, pass, &conv);
        let (choice, benchmarked) = choices::shared().choose(&key, pass, benchmark)?;
        let algorithm = Algorithm::numbered(pass, choice.algo);
        // The math type the algorithm was timed with (PyTorch does the same).
        // SAFETY: a live descriptor.
        check(
            unsafe { sys::cudnnSetConvolutionMathType(desc, MATH[choice.math as usize]) },
            "cudnnSetConvolutionMathType",
        )?;
        let Choice { ms, bytes, .. } = choice;
        tracing::debug!(?pass, ?conv, algorithm = ?algorithm.name(), ms, bytes, benchmarked, "cuDNN algorithm chosen");
        Ok(Plan { x, y, filter, conv: desc, algorithm, ms })
    }
}
