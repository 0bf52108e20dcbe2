//! The image's bf16 layer (kernel part `bimage`): which kernels take it. The direct kernels
//! ([`image_forward`], [`image_wgrad`]) take the experiment's shapes (up to 64 output channels,
//! images up to 32 pixels wide), of one model or of fused models side by side; cuDNN
//! ([`cudnn::image`]) takes the single model's other shapes with its channels padded.

use burn::tensor::DType;
use cubecl::cuda::CudaRuntime;

use super::cudnn;
use super::{image_forward, image_wgrad};
use crate::train_ops::ImageCores;
use crate::train_ops::cube::KernelTensor;

/// Whether this layer takes the single model's bf16 image layer ([`cudnn::is_image_layer`] in
/// bf16).
pub fn takes_bf16_image<T: KernelTensor>(x: &T, b: &T) -> bool {
    cudnn::is_image_layer(x, b, DType::BF16)
}

/// Whether the direct kernels take `groups` G fused models' bf16 image layers side by side: `x:
/// [N, G·C_in, H, W]` and `b` (the weight, or the output gradient) bf16, `c_out` output channels
/// a model.
pub fn direct_takes_grouped<T: KernelTensor>(x: &T, b: &T, c_out: usize, groups: usize) -> bool {
    let (channels, width) = (x.shape()[1], x.shape()[3]);
    let c_in = channels / groups;
    x.dtype() == DType::BF16
        && b.dtype() == DType::BF16
        && channels.is_multiple_of(groups)
        && c_in < cudnn::IMAGE_CHANNELS
        && image_forward::takes(c_in, c_out, width)
        && image_wgrad::takes(c_in, c_out, width)
}

/// `x: [N, C_in, H, W]` (C_in < [`cudnn::IMAGE_CHANNELS`]) convolved by `weight: [C_out, C_in,
/// 3, 3]`, both bf16: `[N, C_out, H, W]` bf16, channels-last in memory; the direct kernel on
/// `cores`.
pub fn conv3x3<T: KernelTensor<Runtime = CudaRuntime>>(x: T, weight: T, cores: ImageCores) -> T {
    let [c_out, c_in, _, _] = weight.shape().dims::<4>();
    if image_forward::takes(c_in, c_out, x.shape()[3]) {
        image_forward::conv3x3(x, weight, 1, cores)
    } else {
        cudnn::image::conv3x3(x, weight)
    }
}

