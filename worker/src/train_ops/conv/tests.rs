//! The convolution node against burn's `conv2d` (CPU, and CUDA with `--ignored cuda`).

use super::reference::*;
use super::*;
use crate::train_ops::TrainOps;
use burn::backend::Flex;
use burn::tensor::Distribution;
use burn::tensor::ElementConversion;
use burn::tensor::module::conv2d;

#[test]
fn groups_divide_the_batch_and_fill_rows() {
    assert_eq!(image_groups(512, 1024), 256);
    assert_eq!(image_groups(512, 256), 64);
    assert_eq!(image_groups(512, 64), 16);
    assert_eq!(image_groups(336, 1024), 168);
    assert_eq!(image_groups(500, 1024), 250);
    assert_eq!(image_groups(7, 1024), 1); // wants 3 groups, but 7 is prime
    assert_eq!(image_groups(3, 16), 1); // 48 rows: fewer than one group's worth → 1
}

fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    (a - b).abs().max().into_scalar().elem()
}

/// `(output, input grad, weight grad, bias grad)` of sum(out · r) through the custom node
/// with `kernels` on backend `B` (`Some`; the input cast to `dtype` first, so that the node
/// computes in it), or through burn's conv2d (`None`), brought back to the CPU (Flex) in f32.
fn gradients<B: TrainOps>(
    inputs: [&Tensor<Flex, 4>; 3],
    bias: &Tensor<Flex, 1>,
    kernels: Option<(Kernels, FloatDType)>,
) -> [Tensor<Flex, 4>; 4] {
    let device = Default::default();
    let on_b = |t: &Tensor<Flex, 4>| Tensor::<Autodiff<B>, 4>::from_data(t.to_data(), &device);
    let [x, wt, r] = inputs.map(on_b);
    let (x, wt) = (x.require_grad(), wt.require_grad());
    let b = Tensor::<Autodiff<B>, 1>::from_data(bias.to_data(), &device).require_grad();
    let out = match kernels {
        Some((kernels, dtype)) => {
            let xp = unwrap(to_dtype(x.clone(), dtype));
            let [wp, bp] = [unwrap(wt.clone()), unwrap(b.clone())];
            let out = wrap::<Autodiff<B>, 4>(Autodiff::<B>::conv3x3_same(xp, wp, bp, None, kernels, false));
            assert_eq!(out.dtype(), dtype.into(), "the node computes in its input's dtype");
            to_dtype(out, FloatDType::F32)
        }
        None => conv2d(x.clone(), wt.clone(), Some(b.clone()), same_3x3()),
    };
    let grads = (out.clone() * r).sum().backward();
    let db = b.grad(&grads).unwrap().unsqueeze::<4>();
    let results = [out.inner(), x.grad(&grads).unwrap(), wt.grad(&grads).unwrap(), db];
    for t in &results {
        assert_eq!(t.dtype(), burn::tensor::DType::F32, "outputs and gradients must come back in f32");
    }
    results.map(|t| Tensor::from_data(t.into_data(), &Default::default()))
}

/// Gradients of sum(out · r) for a random r, through the custom node with `kernels` and
/// through burn's conv2d, for `x: [n, c_in, h, w]`, both on the CPU in f32.
fn compare(n: usize, c_in: usize, c_out: usize, [h, w]: [usize; 2], kernels: &str) {
    compare_on::<Flex>(n, c_in, c_out, [h, w], kernels, FloatDType::F32)
}

