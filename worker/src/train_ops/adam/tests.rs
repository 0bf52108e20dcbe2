//! Tests of [`super`]: the fused updates against burn's Adam (CPU), the record round trip, and
//! the CUDA kernels against burn's ops.

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
    let adam = FusedAdam { beta_1, beta_2, epsilon };
    let start = train(adam.init::<B>(), 0);
    let moved = reference.iter().zip(&start).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(moved > 0.01, "five steps at lr 1e-2 must move the weights (moved {moved})");
    let per_step = train(adam.init::<B>(), 5);
    let per_parameter = train(adam.init_per_parameter::<B, Linear<B>>(), 5);
    for (name, fused) in [("one call per step", per_step), ("one call per parameter", per_parameter)] {
        for (i, (f, r)) in fused.iter().zip(&reference).enumerate() {
            assert!((f - r).abs() < 1e-6, "{name}, weight {i}: fused {f} vs burn {r}");
        }
    }
}

/// [`ModuleAdam`] through a saved and reloaded record trains on exactly as without the
/// round trip, and a parameter without a gradient (a frozen bias) is left as it was.
#[test]
fn module_adam_resumes_from_its_record_and_skips_frozen_parameters() {
    let (beta_1, beta_2, epsilon) = BETAS_EPS;
    let adam = FusedAdam { beta_1, beta_2, epsilon };
    let device = Default::default();
    let mut model: Linear<B> = LinearConfig::new(4, 2).init(&device);
    // Concrete values: a clone of a lazily initialised parameter would draw its own.
    let weight =
        Tensor::<B, 2>::from_data([[0.5, -0.25], [0.125, 0.75], [-0.5, 0.25], [0.375, -0.625]], &device);
    model.weight = Param::from_tensor(weight);
    let bias = Tensor::<B, 1>::from_data([0.25, -0.5], &device);
    model.bias = Some(Param::from_tensor(bias).set_require_grad(false));
    let values: Vec<f32> = (0..12).map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0).collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(values, [3, 4]), &device);
    let step = |model: Linear<B>, optim: &mut ModuleAdam<B>| {
        let grads =
            GradientsParams::from_grads(model.forward(x.clone()).powi_scalar(2).mean().backward(), &model);
        optim.step(1e-2, model, grads)
    };
    let weights = |model: &Linear<B>| model.weight.val().into_data().to_vec::<f32>().unwrap();
    let (mut straight, mut optim) = (model.clone(), adam.init::<B>());
    for _ in 0..4 {
        straight = step(straight, &mut optim);
    }
    let (mut resumed, mut first) = (model.clone(), adam.init::<B>());
    for _ in 0..2 {
        resumed = step(resumed, &mut first);
    }
    let record = Optimizer::<Linear<B>, B>::to_record(&first);
    assert_eq!(record.len(), 1, "moments of the weight only");
    assert!(record.values().all(|m| m.time == 2 && m.moment_1.dims() == [8]));
    let mut second = Optimizer::<Linear<B>, B>::load_record(adam.init::<B>(), record);
    for _ in 0..2 {
        resumed = step(resumed, &mut second);
    }
    let moved =
        weights(&straight).iter().zip(weights(&model)).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(moved > 0.01, "four steps at lr 1e-2 must move the weight (moved {moved})");
    assert_eq!(weights(&resumed), weights(&straight));
    let bias = straight.bias.unwrap().val().into_data().to_vec::<f32>().unwrap();
    assert_eq!(bias, vec![0.25, -0.5], "the frozen bias is not updated");
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

