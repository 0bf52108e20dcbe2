//! 3×3 "same" convolutions without bias on cubek's implicit-GEMM kernels, with tilings chosen
//! here for the model's shapes.
//!
//! burn 0.21 autotunes among cubek's *simple* kernels with the tiling cubek infers: for the
//! model's layers one plane computes 16 × 128 outputs with a 32-deep stage (a 64-channel output
//! masks half of it), and the bf16 kernels ran at 64–111 TFLOPS on an H100 (64 → 64 channels at
//! 32×32: 0.55 ms, no faster than TF32). [`Recipe`]s name a loader algorithm and a tiling (rows
//! and columns of mma tiles per plane, planes per cube, k-depth of a stage); [`conv3x3`] runs
//! the fastest of [`RECIPES`] for each shape, found by cubecl's autotuner (results cached on
//! disk next to burn's). Measured on an H100 (µs per launch, batch 512): 64 → 64 at 32×32
//! 548 → 188, 128 → 128 at 16×16 305 → 179, 256 → 256 at 8×8 289 → 173, and 1.6–2.3× on the
//! other layers; outputs equal to burn's.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::{permute_nchw_to_nhwc, permute_nhwc_to_nchw};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeRuntime, CubeTuneId};
use cubecl::tune::{AutotuneKey, LocalTuner, Tunable, TunableSet, local_tuner};
use cubek::convolution::components::Dimensionality;
use cubek::convolution::definition::{ConvBlueprint, ForwardBlueprint};
use cubek::convolution::{
    AcceleratedTileKind, ConvAlgorithm, ConvolutionArgs, ConvolutionInputs, Strategy, launch_ref,
};
use cubek::matmul::components::global::{InputLoadFlow, LoadFlows};
use cubek::matmul::components::stage::PartitionBuffering;
use cubek::matmul::components::tile::TileMatmulKind;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems, TilingBlueprint, TilingScheme};
use cubek::matmul::routines::select_swizzle;
use cubek::std::cube_count::{CubeCountStrategy, GlobalOrder, HypercubeBlueprint, SmAllocation};
use cubek::std::{InputBinding, MatrixLayout, PartitionSize, StageSize, SwizzleModes, TileSize};

use crate::train_ops::cube::{KernelTensor, custom_op};

/// A tiling of the implicit GEMM `[N·H·W, 9·C_in] × [9·C_in, C_out]` in mma tiles of 16×8×16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Tile rows each plane (warp) computes.
    pub rows: u32,
    /// Tile columns each plane computes, at most (fewer when `C_out` is narrower).
    pub cols: u32,
    /// Tiles along k per stage (stage depth `16·k_tiles`).
    pub k_tiles: u32,
    /// Planes per cube, stacked along the rows.
    pub planes: u32,
    /// Double-buffered partitions (the next tiles load while the current ones multiply).
    pub double_buffered: bool,
}

/// A convolution kernel: cubek's loader algorithm with its own inferred tiling, or a [`Tiling`]
/// of ours (mma tiles, bf16/f16 operands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    Inferred(ConvAlgorithm, AcceleratedTileKind),
    Tiled(ConvAlgorithm, Tiling),
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipe::Inferred(algorithm, kind) => write!(f, "{algorithm}_{kind}"),
            Recipe::Tiled(algorithm, t) => write!(
                f,
                "{algorithm}_{}x{}x{}_p{}{}",
                t.rows,
                t.cols,
                t.k_tiles,
                t.planes,
                if t.double_buffered { "_db" } else { "" }
            ),
        }
    }
}

/// The shape of one convolution: `x: [batch, c_in, height, width]` → `[batch, c_out, …]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
struct ConvKey {
    batch: usize,
    c_in: usize,
    c_out: usize,
    height: usize,
    width: usize,
    bf16: bool,
}

impl AutotuneKey for ConvKey {}

impl fmt::Display for ConvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dtype = if self.bf16 { "bf16" } else { "other" };
        write!(f, "{}x{}x{}x{} -> {} {dtype}", self.batch, self.c_in, self.height, self.width, self.c_out)
    }
}