/// [`compare`] with the custom node on backend `B` computing in `dtype` (its input cast to
/// it); the reference stays burn's f32 conv2d on the CPU (an independent implementation,
/// and no GPU autotune of its backward kernels).
fn compare_on<B: TrainOps>(
    n: usize,
    c_in: usize,
    c_out: usize,
    [h, w]: [usize; 2],
    kernels: &str,
    dtype: FloatDType,
) {
    let kernels: Kernels = kernels.parse().unwrap();
    let device = Default::default();
    let random = |shape: [usize; 4], std: f64| {
        crate::model::drawn(|| Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, std), &device))
    };
    let x = random([n, c_in, h, w], 1.0);
    let wt = random([c_out, c_in, 3, 3], 0.3);
    let b =
        crate::model::drawn(|| Tensor::<Flex, 1>::random([c_out], Distribution::Normal(0.0, 1.0), &device));
    let r = random([n, c_out, h, w], 1.0);
    let [out_c, dx_c, dw_c, db_c] = gradients::<B>([&x, &wt, &r], &b, Some((kernels, dtype)));
    let [out_s, dx_s, dw_s, db_s] = gradients::<Flex>([&x, &wt, &r], &b, None);
    // Relative error bounds: f32 reassociation (TF32 GEMMs on a GPU), or bf16 operands
    // (8-bit mantissa, ~4e-3).
    let on_flex = B::name(&Default::default()).contains("flex");
    let bf16 = dtype == FloatDType::BF16;
    let tolerance = match (bf16, on_flex) {
        (true, _) => 2e-2,
        (false, true) => 1e-5,
        (false, false) => 2e-3,
    };
    for (name, custom, stock) in
        [("output", out_c, out_s), ("input grad", dx_c, dx_s), ("weight grad", dw_c, dw_s)]
    {
        let scale: f32 = stock.clone().abs().max().into_scalar();
        assert!(scale > 0.5, "{kernels}: {name} suspiciously small: {scale}");
        let err = max_abs_diff(custom, stock);
        assert!(err < tolerance * scale, "{kernels}: {name} differs by {err} (scale {scale})");
    }
    let db_err = max_abs_diff(db_c, db_s);
    // A sum over n·h·w values of about ±1: f32 rounding grows with the count.
    let db_tolerance = match (bf16, on_flex) {
        (true, _) => 1e-2 * (n * h * w) as f32,
        (false, true) => 1e-3,
        (false, false) => 1e-5 * (n * h * w) as f32,
    };
    assert!(db_err < db_tolerance, "{kernels}: bias grad differs by {db_err}");
}

#[test]
fn gradients_match_burn_conv2d_single_group() {
    compare(2, 3, 4, [5, 5], "wgrad");
}

#[test]
fn bf16_inputs_convolve_in_bf16_within_its_rounding_with_f32_weight_gradients() {
    compare_on::<Flex>(4, 8, 8, [16, 16], "wgrad", FloatDType::BF16);
    compare_on::<Flex>(4, 8, 8, [16, 12], "wgrad+dgrad", FloatDType::BF16);
}

/// The image's convolution as one explicit GEMM (`xgemm`), in f32 and bf16, the weight
/// gradient from the saved im2col matrix, the input gradient through the flipped kernel (and,
/// without `dgrad`, burn's).
#[test]
fn explicit_gemm_for_few_channels_matches_burn_conv2d() {
    compare(4, 3, 8, [8, 6], "wgrad+dgrad+bn+xgemm");
    compare_on::<Flex>(2, 5, 8, [6, 6], "wgrad+bn+bf16+xgemm", FloatDType::BF16);
}

#[test]
fn gradients_match_burn_conv2d_many_groups() {
    // 16 images of 32×32 = 16,384 rows → 8 groups of 2 images.
    assert_eq!(image_groups(16, 32 * 32), 8);
    compare(16, 2, 3, [32, 32], "wgrad");
}

#[test]
fn im2col_weight_gradient_matches_on_non_square_images() {
    // H ≠ W catches a mixed-up window axis or stride.
    compare(3, 5, 4, [7, 5], "wgrad");
    compare(16, 4, 3, [32, 20], "wgrad");
}

#[test]
fn flipped_kernel_input_gradient_matches_with_either_weight_gradient() {
    compare(3, 4, 5, [6, 7], "dgrad");
    compare(3, 4, 5, [7, 6], "wgrad+dgrad");
}

/// A model's layers' operands made at once ([`layer_operands`]) come where the node would make
/// its own (not for the explicit GEMM's layer, nor without autodiff), and the node trains on
/// them as on its own, bit for bit.
#[test]
fn operands_made_at_once_train_as_the_nodes_own() {
    use burn::module::AutodiffModule;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    type A = Autodiff<Flex>;
    let kernels: Kernels = "wgrad+dgrad+bn+xgemm".parse().unwrap();
    let device = Default::default();
    let layer = |c_in: usize, c_out: usize| {
        crate::model::drawn(|| {
            Conv2dConfig::new([c_in, c_out], [3, 3]).with_padding(PaddingConfig2d::Same).init::<A>(&device)
        })
    };
    let convs = [layer(3, 8), layer(8, 8), layer(8, 16)];
    let refs: Vec<&Conv2d<A>> = convs.iter().collect();
    let made = layer_operands(&refs, kernels, FloatDType::F32);
    let present: Vec<bool> = made.iter().map(Option::is_some).collect();
    assert_eq!(present, [false, true, true], "the image's layer makes its own on the explicit GEMM");
    let inner: Vec<Conv2d<Flex>> = convs.iter().map(|conv| conv.valid()).collect();
    let inner_refs: Vec<&Conv2d<Flex>> = inner.iter().collect();
    let none = layer_operands(&inner_refs, kernels, FloatDType::F32);
    assert!(none.iter().all(Option::is_none), "inference makes none");
    assert!(layer_operands(&refs, Kernels::STOCK, FloatDType::F32).iter().all(Option::is_none));

    let x = crate::model::drawn(|| {
        Tensor::<Flex, 4>::random([2, 8, 6, 5], Distribution::Normal(0.0, 1.0), &device)
    });
    let run = |operands: Option<[FloatTensor<A>; 2]>| {
        let x = Tensor::<A, 4>::from_inner(x.clone()).require_grad();
        let out = conv3x3(&convs[1], x.clone(), operands, kernels, false);
        let grads = (out.clone() * out.clone()).sum().backward();
        let weight = convs[1].weight.grad(&grads).unwrap();
        [out.inner(), x.grad(&grads).unwrap(), weight].map(|t| t.into_data())
    };
    let [mine, own] = [run(made[1].clone()), run(None)];
    for (name, (a, b)) in ["output", "input grad", "weight grad"].iter().zip(mine.iter().zip(&own)) {
        assert_eq!(a, b, "{name}");
    }
    // And the node convolves by them: zero operands leave only the bias.
    let zeros = made[1].clone().map(|pair| pair.map(|t| unwrap(wrap::<A, 4>(t).zeros_like())));
    let [out, ..] = run(zeros);
    let bias = convs[1].bias.as_ref().unwrap().val().inner().reshape([1, 8, 1, 1]).expand([2, 8, 6, 5]);
    assert_eq!(out, bias.into_data(), "the output by zero operands");
}

