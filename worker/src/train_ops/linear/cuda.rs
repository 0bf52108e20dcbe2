//! [`super::LinearOps::small_matmul`] on burn's CUDA backends: cubek's naive matmul (one output
//! element a thread), launched directly instead of through burn's autotuned matmul, so the
//! head's shapes compile one kernel each instead of tuning ~25 candidates.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::StorageType;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::{Strategy, launch_ref};
use cubek::std::InputBinding;

use crate::train_ops::cube::{KernelTensor, custom_op_many};

fn launch<R: CubeRuntime>([lhs, rhs]: [CubeTensor<R>; 2]) -> [CubeTensor<R>; 1] {
    let (client, device) = (lhs.client.clone(), lhs.device.clone());
    let shape = Shape::new([lhs.meta.shape()[0], rhs.meta.shape()[1]]);
    let out = empty_device_contiguous_dtype(client.clone(), device, shape, DType::F32);
    let f32_elem: StorageType = DType::F32.into();
    let mut dtypes =
        MatmulElems::from_globals(&MatmulGlobalElems { lhs: f32_elem, rhs: f32_elem, out: f32_elem });
    let (lhs, rhs) = (InputBinding::new(lhs.binding(), f32_elem), InputBinding::new(rhs.binding(), f32_elem));
    // Naive takes any f32 layout (it copies what it cannot read in place): burn's fallback too.
    launch_ref(&Strategy::Naive, &client, lhs, rhs, out.clone().binding(), &mut dtypes)
        .unwrap_or_else(|err| panic!("the naive matmul refused the head's shapes: {err:?}"));
    [out]
}

/// `lhs · rhs` of f32 `[M, K]` and `[K, N]` as one naive-matmul kernel.
pub fn small_matmul<T: KernelTensor>(lhs: T, rhs: T) -> T {
    let shape = Shape::new([lhs.shape()[0], rhs.shape()[1]]);
    let [out] =
        custom_op_many::<T, 2, 1>("small_matmul", [lhs, rhs], [(shape, DType::F32)], Box::new(launch));
    out
}

/// The hook on both CUDA backends, with and without burn's fusion stream.
macro_rules! linear_ops {
    ($backend:ty) => {
        impl super::LinearOps for $backend {
            fn small_matmul(
                lhs: burn::tensor::ops::FloatTensor<Self>,
                rhs: burn::tensor::ops::FloatTensor<Self>,
            ) -> burn::tensor::ops::FloatTensor<Self> {
                small_matmul(lhs, rhs)
            }
        }
    };
}

linear_ops!(burn_cuda::Cuda);
linear_ops!(crate::train_ops::cube::CudaDirect);
