//! Tests of [`super`]: models stacked as one compute each model's own forward, gradients and
//! running statistics, and come back out unchanged (CPU; the same on a GPU, ignored).

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::tensor::backend::AutodiffBackend;
use sweep_proto::LossVariant;

use super::*;
use crate::loss::variant_loss;
use crate::model::{CnnConfig, NUM_CLASSES, seeded_model};
use crate::train_ops::TrainBackend;
use crate::train_ops::adam::model_part;

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

fn values<I: Backend, const D: usize>(t: Tensor<I, D>) -> Vec<f32> {
    t.cast(FloatDType::F32).into_data().to_vec().expect("f32 values")
}

/// A primitive's values, flat.
fn flat<I: Backend>(t: FloatTensor<I>) -> Vec<f32> {
    use burn::tensor::TensorMetadata;
    let n = t.shape().num_elements();
    values(wrap::<I, 1>(I::float_reshape(t, [n].into())))
}

/// Every float tensor of `model` (parameters and running statistics), in module order.
fn all_values<A: AutodiffBackend>(model: &Cnn<A>) -> Vec<Vec<f32>> {
    struct All(Vec<Vec<f32>>);
    impl<A: AutodiffBackend> ModuleVisitor<A> for All {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
            self.0.push(values(param.val().inner()));
        }
    }
    let mut all = All(Vec::new());
    model.visit(&mut all);
    all.0
}

/// Why `got` is not `want` within `tolerance` of its scale, if it is not.
fn mismatch(what: &str, got: &[f32], want: &[f32], tolerance: f32) -> Option<String> {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what} is all zeros: the comparison would prove nothing");
    let err = got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    (err > tolerance * scale.max(1e-3)).then(|| format!("{what} differs by {err} (scale {scale})"))
}

/// Three models (different seeds, variants, images) stacked as one give, in one forward and
/// backward, each model's own logits, gradients and running statistics, within `tolerance` of
/// each result's scale: what differs.
fn stacked_step_mismatches<A: TrainBackend>(kernels: Kernels, tolerance: f32) -> Vec<String> {
    let device = Default::default();
    let variants = [LossVariant::NaturalSoftmax, LossVariant::NormalLr1e2, LossVariant::MultiSoftmax];
    let labels = |j: i64| Tensor::<A, 1, Int>::from_data([0, 3, 5, 7, 9, 2].map(|l| (l + j) % 10), &device);
    let image = |j: usize| images::<A>(0.005 + j as f32 * 0.01, &device);
    let models: Vec<Cnn<A>> = (0..3).map(|j| model(j, kernels, &device)).collect();
    let mut fused = FusedCnn::stack(&models.iter().collect::<Vec<_>>()).unwrap();
    let logits = fused.forward(side_by_side(Tensor::cat((0..3).map(image).collect(), 0), 3));
    assert_eq!(logits.dims(), [3, 6, NUM_CLASSES]);
    let logits: Vec<Tensor<A, 2>> =
        (0..3).map(|j| logits.clone().narrow(0, j, 1).reshape([6, NUM_CLASSES])).collect();
    let loss = (0..3)
        .map(|j| variant_loss(variants[j], logits[j].clone(), labels(j as i64)))
        .reduce(|a, b| a.add(b))
        .unwrap();
    let grads = fused.gradients(&mut loss.backward());
    assert_eq!(grads.len(), FusedCnn::trainable_ids(&models[0]).len());
    let mut failures = Vec::new();
    for (j, alone) in models.iter().enumerate() {
        let alone_logits = alone.forward(image(j));
        let alone_grads = variant_loss(variants[j], alone_logits.clone(), labels(j as i64)).backward();
        let grad = |t: Option<Tensor<A::InnerBackend, 4>>| values(t.expect("a gradient"));
        let (head, bias) = (&alone.head.weight, alone.head.bias.as_ref().unwrap());
        // (what, stacked index in `trainables` order, the alone model's)
        let expected = [
            ("logits", None, values(alone_logits.inner())),
            ("conv1 weight grad", Some(0), grad(alone.block1[0].conv.weight.grad(&alone_grads))),
            ("bn4 gamma grad", Some(10), values(alone.block2[0].norm.gamma.grad(&alone_grads).unwrap())),
            ("conv9 weight grad", Some(24), grad(alone.block3[2].conv.weight.grad(&alone_grads))),
            ("head weight grad", Some(27), values(head.grad(&alone_grads).unwrap())),
            ("head bias grad", Some(28), values(bias.grad(&alone_grads).unwrap())),
        ];
        for (what, index, want) in expected {
            let got = match index {
                None => values(logits[j].clone().inner()),
                Some(i) => flat::<A::InnerBackend>(model_part::<A::InnerBackend>(&grads[i], j, 3)),
            };
            failures.extend(mismatch(&format!("model {j}: {what}"), &got, &want, tolerance));
        }
        // The member's running statistics are the ones its own forward left.
        let member = fused.member(j, alone);
        for (b, l) in [(0, 0), (2, 2)] {
            let (got, want) = (&member.blocks()[b][l].norm, &alone.blocks()[b][l].norm);
            for (what, g, w) in [
                ("running mean", &got.running_mean, &want.running_mean),
                ("running var", &got.running_var, &want.running_var),
            ] {
                let [g, w] = [g, w].map(|s| values(s.value_sync().inner()));
                failures.extend(mismatch(
                    &format!("model {j}: block {b} layer {l} {what}"),
                    &g,
                    &w,
                    tolerance,
                ));
            }
        }
    }
    failures.into_iter().map(|f| format!("{kernels}: {f}")).collect()
}

