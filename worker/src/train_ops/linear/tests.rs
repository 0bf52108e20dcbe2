//! The head's node against burn's `Linear` (CPU), and the CUDA matmul against burn's (GPU).

use super::*;
use burn::backend::Flex;
use burn::nn::LinearConfig;

type A = Autodiff<Flex>;

fn input<Bk: Backend>(rows: usize, device: &Bk::Device) -> Tensor<Bk, 2> {
    let values: Vec<f32> = (0..rows * 24).map(|i| ((i * 37 % 29) as f32 - 14.0) / 7.0).collect();
    Tensor::from_data(TensorData::new(values, [rows, 24]), device)
}

/// The node's output and its gradients by the input, the weights and the bias against autodiff
/// through `Linear::forward`, with a loss that weighs every output differently.
#[test]
fn the_head_node_matches_autodiff_through_linear() {
    let device = Default::default();
    let linear = LinearConfig::new(24, 10).init::<A>(&device);
    let bias =
        Tensor::<A, 1>::from_data(TensorData::new((0..10).map(|i| i as f32 / 10.0).collect(), [10]), &device);
    let linear = Linear { bias: Some(burn::module::Param::from_tensor(bias)), ..linear };
    let weights = Tensor::<A, 2>::from_data(
        TensorData::new((0..60).map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0).collect(), [6, 10]),
        &device,
    );
    let run = |node: bool| {
        let x = input::<A>(6, &device).require_grad();
        let y = if node { head(&linear, x.clone()) } else { linear.forward(x.clone()) };
        let grads = y.clone().mul(weights.clone()).sum().backward();
        let grad = |t: Option<Tensor<Flex, 2>>| t.unwrap().into_data().to_vec::<f32>().unwrap();
        let weight_grad = grad(linear.weight.grad(&grads));
        let bias_grad =
            linear.bias.as_ref().unwrap().grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        (y.into_data().to_vec::<f32>().unwrap(), grad(x.grad(&grads)), weight_grad, bias_grad)
    };
    let (node, linear_ops) = (run(true), run(false));
    for (name, a, b) in [
        ("output", &node.0, &linear_ops.0),
        ("input gradient", &node.1, &linear_ops.1),
        ("weight gradient", &node.2, &linear_ops.2),
        ("bias gradient", &node.3, &linear_ops.3),
    ] {
        assert_eq!(a.len(), b.len(), "{name}");
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "{name} is all but zero");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * scale, "{name} {i}: node {x} vs Linear {y}");
        }
    }
}

/// A head without a bias adds zeros.
#[test]
fn a_head_without_bias_is_the_product() {
    let device = Default::default();
    let linear = LinearConfig::new(24, 10).with_bias(false).init::<Flex>(&device);
    let x = input::<Flex>(5, &device);
    let got = head(&linear, x.clone()).into_data().to_vec::<f32>().unwrap();
    let want = x.matmul(linear.weight.val()).into_data().to_vec::<f32>().unwrap();
    assert_eq!(got, want);
}

/// The CUDA matmul against burn's on the head's shapes, with and without burn's fusion stream,
/// operands plain and as transposed views (as the gradients pass them), and the forward with
/// its bias: `cargo test -p worker -- --ignored cuda`.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_small_matmul_matches_burns_matmul() {
    fn check<G: LinearOps>() {
        use burn::tensor::Distribution::Normal;
        let device = Default::default();
        let x = crate::model::drawn(|| Tensor::<G, 2>::random([336, 256], Normal(0.0, 1.0), &device));
        let w = crate::model::drawn(|| Tensor::<G, 2>::random([256, 10], Normal(0.0, 0.1), &device));
        let dy = crate::model::drawn(|| Tensor::<G, 2>::random([336, 10], Normal(0.0, 0.01), &device));
        let cases = [
            ("forward", x.clone(), w.clone()),
            ("input gradient", dy.clone(), w.clone().transpose()),
            ("weight gradient", x.clone().transpose(), dy),
        ];
        for (name, lhs, rhs) in cases {
            let reference = lhs.clone().matmul(rhs.clone());
            let got = wrap::<G, 2>(G::small_matmul(unwrap(lhs), unwrap(rhs)));
            assert_eq!(got.dims(), reference.dims(), "{name}");
            let err = (got - reference.clone()).abs().max().into_scalar().elem::<f32>();
            let scale = reference.abs().max().into_scalar().elem::<f32>();
            // burn's f32 matmul may run as TF32 on tensor cores: ~1e-3 of the scale.
            assert!(err <= 5e-3 * scale, "{name} differs by {err} (scale {scale})");
        }
        let b = crate::model::drawn(|| Tensor::<G, 1>::random([10], Normal(0.0, 1.0), &device));
        let reference = x.clone().matmul(w.clone()) + b.clone().reshape([1, 10]);
        let got = wrap::<G, 2>(G::dense(unwrap(x), unwrap(w), unwrap(b)));
        let err = (got - reference.clone()).abs().max().into_scalar().elem::<f32>();
        let scale = reference.abs().max().into_scalar().elem::<f32>();
        assert!(scale > 0.5 && err <= 5e-3 * scale, "dense differs by {err} (scale {scale})");
    }
    check::<burn_cuda::Cuda>();
    check::<crate::train_ops::CudaDirect>();
}
