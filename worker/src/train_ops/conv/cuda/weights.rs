//! A convolution's weight (or `G` fused models' side by side) as the operands of its forward
//! and input-gradient convolutions, in one kernel; a model's layers' weights in one launch.
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
use cubecl::prelude::*;

use crate::train_ops::cube::{KernelTensor, LaunchMany, LaunchVec, custom_op_many, custom_op_vec};

/// Output and input channels of the tile of a weight a cube transposes through shared memory.
const TILE: usize = 16;

/// A [`channel_tiles_kernel`] tile row in shared memory: its `TILE` input channels' nine taps,
/// and one more element so that consecutive rows start in different banks.
const ROW: usize = TILE * 9 + 1;

/// Fused models' weights (`G > 1`): model `g`'s weight `[C_out, C_in, 3, 3]` (of the contiguous
/// `[G·C_out, …]`), cast to `O`, on a `(⌈C_in / TILE⌉, ⌈C_out / TILE⌉, G)` grid of `TILE²`
/// threads: a cube stages the `TILE × TILE` channels' taps (each output channel's `9 · TILE`
/// contiguous values, coalesced) in shared memory, then writes `operand[g, o, tap, i]` with
/// consecutive threads on consecutive `i`, and `flipped[g, i, 8 − tap, o]` with consecutive
/// threads on consecutive `o`. A single model's weight is too small for its few cubes: there
/// [`matrix_tiles_kernel`] took 51.7 µs a step on an H100, this kernel 68.7 µs.
#[cube(launch)]
fn channel_tiles_kernel<W: Float, O: Float>(
    weight: &Tensor<W>,
    operand: &mut Tensor<O>,
    flipped: &mut Tensor<O>,
    #[define(W, O)] _dtypes: [StorageType; 2],
) {
    let (c_out, c_in) = (weight.shape(0) / CUBE_COUNT_Z as usize, weight.shape(1));
    let g = CUBE_POS_Z as usize;
    let (i0, o0) = (CUBE_POS_X as usize * TILE, CUBE_POS_Y as usize * TILE);
    let threads = (CUBE_DIM_X * CUBE_DIM_Y) as usize;
    let mut tile = SharedMemory::<O>::new(TILE * ROW);
    // The tile's element `idx`: output channel `idx / (9 · TILE)`, then input channel and tap as
    // the weight lays them out (`9 · i + tap`).
    for u in 0..9 {
        let idx = u * threads + UNIT_POS as usize;
        let (o, r) = (idx / (9 * TILE), idx % (9 * TILE));
        if o0 + o < c_out && i0 + r / 9 < c_in {
            tile[o * ROW + r] = O::cast_from(weight[((g * c_out + o0 + o) * c_in + i0) * 9 + r]);
        }
    }
    sync_cube();
    // `operand[g, o, tap, i]`: `TILE` consecutive input channels a (channel, tap) pair.
    for u in 0..9 {
        let idx = u * threads + UNIT_POS as usize;
        let (o, tap, i) = (idx / (9 * TILE), (idx / TILE) % 9, idx % TILE);
        if o0 + o < c_out && i0 + i < c_in {
            operand[((g * c_out + o0 + o) * 9 + tap) * c_in + i0 + i] = tile[o * ROW + i * 9 + tap];
        }
    }
    // `flipped[g, i, 8 − tap, o]`: `TILE` consecutive output channels a (channel, tap) pair.
    for u in 0..9 {
        let idx = u * threads + UNIT_POS as usize;
        let (i, tap, o) = (idx / (9 * TILE), (idx / TILE) % 9, idx % TILE);
        if o0 + o < c_out && i0 + i < c_in {
            flipped[((g * c_in + i0 + i) * 9 + 8 - tap) * c_out + o0 + o] = tile[o * ROW + i * 9 + tap];
        }
    }
}

