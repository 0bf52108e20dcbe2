//! The experiment's CNN with Keras 2 defaults reproduced: three blocks of
//! 3 × [Conv 3×3 same → BatchNorm → ReLU] (64/128/256 filters × width multiplier), 2×2 average
//! pooling after blocks 1 and 2, global average pooling and a 10-way dense layer (logits; the
//! softmax lives in the loss).
//!
//! Keras defaults: Glorot-uniform kernels, zero biases, BatchNorm ε = 1e-3 and moving-average
//! momentum 0.99 (`running = 0.99·running + 0.01·batch`). burn's `BatchNorm` updates
//! `running = (1 − momentum)·running + momentum·batch` (burn-nn `norm/batch.rs`), so the
//! Keras behaviour is burn momentum 0.01.

use std::sync::Mutex;

use burn::module::{ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::ops::FloatTensor;

use crate::train_ops::{Kernels, TrainOps, batch_norm, conv, linear, pool, to_dtype};

mod fused;
pub use fused::{FusedCnn, FusionError, check_fusable, side_by_side};

/// Filters of the three blocks at width multiplier 1.0.
pub const BASE_FILTERS: [usize; 3] = [64, 128, 256];
/// Convolutions per block.
pub const CONVS_PER_BLOCK: usize = 3;
/// Keras `BatchNormalization` epsilon.
pub const BN_EPSILON: f64 = 1e-3;
/// Keras momentum 0.99 expressed in burn's convention (weight of the new batch statistic).
pub const BN_MOMENTUM_BURN: f64 = 0.01;
/// Output classes.
pub const NUM_CLASSES: usize = 10;

/// Filters of each block for a width multiplier (rounded, at least 1).
pub fn block_filters(width_multiplier: f32) -> [usize; 3] {
    BASE_FILTERS.map(|f| ((f as f32 * width_multiplier).round() as usize).max(1))
}

/// Conv 3×3 (same) → BatchNorm → ReLU.
#[derive(Module, Debug)]
pub struct ConvBnRelu<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm<B>,
}

impl<B: Backend> ConvBnRelu<B> {
    fn new(channels_in: usize, channels_out: usize, device: &B::Device) -> Self {
        let mut conv = Conv2dConfig::new([channels_in, channels_out], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .with_initializer(Initializer::XavierUniform { gain: 1.0 })
            .init(device);
        conv.bias = Some(Param::from_tensor(Tensor::zeros([channels_out], device)));
        let norm = BatchNormConfig::new(channels_out)
            .with_epsilon(BN_EPSILON)
            .with_momentum(BN_MOMENTUM_BURN)
            .init(device);
        Self { conv, norm }
    }

    /// The layer; in training, BatchNorm normalises each of `bn_groups` equal groups of the
    /// batch over its own statistics (1: the whole batch); `pooled`: its output 2×2 average
    /// pooled by the BatchNorm node ([`batch_norm::pools_output`]); `operands`: the
    /// convolution's, made with the other layers' ([`conv::layer_operands`]).
    fn forward(
        &self,
        x: Tensor<B, 4>,
        operands: Option<[FloatTensor<B>; 2]>,
        kernels: Kernels,
        bn_groups: usize,
        pooled: bool,
    ) -> Tensor<B, 4>
    where
        B: TrainOps,
    {
        // The fused BatchNorm takes the conv bias into its mean, the batch's in training and
        // the running one in inference (the convolution leaves it out: `ConvOps::conv3x3_same`).
        let fused_norm = kernels.fused_batch_norm;
        let y = conv::conv3x3(&self.conv, x, operands, kernels, fused_norm);
        let conv_bias =
            (fused_norm && kernels.custom_conv()).then(|| self.conv.bias.as_ref().map(|b| b.val()));
        batch_norm::batch_norm_relu(&self.norm, y, kernels, bn_groups, conv_bias.flatten(), pooled)
    }
}

/// The experiment's CNN.
#[derive(Module, Debug)]
pub struct Cnn<B: Backend> {
    block1: Vec<ConvBnRelu<B>>,
    block2: Vec<ConvBnRelu<B>>,
    block3: Vec<ConvBnRelu<B>>,
    pool: AvgPool2d,
    head: Linear<B>,
    /// Implementation of the conv and BatchNorm training nodes (not part of the weights).
    #[module(skip)]
    kernels: Kernels,
    /// Images per BatchNorm group in training (`None`: the whole batch).
    #[module(skip)]
    bn_group: Option<usize>,
}

/// Hyper-parameters of [`Cnn`].
#[derive(Config, Debug)]
pub struct CnnConfig {
    /// Channel multiplier (1.0 = 64/128/256 filters).
    #[config(default = 1.0)]
    pub width_multiplier: f32,
}

impl CnnConfig {
    /// Builds the model on `device`, drawing weights from the backend RNG (seed it first).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Cnn<B> {
        let [f1, f2, f3] = block_filters(self.width_multiplier);
        let block = |c_in: usize, c_out: usize| -> Vec<ConvBnRelu<B>> {
            (0..CONVS_PER_BLOCK)
                .map(|i| ConvBnRelu::new(if i == 0 { c_in } else { c_out }, c_out, device))
                .collect()
        };
        let block1 = block(3, f1);
        let block2 = block(f1, f2);
        let block3 = block(f2, f3);
        let mut head = LinearConfig::new(f3, NUM_CLASSES)
            .with_initializer(Initializer::XavierUniform { gain: 1.0 })
            .init(device);
        head.bias = Some(Param::from_tensor(Tensor::zeros([NUM_CLASSES], device)));
        let pool = AvgPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        Cnn { block1, block2, block3, pool, head, kernels: Kernels::default(), bn_group: None }
    }
}