const fn tiled(
    algorithm: ConvAlgorithm,
    [rows, cols, k_tiles, planes]: [u32; 4],
    double_buffered: bool,
) -> Recipe {
    Recipe::Tiled(algorithm, Tiling { rows, cols, k_tiles, planes, double_buffered })
}

/// The recipes the tuner times for each shape: cubek's inferred tilings (burn's usual winners,
/// and the warp-specialised TMA kernel burn does not try) and the tilings that came out fastest
/// for some layer of the model in a search of 54 recipes on an H100 (every recipe in its own
/// process, each output checked against burn's `conv2d`; `docs/results/2026-11-27-h100-tuned-conv/`). Five
/// recipes of that search, all on cubek's non-TMA strided loaders, wrote out of bounds
/// (`CUDA_ERROR_ILLEGAL_ADDRESS`): none of them is here, and every recipe here ran clean on all
/// seven shapes.
pub const RECIPES: [Recipe; 12] = {
    use ConvAlgorithm::{SimpleAsyncTma, SimpleSyncStrided, SpecializedTma};
    [
        Recipe::Inferred(SimpleAsyncTma, AcceleratedTileKind::Mma),
        Recipe::Inferred(SimpleSyncStrided, AcceleratedTileKind::Mma),
        Recipe::Inferred(SpecializedTma, AcceleratedTileKind::Mma),
        tiled(SimpleAsyncTma, [2, 8, 4, 4], false),
        tiled(SimpleAsyncTma, [4, 8, 4, 4], false),
        tiled(SimpleAsyncTma, [2, 8, 4, 8], false),
        tiled(SimpleAsyncTma, [4, 8, 2, 4], false),
        tiled(SimpleAsyncTma, [2, 8, 2, 4], false),
        tiled(SimpleAsyncTma, [2, 16, 2, 4], false),
        tiled(SimpleAsyncTma, [2, 8, 4, 4], true),
        tiled(SimpleAsyncTma, [4, 8, 2, 4], true),
        tiled(SpecializedTma, [4, 8, 2, 8], false),
    ]
};

/// Whether the tuned kernels take `x` convolved by `weight`: bf16 operands (the tilings are
/// mma tiles of bf16) whose channel counts keep TMA's 16-byte row alignment; anything else
/// (the image's 3 channels, f32) runs on burn's `conv2d`.
pub fn tunable<T: KernelTensor>(x: &T, weight: &T) -> bool {
    let (c_in, c_out) = (x.shape()[1], weight.shape()[0]);
    x.dtype() == DType::BF16 && weight.dtype() == DType::BF16 && c_in % 8 == 0 && c_out % 8 == 0
}

/// The blueprint of `tiling` for the convolution `key` on `client`'s device.
fn blueprint<R: CubeRuntime>(
    client: &cubecl::client::ComputeClient<R>,
    key: &ConvKey,
    algorithm: ConvAlgorithm,
    t: Tiling,
) -> TilingBlueprint {
    let cols = t.cols.min((key.c_out as u32 / 8).max(1));
    let tiling_scheme = TilingScheme::builder()
        .with_tile_size(TileSize::new(16, 8, 16))
        .with_partition_size(PartitionSize::new(t.rows, cols, t.k_tiles))
        .with_stage_size(StageSize::new(t.planes, 1, 1))
        .build()
        .expect("complete tiling scheme");
    let (m, n, k) = (key.batch * key.height * key.width, key.c_out, 9 * key.c_in);
    let specialized = matches!(
        algorithm,
        ConvAlgorithm::SpecializedTma
            | ConvAlgorithm::SpecializedAsyncCyclic
            | ConvAlgorithm::SpecializedAsyncStrided
    );
    let tma = matches!(algorithm, ConvAlgorithm::SpecializedTma | ConvAlgorithm::SimpleAsyncTma);
    let stage_k = tiling_scheme.elements_per_stage_along_k() as usize;
    let bf16 = DType::BF16.into();
    let swizzle = select_swizzle(stage_k, bf16, if tma { 1 } else { 8 });
    let cube_count_strategy = match client.properties().hardware.num_streaming_multiprocessors {
        Some(num_sms) => CubeCountStrategy::Sm { num_sms, sm_usage: SmAllocation::Exact, cubes_first: true },
        None => CubeCountStrategy::FromProblem,
    };
    let flow = if specialized { InputLoadFlow::LoadOnly } else { InputLoadFlow::MainOnly };
    TilingBlueprint {
        plane_dim: 32,
        tile_matmul: TileMatmulKind::Mma,
        tiling_scheme,
        swizzle_modes: SwizzleModes { lhs: swizzle, rhs: swizzle, ..Default::default() },
        partition_buffering: if t.double_buffered {
            PartitionBuffering::Double
        } else {
            PartitionBuffering::Single
        },
        loading_precompute_strategy: Default::default(),
        reader_mode: Default::default(),
        load_flows: LoadFlows { lhs: flow, rhs: flow },
        hypercube_blueprint: HypercubeBlueprint::builder()
            .global_order(GlobalOrder::SwizzleRow(4))
            .cube_count_strategy(cube_count_strategy)
            .build(),
        lhs_layout: MatrixLayout::RowMajor,
        rhs_layout: MatrixLayout::ColMajor,
        check_m_bounds: !(m as u32).is_multiple_of(tiling_scheme.elements_per_stage_along_m()),
        check_n_bounds: !(n as u32).is_multiple_of(tiling_scheme.elements_per_stage_along_n()),
        check_k_bounds: !(k as u32).is_multiple_of(tiling_scheme.elements_per_stage_along_k()),
    }
}

