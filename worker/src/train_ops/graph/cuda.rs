//! [`GraphOps`] on burn's CUDA backend without its fusion stream: every request is a task of
//! CubeCL's server (`ComputeClient::with_resources`), run in order with the kernels on the
//! stream it issues the calling thread's work to; the capture itself is
//! `vendor/cubecl-cuda`'s `capture` module.

// Device-to-device copies are driver calls on raw pointers that CubeCL hands out.
#![allow(unsafe_code)]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use burn::tensor::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cuda::{CudaRuntime, capture};
use cudarc::driver::sys::{CUresult, CUstream, cuMemcpyDtoDAsync_v2};

use super::{GraphError, GraphOps, StepGraph};
use crate::train_ops::CudaDirect;
use crate::train_ops::cube::with_stream;

type Tensor = CubeTensor<CudaRuntime>;

/// Runs `task` on the server with the stream and device pointers of `tensors` (the first names
/// the device); the answer comes back through the returned channel once it has run.
fn on_stream<T: Send + 'static>(
    tensors: &[&Tensor],
    task: impl FnOnce(CUstream, Vec<u64>) -> Result<T, String> + Send + 'static,
) -> mpsc::Receiver<Result<T, String>> {
    let (sender, receiver) = mpsc::channel();
    with_stream(tensors, move |queued| {
        let _ = sender.send(queued.and_then(|(stream, pointers)| task(stream, pointers)));
    });
    receiver
}

fn wait<T>(receiver: mpsc::Receiver<Result<T, String>>) -> Result<T, GraphError> {
    receiver
        .recv()
        .map_err(|_| GraphError::Cuda("the device's server dropped a task".into()))?
        .map_err(GraphError::Cuda)
}

/// Bytes of a contiguous tensor.
fn bytes(t: &Tensor) -> usize {
    t.shape().num_elements() * t.dtype.size()
}

fn copy_pairs(pairs: Vec<(Tensor, Tensor)>) -> Result<(), GraphError> {
    if pairs.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(Tensor, Tensor)> =
        pairs.into_iter().map(|(src, dst)| (into_contiguous(src), dst)).collect();
    let mut sizes = Vec::with_capacity(pairs.len());
    for (src, dst) in &pairs {
        if src.shape() != dst.shape()
            || src.dtype != dst.dtype
            || !src.is_contiguous()
            || !dst.is_contiguous()
        {
            return Err(GraphError::Cuda(format!(
                "copy of {:?} {:?} into {:?} {:?}: shapes, dtypes or layouts differ",
                src.shape(),
                src.dtype,
                dst.shape(),
                dst.dtype
            )));
        }
        sizes.push(bytes(src));
    }
    let tensors: Vec<&Tensor> = pairs.iter().flat_map(|(s, d)| [s, d]).collect();
    // Not waited for: the copies are queued like kernels; a failure surfaces as the step's.
    let _ = on_stream(&tensors, move |stream, pointers| {
        // A destination that is its source's buffer already holds it (memcpy ranges must not overlap).
        for (pair, size) in pointers.chunks_exact(2).zip(sizes).filter(|(pair, _)| pair[0] != pair[1]) {
            // SAFETY: both pointers are live device buffers of at least `size` bytes (same
            // shape and dtype, contiguous), kept by the task's handles until it has run.
            let result = unsafe { cuMemcpyDtoDAsync_v2(pair[1], pair[0], size, stream) };
            if result != CUresult::CUDA_SUCCESS {
                tracing::error!(?result, "device copy failed");
                return Err(format!("cuMemcpyDtoDAsync: {result:?}"));
            }
        }
        Ok(())
    });
    Ok(())
}

impl GraphOps for CudaDirect {
    fn record_begin(anchor: &Tensor) -> Result<(), GraphError> {
        wait(on_stream(&[anchor], |stream, _| capture::begin(stream)))
    }

    fn record_end(anchor: &Tensor) -> Result<StepGraph, GraphError> {
        let (id, buffers) = wait(on_stream(&[anchor], |stream, _| {
            capture::end(stream).inspect_err(|_| capture::abandon(stream))
        }))?;
        let anchor = anchor.clone();
        let release = move |id| {
            let _ = on_stream(&[&anchor], move |stream, _| {
                capture::release(id, stream);
                Ok(())
            });
        };
        Ok(StepGraph { id, buffers, failed: Arc::new(Mutex::new(None)), release: Some(Box::new(release)) })
    }

    fn replay(graph: &StepGraph, anchor: &Tensor) -> Result<(), GraphError> {
        graph.check()?;
        let (id, failed) = (graph.id, graph.failed.clone());
        let _ = on_stream(&[anchor], move |stream, _| {
            let launched = capture::launch(id, stream);
            if let Err(err) = &launched
                && let Ok(mut failed) = failed.lock()
            {
                failed.get_or_insert_with(|| err.clone());
            }
            launched
        });
        Ok(())
    }

    fn float_buffer(like: &Tensor) -> Tensor {
        let (client, device) = (like.client.clone(), like.device.clone());
        empty_device_contiguous_dtype(client, device, like.shape(), like.dtype)
    }

    fn int_buffer(like: &Tensor) -> Tensor {
        Self::float_buffer(like)
    }

    fn copy_into(floats: Vec<(Tensor, Tensor)>, ints: Vec<(Tensor, Tensor)>) -> Result<(), GraphError> {
        copy_pairs(floats.into_iter().chain(ints).collect())
    }
}