/// A single model's weight (`G = 1`, or model `g`'s of the contiguous `[G·C_out, …]`) as a
/// matrix `w[o, k]`, `k = 9i + tap`, on a `(⌈9 C_in / TILE⌉, ⌈C_out / TILE⌉, G)` grid of `(TILE,
/// TILE)` cubes, cast to `O`: [`matrix_tile`] of the cube's tile.
#[cube(launch)]
fn matrix_tiles_kernel<W: Float, O: Float>(
    weight: &Tensor<W>,
    operand: &mut Tensor<O>,
    flipped: &mut Tensor<O>,
    #[define(W, O)] _dtypes: [StorageType; 2],
) {
    let c_out = weight.shape(0) / CUBE_COUNT_Z as usize;
    let mut tile = SharedMemory::<O>::new(TILE * (TILE + 1));
    let (k0, o0) = (CUBE_POS_X as usize * TILE, CUBE_POS_Y as usize * TILE);
    matrix_tile(weight, operand, flipped, &mut tile, c_out, CUBE_POS_Z as usize, k0, o0);
}

/// Several single models' weights (a model's layers), each as [`matrix_tiles_kernel`] has it, in
/// one launch: the cubes of a one-dimensional grid take weight 0's tiles (row-major), then
/// weight 1's, and so on. Nine layers' launches took 52 µs of a step on an H100, mostly
/// latency: each layer's weight fills only a few cubes.
#[cube(launch)]
fn matrix_tiles_many_kernel<W: Float, O: Float>(
    weights: &Sequence<Tensor<W>>,
    operands: &mut Sequence<Tensor<O>>,
    flipped: &mut Sequence<Tensor<O>>,
    #[define(W, O)] _dtypes: [StorageType; 2],
) {
    let count = comptime![weights.len()];
    let cube = CUBE_POS_X as usize;
    let mut tile = SharedMemory::<O>::new(TILE * (TILE + 1));
    let mut first = 0usize;
    #[unroll]
    for i in 0..count {
        let weight = weights.index(i);
        let c_out = weight.shape(0);
        let across = (weight.shape(1) * 9).div_ceil(TILE);
        let tiles = across * c_out.div_ceil(TILE);
        // The condition is the cube's own: its threads all take the branch, barrier included.
        if cube >= first && cube < first + tiles {
            let t = cube - first;
            let (k0, o0) = ((t % across) * TILE, (t / across) * TILE);
            matrix_tile(weight, operands.index_mut(i), flipped.index_mut(i), &mut tile, c_out, 0, k0, o0);
        }
        first += tiles;
    }
}

/// The tile of rows `o0 ..` and columns `k0 ..` (`TILE` each) of model `g`'s weight matrix
/// `w[o, k]` (`c_out` rows a model): thread `(x, y)` reads `w[o0 + y, k0 + x]` (coalesced) and
/// writes it to `operand[g, o, tap, i]`; then, through the tile in shared memory, it writes the
/// tile's column `y`, row `x` to `flipped[g, i, 8 − tap, o]`, so consecutive threads write
/// consecutive `o`. `tile`: `TILE × (TILE + 1)`, one column more than the tile's, so that a
/// column's reads fall in different banks.
#[cube]
#[allow(clippy::too_many_arguments)]
fn matrix_tile<W: Float, O: Float>(
    weight: &Tensor<W>,
    operand: &mut Tensor<O>,
    flipped: &mut Tensor<O>,
    tile: &mut SharedMemory<O>,
    c_out: usize,
    g: usize,
    k0: usize,
    o0: usize,
) {
    let c_in = weight.shape(1);
    let columns = c_in * 9;
    let (x, y) = (UNIT_POS_X as usize, UNIT_POS_Y as usize);
    let (o, k) = (o0 + y, k0 + x);
    if o < c_out && k < columns {
        let value = O::cast_from(weight[(g * c_out + o) * columns + k]);
        tile[y * (TILE + 1) + x] = value;
        operand[((g * c_out + o) * 9 + k % 9) * c_in + k / 9] = value;
    }
    sync_cube();
    let (o, k) = (o0 + x, k0 + y);
    if o < c_out && k < columns {
        flipped[((g * c_in + k / 9) * 9 + 8 - k % 9) * c_out + o] = tile[x * (TILE + 1) + y];
    }
}

