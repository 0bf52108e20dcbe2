//! PATCHED (sweep, see vendor/README.md): recording a stream's work as a CUDA graph and
//! replaying it. Called from tasks that run on the server's thread (`with_resources`), so the
//! state is that thread's: while a stream records, every buffer its operations touch or
//! allocate and every pinned host buffer it copies from is kept for the graph's life (a graph
//! replays the same addresses). Several streams may record at once (one job per stream);
//! while any does, allocations are synchronous (an asynchronous one would become a node of
//! the graph) and no deferred free or fence is issued.

use core::cell::RefCell;
use std::collections::HashMap;

use cubecl_common::bytes::Bytes;
use cubecl_runtime::memory_management::ManagedMemoryBinding;
use cudarc::driver::sys::{
    CUgraph, CUgraphExec, CUresult, CUstream, CUstreamCaptureMode, cuGraphDestroy,
    cuGraphExecDestroy, cuGraphInstantiateWithFlags, cuGraphLaunch, cuStreamBeginCapture_v2,
    cuStreamEndCapture, cuStreamSynchronize,
};

/// What a recording keeps alive.
struct Kept {
    stream: CUstream,
    buffers: Vec<ManagedMemoryBinding>,
    host: Vec<Bytes>,
}

/// A replayable graph, with everything it reads and writes.
struct Recorded {
    exec: CUgraphExec,
    _kept: Kept,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        // SAFETY: `exec` came from `cuGraphInstantiateWithFlags` and is destroyed once; a
        // launch already queued keeps the graph's resources until it completes.
        unsafe { cuGraphExecDestroy(self.exec) };
    }
}

thread_local! {
    static RECORDING: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
    static GRAPHS: RefCell<HashMap<u64, Recorded>> = RefCell::new(HashMap::new());
    static NEXT: core::cell::Cell<u64> = const { core::cell::Cell::new(1) };
}

fn check(result: CUresult, what: &str) -> Result<(), String> {
    match result {
        CUresult::CUDA_SUCCESS => Ok(()),
        other => Err(format!("{what}: {other:?}")),
    }
}

/// Whether the server's thread is recording (any stream).
pub(crate) fn recording() -> bool {
    RECORDING.with(|r| !r.borrow().is_empty())
}

/// Keeps `binding` for the graph being recorded on `stream`, if one is.
pub(crate) fn keep_buffer(stream: CUstream, binding: &ManagedMemoryBinding) {
    RECORDING.with(|r| {
        if let Some(kept) = r.borrow_mut().iter_mut().find(|k| k.stream == stream) {
            kept.buffers.push(binding.clone());
        }
    });
}

/// Keeps `data` (the source of a copy queued on `stream`) for the graph being recorded there;
/// hands it back when none is.
pub(crate) fn keep_host(stream: CUstream, data: Bytes) -> Option<Bytes> {
    RECORDING.with(|r| match r.borrow_mut().iter_mut().find(|k| k.stream == stream) {
        Some(kept) => {
            kept.host.push(data);
            None
        }
        None => Some(data),
    })
}

/// Takes the recording state of `stream` out of the thread's list.
fn take(stream: CUstream) -> Option<Kept> {
    RECORDING.with(|r| {
        let mut recording = r.borrow_mut();
        let at = recording.iter().position(|k| k.stream == stream)?;
        Some(recording.swap_remove(at))
    })
}

/// Starts recording `stream` (relaxed mode: other threads and streams go on as usual, and
/// other streams may record too).
pub fn begin(stream: CUstream) -> Result<(), String> {
    if RECORDING.with(|r| r.borrow().iter().any(|k| k.stream == stream)) {
        return Err("a recording is already under way on this stream".into());
    }
    // SAFETY: `stream` is a live stream of this server's context, made current by the task.
    let begun = unsafe {
        cuStreamBeginCapture_v2(stream, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
    };
    check(begun, "cuStreamBeginCapture")?;
    RECORDING.with(|r| {
        r.borrow_mut().push(Kept { stream, buffers: Vec::new(), host: Vec::new() })
    });
    Ok(())
}

/// Ends the recording of `stream` and instantiates its graph; returns the graph's id for
/// [`launch`] and [`release`], and how many buffers it keeps.
pub fn end(stream: CUstream) -> Result<(u64, usize), String> {
    let kept = take(stream);
    let mut graph: CUgraph = core::ptr::null_mut();
    // SAFETY: ends the capture `begin` started on `stream`; `graph` receives its graph.
    check(unsafe { cuStreamEndCapture(stream, &mut graph) }, "cuStreamEndCapture")?;
    let kept = kept.ok_or("no recording under way")?;
    let mut exec: CUgraphExec = core::ptr::null_mut();
    // SAFETY: `graph` is the complete graph just captured; it is no longer needed once
    // instantiated.
    let instantiated = unsafe {
        let result = cuGraphInstantiateWithFlags(&mut exec, graph, 0);
        cuGraphDestroy(graph);
        result
    };
    check(instantiated, "cuGraphInstantiate")?;
    let id = NEXT.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let buffers = kept.buffers.len();
    GRAPHS.with(|g| g.borrow_mut().insert(id, Recorded { exec, _kept: kept }));
    Ok((id, buffers))
}

/// Abandons a recording of `stream` that failed part way (nothing is kept).
pub fn abandon(stream: CUstream) {
    let mut graph: CUgraph = core::ptr::null_mut();
    // SAFETY: ends whatever capture is under way on `stream`; an invalidated one yields no graph.
    unsafe {
        cuStreamEndCapture(stream, &mut graph);
        if !graph.is_null() {
            cuGraphDestroy(graph);
        }
    }
    take(stream);
}

/// Queues graph `id` on `stream`.
pub fn launch(id: u64, stream: CUstream) -> Result<(), String> {
    GRAPHS.with(|g| match g.borrow().get(&id) {
        // SAFETY: `exec` is a live graph of this thread's context; every buffer it uses is kept.
        Some(recorded) => check(unsafe { cuGraphLaunch(recorded.exec, stream) }, "cuGraphLaunch"),
        None => Err(format!("no graph {id}")),
    })
}

/// Frees graph `id` once `stream` has done its queued work, and lets go of what it kept.
pub fn release(id: u64, stream: CUstream) {
    // SAFETY: `stream` is a live stream of this thread's context; waiting lets a queued launch
    // of the graph finish before its buffers can be reused.
    unsafe { cuStreamSynchronize(stream) };
    GRAPHS.with(|g| g.borrow_mut().remove(&id));
}