/// Two models' parameters stacked model-major and updated by one [`StackedAdam`], each model at
/// its own learning rate (one of them a step behind, as a job resumed from an older checkpoint),
/// move as each model's own [`ModuleAdam`] moves them on the same gradients; the stacked state
/// unstacks to each model's optimizer.
#[test]
fn stacked_adam_updates_each_model_as_its_own_optimizer_would() {
    let (beta_1, beta_2, epsilon) = BETAS_EPS;
    let adam = FusedAdam { beta_1, beta_2, epsilon };
    let device = Default::default();
    let x = Tensor::<B, 2>::from_data(
        TensorData::new((0..12).map(|i| (i % 5) as f32 - 2.0).collect(), [4, 3]),
        &device,
    );
    let mut models: Vec<Linear<B>> = (0..2).map(|_| LinearConfig::new(3, 2).init(&device)).collect();
    let mut optims: Vec<ModuleAdam<B>> = (0..2).map(|_| adam.init::<B>()).collect();
    let lrs = [1e-2, 3e-3];
    let grads_of = |model: &Linear<B>, scale: f32| {
        let grads = model.forward(x.clone()).powi_scalar(2).mean().mul_scalar(scale).backward();
        let weight = unwrap(model.weight.grad(&grads).unwrap());
        let bias = unwrap(model.bias.as_ref().unwrap().grad(&grads).unwrap());
        (vec![weight, bias], GradientsParams::from_grads(grads, model))
    };
    // Model 0 is one update ahead when the two are stacked.
    let (_, grads) = grads_of(&models[0], 1.0);
    models[0] = optims[0].step(lrs[0], models[0].clone(), grads);
    let ids: Vec<Vec<ParamId>> =
        models.iter().map(|m| vec![m.weight.id, m.bias.as_ref().unwrap().id]).collect();
    let params_of =
        |m: &Linear<B>| vec![unwrap(m.weight.val().inner()), unwrap(m.bias.as_ref().unwrap().val().inner())];
    let stack = |parts: Vec<Vec<FloatTensor<Flex>>>, i: usize| {
        let shape = parts[0][i].shape();
        let mut dims: Vec<usize> = shape.iter().copied().collect();
        dims[0] *= parts.len();
        stack_parts::<Flex>(parts.iter().map(|p| p[i].clone()).collect(), dims.into())
    };
    let all_params: Vec<_> = models.iter().map(params_of).collect();
    let mut params: Vec<_> = (0..2).map(|i| stack(all_params.clone(), i)).collect();
    let mut stacked = StackedAdam::stack(&optims.iter().collect::<Vec<_>>(), &ids, &params);
    for step in 0..2 {
        let scale = 2.0 + step as f32;
        let (grads, alone): (Vec<_>, Vec<_>) = models.iter().map(|m| grads_of(m, scale)).unzip();
        params = stacked.step(params, (0..2).map(|i| stack(grads.clone(), i)).collect(), &lrs);
        for (j, grads) in alone.into_iter().enumerate() {
            models[j] = optims[j].step(lrs[j], models[j].clone(), grads);
        }
    }
    let flat = |t: FloatTensor<Flex>| t.into_data().to_vec::<f32>().unwrap();
    for (j, model) in models.iter().enumerate() {
        for (i, want) in params_of(model).into_iter().enumerate() {
            let (got, want) = (flat(model_part::<Flex>(&params[i], j, 2)), flat(want));
            let err = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max);
            assert!(err < 1e-7, "model {j}, parameter {i}: {got:?} vs {want:?}");
        }
        let record = |o: &ModuleAdam<B>| Optimizer::<Linear<B>, B>::to_record(o);
        let (got, want) = (record(&stacked.unstack(j, &ids[j])), record(&optims[j]));
        assert_eq!(got.len(), want.len());
        for (id, want) in want {
            let got = &got[&id];
            assert_eq!(got.time, want.time, "model {j}'s update count");
            assert_eq!(flat(unwrap(got.moment_2.clone().inner())), flat(unwrap(want.moment_2.inner())));
        }
    }
    assert_eq!(Optimizer::<Linear<B>, B>::to_record(&optims[0]).values().next().unwrap().time, 3);
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
        crate::model::drawn(|| Tensor::<G, 4>::random(shape, Distribution::Uniform(low, 1.0), &device))
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

/// One kernel for several parameters (different ranks and sizes, permuted and contiguous
/// gradients) of one model and of two stacked models at their own step sizes, against each parameter's
/// update through burn's ops on the GPU.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_fused_adam_of_many_parameters_matches_burns_ops() {
    type G = burn_cuda::Cuda;
    let device = Default::default();
    let random = |shape: Vec<usize>, low: f64| {
        crate::model::drawn(|| {
            Tensor::<G, 1>::random(
                [shape.iter().product::<usize>()],
                Distribution::Uniform(low, 1.0),
                &device,
            )
        })
    };
    // (parameter shape, the gradient as stored, the permutation that views it in that shape)
    let cases: [(Vec<usize>, Vec<usize>, Vec<isize>); 6] = [
        (vec![8, 4, 3, 3], vec![8, 3, 3, 4], vec![0, 3, 1, 2]),
        // Several cubes' worth, the last one's threads partly past the end.
        (vec![38, 29, 3, 3], vec![38, 3, 3, 29], vec![0, 3, 1, 2]),
        (vec![2, 3001], vec![2, 3001], vec![0, 1]),
        (vec![16], vec![16], vec![0]),
        (vec![6, 10], vec![10, 6], vec![1, 0]),
        (vec![4, 7, 2, 3], vec![4, 7, 2, 3], vec![0, 1, 2, 3]),
    ];
    let (beta_1, beta_2, epsilon) = BETAS_EPS;
    let adam = FusedAdam { beta_1, beta_2, epsilon };
    for scalars in [vec![adam.scalars(1e-2, 3)], vec![adam.scalars(1e-2, 3), adam.scalars(1e-3, 40)]] {
        let mut inputs = Vec::new();
        let mut expected = Vec::new();
        for (shape, stored, permutation) in &cases {
            let dyn_shape = |t: Tensor<G, 1>, s: &[usize]| -> FloatTensor<G> {
                G::float_reshape(unwrap(t), s.to_vec().into())
            };
            let param = dyn_shape(random(shape.clone(), -1.0), shape);
            let grad = G::float_permute(
                dyn_shape(random(stored.clone(), -1.0), stored),
                &permutation.iter().map(|&p| p as usize).collect::<Vec<_>>(),
            );
            let moment_1 = dyn_shape(random(shape.clone(), -0.1), shape);
            let moment_2 = dyn_shape(random(shape.clone(), 0.0), shape);
            let case = [param, grad, moment_1, moment_2];
            expected.push(update_stacked_by_ops::<G>(case.clone(), &scalars));
            inputs.push(case);
        }
        let outputs = G::adam_update_many(inputs, &scalars);
        assert_eq!(outputs.len(), cases.len());
        for ((case, outs), by_ops) in cases.iter().zip(outputs).zip(expected) {
            let n: usize = case.0.iter().product();
            for (name, (k, o)) in ["param", "moment_1", "moment_2"].iter().zip(outs.into_iter().zip(by_ops)) {
                assert_eq!(k.shape(), burn::tensor::Shape::from(case.0.clone()), "{name} of {:?}", case.0);
                let [k, o] = [k, o].map(|t| wrap::<G, 1>(G::float_reshape(t, vec![n].into())));
                let err: f32 = (k - o).abs().max().into_scalar();
                assert!(err < 1e-6, "{name} of {:?} with {} models differs by {err}", case.0, scalars.len());
            }
        }
    }
}