fn launch<R: CubeRuntime>([weight]: [CubeTensor<R>; 1], groups: usize, dtype: DType) -> [CubeTensor<R>; 2] {
    let weight = into_contiguous(weight);
    let [rows, c_in, kh, kw] = weight.meta.shape().dims::<4>();
    let c_out = rows / groups;
    assert_eq!((kh, kw), (3, 3), "conv_operands takes 3×3 kernels");
    let (client, device) = (weight.client.clone(), weight.device.clone());
    let nhwc = |rows: usize, columns: usize| {
        let shape = Shape::new([rows, 3, 3, columns]);
        empty_device_contiguous_dtype(client.clone(), device.clone(), shape, dtype)
    };
    let (operand, flipped) = (nhwc(groups * c_out, c_in), nhwc(groups * c_in, c_out));
    let dtypes = [weight.dtype.into(), dtype.into()];
    let (weight, outputs) =
        (weight.into_tensor_arg(), [&operand, &flipped].map(|t| t.clone().into_tensor_arg()));
    let [operand_arg, flipped_arg] = outputs;
    let threads = CubeDim::new_2d(TILE as u32, TILE as u32);
    let cubes = |columns: usize| {
        let tiles = [columns.div_ceil(TILE), c_out.div_ceil(TILE)].map(|t| t as u32);
        CubeCount::Static(tiles[0], tiles[1], groups as u32)
    };
    match groups {
        1 => matrix_tiles_kernel::launch::<R>(
            &client,
            cubes(9 * c_in),
            threads,
            weight,
            operand_arg,
            flipped_arg,
            dtypes,
        ),
        _ => channel_tiles_kernel::launch::<R>(
            &client,
            cubes(c_in),
            threads,
            weight,
            operand_arg,
            flipped_arg,
            dtypes,
        ),
    }
    [operand, flipped].map(permute_nhwc_to_nchw)
}

/// [`matrix_tiles_many_kernel`] on `weights` (`[C_out, C_in, 3, 3]` each, one dtype): each
/// weight's `[operand, flipped]` in `dtype`, channels-last, in turn.
fn launch_many<R: CubeRuntime>(weights: Vec<CubeTensor<R>>, dtype: DType) -> Vec<CubeTensor<R>> {
    let (client, device) = (weights[0].client.clone(), weights[0].device.clone());
    let weight_dtype = weights[0].dtype;
    let dtypes = [weight_dtype.into(), dtype.into()];
    let nhwc = |rows: usize, columns: usize| {
        let shape = Shape::new([rows, 3, 3, columns]);
        empty_device_contiguous_dtype(client.clone(), device.clone(), shape, dtype)
    };
    let (mut weight_args, mut operand_args, mut flipped_args) =
        (SequenceArg::new(), SequenceArg::new(), SequenceArg::new());
    let mut outputs = Vec::with_capacity(2 * weights.len());
    let mut cubes = 0;
    for weight in weights.into_iter().map(into_contiguous) {
        let [c_out, c_in, kh, kw] = weight.meta.shape().dims::<4>();
        assert_eq!((kh, kw), (3, 3), "conv_operands_many takes 3×3 kernels");
        assert_eq!(weight.dtype, weight_dtype, "conv_operands_many takes weights of one dtype");
        cubes += (9 * c_in).div_ceil(TILE) * c_out.div_ceil(TILE);
        let (operand, flipped) = (nhwc(c_out, c_in), nhwc(c_in, c_out));
        weight_args.push(weight.into_tensor_arg());
        operand_args.push(operand.clone().into_tensor_arg());
        flipped_args.push(flipped.clone().into_tensor_arg());
        outputs.extend([operand, flipped].map(permute_nhwc_to_nchw));
    }
    matrix_tiles_many_kernel::launch::<R>(
        &client,
        CubeCount::Static(cubes as u32, 1, 1),
        CubeDim::new_2d(TILE as u32, TILE as u32),
        weight_args,
        operand_args,
        flipped_args,
        dtypes,
    );
    outputs
}

/// [`crate::train_ops::ConvOps::conv_operands_many`] on burn's CubeCL backends: every
/// single model's weight's [`conv_operands`] in one launch.
pub fn conv_operands_many<T: KernelTensor>(weights: Vec<T>, dtype: DType) -> Vec<[T; 2]> {
    if weights.is_empty() {
        return Vec::new();
    }
    let outputs = weights
        .iter()
        .flat_map(|weight| {
            let [c_out, c_in, kh, kw] = weight.shape().dims::<4>();
            [(Shape::new([c_out, c_in, kh, kw]), dtype), (Shape::new([c_in, c_out, kh, kw]), dtype)]
        })
        .collect();
    let launch: LaunchVec<T::Runtime> = Box::new(move |t| launch_many(t, dtype));
    let mut outputs = custom_op_vec::<T>("conv_operands_many", weights, outputs, launch).into_iter();
    std::iter::from_fn(|| Some([outputs.next()?, outputs.next()?])).collect()
}

