//! The experiment's cross-entropy, Keras's `categorical_crossentropy` of the softmax
//! ([`crate::keras::cross_entropy`]), as one autodiff node ([`CrossEntropyOps::cross_entropy`]),
//! and natural_softmax's loss, the cross-entropy plus its natural-vs-artificial term, as another
//! ([`CrossEntropyOps::natural_cross_entropy`], the gradient in closed form; on CUDA the same
//! kernel with the term added).
//!
//! Per row, with `p = softmax(logits)`, `S = Σ p` and `q = p[label] / S`, the loss is
//! `−ln clip(q, ε, 1 − ε)` averaged over the rows, and its gradient by the logits is
//! `(p/S − onehot(label)) / N` where the clip lets `q` through (`ε ≤ q ≤ 1 − ε`: burn's clamp
//! passes gradients there), else 0 (the softmax's Jacobian folds `−1/q` into `p/S − onehot`).
//! The node computes both in the forward pass ([`CrossEntropyOps::cross_entropy_and_grad`]: one kernel
//! on CUDA) and scales the gradient by the loss's own in the backward, where autodiff through
//! burn's ops recorded about 40 host operations and ran about 20 small kernels per step.

#[cfg(feature = "cuda")]
mod cuda;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::{unwrap, wrap};
use crate::keras::{KERAS_EPSILON, kcce, one_hot};

/// The cross-entropy as backend methods: the defaults are burn's ops; `Autodiff<B>` runs
/// [`CrossEntropyOps::cross_entropy`] as the node, burn's CUDA backend
/// [`CrossEntropyOps::cross_entropy_and_grad`] and
/// [`CrossEntropyOps::natural_cross_entropy_and_grad`] as one kernel each (`cuda`).
pub trait CrossEntropyOps: Backend {
    /// The experiment's cross-entropy of f32 `logits: [N, C]` and `labels: [N]`
    /// ([`crate::keras::cross_entropy`]): `[1]`.
    fn cross_entropy(logits: FloatTensor<Self>, labels: IntTensor<Self>) -> FloatTensor<Self> {
        unwrap(crate::keras::cross_entropy(wrap::<Self, 2>(logits), Tensor::from_primitive(labels)))
    }

    /// The cross-entropy of [`CrossEntropyOps::cross_entropy`] and its gradient by the logits
    /// per unit of loss: `[loss: [1], grad: [N, C]]`.
    fn cross_entropy_and_grad(logits: FloatTensor<Self>, labels: IntTensor<Self>) -> [FloatTensor<Self>; 2] {
        by_ops::<Self>(logits, labels)
    }

    /// natural_softmax's loss: the cross-entropy plus `kcce(c, [n, 1 − n])`, with `n` the
    /// softmax's mass on the classes `natural` (first and last, inclusive) and `c` whether the
    /// label is one of them: `[1]`. Default: burn's ops ([`natural_by_ops`]).
    fn natural_cross_entropy(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        natural: [usize; 2],
    ) -> FloatTensor<Self> {
        let [loss, _] = Self::natural_cross_entropy_and_grad(logits, labels, natural);
        loss
    }

    /// [`CrossEntropyOps::natural_cross_entropy`] and its gradient by the logits per unit of
    /// loss: `[loss: [1], grad: [N, C]]`.
    fn natural_cross_entropy_and_grad(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        natural: [usize; 2],
    ) -> [FloatTensor<Self>; 2] {
        natural_by_ops::<Self>(logits, labels, natural)
    }
}

impl CrossEntropyOps for burn::backend::Flex {}

impl<B: CrossEntropyOps, C: CheckpointStrategy> CrossEntropyOps for Autodiff<B, C> {
    fn cross_entropy(logits: FloatTensor<Self>, labels: IntTensor<Self>) -> FloatTensor<Self> {
        let loss_and_grad = B::cross_entropy_and_grad(logits.primitive.clone(), labels);
        autodiff_node::<B, C>(logits, loss_and_grad)
    }

    fn natural_cross_entropy(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
        natural: [usize; 2],
    ) -> FloatTensor<Self> {
        let loss_and_grad = B::natural_cross_entropy_and_grad(logits.primitive.clone(), labels, natural);
        autodiff_node::<B, C>(logits, loss_and_grad)
    }
}

