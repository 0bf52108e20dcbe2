//! A convolution's weight as the operands of its forward and input-gradient convolutions, in
//! one kernel.
//!
//! Through burn's ops every layer cast its f32 weight (and copied it channels-last for the
//! convolution) in the forward, and transposed, flipped, cast and copied it again in the
//! backward: five launches per layer where this is one. The element-per-thread kernel writes
//! the flipped operand a channel per sector (its threads run along the taps, the operand along
//! the output channels: 66 µs for the model's 9 layers on an H100); with the `wtile` part,
//! [`conv_operands_tiled_kernel`] reads a block of the weight into shared memory once and
//! writes both operands along their own rows.

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

/// Output and input channels of a [`conv_operands_tiled_kernel`] block.
const TILE_CHANNELS: usize = 32;

/// Shared-memory row of a block's output channel: its `TILE_CHANNELS` input channels' 9 taps,
/// and one float that spreads the next row's start over another bank (the flipped operand's
/// writes read a column across the rows).
const TILE_ROW: usize = TILE_CHANNELS * 9 + 1;

/// Threads of a [`conv_operands_tiled_kernel`] cube.
const TILE_THREADS: usize = 256;

/// Cube `(b_i, b_o)` takes the weight's output channels `o0 = 32·b_o` onwards and input
/// channels `i0 = 32·b_i` onwards (fewer at the edges): it copies `weight[o, i0.., ..]` (each
/// output channel's run of `32 × 9` contiguous floats) into shared memory, then writes
/// `operand[o, tap, i]` along `i` and `flipped[i, 8 − tap, o]` along `o`, cast to `O`: every
/// global access runs along a contiguous row.
#[cube(launch)]
fn conv_operands_tiled_kernel<W: Float, O: Float>(
    weight: &Tensor<W>,
    operand: &mut Tensor<O>,
    flipped: &mut Tensor<O>,
    #[define(W, O)] _dtypes: [StorageType; 2],
) {
    let c_out = weight.shape(0);
    let c_in = weight.shape(1);
    let o0 = CUBE_POS_Y as usize * TILE_CHANNELS;
    let i0 = CUBE_POS_X as usize * TILE_CHANNELS;
    let block = TILE_CHANNELS * TILE_CHANNELS * 9;
    let threads = CUBE_DIM as usize;
    let mut tile = SharedMemory::<W>::new(TILE_CHANNELS * TILE_ROW);
    let mut e = UNIT_POS as usize;
    while e < block {
        // Element `e` of the block in the weight's order: (o, i, tap).
        let (o_local, rest) = (e / (TILE_CHANNELS * 9), e % (TILE_CHANNELS * 9));
        let (o, i) = (o0 + o_local, i0 + rest / 9);
        if o < c_out && i < c_in {
            tile[o_local * TILE_ROW + rest] = weight[(o * c_in + i0) * 9 + rest];
        }
        e += threads;
    }
    sync_cube();
    e = UNIT_POS as usize;
    while e < block {
        // The operand's order (o, tap, i), then the flipped operand's (i, tap, o).
        let (row, rest) = (e / (TILE_CHANNELS * 9), e % (TILE_CHANNELS * 9));
        let (tap, column) = (rest / TILE_CHANNELS, rest % TILE_CHANNELS);
        let (o, i) = (o0 + row, i0 + column);
        if o < c_out && i < c_in {
            let value = O::cast_from(tile[row * TILE_ROW + column * 9 + tap]);
            operand[(o * 9 + tap) * c_in + i] = value;
        }
        let (i, o) = (i0 + row, o0 + column);
        if o < c_out && i < c_in {
            let value = O::cast_from(tile[column * TILE_ROW + row * 9 + tap]);
            flipped[(i * 9 + 8 - tap) * c_out + o] = value;
        }
        e += threads;
    }
}

