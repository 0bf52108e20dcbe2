//! Horizontal fusion: `K` models of one shape trained as one ([`FusedCnn`]). Each layer's
//! parameters and running statistics of all `K` models lie stacked model-major in one tensor
//! between steps, so a step costs the host about what one model's does, whatever `K`: the
//! images' channels lie side by side (`[N, K·3, H, W]`), the convolutions are grouped (batched
//! GEMMs over the models, [`crate::train_ops::conv::grouped`]), BatchNorm + ReLU and the
//! poolings are per channel (so per model, ghost groups included), the head is one batched
//! matmul, and one Adam launch updates every model
//! ([`crate::train_ops::adam::StackedAdam`]). Each model comes back out as its own [`Cnn`]
//! ([`FusedCnn::member`]) for validation and checkpoints.

use burn::module::{ModuleVisitor, Param, ParamId};
use burn::nn::BatchNorm;
use burn::nn::pool::AvgPool2d;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use hashbrown::HashMap;

use super::{Cnn, ConvBnRelu, bn_groups};
use crate::train_ops::adam::{model_part, replace_params};
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
        (widths, m.kernels, m.bn_group, m.head.bias.is_some())
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

/// Conv 3×3 → BatchNorm → ReLU of the `K` models, each tensor stacked model-major.
struct FusedLayer<B: Backend> {
    /// `[K·C_out, C_in, 3, 3]` (trained).
    weight: Tensor<B, 4>,
    /// The conv biases `[K·C_out]`: under a training BatchNorm they only shift the batch mean,
    /// so they go in as the running mean's shift (as the single model's node does).
    bias: Option<Tensor<B, 1>>,
    /// γ and β `[K·C_out]` (trained).
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    running_mean: Tensor<B, 1>,
    running_var: Tensor<B, 1>,
    norm: (f64, f64),
}

/// `tensors` (one per model) laid model-major along the first dimension, outside any graph.
fn cat<B: AutodiffBackend, const D: usize>(tensors: impl Iterator<Item = Tensor<B, D>>) -> Tensor<B, D> {
    Tensor::from_inner(Tensor::cat(tensors.map(|t| t.inner()).collect(), 0))
}

impl<B: AutodiffBackend> FusedLayer<B> {
    fn stack(layers: &[&ConvBnRelu<B>]) -> Self {
        let bias = layers.iter().all(|l| l.conv.bias.is_some());
        FusedLayer {
            weight: cat(layers.iter().map(|l| l.conv.weight.val())).require_grad(),
            bias: bias.then(|| cat(layers.iter().filter_map(|l| l.conv.bias.as_ref().map(|b| b.val())))),
            gamma: cat(layers.iter().map(|l| l.norm.gamma.val())).require_grad(),
            beta: cat(layers.iter().map(|l| l.norm.beta.val())).require_grad(),
            running_mean: cat(layers.iter().map(|l| l.norm.running_mean.value_sync())),
            running_var: cat(layers.iter().map(|l| l.norm.running_var.value_sync())),
            norm: (layers[0].norm.epsilon, layers[0].norm.momentum),
        }
    }

    fn forward(&mut self, x: Tensor<B, 4>, models: usize, kernels: Kernels, groups: usize) -> Tensor<B, 4>
    where
        B: TrainOps,
    {
        let dtype = kernels.activation_dtype();
        let y = grouped_conv3x3(x, self.weight.clone(), models, kernels);
        let inputs = NormInputs {
            gamma: unwrap(self.gamma.clone()),
            beta: unwrap(self.beta.clone()),
            mean_shift: self.bias.clone().map(unwrap),
            running_mean: unwrap(self.running_mean.clone()),
            running_var: unwrap(self.running_var.clone()),
        };
        let (epsilon, momentum) = self.norm;
        let config = NormConfig { epsilon, momentum, groups };
        let (y, running_mean, running_var) = B::batch_norm_relu_train(unwrap(y), inputs, config, dtype);
        self.running_mean = wrap::<B, 1>(running_mean).detach();
        self.running_var = wrap::<B, 1>(running_var).detach();
        wrap(y)
    }
}

/// Model-major batches `[K·N, C, H, W]` (model `j`'s images at `jN..(j+1)N`) as one batch of
/// side-by-side channels `[N, K·C, H, W]`, [`FusedCnn::forward`]'s input.
pub fn side_by_side<B: Backend>(images: Tensor<B, 4>, models: usize) -> Tensor<B, 4> {
    let [kn, c, h, w] = images.dims();
    let n = kn / models;
    images.reshape([models, n, c * h * w]).swap_dims(0, 1).reshape([n, models * c, h, w])
}

