//! Horizontal fusion: the training forward of k models of one shape in one pass, each on its
//! own batch. The jobs' channels lie side by side (`[N, k·C, H, W]`): the convolutions are
//! grouped (one group per model; batched GEMMs over the models, [`crate::train_ops::conv::grouped`]), BatchNorm + ReLU and the poolings are per channel (so per
//! model, ghost groups included), and the head is one batched matmul. Each model keeps its own
//! parameters, so autodiff hands every model its own gradients and optimizer, checkpoints and
//! cancellation stay per model.

use burn::module::RunningState;
use burn::prelude::*;
use burn::tensor::FloatDType;

use super::{Cnn, ConvBnRelu, bn_groups};
use crate::train_ops::batch_norm::{NormConfig, NormInputs};
use crate::train_ops::conv::grouped::grouped_conv3x3;
use crate::train_ops::{Kernels, TrainOps, pool, to_dtype, unwrap, wrap};

/// Why a set of models cannot train as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FusionError {
    #[error("nothing to fuse")]
    Empty,
    #[error("models of different widths or kernels cannot be fused")]
    Shapes,
    #[error("images for {images} models given to {models}")]
    Count { models: usize, images: usize },
    #[error("fused training needs the fused BatchNorm node (kernels fast or fast-bf16), not {0}")]
    Kernels(Kernels),
}

/// Checks that `models` can train as one: same widths, kernels and BatchNorm groups, and the
/// fused BatchNorm node (the per-channel node that normalises every model on its own).
pub fn check_fusable<B: Backend>(models: &[&Cnn<B>]) -> Result<(), FusionError> {
    let first = models.first().ok_or(FusionError::Empty)?;
    if !first.kernels.fused_batch_norm {
        return Err(FusionError::Kernels(first.kernels));
    }
    let shape = |m: &Cnn<B>| {
        let widths: Vec<[usize; 4]> =
            m.blocks().into_iter().flatten().map(|l| l.conv.weight.shape().dims()).collect();
        (widths, m.kernels, m.bn_group)
    };
    let reference = shape(first);
    if models.iter().any(|m| shape(m) != reference) {
        return Err(FusionError::Shapes);
    }
    Ok(())
}

impl<B: Backend> Cnn<B> {
    /// The three blocks' layers.
    fn blocks(&self) -> [&Vec<ConvBnRelu<B>>; 3] {
        [&self.block1, &self.block2, &self.block3]
    }
}

/// Training forward of `models` on their batches (`images[j]` for `models[j]`, every batch
/// `[N, 3, 32, 32]` of one size `N`): the logits `[N, 10]` of each model, as each model's own
/// [`Cnn::forward`] computes them, and each model's BatchNorm running statistics updated as
/// that forward updates them.
pub fn forward_fused<B: TrainOps>(
    models: &[&Cnn<B>],
    images: Vec<Tensor<B, 4>>,
) -> Result<Vec<Tensor<B, 2>>, FusionError> {
    check_fusable(models)?;
    if images.len() != models.len() {
        return Err(FusionError::Count { models: models.len(), images: images.len() });
    }
    let first = models[0];
    let groups = bn_groups(images[0].dims()[0], first.bn_group);
    let mut x = Tensor::cat(images, 1);
    for b in 0..3 {
        if b > 0 {
            x = pool::avg_pool_2x2(&first.pool, x, first.kernels);
        }
        let blocks: Vec<&Vec<ConvBnRelu<B>>> = models.iter().map(|m| m.blocks()[b]).collect();
        for l in 0..blocks[0].len() {
            let layers: Vec<&ConvBnRelu<B>> = blocks.iter().map(|block| &block[l]).collect();
            x = fused_layer(&layers, x, first.kernels, groups);
        }
    }
    Ok(fused_head(models, pool::global_avg_pool(x, first.kernels)))
}