/// The key of `x: [N, C_in, H, W]` convolved by `weight: [C_out, C_in, 3, 3]`.
fn key_of<R: CubeRuntime>(x: &CubeTensor<R>, weight: &CubeTensor<R>) -> ConvKey {
    let [batch, c_in, height, width] = x.meta.shape().dims::<4>();
    let c_out = weight.meta.shape()[0];
    ConvKey { batch, c_in, c_out, height, width, bf16: x.dtype == DType::BF16 }
}

/// Runs `recipe` on `x: [N, C_in, H, W]` (any layout) and `weight: [C_out, C_in, 3, 3]` (same
/// dtype); returns `[N, C_out, H, W]` in `x`'s dtype, channels-last in memory. Errors (and
/// panics of cubek's setup) come back as `Err`, so that the tuner skips the recipe.
fn launch_recipe<R: CubeRuntime>(
    recipe: Recipe,
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
) -> Result<CubeTensor<R>, String> {
    let key = key_of(&x, &weight);
    let client = x.client.clone();
    let dtype = x.dtype;
    let strategy = match recipe {
        Recipe::Inferred(algorithm, tile_kind) => Strategy::Inferred { algorithm, tile_kind },
        Recipe::Tiled(algorithm, tiling) => {
            if !key.bf16 {
                return Err(format!("{recipe}: mma tilings here are for bf16 operands"));
            }
            let matmul = blueprint(&client, &key, algorithm, tiling);
            let forward = ForwardBlueprint { matmul, dimensionality: Dimensionality::Dim2, has_bias: false };
            Strategy::Forced { algorithm, blueprint: ConvBlueprint::Forward(forward) }
        }
    };
    let x = into_contiguous(permute_nchw_to_nhwc(x));
    let weight = into_contiguous(permute_nchw_to_nhwc(weight));
    let out_shape = Shape::new([key.batch, key.height, key.width, key.c_out]);
    let out = empty_device_contiguous_dtype(client.clone(), x.device.clone(), out_shape, dtype);
    let dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: dtype.into(),
        rhs: dtype.into(),
        out: dtype.into(),
    });
    let inputs = ConvolutionInputs::Forward {
        input: InputBinding::new(x.binding(), dtype.into()),
        weight: InputBinding::new(weight.binding(), dtype.into()),
        bias: None,
        out: out.clone().binding(),
    };
    let args = ConvolutionArgs { stride: [1, 1], padding: [1, 1], dilation: [1, 1] };
    let launched =
        catch_unwind(AssertUnwindSafe(|| launch_ref::<R, 2>(&strategy, &client, inputs, args, dtypes)));
    match launched {
        Ok(Ok(())) => Ok(permute_nhwc_to_nchw(out)),
        Ok(Err(err)) => Err(format!("{recipe}: {err:?}")),
        Err(_) => Err(format!("{recipe}: cubek panicked while setting up the kernel")),
    }
}