/// `K` models of one shape as one: every layer's weights, BatchNorm parameters and running
/// statistics stacked model-major, the head's weights `[K, C, 10]` and biases `[K, 10]`. The
/// trained tensors are autodiff leaves, replaced after each update
/// ([`FusedCnn::set_trainables`]).
pub struct FusedCnn<B: Backend> {
    models: usize,
    blocks: [Vec<FusedLayer<B>>; 3],
    head_weight: Tensor<B, 3>,
    head_bias: Option<Tensor<B, 2>>,
    pool: AvgPool2d,
    kernels: Kernels,
    bn_group: Option<usize>,
}

impl<B: AutodiffBackend> FusedCnn<B> {
    /// `models` as one (checked by [`check_fusable`]).
    pub fn stack(models: &[&Cnn<B>]) -> Result<Self, FusionError> {
        check_fusable(models)?;
        let first = models[0];
        let blocks = std::array::from_fn(|b| {
            let layer =
                |l: usize| FusedLayer::stack(&models.iter().map(|m| &m.blocks()[b][l]).collect::<Vec<_>>());
            (0..first.blocks()[b].len()).map(layer).collect()
        });
        let head_weight =
            cat(models.iter().map(|m| m.head.weight.val().unsqueeze_dim::<3>(0))).require_grad();
        let head_bias = first.head.bias.is_some().then(|| {
            let biases =
                models.iter().filter_map(|m| m.head.bias.as_ref().map(|b| b.val().unsqueeze_dim::<2>(0)));
            cat(biases).require_grad()
        });
        Ok(FusedCnn {
            models: models.len(),
            blocks,
            head_weight,
            head_bias,
            pool: first.pool.clone(),
            kernels: first.kernels,
            bn_group: first.bn_group,
        })
    }

    /// How many models are stacked.
    pub fn models(&self) -> usize {
        self.models
    }

    fn layers(&self) -> impl Iterator<Item = &FusedLayer<B>> {
        self.blocks.iter().flatten()
    }

    /// Training forward of the models on their own batches `images: [N, K·3, 32, 32]` (model
    /// `j`'s images in channels `3j..3j+3`, [`side_by_side`]): the logits `[K, N, 10]` (f32),
    /// each model's as its own [`Cnn::forward`] computes them; the running statistics are
    /// updated as those forwards update them.
    pub fn forward(&mut self, images: Tensor<B, 4>) -> Tensor<B, 3>
    where
        B: TrainOps,
    {
        let (models, kernels) = (self.models, self.kernels);
        let groups = bn_groups(images.dims()[0], self.bn_group);
        // With `bimage` the image's layer runs in bf16, as the single model's does.
        let mut x = match kernels.bf16_image {
            true => to_dtype(images, FloatDType::BF16),
            false => images,
        };
        for (b, block) in self.blocks.iter_mut().enumerate() {
            if b > 0 {
                x = pool::avg_pool_2x2(&self.pool, x, kernels);
            }
            for layer in block {
                x = layer.forward(x, models, kernels, groups);
            }
        }
        let pooled = pool::global_avg_pool(x, kernels);
        let [n, kc] = pooled.dims();
        let features = to_dtype(pooled, FloatDType::F32).reshape([n, models, kc / models]).swap_dims(0, 1);
        let logits = features.matmul(self.head_weight.clone());
        match &self.head_bias {
            Some(bias) => logits.add(bias.clone().unsqueeze_dim(1)),
            None => logits,
        }
    }

    /// The trained tensors' values in their stacked shapes, in this order: each layer's weight,
    /// γ and β, then the head's weight and bias ([`FusedCnn::trainable_ids`]'s order).
    pub fn trainables(&self) -> Vec<FloatTensor<B::InnerBackend>> {
        let mut values = Vec::new();
        for layer in self.layers() {
            values.push(unwrap(layer.weight.clone().inner()));
            values.push(unwrap(layer.gamma.clone().inner()));
            values.push(unwrap(layer.beta.clone().inner()));
        }
        values.push(unwrap(self.head_weight.clone().inner()));
        values.extend(self.head_bias.clone().map(|b| unwrap(b.inner())));
        values
    }

    /// The ids of `model`'s parameters in [`FusedCnn::trainables`]' order.
    pub fn trainable_ids(model: &Cnn<B>) -> Vec<ParamId> {
        let mut ids = Vec::new();
        for layer in model.blocks().into_iter().flatten() {
            ids.extend([layer.conv.weight.id, layer.norm.gamma.id, layer.norm.beta.id]);
        }
        ids.push(model.head.weight.id);
        ids.extend(model.head.bias.as_ref().map(|b| b.id));
        ids
    }