/// With the `cudnn` part the node asks [`ConvOps::conv3x3_weight_grad`] for the weight gradient
/// and passes the engine to the convolutions; on the CPU those are the references, so the node
/// computes what it computes without the part.
#[test]
fn cudnn_part_routes_the_weight_gradient_through_its_hook() {
    compare_on::<Flex>(4, 8, 8, [16, 16], "wgrad+dgrad+bn+bf16+cudnn", FloatDType::BF16);
    compare_on::<Flex>(2, 8, 16, [6, 10], "dgrad+bn+bf16+cudnn", FloatDType::BF16);
    compare_on::<Flex>(4, 8, 8, [16, 16], "wgrad+dgrad+bn+bf16+cudnn+dual", FloatDType::BF16);
}

/// With `dual`, each of cuDNN's two calls for the forward and the input gradient (the pass by
/// the kernel, the other pass by its flipped transpose) against burn's f32 conv2d on the CPU.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU and cuDNN"]
fn cuda_dual_cudnn_calls_each_match_burn_conv2d() {
    type B = burn_cuda::Cuda;
    use super::cuda::cudnn::FORCED_CALL;
    for call in [0, 1] {
        *FORCED_CALL.lock().unwrap() = Some(call);
        compare_on::<B>(8, 64, 64, [16, 16], "wgrad+dgrad+bn+bf16+cudnn+dual", FloatDType::BF16);
        compare_on::<B>(4, 128, 256, [8, 8], "dgrad+bn+bf16+cudnn+dual", FloatDType::BF16);
    }
    *FORCED_CALL.lock().unwrap() = None;
}

/// The node on cuDNN (forward, flipped-kernel input gradient, weight gradient; bf16 operands,
/// and the f32 image's layer) against burn's f32 conv2d on the CPU, at the model's channel
/// counts and a block-1 layer's image size; needs `libcudnn` on the library path: `cargo test -p worker -- --ignored cuda`.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU and cuDNN"]
fn cuda_cudnn_node_matches_burn_conv2d() {
    type B = burn_cuda::Cuda;
    let version = cudnn_library_version().expect("cuDNN loads");
    assert!(version >= 8000, "cuDNN {version}");
    let cudnn = "wgrad+dgrad+bn+bf16+cudnn";
    compare_on::<B>(8, 64, 64, [16, 16], cudnn, FloatDType::BF16);
    compare_on::<B>(4, 64, 128, [8, 8], cudnn, FloatDType::BF16);
    compare_on::<B>(32, 64, 64, [32, 32], cudnn, FloatDType::BF16);
    // Without `wgrad`: the weight gradient still comes from cuDNN, not burn's kernel.
    compare_on::<B>(4, 128, 256, [8, 8], "dgrad+bn+bf16+cudnn", FloatDType::BF16);
    // The image's layer without `xgemm`: f32 on cuDNN (the node's weight gradient; its forward
    // below, without the bias the BatchNorm takes).
    compare_on::<B>(512, 3, 64, [32, 32], "wgrad+dgrad+bn+bf16+tconv+pool+cudnn", FloatDType::F32);
    let host = Default::default();
    let x = crate::model::drawn(|| {
        Tensor::<Flex, 4>::random([512, 3, 32, 32], Distribution::Normal(0.0, 1.0), &host)
    });
    let weight = crate::model::drawn(|| {
        Tensor::<Flex, 4>::random([64, 3, 3, 3], Distribution::Normal(0.0, 0.3), &host)
    });
    let on_gpu = |t: &Tensor<Flex, 4>| unwrap(Tensor::<B, 4>::from_data(t.to_data(), &Default::default()));
    let out =
        wrap::<B, 4>(B::conv3x3_nobias(on_gpu(&x), on_gpu(&weight), ConvEngine::Cudnn(ImageCores::Cuda)));
    assert_eq!(out.dtype(), burn::tensor::DType::F32);
    let out = Tensor::<Flex, 4>::from_data(out.into_data(), &host);
    let want = conv2d(x, weight, None, same_3x3());
    let scale: f32 = want.clone().abs().max().into_scalar();
    let err = max_abs_diff(out, want);
    assert!(err < 2e-3 * scale, "the image layer's forward differs by {err} (scale {scale})");
}

