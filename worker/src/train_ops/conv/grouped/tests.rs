//! Tests of [`super`]: the grouped node against burn's grouped `conv2d` (CPU; on a GPU with
//! cuDNN, ignored).

use burn::backend::{Autodiff, Flex};
use burn::tensor::Distribution;

use super::*;

/// The node of `kernels` (batched GEMMs, or per model with `mconv`) against autodiff through
/// burn's grouped `conv2d`, on backend `B`: output and gradients within `tolerance` of each
/// result's scale, and the output without autodiff.
fn node_matches_burns_grouped_conv<B: ConvOps>(kernels: Kernels, dtype: FloatDType, tolerance: f32) {
    let device = Default::default();
    for (n, groups, c_in, c_out, size) in [(2, 3, 3, 4, 5), (4, 2, 8, 16, 8), (3, 4, 16, 8, 6)] {
        let x = crate::model::drawn(|| {
            Tensor::<B, 4>::random([n, groups * c_in, size, size], Distribution::Normal(0.0, 1.0), &device)
        });
        let weight = crate::model::drawn(|| {
            Tensor::<B, 4>::random([groups * c_out, c_in, 3, 3], Distribution::Normal(0.0, 0.3), &device)
        });
        let dy = crate::model::drawn(|| {
            Tensor::<B, 4>::random([n, groups * c_out, size, size], Distribution::Normal(0.0, 1.0), &device)
        });
        let run = |node: bool| {
            let x = Tensor::<Autodiff<B>, 4>::from_inner(to_dtype(x.clone(), dtype)).require_grad();
            let w = Tensor::<Autodiff<B>, 4>::from_inner(weight.clone()).require_grad();
            let y = match node {
                true => grouped_conv3x3(x.clone(), w.clone(), groups, kernels),
                false => wrap(by_burn_conv::<Autodiff<B>>(unwrap(x.clone()), unwrap(w.clone()), groups)),
            };
            let grads =
                (to_dtype(y.clone(), FloatDType::F32) * Tensor::from_inner(dy.clone())).sum().backward();
            let flat = |t: Tensor<B, 4>| to_dtype(t, FloatDType::F32).flatten::<1>(0, 3);
            [flat(y.inner()), flat(x.grad(&grads).unwrap()), flat(w.grad(&grads).unwrap())]
        };
        let inference = grouped_conv3x3(to_dtype(x.clone(), dtype), weight.clone(), groups, kernels);
        let mut got = run(true).to_vec();
        got.push(to_dtype(inference, FloatDType::F32).flatten::<1>(0, 3));
        let want = run(false);
        let want = [&want[0], &want[1], &want[2], &want[0]];
        for (name, (got, want)) in
            ["output", "input grad", "weight grad", "inference output"].iter().zip(got.into_iter().zip(want))
        {
            let want = want.clone();
            let scale: f32 = want.clone().abs().max().into_scalar().elem();
            let err: f32 = (got - want).abs().max().into_scalar().elem();
            assert!(
                scale > 0.0 && err <= tolerance * scale,
                "{name} ({n}, {groups}, {c_in}→{c_out}): off by {err} of {scale}"
            );
        }
    }
}

#[test]
fn the_grouped_node_matches_burns_grouped_convolution() {
    node_matches_burns_grouped_conv::<Flex>(Kernels::FAST, FloatDType::F32, 1e-5);
}

/// With `cudnn` the layers whose per-model channels are multiples of 8 (not the image's)
/// run as the library node; on the CPU its calls are the references, with `dual` too.
#[test]
fn the_library_node_matches_burns_grouped_convolution() {
    let cudnn: Kernels = "wgrad+dgrad+bn+bf16+cudnn".parse().unwrap();
    let weight = |c_in: usize| Tensor::<Flex, 4>::zeros([2 * 16, c_in, 3, 3], &Default::default());
    assert!(super::super::library::takes(&weight(8), 2, cudnn));
    assert!(!super::super::library::takes(&weight(3), 2, cudnn), "the image's channels");
    assert!(super::super::library::takes(&weight(3), 2, Kernels::FAST_BF16_CUDNN), "the bf16 image");
    assert!(!super::super::library::takes(&weight(8), 2, Kernels::FAST_BF16));
    for dual_calls in [false, true] {
        node_matches_burns_grouped_conv::<Flex>(
            Kernels { cudnn_conv: true, dual_calls, ..Kernels::FAST },
            FloatDType::F32,
            1e-5,
        );
    }
}

#[test]
fn the_per_model_node_matches_burns_grouped_convolution() {
    for kernels in ["fast+mconv", "fast+xgemm+mconv", "wgrad+bn+mconv"] {
        node_matches_burns_grouped_conv::<Flex>(kernels.parse().unwrap(), FloatDType::F32, 1e-5);
    }
}