/// `[loss, d loss / d logits]` of f32 `logits: [N, C]` and `labels: [N]` through burn's ops
/// (the loss exactly as [`crate::keras::cross_entropy`] computes it).
pub fn by_ops<B: Backend>(logits: FloatTensor<B>, labels: IntTensor<B>) -> [FloatTensor<B>; 2] {
    let logits = wrap::<B, 2>(logits);
    let [rows, _] = logits.dims();
    let target = one_hot(Tensor::<B, 1, Int>::from_primitive(labels));
    let p = softmax(logits, 1);
    let normalised = p.clone().div(p.clone().sum_dim(1));
    let q = normalised.clone().mul(target.clone()).sum_dim(1);
    let passes =
        q.clone().greater_equal_elem(KERAS_EPSILON).bool_and(q.lower_equal_elem(1.0 - KERAS_EPSILON));
    let grad = (normalised - target.clone()).mul(passes.float()).div_scalar(rows as f32);
    [unwrap(kcce(target, p)), unwrap(grad)]
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: CrossEntropyOps> Backward<B, 1> for CrossEntropyBackward {
    /// The gradient by the logits per unit of loss.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let scale = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let scale = B::float_reshape(scale, [1, 1].into());
            grads.register::<B>(node.id, B::float_mul(ops.state, scale));
        }
    }
}