fn tuned_conv<R: CubeRuntime>(x: CubeTensor<R>, weight: CubeTensor<R>) -> CubeTensor<R> {
    static TUNER: LocalTuner<ConvKey, CubeTuneId> = local_tuner!();
    let tunables = TUNER.init(|| {
        let key = |(x, weight): &(CubeTensor<R>, CubeTensor<R>)| key_of(x, weight);
        let inputs = |_: &ConvKey, inputs: &(CubeTensor<R>, CubeTensor<R>)| inputs.clone();
        RECIPES.into_iter().fold(TunableSet::new(key, inputs), |set, recipe| {
            set.with(Tunable::new(&recipe.to_string(), move |(x, weight)| launch_recipe(recipe, x, weight)))
        })
    });
    let client = x.client.clone();
    TUNER.execute(&CubeTuneId::new(&x.client, &x.device), &client, tunables, (x, weight))
}

fn launch_tuned<R: CubeRuntime>([x, weight]: [CubeTensor<R>; 2], _: &Shape, _: DType) -> CubeTensor<R> {
    tuned_conv(x, weight)
}

/// `x: [N, C_in, H, W]` convolved (3×3, stride 1, padding 1, no bias) by `weight: [C_out,
/// C_in, 3, 3]` of the same dtype, on the recipe the tuner found fastest for the shape.
pub fn conv3x3<T: KernelTensor>(x: T, weight: T) -> T {
    let [n, _, h, w] = x.shape().dims::<4>();
    let c_out = weight.shape().dims::<4>()[0];
    let dtype = x.dtype();
    custom_op::<T, 2>("conv3x3_tuned", [x, weight], Shape::new([n, c_out, h, w]), dtype, launch_tuned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train_ops::{ConvEngine, ConvOps, unwrap, wrap};
    use burn::prelude::*;
    use burn::tensor::{Distribution, FloatDType};

    #[test]
    fn recipes_print_their_tiling() {
        assert_eq!(RECIPES[0].to_string(), "simple_async_tma_mma");
        assert_eq!(RECIPES[9].to_string(), "simple_async_tma_2x8x4_p4_db");
        assert_eq!(RECIPES[11].to_string(), "specialized_tma_4x8x2_p8");
        let names: std::collections::HashSet<String> = RECIPES.iter().map(Recipe::to_string).collect();
        assert_eq!(names.len(), RECIPES.len(), "the tuner tells recipes apart by name");
    }

    /// The tuned convolution (autotuned over [`RECIPES`], bf16 operands, channels-last input)
    /// against burn's `conv2d` of the same bf16 tensors, at two of the model's channel counts:
    /// `cargo test -p worker -- --ignored cuda`.
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_tuned_convolution_matches_burn_conv2d() {
        type B = burn_cuda::Cuda;
        let device = Default::default();
        for (n, c_in, c_out, hw) in [(16, 64, 64, 16), (8, 128, 64, 8)] {
            let x = crate::model::drawn(|| {
                Tensor::<B, 4>::random([n, hw, hw, c_in], Distribution::Normal(0.0, 1.0), &device)
            })
            .cast(FloatDType::BF16)
            .permute([0, 3, 1, 2]);
            let w = crate::model::drawn(|| {
                Tensor::<B, 4>::random([c_out, c_in, 3, 3], Distribution::Normal(0.0, 0.05), &device)
            })
            .cast(FloatDType::BF16);
            assert!(tunable(&unwrap(x.clone()), &unwrap(w.clone())));
            let tuned =
                wrap::<B, 4>(B::conv3x3_nobias(unwrap(x.clone()), unwrap(w.clone()), ConvEngine::Tuned));
            let stock = wrap::<B, 4>(B::conv3x3_nobias(unwrap(x), unwrap(w), ConvEngine::Burn));
            assert_eq!(tuned.dims(), [n, c_out, hw, hw]);
            let [tuned, stock] = [tuned, stock].map(|t| t.cast(FloatDType::F32));
            let scale: f32 = stock.clone().abs().max().into_scalar();
            let err: f32 = (tuned - stock).abs().max().into_scalar();
            assert!(scale > 0.5 && err < 1e-2 * scale, "{c_in} -> {c_out}: differs by {err} (scale {scale})");
        }
    }
}