/// The node's output and gradients on `B` for `x`, `weight` and the output gradient `dy`
/// (channels-last in memory when `channels_last`, as BatchNorm's backward hands it over), f32.
#[cfg(feature = "cuda")]
fn node_results<B: ConvOps>(
    [x, weight, dy]: [&TensorData; 3],
    (groups, kernels): (usize, Kernels),
    dtype: FloatDType,
    channels_last: bool,
) -> [Vec<f32>; 3] {
    let device = Default::default();
    let x = Tensor::<Autodiff<B>, 4>::from_inner(to_dtype(Tensor::from_data(x.clone(), &device), dtype))
        .require_grad();
    let w = Tensor::<Autodiff<B>, 4>::from_data(weight.clone(), &device).require_grad();
    let dy = match channels_last {
        true => {
            let nhwc = Tensor::<Flex, 4>::from_data(dy.clone(), &Default::default()).permute([0, 2, 3, 1]);
            Tensor::<B, 4>::from_data(nhwc.into_data(), &device).permute([0, 3, 1, 2])
        }
        false => Tensor::<B, 4>::from_data(dy.clone(), &device),
    };
    let y = grouped_conv3x3(x.clone(), w.clone(), groups, kernels);
    let grads = (to_dtype(y.clone(), FloatDType::F32) * Tensor::from_inner(dy)).sum().backward();
    let values = |t: Tensor<B, 4>| to_dtype(t, FloatDType::F32).into_data().to_vec::<f32>().expect("f32");
    [values(y.inner()), values(x.grad(&grads).unwrap()), values(w.grad(&grads).unwrap())]
}

/// The node on a GPU in f32 against the same node on the CPU (which the test above checks
/// against burn's grouped convolution), with the output gradient channels-first and
/// channels-last; the model's first layer (3 input channels a model) among the shapes.
/// Needs a CUDA GPU: `cargo test -p worker -- --ignored cuda`.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_grouped_node_matches_the_cpu_node() {
    node_on_the_gpu_matches_the_cpu(Kernels::FAST, FloatDType::F32, 1e-3);
}

/// The same with bf16 activations (the fused step's), against the CPU node on the
/// bf16-rounded input. Needs a CUDA GPU.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_grouped_bf16_node_matches_the_cpu_node() {
    node_on_the_gpu_matches_the_cpu(Kernels::FAST, FloatDType::BF16, 3e-2);
}

/// The same on cuDNN's grouped convolution (`cudnn`, and with `dual` each of its two calls;
/// the 3-channel layer on the batched GEMMs, or with `bimage` on the direct kernels).
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU and cuDNN"]
fn cuda_grouped_cudnn_node_matches_the_cpu_node() {
    use crate::train_ops::conv::cuda::cudnn::FORCED_CALL;
    node_on_the_gpu_matches_the_cpu("fast-bf16+cudnn".parse().unwrap(), FloatDType::BF16, 3e-2);
    node_on_the_gpu_matches_the_cpu(Kernels::FAST_BF16_CUDNN, FloatDType::BF16, 3e-2);
    for call in [0, 1] {
        *FORCED_CALL.lock().unwrap() = Some(call);
        node_on_the_gpu_matches_the_cpu("fast-bf16+cudnn+dual".parse().unwrap(), FloatDType::BF16, 3e-2);
    }
    *FORCED_CALL.lock().unwrap() = None;
}

#[cfg(feature = "cuda")]
fn node_on_the_gpu_matches_the_cpu(kernels: Kernels, dtype: FloatDType, tolerance: f32) {
    let device = Default::default();
    let mut failures = Vec::new();
    {
        for (n, groups, c_in, c_out, size) in [(6, 3, 3, 8, 32), (4, 2, 8, 16, 8), (3, 4, 16, 8, 6)] {
            let random = |shape: [usize; 4], std: f64| {
                crate::model::drawn(|| {
                    Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, std), &device)
                })
                .into_data()
            };
            let x = random([n, groups * c_in, size, size], 1.0);
            let weight = random([groups * c_out, c_in, 3, 3], 0.3);
            let dy = random([n, groups * c_out, size, size], 1.0);
            // The CPU node in f32 on bf16-rounded inputs: what the GPU's bf16 path computes.
            let x_cpu = Tensor::<Flex, 4>::from_data(x.clone(), &device).cast(dtype).cast(FloatDType::F32);
            let want = node_results::<Flex>(
                [&x_cpu.into_data(), &weight, &dy],
                (groups, Kernels::FAST),
                FloatDType::F32,
                false,
            );
            for channels_last in [false, true] {
                let got = node_results::<burn_cuda::Cuda>(
                    [&x, &weight, &dy],
                    (groups, kernels),
                    dtype,
                    channels_last,
                );
                for (name, (got, want)) in
                    ["output", "input grad", "weight grad"].iter().zip(got.iter().zip(&want))
                {
                    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let err = got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                    if !(scale > 0.0 && err <= tolerance * scale) {
                        failures.push(format!(
                            "{dtype:?} {name} ({n}, {groups}, {c_in}→{c_out}, {size}², dy channels-last {channels_last}): off by {err} of {scale}"
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