/// The whole node on the GPU against burn's f32 conv2d on the CPU: f32 (the default, and an
/// odd image shape), and bf16 inputs at the model's channel counts (64 → 64, 64 → 128), with
/// a bias (added apart from burn's bf16 kernels: `forward`): `cargo test -p worker --
/// --ignored cuda`.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_gradients_match_burn_conv2d() {
    type B = burn_cuda::Cuda;
    compare_on::<B>(8, 16, 32, [16, 16], "fast", FloatDType::F32);
    compare_on::<B>(5, 8, 8, [7, 5], "wgrad+dgrad", FloatDType::F32);
    compare_on::<B>(8, 64, 64, [16, 16], "fast", FloatDType::BF16);
    compare_on::<B>(4, 64, 128, [8, 8], "fast", FloatDType::BF16);
    // The image's convolution as the model runs it (f32 input, explicit GEMM) at the model's
    // batch: 256 image groups in the weight gradient's GEMM.
    compare_on::<B>(512, 3, 64, [32, 32], "wgrad+dgrad+bn+bf16+tconv+pool+xgemm", FloatDType::F32);
}

/// The bf16 → f32 matmul of the weight gradient (a transposed lhs view, as the node passes
/// it) and its group sum (all groups, and per fused model) against burn's f32 matmul of the
/// same values, at a layer's group shapes, the image layer's included (27 f32 columns: pitched
/// rows): `cargo test -p worker -- --ignored cuda`.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_bf16_matmul_to_f32_matches_the_f32_matmul() {
    type B = burn_cuda::Cuda;
    let device = Default::default();
    let random = |shape: [usize; 3], dtype: FloatDType| {
        crate::model::drawn(|| Tensor::<B, 3>::random(shape, Distribution::Normal(0.0, 1.0), &device))
            .cast(dtype)
    };
    let assert_close = |name: &str, a: Tensor<B, 2>, b: Tensor<B, 2>| {
        assert_eq!(a.dtype(), burn::tensor::DType::F32);
        let scale: f32 = b.clone().abs().max().into_scalar();
        let err: f32 = (a - b).abs().max().into_scalar();
        assert!(scale > 10.0 && err < 1e-3 * scale, "{name}: differs by {err} (scale {scale})");
    };
    // A block-1 layer's groups (bf16), the image layer's (f32, as the model runs it), block 3's.
    let (f32, bf16) = (FloatDType::F32, FloatDType::BF16);
    for (groups, columns, dtype) in [(16, 576, bf16), (256, 27, f32), (4, 1152, bf16)] {
        let lhs = random([groups, 2048, 64], dtype).swap_dims(1, 2);
        let rhs = random([groups, 2048, columns], dtype);
        let full = lhs.clone().cast(FloatDType::F32).matmul(rhs.clone().cast(FloatDType::F32));
        let mixed = wrap::<B, 3>(B::matmul_to_f32(unwrap(lhs.clone()), unwrap(rhs.clone())));
        assert_close(
            "matmul",
            mixed.reshape([groups * 64, columns]),
            full.clone().reshape([groups * 64, columns]),
        );
        let summed = wrap::<B, 2>(B::summed_matmul_to_f32(unwrap(lhs.clone()), unwrap(rhs.clone())));
        assert_close("group sum", summed, full.clone().sum_dim(0).reshape([64, columns]));
        // Four fused models' weight gradients: each sums its own quarter of the groups.
        let per_model = wrap::<B, 3>(B::grouped_summed_matmul_to_f32(unwrap(lhs), unwrap(rhs), 4));
        let want = full.reshape([4, groups / 4, 64, columns]).sum_dim(1).reshape([4 * 64, columns]);
        assert_close("sum per model", per_model.reshape([4 * 64, columns]), want);
    }
}