/// Conv 3×3 → BatchNorm → ReLU of `layers` (one per model) on their side-by-side channels.
fn fused_layer<B: TrainOps>(
    layers: &[&ConvBnRelu<B>],
    x: Tensor<B, 4>,
    kernels: Kernels,
    groups: usize,
) -> Tensor<B, 4> {
    let k = layers.len();
    let dtype = if kernels.bf16_activations { FloatDType::BF16 } else { FloatDType::F32 };
    let weight = Tensor::cat(layers.iter().map(|l| l.conv.weight.val()).collect(), 0);
    // The bias is left out of the convolution: under a training BatchNorm it only shifts the
    // batch mean, so it goes in as the running mean's shift (as the single model's node does).
    let y = grouped_conv3x3(x, weight, k, kernels);
    let cat = |part: fn(&ConvBnRelu<B>) -> Tensor<B, 1>| {
        unwrap(Tensor::cat(layers.iter().map(|l| part(l)).collect(), 0))
    };
    let mean_shift = layers
        .iter()
        .all(|l| l.conv.bias.is_some())
        .then(|| cat(|l| l.conv.bias.as_ref().map(|b| b.val().detach()).expect("checked")));
    let device = y.device();
    let running = |state: &RunningState<Tensor<B, 1>>| state.value_sync().to_device(&device);
    let inputs = NormInputs {
        gamma: cat(|l| l.norm.gamma.val()),
        beta: cat(|l| l.norm.beta.val()),
        mean_shift,
        running_mean: unwrap(Tensor::cat(layers.iter().map(|l| running(&l.norm.running_mean)).collect(), 0)),
        running_var: unwrap(Tensor::cat(layers.iter().map(|l| running(&l.norm.running_var)).collect(), 0)),
    };
    let norm = &layers[0].norm;
    let config = NormConfig { epsilon: norm.epsilon, momentum: norm.momentum, groups };
    let (y, running_mean, running_var) = B::batch_norm_relu_train(unwrap(y), inputs, config, dtype);
    let split = |t| wrap::<B, 1>(t).detach().chunk(k, 0);
    for ((layer, mean), var) in layers.iter().zip(split(running_mean)).zip(split(running_var)) {
        layer.norm.running_mean.update(mean);
        layer.norm.running_var.update(var);
    }
    wrap(y)
}