/// The weight gradient of [`conv3x3`] from its output gradient `dy: [N, C_out, H, W]` (bf16):
/// `[C_out, C_in, 3, 3]` in f32; the direct kernel on `cores`.
pub fn weight_grad<T: KernelTensor<Runtime = CudaRuntime>>(x: T, dy: T, cores: ImageCores) -> T {
    if image_wgrad::takes(x.shape()[1], dy.shape()[1], x.shape()[3]) {
        image_wgrad::weight_grad(x, dy, 1, cores)
    } else {
        cudnn::image::weight_grad(x, dy)
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::{Distribution, FloatDType};

    use crate::train_ops::{ImageCores, to_dtype, unwrap, wrap};

    /// The image's bf16 layer (on [`super::image_forward`] and [`super::image_wgrad`] on either
    /// cores, the tensor cores taking 64 output channels, or on cuDNN for 128) against burn's
    /// convolution of the same bf16 operands in f32: the model's first layer on a small batch, an
    /// odd image shape (a forward cube left fewer blocks than it takes), one channel (its image
    /// channels-last in memory), and twice the width: `cargo test -p worker -- --ignored cuda`.
    #[test]
    #[ignore = "needs a CUDA GPU and libcudnn"]
    fn cuda_bf16_image_layer_matches_burns_convolution() {
        type G = burn_cuda::Cuda;
        use super::{image_forward, image_wgrad};
        let shapes = [[16, 3, 32, 32, 64], [5, 3, 9, 6, 64], [3, 1, 7, 5, 8], [4, 3, 8, 8, 128]];
        for ([n, c_in, h, w, c_out], cores) in
            shapes.into_iter().flat_map(|shape| [ImageCores::Cuda, ImageCores::Tensor].map(|c| (shape, c)))
        {
            let device = Default::default();
            let bf16 = |t: Tensor<G, 4>| to_dtype(t, FloatDType::BF16);
            let x = bf16(crate::model::drawn(|| match c_in {
                1 => Tensor::<G, 4>::random([n, h, w, c_in], Distribution::Uniform(0.0, 1.0), &device)
                    .permute([0, 3, 1, 2]),
                _ => Tensor::<G, 4>::random([n, c_in, h, w], Distribution::Uniform(0.0, 1.0), &device),
            }));
            let weight = bf16(crate::model::drawn(|| {
                Tensor::<G, 4>::random([c_out, c_in, 3, 3], Distribution::Normal(0.0, 0.3), &device)
            }));
            let dy = bf16(crate::model::drawn(|| {
                Tensor::<G, 4>::random([n, c_out, h, w], Distribution::Normal(0.0, 1.0), &device)
            }));
            let f32 = |t: &Tensor<G, 4>| to_dtype(t.clone(), FloatDType::F32);
            let options = burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            let expected = burn::tensor::module::conv2d(f32(&x), f32(&weight), None, options.clone());
            let out = wrap::<G, 4>(super::conv3x3(unwrap(x.clone()), unwrap(weight.clone()), cores));
            assert_eq!(out.dims(), [n, c_out, h, w]);
            assert_eq!(out.dtype(), burn::tensor::DType::BF16);
            let scale = expected.clone().abs().max().into_scalar();
            let err = (f32(&out) - expected).abs().max().into_scalar();
            // The direct kernel rounds its f32 sums to bf16 once.
            let tolerance = if image_forward::takes(c_in, c_out, w) { 4e-3 } else { 2e-2 };
            assert!(
                err <= tolerance * scale,
                "{n}×{c_in}×{h}×{w}→{c_out} forward on {cores:?} cores: {err} at a scale of {scale}"
            );

            // dW[o, i, kh, kw] = Σ dY[n, o, y, x] · Xpad[n, i, y + kh, x + kw], in f32 by burn's ops.
            let expected = crate::train_ops::conv::reference::weight_grad::<G>(f32(&x), f32(&dy));
            let dw = wrap::<G, 4>(super::weight_grad(unwrap(x), unwrap(dy), cores));
            assert_eq!(dw.dims(), [c_out, c_in, 3, 3]);
            assert_eq!(dw.dtype(), burn::tensor::DType::F32);
            let scale = expected.clone().abs().max().into_scalar();
            let err = (dw - expected).abs().max().into_scalar();
            // The kernel sums in f32; cuDNN's result is bf16.
            let tolerance = if image_wgrad::takes(c_in, c_out, w) { 1e-3 } else { 2e-2 };
            assert!(
                err <= tolerance * scale,
                "{n}×{c_in}×{h}×{w}→{c_out} weight gradient on {cores:?} cores: {err} at a scale of {scale}"
            );
        }
    }

    /// Fused models' image layers side by side on the direct kernels ([`super::direct_takes_grouped`])
    /// against each model's own layer by burn's ops in f32: model `g`'s outputs and weight
    /// gradient come from its own channels alone (three models; the experiment's layer, an odd
    /// shape, one channel), on either cores (the tensor cores taking 64 and 16 output channels).
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_grouped_bf16_image_layers_are_each_models_own() {
        type G = burn_cuda::Cuda;
        use super::{image_forward, image_wgrad};
        let groups = 3;
        let shapes = [[8, 3, 32, 32, 64], [5, 3, 9, 6, 16], [3, 1, 7, 5, 8]];
        for ([n, c_in, h, w, c_out], cores) in
            shapes.into_iter().flat_map(|shape| [ImageCores::Cuda, ImageCores::Tensor].map(|c| (shape, c)))
        {
            let device = Default::default();
            let bf16 = |t: Tensor<G, 4>| to_dtype(t, FloatDType::BF16);
            let f32 = |t: &Tensor<G, 4>| to_dtype(t.clone(), FloatDType::F32);
            let draw = |shape: [usize; 4], scale: f64| {
                bf16(crate::model::drawn(|| {
                    Tensor::<G, 4>::random(shape, Distribution::Normal(0.0, scale), &device)
                }))
            };
            let x = draw([n, groups * c_in, h, w], 1.0);
            let weight = draw([groups * c_out, c_in, 3, 3], 0.3);
            let dy = draw([n, groups * c_out, h, w], 1.0);
            assert!(super::direct_takes_grouped(&unwrap(x.clone()), &unwrap(weight.clone()), c_out, groups));
            let (x_, weight_, dy_) = (unwrap(x.clone()), unwrap(weight.clone()), unwrap(dy.clone()));
            let out = f32(&wrap::<G, 4>(image_forward::conv3x3(x_.clone(), weight_, groups, cores)));
            let dw = wrap::<G, 4>(image_wgrad::weight_grad(x_, dy_, groups, cores));
            assert_eq!(out.dims(), [n, groups * c_out, h, w]);
            assert_eq!(dw.dims(), [groups * c_out, c_in, 3, 3]);
            let options = burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            for g in 0..groups {
                let model = |t: &Tensor<G, 4>, c: usize| f32(t).narrow(1, g * c, c);
                let expected = burn::tensor::module::conv2d(
                    model(&x, c_in),
                    f32(&weight).narrow(0, g * c_out, c_out),
                    None,
                    options.clone(),
                );
                let scale = expected.clone().abs().max().into_scalar();
                let err = (out.clone().narrow(1, g * c_out, c_out) - expected).abs().max().into_scalar();
                assert!(
                    err <= 4e-3 * scale,
                    "model {g} of {n}×{c_in}×{h}×{w}→{c_out} on {cores:?} cores: forward {err} at {scale}"
                );
                let expected =
                    crate::train_ops::conv::reference::weight_grad::<G>(model(&x, c_in), model(&dy, c_out));
                let scale = expected.clone().abs().max().into_scalar();
                let err = (dw.clone().narrow(0, g * c_out, c_out) - expected).abs().max().into_scalar();
                assert!(
                    err <= 1e-3 * scale,
                    "model {g} of {n}×{c_in}×{h}×{w}→{c_out} on {cores:?} cores: weight grad {err} at {scale}"
                );
            }
        }
    }
}
