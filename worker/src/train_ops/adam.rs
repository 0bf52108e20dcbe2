//! Adam with burn's semantics (and Keras's defaults as the trainer sets them), one fused update
//! per parameter ([`TrainOps::adam_update`]).
//!
//! burn's `Adam` computes `m`, `v` and the step through about a dozen tensor operations per
//! parameter; on the GPU each one is a fusion-stream operation that the host records, so for
//! the model's 38 parameters the optimizer was a large part of the host time of a training step
//! (`worker bench` prints it as `host_ms`). [`FusedAdam`] does the same arithmetic: on CUDA as
//! one kernel per parameter, elsewhere through burn's ops.

use burn::module::AutodiffModule;
use burn::optim::SimpleOptimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::prelude::*;
use burn::record::Record;
use burn::tensor::backend::AutodiffBackend;

use super::{TrainOps, unwrap, wrap};

/// Adam's hyper-parameters (no weight decay, no AMSGrad: what the experiment uses).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusedAdam {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
}

/// The scalars of one update at step `t`, folded as burn's Adam folds them:
/// `param' = param − step_size · m' / (√v' + epsilon)` with
/// `step_size = lr · √(1−β₂ᵗ) / (1−β₁ᵗ)` and `epsilon = ε · √(1−β₂ᵗ)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars {
    pub beta_1: f32,
    pub beta_2: f32,
    pub step_size: f32,
    pub epsilon: f32,
}

impl FusedAdam {
    /// The scalars of step `time` (1 for the first update) at learning rate `lr`.
    pub fn scalars(&self, lr: f64, time: usize) -> AdamScalars {
        let time = time as i32;
        let bias_correction_2 = (1.0 - self.beta_2.powi(time)).sqrt();
        let step_factor = bias_correction_2 / (1.0 - self.beta_1.powi(time));
        AdamScalars {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            step_size: (lr * step_factor as f64) as f32,
            epsilon: self.epsilon * bias_correction_2,
        }
    }

    /// The optimizer for module `M` on autodiff backend `B`.
    pub fn init<B, M>(self) -> OptimizerAdaptor<Self, M, B>
    where
        B: AutodiffBackend<InnerBackend: TrainOps>,
        M: AutodiffModule<B>,
    {
        OptimizerAdaptor::from(self)
    }
}

/// Adam's state of one parameter: the two moments and the number of updates so far.
#[derive(Record, Clone)]
pub struct AdamMoments<B: Backend, const D: usize> {
    pub moment_1: Tensor<B, D>,
    pub moment_2: Tensor<B, D>,
    pub time: usize,
}

impl<B: TrainOps> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = AdamMoments<B, D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (moment_1, moment_2, time) = match state {
            Some(state) => (state.moment_1, state.moment_2, state.time),
            // burn's first update (m = (1−β₁)·g, v = (1−β₂)·g²) is the update from zeros.
            None => (grad.zeros_like(), grad.zeros_like(), 0),
        };
        let time = time + 1;
        let inputs = [tensor, grad, moment_1, moment_2].map(unwrap);
        let [tensor, moment_1, moment_2] = B::adam_update(inputs, self.scalars(lr, time)).map(wrap);
        (tensor, Some(AdamMoments { moment_1, moment_2, time }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        AdamMoments {
            moment_1: state.moment_1.to_device(device),
            moment_2: state.moment_2.to_device(device),
            time: state.time,
        }
    }
}

