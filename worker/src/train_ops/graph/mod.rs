//! A training step recorded once and replayed ([`GraphOps`]): on CUDA the work one thread
//! queues is captured as a CUDA graph, which the GPU then replays in one launch per step on the
//! same buffers, without the host recording ~200 operations again. The other backends record
//! nothing ([`GraphError::Unsupported`]) and the trainer steps as usual.

#[cfg(feature = "cuda")]
mod cuda;

use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::prelude::Backend;
use burn::tensor::TensorMetadata;
use burn::tensor::ops::{FloatTensor, IntTensor};

/// Why a step could not be recorded or replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("this backend does not record steps (CUDA with the direct part does)")]
    Unsupported,
    #[error("CUDA graph: {0}")]
    Cuda(String),
}

/// A recorded graph on a device: replayed by [`GraphOps::replay`], freed on drop (after the
/// work queued before).
pub struct StepGraph {
    id: u64,
    /// Buffers the graph keeps for its life (reads, writes and intermediates).
    pub buffers: usize,
    /// The first failure of a queued replay, reported by the next one.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // only CUDA records
    failed: Arc<Mutex<Option<String>>>,
    release: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl StepGraph {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // only CUDA records
    fn check(&self) -> Result<(), GraphError> {
        match self.failed.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(err)) => Err(GraphError::Cuda(err)),
            Err(_) => Err(GraphError::Cuda("a replay panicked".into())),
        }
    }
}

impl Drop for StepGraph {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(self.id);
        }
    }
}

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepGraph").field("id", &self.id).field("buffers", &self.buffers).finish()
    }
}

/// Recording and replaying the work the calling thread queues on a device; `anchor` is any
/// tensor on it. Every default answers [`GraphError::Unsupported`].
pub trait GraphOps: Backend {
    /// Starts recording: from here the thread's work is captured, not run.
    fn record_begin(anchor: &FloatTensor<Self>) -> Result<(), GraphError> {
        let _ = anchor;
        Err(GraphError::Unsupported)
    }

    /// Ends the recording begun by [`GraphOps::record_begin`]; its work has not run yet.
    fn record_end(anchor: &FloatTensor<Self>) -> Result<StepGraph, GraphError> {
        let _ = anchor;
        Err(GraphError::Unsupported)
    }

    /// Queues one run of `graph`; an error is one an earlier replay met.
    fn replay(graph: &StepGraph, anchor: &FloatTensor<Self>) -> Result<(), GraphError> {
        let _ = (graph, anchor);
        Err(GraphError::Unsupported)
    }

    /// A new contiguous buffer of `like`'s shape and dtype: a destination for
    /// [`GraphOps::copy_into`] (burn's `float_empty` may pad rows).
    fn float_buffer(like: &FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_empty(like.shape(), &Self::float_device(like), like.dtype().into())
    }

    /// [`GraphOps::float_buffer`] for an integer tensor.
    fn int_buffer(like: &IntTensor<Self>) -> IntTensor<Self> {
        Self::int_empty(like.shape(), &Self::int_device(like), like.dtype().into())
    }

    /// Queues a copy of each source into its destination's buffer (same shape and dtype;
    /// the destinations contiguous), whoever else holds the destination; a source that is its
    /// destination's buffer is left as it is.
    fn copy_into(
        floats: Vec<(FloatTensor<Self>, FloatTensor<Self>)>,
        ints: Vec<(IntTensor<Self>, IntTensor<Self>)>,
    ) -> Result<(), GraphError> {
        let _ = (floats, ints);
        Err(GraphError::Unsupported)
    }
}

impl GraphOps for burn::backend::Flex {}

impl<B: GraphOps, C: CheckpointStrategy> GraphOps for Autodiff<B, C> {}

#[cfg(feature = "cuda")]
impl GraphOps for burn_cuda::Cuda {}