#[test]
fn a_stacked_forward_and_backward_is_each_models_own() {
    let failures = stacked_step_mismatches::<B>(Kernels::FAST, 1e-4);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same with each model's convolutions run one model at a time (`mconv`), the image's as
/// an explicit GEMM or not.
#[test]
fn a_stacked_step_with_per_model_convolutions_is_each_models_own() {
    for kernels in ["fast+mconv", "fast+xgemm+mconv"] {
        let failures = stacked_step_mismatches::<B>(kernels.parse().unwrap(), 1e-4);
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

/// The same on a GPU in f32. Needs a CUDA GPU: `cargo test -p worker -- --ignored cuda`.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_stacked_forward_and_backward_is_each_models_own() {
    assert_stacked_step_on_cuda(Kernels::FAST, 1e-3);
}

/// [`stacked_step_mismatches`] on the GPU with `kernels`: none within `tolerance`.
#[cfg(feature = "cuda")]
fn assert_stacked_step_on_cuda(kernels: Kernels, tolerance: f32) {
    let failures = stacked_step_mismatches::<crate::backend::CudaBackend>(kernels, tolerance);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same with the bf16 activations of `fast-bf16` (whose single model runs other
/// convolution kernels, so the two differ by bf16 rounding). Needs a CUDA GPU.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_stacked_bf16_forward_and_backward_is_each_models_own() {
    assert_stacked_step_on_cuda(Kernels::FAST_BF16, 5e-2);
}

/// The same with the per-model convolutions (`fast-bf16+mconv`: the forward and input gradient
/// on the single model's own kernels). Needs a CUDA GPU.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_stacked_per_model_forward_and_backward_is_each_models_own() {
    assert_stacked_step_on_cuda(Kernels { per_model_conv: true, ..Kernels::FAST_BF16 }, 5e-2);
}

/// The same with the library's grouped convolution (`cudnn`) for the layers it takes, in f32
/// (on the CPU its calls are the references; the set's bf16 only matters to cuDNN).
#[test]
fn a_stacked_step_with_library_convolutions_is_each_models_own() {
    let failures = stacked_step_mismatches::<B>(Kernels { cudnn_conv: true, ..Kernels::FAST }, 1e-4);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same on cuDNN (`fast-bf16+cudnn`: one grouped convolution for all models per layer and
/// pass, the single model's cuDNN convolutions alone). In bf16 at six images, rounding carried
/// through nine layers moves the smaller gradients by up to ~18 % on either fused path (the
/// batched GEMMs on the CPU: 15 %; cuDNN on an H200: 18 %), so this bounds them at 25 %: a
/// model's gradient computed from another model's channels would be off by its whole scale.
/// Needs a CUDA GPU and cuDNN.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU and cuDNN"]
fn cuda_stacked_cudnn_forward_and_backward_is_each_models_own() {
    assert_stacked_step_on_cuda("fast-bf16+cudnn".parse().unwrap(), 0.25);
}

/// Each model's logits and gradients (conv1, bn4 γ, conv9, head) from a stacked step of three
/// models, models 1 and 2 on images drawn with `others`.
#[cfg(feature = "cuda")]
fn stacked_results<A: TrainBackend>(kernels: Kernels, others: f32) -> Vec<Vec<Vec<f32>>> {
    let device = Default::default();
    let models: Vec<Cnn<A>> = (0..3).map(|j| model(j, kernels, &device)).collect();
    let mut fused = FusedCnn::stack(&models.iter().collect::<Vec<_>>()).unwrap();
    let image = |j: usize| images::<A>(if j == 0 { 0.005 } else { others + j as f32 * 0.01 }, &device);
    let logits = fused.forward(side_by_side(Tensor::cat((0..3).map(image).collect(), 0), 3));
    let labels = Tensor::<A, 1, Int>::from_data([0, 3, 5, 7, 9, 2], &device);
    let logits: Vec<Tensor<A, 2>> =
        (0..3).map(|j| logits.clone().narrow(0, j, 1).reshape([6, NUM_CLASSES])).collect();
    let loss = logits
        .iter()
        .map(|l| variant_loss(LossVariant::NaturalSoftmax, l.clone(), labels.clone()))
        .reduce(|a, b| a.add(b))
        .unwrap();
    let grads = fused.gradients(&mut loss.backward());
    (0..3)
        .map(|j| {
            let grad = |i: usize| flat::<A::InnerBackend>(model_part::<A::InnerBackend>(&grads[i], j, 3));
            [values(logits[j].clone().inner()), grad(0), grad(10), grad(24), grad(27)].into()
        })
        .collect()
}

/// With the image's layer in bf16 (`fast-bf16-cudnn`: the fused models' image layers side by
/// side on the single model's direct kernels, on CUDA cores or with `tcimage` tensor cores), a model's results come from its own channels
/// alone: other images for models 1 and 2 move theirs and leave model 0's as they were. (Each
/// model's image layer against its own in f32: `cuda_grouped_bf16_image_layers_are_each_models_own`;
/// the other layers against the model alone: the test above.) Needs a CUDA GPU and cuDNN.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU and cuDNN"]
fn cuda_stacked_bf16_image_models_are_each_their_own() {
    let cudnn = Kernels::FAST_BF16_CUDNN;
    for kernels in [cudnn, Kernels { tensor_core_image: true, ..cudnn }] {
        let [a, b] = [0.2, 0.7].map(|others| stacked_results::<crate::backend::CudaBackend>(kernels, others));
        let names =
            ["logits", "conv1 weight grad", "bn4 gamma grad", "conv9 weight grad", "head weight grad"];
        for (what, (got, want)) in names.iter().zip(a[0].iter().zip(&b[0])) {
            assert_eq!(mismatch(&format!("{kernels}: model 0: {what}"), got, want, 1e-3), None);
        }
        for j in [1, 2] {
            for (what, (got, want)) in names.iter().zip(a[j].iter().zip(&b[j])) {
                assert!(
                    mismatch(&format!("model {j}: {what}"), got, want, 0.05).is_some(),
                    "{kernels}: model {j}'s {what} kept"
                );
            }
        }
    }
}

/// Stacking and taking each model back out changes nothing: every parameter and running
/// statistic, bit for bit, under the model's own ids; updated trained values come back out as
/// that model's.
#[test]
fn models_come_back_out_of_the_stack_as_they_went_in() {
    let device = Default::default();
    let models: Vec<Cnn<B>> = (0..3).map(|j| model(10 + j, Kernels::FAST, &device)).collect();
    let mut fused = FusedCnn::stack(&models.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(fused.models(), 3);
    for (j, original) in models.iter().enumerate() {
        let member = fused.member(j, original);
        assert_eq!(all_values(&member), all_values(original), "model {j}");
        assert_eq!(member.block2[1].conv.weight.id, original.block2[1].conv.weight.id);
    }
    // New trained values: model j's share of each comes out as model j's parameter.
    let doubled: Vec<_> =
        fused.trainables().into_iter().map(|t| unwrap(wrap::<Flex, 1>(t).mul_scalar(2.0))).collect();
    fused.set_trainables(doubled);
    let member = fused.member(1, &models[1]);
    let twice = |t: Tensor<B, 4>| values(t.inner().mul_scalar(2.0));
    assert_eq!(
        values(member.block3[0].conv.weight.val().inner()),
        twice(models[1].block3[0].conv.weight.val())
    );
    assert!(member.block3[0].conv.weight.val().is_require_grad());
    // Untrained: the conv bias and the running statistics stay as they were.
    assert_eq!(all_values(&member)[1], all_values(&models[1])[1]);
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
    assert!(matches!(FusedCnn::stack(&[&a, &narrow]), Err(FusionError::Shapes)));
}