/// `[operand, flipped]` of `weight` in `dtype` by [`conv_operands_tiled_kernel`] (`tiled`) or
/// [`conv_operands_kernel`].
fn launch<R: CubeRuntime>([weight]: [CubeTensor<R>; 1], dtype: DType, tiled: bool) -> [CubeTensor<R>; 2] {
    let weight = into_contiguous(weight);
    let [c_out, c_in, kh, kw] = weight.meta.shape().dims::<4>();
    assert_eq!((kh, kw), (3, 3), "conv_operands takes 3×3 kernels");
    let (client, device) = (weight.client.clone(), weight.device.clone());
    let nhwc = |rows: usize, columns: usize| {
        let shape = Shape::new([rows, 3, 3, columns]);
        empty_device_contiguous_dtype(client.clone(), device.clone(), shape, dtype)
    };
    let (operand, flipped) = (nhwc(c_out, c_in), nhwc(c_in, c_out));
    let dtypes = [weight.dtype.into(), dtype.into()];
    let (cube_dim, cube_count) = if tiled {
        let blocks = |channels: usize| channels.div_ceil(TILE_CHANNELS) as u32;
        (CubeDim::new_1d(TILE_THREADS as u32), CubeCount::Static(blocks(c_in), blocks(c_out), 1))
    } else {
        let threads = weight.meta.shape().num_elements();
        let cube_dim = CubeDim::new(&client, threads);
        (cube_dim, calculate_cube_count_elemwise(&client, threads, cube_dim))
    };
    let kernel = match tiled {
        true => conv_operands_tiled_kernel::launch::<R>,
        false => conv_operands_kernel::launch::<R>,
    };
    kernel(
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
/// convolutions read them without a copy), through shared-memory blocks when `tiled`.
pub fn conv_operands<T: KernelTensor>(weight: T, dtype: DType, tiled: bool) -> [T; 2] {
    let [c_out, c_in, kh, kw] = weight.shape().dims::<4>();
    let outputs = [(Shape::new([c_out, c_in, kh, kw]), dtype), (Shape::new([c_in, c_out, kh, kw]), dtype)];
    let launch = Box::new(move |t| launch(t, dtype, tiled));
    custom_op_many::<T, 1, 2>("conv_operands", [weight], outputs, launch)
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::{Distribution, FloatDType};

    use crate::train_ops::{ConvOps, conv, unwrap, wrap};

    /// Both kernels' operands against burn's cast, transpose and flip, in f32 (exact) and bf16,
    /// at odd shapes (the image's 3 channels; blocks cut at the edges) and a layer's: `cargo
    /// test -p worker -- --ignored cuda`.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_conv_operands_match_burns_ops() {
        type G = burn_cuda::Cuda;
        let device = Default::default();
        let cases = [[5, 3], [64, 3], [128, 64], [70, 33], [256, 256]];
        for ([c_out, c_in], tiled) in cases.into_iter().flat_map(|shape| [(shape, false), (shape, true)]) {
            let weight = Tensor::<G, 4>::random([c_out, c_in, 3, 3], Distribution::Normal(0.0, 1.0), &device);
            for dtype in [FloatDType::F32, FloatDType::BF16] {
                let kernel = G::conv_operands(unwrap(weight.clone()), dtype, tiled);
                let by_ops = conv::reference::operands_by_ops::<G>(unwrap(weight.clone()), dtype);
                for (name, (k, r)) in ["operand", "flipped"].iter().zip(kernel.into_iter().zip(by_ops)) {
                    let (k, r) = (wrap::<G, 4>(k), wrap::<G, 4>(r));
                    assert_eq!(k.dims(), r.dims(), "{name}: shape");
                    assert_eq!(k.dtype(), dtype.into(), "{name}: dtype");
                    let err: f32 =
                        (k.cast(FloatDType::F32) - r.cast(FloatDType::F32)).abs().max().into_scalar();
                    assert_eq!(
                        err, 0.0,
                        "{name} [{c_out}, {c_in}] {dtype:?} tiled {tiled}: differs by {err}"
                    );
                }
            }
        }
    }
}