/// [`crate::train_ops::ConvOps::conv_operands`] on burn's CubeCL backends: both operands
/// in `dtype`, written channels-last (`[N, H, W, C]` memory viewed as `[N, C, H, W]`, as the
/// convolutions read them without a copy).
pub fn conv_operands<T: KernelTensor>(weight: T, groups: usize, dtype: DType) -> [T; 2] {
    let [rows, c_in, kh, kw] = weight.shape().dims::<4>();
    let c_out = rows / groups;
    let outputs =
        [(Shape::new([rows, c_in, kh, kw]), dtype), (Shape::new([groups * c_in, c_out, kh, kw]), dtype)];
    let launch: LaunchMany<T::Runtime, 1, 2> = Box::new(move |t| launch(t, groups, dtype));
    custom_op_many::<T, 1, 2>("conv_operands", [weight], outputs, launch)
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::ops::FloatTensor;
    use burn::tensor::{Distribution, FloatDType};

    use crate::train_ops::{ConvOps, conv, unwrap, wrap};

    type G = burn_cuda::Cuda;

    /// `[operand, flipped]` pairs of the same weight, `got` and `want`: equal, in `dtype`.
    fn assert_equal(got: [FloatTensor<G>; 2], want: [FloatTensor<G>; 2], dtype: FloatDType, case: &str) {
        for (name, (g, w)) in ["operand", "flipped"].iter().zip(got.into_iter().zip(want)) {
            let (g, w) = (wrap::<G, 4>(g), wrap::<G, 4>(w));
            assert_eq!(g.dims(), w.dims(), "{name} {case}: shape");
            assert_eq!(g.dtype(), dtype.into(), "{name} {case}: dtype");
            let err: f32 = (g.cast(FloatDType::F32) - w.cast(FloatDType::F32)).abs().max().into_scalar();
            assert_eq!(err, 0.0, "{name} {case} {dtype:?}: differs by {err}");
        }
    }

    /// The kernel's operands against burn's cast, transpose and flip, in f32 (exact) and bf16,
    /// at odd shapes (one tile; tiles cut at both edges), a layer's, and three models' side by
    /// side: `cargo test -p worker -- --ignored cuda`.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_conv_operands_match_burns_ops() {
        let device = Default::default();
        for [groups, c_out, c_in] in [[1, 5, 3], [1, 37, 21], [1, 128, 64], [3, 24, 40]] {
            let weight = crate::model::drawn(|| {
                Tensor::<G, 4>::random([groups * c_out, c_in, 3, 3], Distribution::Normal(0.0, 1.0), &device)
            });
            for dtype in [FloatDType::F32, FloatDType::BF16] {
                let kernel = G::conv_operands(unwrap(weight.clone()), groups, dtype);
                let by_ops = conv::reference::operands_by_ops::<G>(unwrap(weight.clone()), groups, dtype);
                assert_equal(kernel, by_ops, dtype, &format!("{groups} × [{c_out}, {c_in}]"));
            }
        }
    }

    /// The model's nine layers' operands and odd shapes (tiles cut at both edges) in one launch
    /// against the kernel a layer at a time, in f32 and bf16: equal.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_conv_operands_many_match_one_layer_at_a_time() {
        let device = Default::default();
        let mut shapes = vec![[64, 3], [64, 64], [64, 64], [128, 64], [128, 128], [128, 128], [256, 128]];
        shapes.extend([[256, 256], [256, 256], [5, 3], [37, 21]]);
        let weights: Vec<Tensor<G, 4>> = crate::model::drawn(|| {
            shapes
                .iter()
                .map(|&[c_out, c_in]| {
                    Tensor::random([c_out, c_in, 3, 3], Distribution::Normal(0.0, 1.0), &device)
                })
                .collect()
        });
        for dtype in [FloatDType::F32, FloatDType::BF16] {
            let many = G::conv_operands_many(weights.iter().map(|w| unwrap(w.clone())).collect(), dtype);
            assert_eq!(many.len(), weights.len(), "a pair a weight");
            for ((weight, pair), shape) in weights.iter().zip(many).zip(&shapes) {
                let one = G::conv_operands(unwrap(weight.clone()), 1, dtype);
                assert_equal(pair, one, dtype, &format!("{shape:?}"));
            }
        }
    }
}