/// Each model's dense head on its share `[N, C]` of the pooled features `[N, k·C]` (f32): one
/// batched matmul `[k, N, C] × [k, C, 10]`.
fn fused_head<B: Backend>(models: &[&Cnn<B>], pooled: Tensor<B, 2>) -> Vec<Tensor<B, 2>> {
    let k = models.len();
    let [n, kc] = pooled.dims();
    let features = to_dtype(pooled, FloatDType::F32).reshape([n, k, kc / k]).swap_dims(0, 1);
    let weights = Tensor::stack::<3>(models.iter().map(|m| m.head.weight.val()).collect(), 0);
    let mut logits = features.matmul(weights);
    if models.iter().all(|m| m.head.bias.is_some()) {
        let biases = Tensor::stack::<2>(
            models.iter().map(|m| m.head.bias.as_ref().expect("checked").val()).collect(),
            0,
        );
        logits = logits.add(biases.unsqueeze_dim(1));
    }
    logits.chunk(k, 0).into_iter().map(|t| t.squeeze_dim::<2>(0)).collect()
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::module::Param;
    use burn::tensor::backend::AutodiffBackend;
    use sweep_proto::LossVariant;

    use super::*;
    use crate::loss::variant_loss;
    use crate::model::{CnnConfig, seeded_model};
    use crate::train_ops::TrainBackend;

    type B = Autodiff<Flex>;

    /// Seeded test models (width 0.125, ghost groups of 2) with every conv bias 0.3, so the
    /// running means show whether the bias is taken into account.
    fn model<A: Backend>(seed: u64, kernels: Kernels, device: &A::Device) -> Cnn<A> {
        let mut model = seeded_model::<A>(&CnnConfig::new().with_width_multiplier(0.125), seed, device)
            .with_kernels(kernels)
            .with_bn_group(Some(2));
        for layer in model.block1.iter_mut().chain(&mut model.block2).chain(&mut model.block3) {
            let c = layer.conv.weight.dims()[0];
            layer.conv.bias = Some(Param::from_tensor(Tensor::full([c], 0.3, device)));
        }
        model
    }

    fn images<A: Backend>(shift: f32, device: &A::Device) -> Tensor<A, 4> {
        Tensor::<A, 1, Int>::arange(0..6 * 3 * 32 * 32, device)
            .float()
            .mul_scalar(0.37 + shift)
            .sin()
            .add_scalar(1.0)
            .div_scalar(2.0)
            .reshape([6, 3, 32, 32])
    }

    /// Logits, gradients and running statistics of `model` after a step, as f32 values.
    fn results<A: AutodiffBackend>(
        model: &Cnn<A>,
        logits: Tensor<A, 2>,
        grads: &A::Gradients,
    ) -> Vec<(&'static str, Vec<f32>)> {
        fn values<I: Backend, const D: usize>(t: Tensor<I, D>) -> Vec<f32> {
            t.cast(FloatDType::F32).into_data().to_vec().expect("f32 values")
        }
        vec![
            ("logits", values(logits.inner())),
            ("conv1 weight grad", values(model.block1[0].conv.weight.grad(grads).unwrap())),
            ("conv9 weight grad", values(model.block3[2].conv.weight.grad(grads).unwrap())),
            ("bn4 gamma grad", values(model.block2[0].norm.gamma.grad(grads).unwrap())),
            ("head weight grad", values(model.head.weight.grad(grads).unwrap())),
            ("head bias grad", values(model.head.bias.as_ref().unwrap().grad(grads).unwrap())),
            ("bn1 running mean", values(model.block1[0].norm.running_mean.value_sync().inner())),
            ("bn9 running var", values(model.block3[2].norm.running_var.value_sync().inner())),
        ]
    }

    /// Three models (different seeds, variants, images) in one fused forward and backward give
    /// each model's own logits, gradients and running statistics, within `tolerance` of each
    /// result's scale.
    fn fused_step_is_each_models_own<A: TrainBackend>(kernels: Kernels, tolerance: f32) {
        let device = Default::default();
        let variants = [LossVariant::NaturalSoftmax, LossVariant::NormalLr1e2, LossVariant::MultiSoftmax];
        let labels =
            |j: i64| Tensor::<A, 1, Int>::from_data([0, 3, 5, 7, 9, 2].map(|l| (l + j) % 10), &device);
        let image = |j: usize| images::<A>(0.005 + j as f32 * 0.01, &device);
        let fused: Vec<Cnn<A>> = (0..3).map(|j| model(j, kernels, &device)).collect();
        let refs: Vec<&Cnn<A>> = fused.iter().collect();
        let logits = forward_fused(&refs, (0..3).map(image).collect()).unwrap();
        let loss = logits
            .iter()
            .enumerate()
            .map(|(j, l)| variant_loss(variants[j], l.clone(), labels(j as i64)))
            .reduce(|a, b| a.add(b))
            .unwrap();
        let grads = loss.backward();
        for j in 0..3 {
            let alone = model(j as u64, kernels, &device);
            let alone_logits = alone.forward(image(j));
            let alone_grads = variant_loss(variants[j], alone_logits.clone(), labels(j as i64)).backward();
            let expected = results(&alone, alone_logits, &alone_grads);
            for ((name, got), (_, want)) in
                results(&fused[j], logits[j].clone(), &grads).into_iter().zip(expected)
            {
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(scale > 0.0, "model {j}: {name} is all zeros: the comparison would prove nothing");
                let err = got.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                assert!(
                    err <= tolerance * scale.max(1e-3),
                    "model {j}: {name} differs by {err} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn a_fused_forward_and_backward_is_each_models_own() {
        fused_step_is_each_models_own::<B>(Kernels::FAST, 1e-4);
    }

    /// The same on a GPU: f32, and the bf16 activations of `fast-bf16` (whose single model runs
    /// other convolution kernels, so the two differ by bf16 rounding). Needs a CUDA GPU:
    /// `cargo test -p worker -- --ignored cuda`.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_fused_forward_and_backward_is_each_models_own() {
        fused_step_is_each_models_own::<crate::backend::CudaBackend>(Kernels::FAST, 1e-3);
        fused_step_is_each_models_own::<crate::backend::CudaBackend>(Kernels::FAST_BF16, 5e-2);
    }

    #[test]
    fn models_of_other_shapes_or_without_the_fused_batch_norm_do_not_fuse() {
        let device = Default::default();
        let (a, b) = (model::<B>(1, Kernels::FAST, &device), model::<B>(2, Kernels::FAST, &device));
        let narrow = seeded_model::<B>(&CnnConfig::new().with_width_multiplier(0.25), 3, &Default::default())
            .with_kernels(Kernels::FAST)
            .with_bn_group(Some(2));
        assert_eq!(check_fusable(&[&a, &narrow]), Err(FusionError::Shapes));
        assert_eq!(check_fusable(&[&a, &b.clone().with_bn_group(None)]), Err(FusionError::Shapes));
        let stock = a.clone().with_kernels(Kernels::STOCK);
        assert_eq!(
            check_fusable(&[&stock, &b.clone().with_kernels(Kernels::STOCK)]),
            Err(FusionError::Kernels(Kernels::STOCK))
        );
        assert_eq!(check_fusable::<B>(&[]), Err(FusionError::Empty));
        let err = forward_fused(&[&a, &b], vec![images(0.0, &device)]).unwrap_err();
        assert_eq!(err, FusionError::Count { models: 2, images: 1 });
    }
}