    /// Each trained tensor's gradient from `grads`, in [`FusedCnn::trainables`]' order (zeros
    /// for one the loss does not reach).
    pub fn gradients(&self, grads: &mut B::Gradients) -> Vec<FloatTensor<B::InnerBackend>> {
        fn grad<B: AutodiffBackend, const D: usize>(
            t: &Tensor<B, D>,
            grads: &mut B::Gradients,
        ) -> FloatTensor<B::InnerBackend> {
            unwrap(t.grad_remove(grads).unwrap_or_else(|| t.clone().inner().zeros_like()))
        }
        let mut out = Vec::new();
        for layer in self.layers() {
            out.extend([grad(&layer.weight, grads), grad(&layer.gamma, grads), grad(&layer.beta, grads)]);
        }
        out.push(grad(&self.head_weight, grads));
        out.extend(self.head_bias.as_ref().map(|b| grad(b, grads)));
        out
    }

    /// Puts `values` (in [`FusedCnn::trainables`]' order and shapes) in place of the trained
    /// tensors, as new autodiff leaves.
    pub fn set_trainables(&mut self, values: Vec<FloatTensor<B::InnerBackend>>) {
        fn leaf<B: AutodiffBackend, const D: usize>(v: Option<FloatTensor<B::InnerBackend>>) -> Tensor<B, D> {
            Tensor::from_inner(wrap(v.expect("one value per trained tensor"))).require_grad()
        }
        let mut values = values.into_iter();
        for layer in self.blocks.iter_mut().flatten() {
            layer.weight = leaf(values.next());
            layer.gamma = leaf(values.next());
            layer.beta = leaf(values.next());
        }
        self.head_weight = leaf(values.next());
        if self.head_bias.is_some() {
            self.head_bias = Some(leaf(values.next()));
        }
    }

    /// Every tensor a training step updates: [`FusedCnn::trainables`], then each layer's
    /// running mean and variance.
    pub fn state(&self) -> Vec<FloatTensor<B::InnerBackend>> {
        let running = self.layers().flat_map(|l| [&l.running_mean, &l.running_var]);
        self.trainables().into_iter().chain(running.map(|t| unwrap(t.clone().inner()))).collect()
    }

    /// Puts `values` ([`FusedCnn::state`]'s order and shapes) in place of that state.
    pub fn set_state(&mut self, mut values: Vec<FloatTensor<B::InnerBackend>>) {
        let running = values.split_off(values.len() - 2 * self.layers().count());
        self.set_trainables(values);
        let mut running = running.into_iter().map(|t| Tensor::from_inner(wrap(t)));
        for layer in self.blocks.iter_mut().flatten() {
            layer.running_mean = running.next().expect("a running mean per layer");
            layer.running_var = running.next().expect("a running variance per layer");
        }
    }

    /// Model `j` as its own [`Cnn`]: `template` (the model as stacked, for its structure and
    /// parameter ids) with model `j`'s parameters and running statistics from the stack.
    pub fn member(&self, j: usize, template: &Cnn<B>) -> Cnn<B> {
        let k = self.models;
        let part = |t: &FloatTensor<B::InnerBackend>| model_part::<B::InnerBackend>(t, j, k);
        let mut values = HashMap::new();
        let mut put = |id: ParamId, stacked: FloatTensor<B::InnerBackend>| {
            values.insert(id, part(&stacked));
        };
        for (layer, stacked) in template.blocks().into_iter().flatten().zip(self.layers()) {
            put(layer.conv.weight.id, unwrap(stacked.weight.clone().inner()));
            if let (Some(bias), Some(values)) = (&layer.conv.bias, &stacked.bias) {
                put(bias.id, unwrap(values.clone().inner()));
            }
            put(layer.norm.gamma.id, unwrap(stacked.gamma.clone().inner()));
            put(layer.norm.beta.id, unwrap(stacked.beta.clone().inner()));
            let [mean, var] = running_ids(&layer.norm);
            put(mean, unwrap(stacked.running_mean.clone().inner()));
            put(var, unwrap(stacked.running_var.clone().inner()));
        }
        put(template.head.weight.id, unwrap(self.head_weight.clone().inner()));
        if let (Some(bias), Some(values)) = (&template.head.bias, &self.head_bias) {
            put(bias.id, unwrap(values.clone().inner()));
        }
        replace_params(template.clone(), values)
    }
}

/// The ids of `norm`'s running mean and variance: its float tensors other than γ and β, in
/// module order.
fn running_ids<B: Backend>(norm: &BatchNorm<B>) -> [ParamId; 2] {
    struct Ids(Vec<ParamId>);
    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.id);
        }
    }
    let mut ids = Ids(Vec::new());
    norm.visit(&mut ids);
    let mut running = ids.0.into_iter().filter(|id| *id != norm.gamma.id && *id != norm.beta.id);
    [0; 2].map(|_| running.next().expect("BatchNorm keeps a running mean and variance"))
}

#[cfg(test)]
mod tests;
