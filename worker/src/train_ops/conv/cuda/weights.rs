//! A convolution's weight as the operands of its forward and input-gradient convolutions, in
//! one kernel.
//!
//! Through burn's ops every layer cast its f32 weight (and copied it channels-last for the
//! convolution) in the forward, and transposed, flipped, cast and copied it again in the
//! backward: five launches per layer where this is one.

use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute_nhwc_to_nchw;
use burn_cubecl::tensor::CubeTensor;
use cubecl::{calculate_cube_count_elemwise, prelude::*};

use crate::train_ops::cube::{KernelTensor, custom_op_many};

/// One thread per element `weight[o, i, kh, kw]` (contiguous `[C_out, C_in, 3, 3]`): writes it
/// to `operand[o, kh, kw, i]` and to `flipped[i, 2 − kh, 2 − kw, o]` (both contiguous,
/// channels-last), cast to `O`.
#[cube(launch)]
fn conv_operands_kernel<W: Float, O: Float>(
    weight: &Tensor<W>,
    operand: &mut Tensor<O>,
    flipped: &mut Tensor<O>,
    #[define(W, O)] _dtypes: [StorageType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= weight.len() {
        terminate!();
    }
    let c_out = weight.shape(0);
    let c_in = weight.shape(1);
    let tap = pos % 9;
    let i = (pos / 9) % c_in;
    let o = pos / (9 * c_in);
    let value = O::cast_from(weight[pos]);
    operand[(o * 9 + tap) * c_in + i] = value;
    flipped[(i * 9 + 8 - tap) * c_out + o] = value;
}

fn launch<R: CubeRuntime>([weight]: [CubeTensor<R>; 1], dtype: DType) -> [CubeTensor<R>; 2] {
    let weight = into_contiguous(weight);
    let [c_out, c_in, kh, kw] = weight.meta.shape().dims::<4>();
    assert_eq!((kh, kw), (3, 3), "conv_operands takes 3×3 kernels");
    let (client, device) = (weight.client.clone(), weight.device.clone());
    let nhwc = |rows: usize, columns: usize| {
        let shape = Shape::new([rows, 3, 3, columns]);
        empty_device_contiguous_dtype(client.clone(), device.clone(), shape, dtype)
    };
    let (operand, flipped) = (nhwc(c_out, c_in), nhwc(c_in, c_out));
    let threads = weight.meta.shape().num_elements();
    let cube_dim = CubeDim::new(&client, threads);
    let cube_count = calculate_cube_count_elemwise(&client, threads, cube_dim);
    let dtypes = [weight.dtype.into(), dtype.into()];
    conv_operands_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        weight.into_tensor_arg(),
        operand.clone().into_tensor_arg(),
        flipped.clone().into_tensor_arg(),
        dtypes,
    );
    [operand, flipped].map(permute_nhwc_to_nchw)
}

/// [`crate::train_ops::ConvOps::conv_operands`] on burn's CubeCL backends: both operands
/// in `dtype`, written channels-last (`[N, H, W, C]` memory viewed as `[N, C, H, W]`, as the
/// convolutions read them without a copy).
pub fn conv_operands<T: KernelTensor>(weight: T, dtype: DType) -> [T; 2] {
    let [c_out, c_in, kh, kw] = weight.shape().dims::<4>();
    let outputs = [(Shape::new([c_out, c_in, kh, kw]), dtype), (Shape::new([c_in, c_out, kh, kw]), dtype)];
    custom_op_many::<T, 1, 2>("conv_operands", [weight], outputs, Box::new(move |t| launch(t, dtype)))
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::{Distribution, FloatDType};

    use crate::train_ops::{ConvOps, conv, unwrap, wrap};

    /// The kernel's operands against burn's cast, transpose and flip, in f32 (exact) and bf16,
    /// at an odd shape and a layer's: `cargo test -p worker -- --ignored cuda`.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_conv_operands_match_burns_ops() {
        type G = burn_cuda::Cuda;
        let device = Default::default();
        for [c_out, c_in] in [[5, 3], [128, 64]] {
            let weight = crate::model::drawn(|| {
                Tensor::<G, 4>::random([c_out, c_in, 3, 3], Distribution::Normal(0.0, 1.0), &device)
            });
            for dtype in [FloatDType::F32, FloatDType::BF16] {
                let kernel = G::conv_operands(unwrap(weight.clone()), dtype);
                let by_ops = conv::reference::operands_by_ops::<G>(unwrap(weight.clone()), dtype);
                for (name, (k, r)) in ["operand", "flipped"].iter().zip(kernel.into_iter().zip(by_ops)) {
                    let (k, r) = (wrap::<G, 4>(k), wrap::<G, 4>(r));
                    assert_eq!(k.dims(), r.dims(), "{name}: shape");
                    assert_eq!(k.dtype(), dtype.into(), "{name}: dtype");
                    let err: f32 =
                        (k.cast(FloatDType::F32) - r.cast(FloatDType::F32)).abs().max().into_scalar();
                    assert_eq!(err, 0.0, "{name} [{c_out}, {c_in}] {dtype:?}: differs by {err}");
                }
            }
        }
    }
}