impl<B: Backend> Cnn<B> {
    /// The model with its training nodes implemented by `kernels` (default [`Kernels::FAST`]).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// Which implementation the training nodes use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The model with BatchNorm statistics per group of `images` images in training ("ghost
    /// batches"; needs the fused BatchNorm node, [`Kernels::fused_batch_norm`]).
    pub fn with_bn_group(mut self, images: Option<usize>) -> Self {
        self.bn_group = images;
        self
    }
}

/// The BatchNorm groups of a batch of `n` images for groups of `group` images: `n / group` when
/// that divides, otherwise (an epoch's smaller last batch) the divisor of `n` whose group size is
/// closest to `group`, ties to the smaller groups; 1 without a group size.
pub fn bn_groups(n: usize, group: Option<usize>) -> usize {
    let Some(group) = group.filter(|g| *g > 0 && *g < n) else { return 1 };
    if n.is_multiple_of(group) {
        return n / group;
    }
    (1..=n).filter(|g| n.is_multiple_of(*g)).min_by_key(|g| ((n / g).abs_diff(group), n / g)).unwrap_or(1)
}

impl<B: TrainOps> Cnn<B> {
    fn pool(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        pool::avg_pool_2x2(&self.pool, x, self.kernels)
    }

    /// The convolutions' operands in training, made in one call ([`conv::layer_operands`]) for
    /// the layers whose input is in the activations' dtype (the image's layer too when
    /// `image_dtype` is that); `None` for the others.
    fn layer_operands(&self, image_dtype: FloatDType) -> Vec<Option<[FloatTensor<B>; 2]>> {
        let activations = self.kernels.activation_dtype();
        let layers = self.block1.iter().chain(&self.block2).chain(&self.block3);
        let convs: Vec<&Conv2d<B>> = layers.map(|layer| &layer.conv).collect();
        // The image's layer reads the images' dtype: its operands, if in another, come with it.
        let skip = usize::from(image_dtype != activations);
        let made = conv::layer_operands(&convs[skip..], self.kernels, activations);
        (0..skip).map(|_| None).chain(made).collect()
    }

    /// Images `[N, 3, 32, 32]` in [0, 1] → logits `[N, 10]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let groups = bn_groups(images.dims()[0], self.bn_group);
        // With `bimage` the image's layer runs in bf16, as under a framework's bf16 autocast.
        let mut x = match self.kernels.bf16_image {
            true => to_dtype(images, FloatDType::BF16),
            false => images,
        };
        // With `bnpool` in training a pooled block's last BatchNorm node pools its own output.
        let norm_pools = batch_norm::pools_output::<B>(self.kernels, &x.device());
        let mut operands = self.layer_operands(x.dtype().into()).into_iter();
        for (block, pooling) in [(&self.block1, true), (&self.block2, true), (&self.block3, false)] {
            let in_norm = pooling && norm_pools;
            let last = block.len() - 1;
            for (i, layer) in block.iter().enumerate() {
                x = layer.forward(x, operands.next().flatten(), self.kernels, groups, in_norm && i == last);
            }
            if pooling && !in_norm {
                x = self.pool(x);
            }
        }
        // The head runs in f32 whatever the activations' dtype.
        let features = pool::global_avg_pool(x, self.kernels);
        match self.kernels.fixed_head {
            true => linear::head(&self.head, features),
            false => self.head.forward(features),
        }
    }
}

/// Serialises seeding + initialisation: backends keep one process-wide RNG (burn-flex's is a
/// global `Mutex`), and burn initialises parameters lazily, so two runners initialising at the
/// same time would interleave their draws.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Forces every lazily-initialised parameter to be drawn now, in module order.
struct Materialise;

impl<B: Backend> ModuleVisitor<B> for Materialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// `draw`'s random tensors under the lock [`seeded_model`] holds: the backend's RNG is one
/// per process, so a draw on another thread between its seeding and its weights would change
/// them.
pub fn drawn<T>(draw: impl FnOnce() -> T) -> T {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    draw()
}

/// Seeds the backend RNG with `seed` and builds the model with every weight drawn at once,
/// under a process-wide lock, so the weights depend on `seed` alone even when several runners
/// (slots, tests) initialise models concurrently.
pub fn seeded_model<B: Backend>(config: &CnnConfig, seed: u64, device: &B::Device) -> Cnn<B> {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    let model = config.init::<B>(device);
    model.visit(&mut Materialise);
    model
}

/// Parameter counts as Keras' `model.summary()` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KerasParamCount {
    /// Conv/dense kernels and biases plus BatchNorm gamma and beta.
    pub trainable: usize,
    /// BatchNorm moving mean and variance.
    pub non_trainable: usize,
}

/// Keras' parameter count of the model at `width_multiplier`, computed from the architecture.
pub fn keras_param_count(width_multiplier: f32) -> KerasParamCount {
    let filters = block_filters(width_multiplier);
    let mut trainable = 0;
    let mut non_trainable = 0;
    let mut c_in = 3;
    for c_out in filters {
        for _ in 0..CONVS_PER_BLOCK {
            trainable += 3 * 3 * c_in * c_out + c_out + 2 * c_out;
            non_trainable += 2 * c_out;
            c_in = c_out;
        }
    }
    trainable += c_in * NUM_CLASSES + NUM_CLASSES;
    KerasParamCount { trainable, non_trainable }
}

#[cfg(test)]
mod tests;