/// [`TrainOps::adam_update`] through burn's ops (any backend).
pub fn update_by_ops<B: Backend>(
    [param, grad, moment_1, moment_2]: [Tensor<B, 1>; 4],
    s: AdamScalars,
) -> [Tensor<B, 1>; 3] {
    let moment_1 = moment_1.mul_scalar(s.beta_1).add(grad.clone().mul_scalar(1.0 - s.beta_1));
    let moment_2 = moment_2.mul_scalar(s.beta_2).add(grad.square().mul_scalar(1.0 - s.beta_2));
    let step = moment_1.clone().mul_scalar(s.step_size).div(moment_2.clone().sqrt().add_scalar(s.epsilon));
    [param - step, moment_1, moment_2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Param;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::Distribution;

    type B = Autodiff<Flex>;

    const BETAS_EPS: (f32, f32, f32) = (0.9, 0.999, 1e-7);

    /// A few Adam steps of a small linear model through `optim`; returns its weights.
    fn train<O: Optimizer<Linear<B>, B>>(mut optim: O, steps: usize) -> Vec<f32> {
        let device = Default::default();
        let mut model: Linear<B> = LinearConfig::new(6, 3).init(&device);
        let weight = Tensor::<B, 2>::from_data([[0.5, -0.2, 0.1], [0.3, 0.0, -0.4]], &device);
        model.weight = Param::from_tensor(weight.repeat_dim(0, 3));
        model.bias = Some(Param::from_tensor(Tensor::from_data([0.1, -0.3, 0.2], &device)));
        // Fixed inputs: every run of `train` sees the same batch.
        let values: Vec<f32> = (0..48).map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0).collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(values, [8, 6]), &device);
        for step in 0..steps {
            let loss = model.forward(x.clone()).powi_scalar(2).mean().mul_scalar(1.0 + step as f32);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        let mut values = model.weight.val().into_data().to_vec::<f32>().unwrap();
        values.extend(model.bias.unwrap().val().into_data().to_vec::<f32>().unwrap());
        values
    }

    #[test]
    fn fused_adam_follows_burns_adam() {
        let (beta_1, beta_2, epsilon) = BETAS_EPS;
        let burn_adam = AdamConfig::new().with_beta_1(beta_1).with_beta_2(beta_2).with_epsilon(epsilon);
        let reference = train(burn_adam.init::<B, Linear<B>>(), 5);
        let fused = train(FusedAdam { beta_1, beta_2, epsilon }.init::<B, Linear<B>>(), 5);
        let start = train(FusedAdam { beta_1, beta_2, epsilon }.init::<B, Linear<B>>(), 0);
        let moved = reference.iter().zip(&start).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(moved > 0.01, "five steps at lr 1e-2 must move the weights (moved {moved})");
        for (i, (f, r)) in fused.iter().zip(&reference).enumerate() {
            assert!((f - r).abs() < 1e-6, "weight {i}: fused {f} vs burn {r}");
        }
    }

    #[test]
    fn scalars_fold_the_bias_corrections() {
        let (beta_1, beta_2, epsilon) = BETAS_EPS;
        let s = FusedAdam { beta_1, beta_2, epsilon }.scalars(1e-3, 1);
        // t = 1: √(1−β₂)/(1−β₁) = √0.001/0.1.
        let relative = |a: f32, b: f32| ((a - b) / b).abs();
        assert!(relative(s.step_size, 1e-3 * 0.001f32.sqrt() / 0.1) < 1e-4, "{s:?}");
        assert!(relative(s.epsilon, 1e-7 * 0.001f32.sqrt()) < 1e-4, "{s:?}");
        // Late steps: the corrections vanish.
        let late = FusedAdam { beta_1, beta_2, epsilon }.scalars(1e-3, 100_000);
        assert!(relative(late.step_size, 1e-3) < 1e-4 && relative(late.epsilon, 1e-7) < 1e-4, "{late:?}");
        assert_eq!((s.beta_1, s.beta_2), (beta_1, beta_2));
    }

    /// The CUDA kernel against the same update through burn's ops on the GPU, with a permuted
    /// gradient (the conv weight gradients are views): `cargo test -p worker -- --ignored cuda`.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_fused_adam_kernel_matches_burns_ops() {
        type G = burn_cuda::Cuda;
        let device = Default::default();
        let random = |shape: [usize; 4], low: f64| {
            Tensor::<G, 4>::random(shape, Distribution::Uniform(low, 1.0), &device)
        };
        let param = random([8, 4, 3, 3], -1.0);
        let grad = random([8, 3, 3, 4], -1.0).permute([0, 3, 1, 2]);
        let (moment_1, moment_2) = (random([8, 4, 3, 3], -0.1), random([8, 4, 3, 3], 0.0));
        let (beta_1, beta_2, epsilon) = BETAS_EPS;
        let scalars = FusedAdam { beta_1, beta_2, epsilon }.scalars(1e-2, 3);
        let inputs = [param, grad, moment_1, moment_2];
        let kernel = G::adam_update(inputs.clone().map(unwrap), scalars).map(wrap::<G, 4>);
        let by_ops = update_by_ops(inputs.map(|t| t.reshape([288])), scalars);
        for (name, (k, o)) in ["param", "moment_1", "moment_2"].iter().zip(kernel.into_iter().zip(by_ops)) {
            assert_eq!(k.dims(), [8, 4, 3, 3]);
            let err: f32 = (k.reshape([288]) - o).abs().max().into_scalar();
            assert!(err < 1e-6, "{name} differs by {err}");
        }
    }
}