/// The node of a loss of `logits` computed with its gradient per unit of loss,
/// `loss_and_grad`, on the inner backend: the backward scales that gradient.
fn autodiff_node<B: CrossEntropyOps, C: CheckpointStrategy>(
    logits: FloatTensor<Autodiff<B, C>>,
    [loss, grad]: [FloatTensor<B>; 2],
) -> FloatTensor<Autodiff<B, C>> {
    match CrossEntropyBackward.prepare::<C>([logits.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(grad, loss),
        OpsKind::UnTracked(prep) => prep.finish(loss),
    }
}

/// `[loss, d loss / d logits]` of [`CrossEntropyOps::natural_cross_entropy`] through burn's
/// ops: [`by_ops`]'s, plus the term's per row with `p = softmax(logits)`, `n = Σ_natural p`,
/// `o = n` for a natural label (else `1 − n`) and `r = o / (n + (1 − n))`, `−ln clip(r, ε,
/// 1 − ε)`, whose gradient by logit `k` is `∓ p_k·([k natural] − n) / o / N` (− for a natural
/// label) where the clip lets `r` through, else 0. Autodiff through the term recorded about
/// 25 operations forward and as many backward.
pub fn natural_by_ops<B: Backend>(
    logits: FloatTensor<B>,
    labels: IntTensor<B>,
    [first, last]: [usize; 2],
) -> [FloatTensor<B>; 2] {
    let [loss, grad] = by_ops::<B>(logits.clone(), labels.clone());
    let logits = wrap::<B, 2>(logits);
    let [rows, classes] = logits.dims();
    let device = logits.device();
    let p = softmax(logits, 1);
    let n = p.clone().narrow(1, first, last - first + 1).sum_dim(1);
    let rest = n.clone().neg().add_scalar(1.0);
    // 1 where a class index (a label, or a column's class) is one of the natural classes.
    let natural = |t: Tensor<B, 2, Int>| {
        t.clone().greater_equal_elem(first as i64).bool_and(t.lower_equal_elem(last as i64)).float()
    };
    let natural_label = natural(Tensor::<B, 1, Int>::from_primitive(labels).unsqueeze_dim::<2>(1));
    let o =
        natural_label.clone().mul(n.clone()) + natural_label.clone().neg().add_scalar(1.0).mul(rest.clone());
    let r = o.clone().div(n.clone() + rest);
    let term = r.clone().clamp(KERAS_EPSILON, 1.0 - KERAS_EPSILON).log().neg().mean();
    let passes =
        r.clone().greater_equal_elem(KERAS_EPSILON).bool_and(r.lower_equal_elem(1.0 - KERAS_EPSILON));
    let natural_class =
        natural(Tensor::<B, 1, Int>::arange(0..classes as i64, &device).unsqueeze_dim::<2>(0));
    // −1 for a natural label, +1 for an artificial one, over o and the rows.
    let sign = natural_label.mul_scalar(-2.0).add_scalar(1.0);
    // Where the clip stops the gradient `o` may be 0: masked, not multiplied, to 0.
    let factor = sign.div(o).div_scalar(rows as f32).mask_fill(passes.bool_not(), 0.0);
    let term_grad = p.mul(natural_class.sub(n)).mul(factor);
    [unwrap(wrap::<B, 1>(loss).add(term)), unwrap(wrap::<B, 2>(grad).add(term_grad))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type A = Autodiff<Flex>;

    /// Rows of every kind: ordinary, one clipped high (`q` within 1e-12 of 1), one clipped low.
    fn logits_and_labels<Bk: Backend>(device: &Bk::Device) -> (Tensor<Bk, 2>, Tensor<Bk, 1, Int>) {
        let mut values: Vec<f32> = (0..60).map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0).collect();
        values[30] = 40.0; // row 3, label 0: p ≈ 1 → clipped to 1 − ε, no gradient
        values[49] = -40.0; // row 4, label 9: p ≈ 0 → clipped to ε, no gradient
        let logits = Tensor::from_data(TensorData::new(values, [6, 10]), device);
        (logits, Tensor::from_data([1, 7, 2, 0, 9, 5], device))
    }

    /// The node's loss and gradient against autodiff through burn's ops of the same function.
    #[test]
    fn node_matches_autodiff_through_burns_ops() {
        let device = Default::default();
        let (logits, labels) = logits_and_labels::<A>(&device);
        let by_burn = logits.clone().require_grad();
        let burn_loss = crate::keras::cross_entropy(by_burn.clone(), labels.clone());
        let burn_grad = by_burn.grad(&burn_loss.backward()).unwrap();
        let by_node = logits.require_grad();
        let node_loss = wrap::<A, 1>(A::cross_entropy(unwrap(by_node.clone()), labels.into_primitive()));
        // A loss scaled by 3 after the node: the backward must scale the gradient.
        let node_grad = by_node.grad(&node_loss.clone().mul_scalar(3.0).backward()).unwrap();
        let loss = |t: Tensor<A, 1>| t.into_scalar();
        assert!((loss(node_loss) - loss(burn_loss)).abs() < 1e-6);
        let node_grad = node_grad.into_data().to_vec::<f32>().unwrap();
        let burn_grad = burn_grad.into_data().to_vec::<f32>().unwrap();
        for (i, (n, b)) in node_grad.iter().zip(&burn_grad).enumerate() {
            assert!((n - 3.0 * b).abs() < 1e-6, "logit {i}: node {n} vs 3 × burn {b}");
        }
        let row_max =
            |row: usize| node_grad[row * 10..row * 10 + 10].iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert_eq!((row_max(3), row_max(4)), (0.0, 0.0), "clipped rows have no gradient");
        assert!(row_max(0) > 1e-3, "an ordinary row has one");
    }

    /// The CUDA kernels (cross-entropy, natural_softmax's loss) against the same functions
    /// through burn's ops on the GPU, over more rows than the kernel's threads:
    /// `cargo test -p worker -- --ignored cuda`.
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn cuda_cross_entropy_kernels_match_burns_ops() {
        use burn::tensor::ops::FloatTensorOps;
        type G = burn_cuda::Cuda;
        let device = Default::default();
        let (logits, labels) = logits_and_labels::<G>(&device);
        let noise = crate::model::drawn(|| {
            Tensor::<G, 2>::random([300, 10], burn::tensor::Distribution::Normal(0.0, 3.0), &device)
        });
        let logits = Tensor::cat(vec![logits, noise], 0);
        let labels = Tensor::cat(vec![labels, Tensor::arange(0..300, &device).remainder_scalar(10)], 0);
        let (l, y) = (|| unwrap(logits.clone()), || labels.clone().into_primitive());
        let natural = [2, 7];
        // The term's `1 − n` cancels where a row's artificial mass is small, so summation order
        // alone moves its gradient by up to ~3e-4 of the scale in f32 (checked against f64).
        let pairs = [
            ("cross-entropy", 1e-5, G::cross_entropy_and_grad(l(), y()), by_ops::<G>(l(), y())),
            (
                "natural",
                1e-3,
                G::natural_cross_entropy_and_grad(l(), y(), natural),
                natural_by_ops::<G>(l(), y(), natural),
            ),
        ];
        let flat = |t: FloatTensor<G>| {
            let n = burn::tensor::TensorMetadata::shape(&t).num_elements();
            wrap::<G, 1>(G::float_reshape(t, [n].into()))
        };
        for (kernel_name, tolerance, kernel, reference) in pairs {
            for (name, (k, r)) in ["loss", "grad"].iter().zip(kernel.into_iter().zip(reference)) {
                let (k, r) = (flat(k), flat(r));
                let err: f32 = (k - r.clone()).abs().max().into_scalar();
                let scale: f32 = r.abs().max().into_scalar();
                let bound = tolerance * scale.max(1e-3);
                assert!(err <= bound, "{kernel_name} {name} differs by {err} (scale {scale})");
            }
        }
    }
}
