//! Which implementation of the convolution and BatchNorm training nodes runs ([`Kernels`]), as
//! `--kernels` spells it (the choice per device is [`super::KernelChoice`]).

/// Which implementation of the convolution and normalisation the model's training step uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Kernels {
    /// Weight gradient of the 3×3 convolutions as a batched GEMM over im2col taps ([`super::conv`]).
    pub gemm_weight_grad: bool,
    /// Input gradient of the 3×3 convolutions as a forward convolution with the flipped kernel.
    pub flipped_input_grad: bool,
    /// BatchNorm + ReLU as one node with a closed-form backward ([`super::batch_norm`]).
    pub fused_batch_norm: bool,
    /// bf16 activations: the BatchNorm node writes its output in bf16, so every convolution
    /// after the first (the first too with `bimage`) runs on bf16 operands (weights cast per
    /// step, f32 accumulation) and the activation gradients flow back in bf16; statistics,
    /// weight gradients, master weights, the head, the loss and Adam stay f32 (autocast-style
    /// mixed precision). Needs `bn` and a custom convolution part.
    pub bf16_activations: bool,
    /// The bf16 convolutions (forward and input gradient) on cubek kernels with tilings tuned
    /// for the model's shapes ([`super::conv`]'s `tconv`; 2–3× burn's autotuned kernels on an
    /// H100). Needs `bf16`.
    pub tuned_conv: bool,
    /// 2×2 average pooling as a custom node ([`super::pool`]; one channels-last kernel each way
    /// on CUDA).
    #[serde(default)]
    pub custom_pool: bool,
    /// The image's convolution (fewer than 8 input channels) as one explicit GEMM over its
    /// im2col matrix, which its weight gradient reuses ([`super::conv`]). Needs `wgrad` or `dgrad`.
    #[serde(default)]
    pub explicit_gemm: bool,
    /// Fused models' forward and input-gradient convolutions one model at a time on the single
    /// model's kernels ([`super::conv`]'s `per_model`) instead of batched GEMMs over explicit
    /// im2col matrices. Needs `wgrad` or `dgrad`; only fused training (`--fuse`) runs it.
    #[serde(default)]
    pub per_model_conv: bool,
    /// The bf16 convolutions (forward, flipped-kernel input gradient, weight gradient) on cuDNN,
    /// loaded at run time (`super::conv`'s `cudnn`), ahead of `tconv`'s kernels; without
    /// `xgemm`, the image's convolution and its weight gradient too (in f32, or in bf16 with
    /// `bimage`). Needs `bf16`.
    #[serde(default)]
    pub cudnn_conv: bool,
    /// The image's convolution in bf16 on cuDNN (its channels padded with zeros to 8): the
    /// images enter the model cast to bf16, as under a framework's bf16 autocast, and the
    /// layer's output and BatchNorm are bf16 like every other layer's. Needs `cudnn`, not
    /// `xgemm` (which runs that layer in f32).
    #[serde(default)]
    pub bf16_image: bool,
    /// A BatchNorm + ReLU layer followed by the 2×2 pooling writes only the pooled output, and
    /// its backward reads the pooled gradient where each element's window lies
    /// ([`super::batch_norm::pooled`]). Needs `bn` and `pool`.
    #[serde(default)]
    pub pooled_norm: bool,
    /// The head's matmuls (forward, input and weight gradients) on one fixed kernel each
    /// ([`super::linear`]) instead of burn's matmul, which autotunes every shape it meets.
    /// A fused step keeps its batched heads.
    #[serde(default)]
    pub fixed_head: bool,
    /// Each of one model's cuDNN convolutions and input gradients as whichever of two calls
    /// cuDNN times faster for the shape: the pass by the kernel, or the other pass by its
    /// flipped transpose (fused models' grouped convolutions always run so: 1.11× fused by 16
    /// on an H100). Needs `cudnn`. Off in every named set: on an H100 no faster at batch 512
    /// (`docs/performance.md`).
    #[serde(default)]
    pub dual_calls: bool,
    /// On CUDA, every operation launched by the thread that records the step, on burn's
    /// CubeCL backend without its fusion stream (whose device thread otherwise takes each
    /// operation, fuses what it can and launches it). CUDA only.
    #[serde(default)]
    pub direct_launch: bool,
    /// On CUDA, a job's training step recorded once as a CUDA graph and replayed for every
    /// batch of that size ([`super::graph`]): the host queues one launch a step instead of
    /// every operation. Needs `direct`.
    #[serde(default)]
    pub replay_step: bool,
    /// On CUDA, the bf16 image layer's forward and weight gradient on tensor cores
    /// (`16 × 16 × 16` bf16 tiles, f32 sums) where its output channels are whole tiles of 16
    /// (16–64), the CUDA-core kernels elsewhere ([`ImageCores`]). Needs `bimage`.
    #[serde(default)]
    pub tensor_core_image: bool,
}

/// Which kernels run the model's bf16 3×3 convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvEngine {
    /// burn's autotuned `conv2d` (and the split-K GEMM weight gradient).
    Burn,
    /// cubek's kernels on tilings tuned for the model (`tconv`).
    Tuned,
    /// cuDNN (`cudnn`), the bf16 image layer on the direct kernels of these cores; shapes cuDNN
    /// does not take run as [`ConvEngine::Tuned`].
    Cudnn(ImageCores),
}

/// Which cores run the bf16 image layer's direct kernels (`tcimage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCores {
    /// 27 FP32 multiply-adds an output on CUDA cores, every shape the kernels hold.
    Cuda,
    /// bf16 tiles on tensor cores where the output channels are whole tiles, CUDA cores
    /// elsewhere.
    Tensor,
}

/// `--kernels` help of the commands that train.
pub const KERNELS_HELP: &str = "Training-node implementation: auto (the default: fast-bf16-cudnn+direct+graph \
    on CUDA where libcudnn loads, fast-bf16 on CUDA without it, fast on the CPU), fast (custom convolution gradients, fused BatchNorm and pooling, f32), fast-bf16 (fast with bf16 \
    activations, tuned bf16 convolutions and the head on fixed kernels), fast-bf16-cudnn (fast-bf16 with the bf16 convolutions on cuDNN, \
    the image's in bf16 too, libcudnn found at run time), or stock (burn's modules); any of them +direct on CUDA launches every \
    operation from the training thread, without burn's fusion stream, and +direct+graph records the step \
    once as a CUDA graph and replays it";

/// `worker bench --kernels` help: the named sets, or the parts that make them.
pub const BENCH_KERNELS_HELP: &str = "Kernel sets to time, comma separated: auto, fast, fast-bf16, \
    fast-bf16-cudnn, stock, or \
    parts joined by +: wgrad (GEMM weight gradient), dgrad (input gradient on the forward conv kernels), bn \
    (fused BatchNorm + ReLU), bf16 (bf16 activations; with bn and wgrad or dgrad), tconv (bf16 convolutions on \
    tilings tuned for the model; with bf16), pool (average pooling as custom nodes), xgemm (the image's \
    convolution as one explicit GEMM; with wgrad or dgrad), mconv (fused models' convolutions one model at a \
    time on the single model's kernels; with wgrad or dgrad), cudnn (the bf16 convolutions and their weight \
    gradients on cuDNN, loaded at run time, and without xgemm the image's convolution; with bf16), bimage (the \
    image's convolution in bf16 on cuDNN, the images cast to bf16; with cudnn, without xgemm), bnpool (the 2×2 \
    pooling folded into the BatchNorm + ReLU layer before it, both ways; with bn and pool), head (the head's \
    matmuls on one fixed kernel each, not autotuned), dual (each cuDNN convolution and input gradient as \
    whichever of the pass by the kernel and the other pass by its flipped transpose cuDNN times faster, as \
    fused groups always run; with cudnn), tcimage (the bf16 image layer's forward and weight gradient on \
    tensor cores where its output channels are whole tiles of 16; with bimage), direct (CUDA: \
    operations launched by the training thread, without burn's fusion stream), graph (CUDA: the step recorded \
    once as a CUDA graph and replayed; with direct); a named set among the parts stands for its own \
    (fast-bf16+cudnn)";

/// The parts of a kernel set as `--kernels` spells them, joined by `+` (`wgrad+bn+bf16`).
const PARTS: [&str; 16] = [
    "wgrad", "dgrad", "bn", "bf16", "tconv", "pool", "xgemm", "mconv", "cudnn", "bimage", "bnpool", "head",
    "dual", "direct", "graph", "tcimage",
];

impl Kernels {
    /// burn's stock modules everywhere (the reference).
    pub const STOCK: Kernels = Kernels {
        gemm_weight_grad: false,
        flipped_input_grad: false,
        fused_batch_norm: false,
        bf16_activations: false,
        tuned_conv: false,
        custom_pool: false,
        explicit_gemm: false,
        per_model_conv: false,
        cudnn_conv: false,
        bf16_image: false,
        pooled_norm: false,
        fixed_head: false,
        dual_calls: false,
        direct_launch: false,
        replay_step: false,
        tensor_core_image: false,
    };
    /// The fastest measured f32 combination: `wgrad+dgrad+bn+pool` (what `auto` runs on the CPU).
    pub const FAST: Kernels = Kernels {
        gemm_weight_grad: true,
        flipped_input_grad: true,
        fused_batch_norm: true,
        custom_pool: true,
        ..Kernels::STOCK
    };

    /// [`Kernels::FAST`] with bf16 activations, tuned bf16 convolutions, the image's
    /// convolution as one explicit GEMM and the head on fixed kernels
    /// (`wgrad+dgrad+bn+bf16+tconv+pool+xgemm+head`): the fastest measured combination on an
    /// H100 without cuDNN, with the same 100-epoch validation accuracy as f32
    /// (`docs/performance.md`); what `auto` runs on CUDA where libcudnn does not load. The head
    /// part spares a fresh GPU the autotuning of the head's small matmuls (~90 s of start-up)
    /// at the same step time.
    pub const FAST_BF16: Kernels = Kernels {
        bf16_activations: true,
        tuned_conv: true,
        explicit_gemm: true,
        fixed_head: true,
        ..Kernels::FAST
    };

    /// [`Kernels::FAST_BF16`] with its bf16 convolutions on cuDNN, the image's layer in bf16 on
    /// cuDNN too instead of `xgemm`'s f32 GEMM, and the poolings folded into the layers before
    /// them (`wgrad+dgrad+bn+bf16+tconv+pool+cudnn+bimage+bnpool+head`).
    pub const FAST_BF16_CUDNN: Kernels = Kernels {
        cudnn_conv: true,
        bf16_image: true,
        pooled_norm: true,
        explicit_gemm: false,
        ..Kernels::FAST_BF16
    };

    fn parts(self) -> [bool; PARTS.len()] {
        [
            self.gemm_weight_grad,
            self.flipped_input_grad,
            self.fused_batch_norm,
            self.bf16_activations,
            self.tuned_conv,
            self.custom_pool,
            self.explicit_gemm,
            self.per_model_conv,
            self.cudnn_conv,
            self.bf16_image,
            self.pooled_norm,
            self.fixed_head,
            self.dual_calls,
            self.direct_launch,
            self.replay_step,
            self.tensor_core_image,
        ]
    }

    /// The set a name stands for: `stock`, `fast`, `fast-bf16` or `fast-bf16-cudnn`.
    fn named(name: &str) -> Option<Kernels> {
        match name {
            "stock" => Some(Kernels::STOCK),
            "fast" => Some(Kernels::FAST),
            "fast-bf16" => Some(Kernels::FAST_BF16),
            "fast-bf16-cudnn" => Some(Kernels::FAST_BF16_CUDNN),
            _ => None,
        }
    }

    /// Whether the convolutions run as the custom node ([`super::conv`]) rather than burn's `Conv2d`.
    pub fn custom_conv(self) -> bool {
        self.gemm_weight_grad || self.flipped_input_grad
    }

    /// The dtype the BatchNorm node writes its activations in.
    pub fn activation_dtype(self) -> burn::tensor::FloatDType {
        match self.bf16_activations {
            true => burn::tensor::FloatDType::BF16,
            false => burn::tensor::FloatDType::F32,
        }
    }

    /// The cores of the bf16 image layer's direct kernels.
    pub fn image_cores(self) -> ImageCores {
        match self.tensor_core_image {
            true => ImageCores::Tensor,
            false => ImageCores::Cuda,
        }
    }

    /// The kernels of the bf16 convolutions.
    pub fn conv_engine(self) -> ConvEngine {
        match (self.cudnn_conv, self.tuned_conv) {
            (true, _) => ConvEngine::Cudnn(self.image_cores()),
            (false, true) => ConvEngine::Tuned,
            (false, false) => ConvEngine::Burn,
        }
    }
}

/// The model's kernels unless told otherwise: f32 [`Kernels::FAST`] (runners pick per device
/// through [`KernelChoice`]).
impl Default for Kernels {
    fn default() -> Self {
        Kernels::FAST
    }
}

impl std::str::FromStr for Kernels {
    type Err = String;

    /// A named set, or parts joined by `+` ([`BENCH_KERNELS_HELP`] lists them and their needs).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(set) = Kernels::named(s) {
            return Ok(set);
        }
        let mut on = [false; PARTS.len()];
        for part in s.split('+') {
            // A named set among the parts stands for its own parts (`fast-bf16+mconv`); `stock`
            // has none, so it is not a part.
            if let Some(named) = Kernels::named(part).filter(|_| part != "stock") {
                on.iter_mut().zip(named.parts()).for_each(|(on, part)| *on |= part);
                continue;
            }
            let i = PARTS.iter().position(|p| *p == part).ok_or_else(|| {
                format!(
                    "unknown kernel part {part:?} in {s:?} (expected stock, fast, fast-bf16, or {} joined by +)",
                    PARTS.join(", ")
                )
            })?;
            on[i] = true;
        }
        let [
            gemm_weight_grad,
            flipped_input_grad,
            fused_batch_norm,
            bf16_activations,
            tuned_conv,
            custom_pool,
            explicit_gemm,
            per_model_conv,
            cudnn_conv,
            bf16_image,
            pooled_norm,
            fixed_head,
            dual_calls,
            direct_launch,
            replay_step,
            tensor_core_image,
        ] = on;
        let kernels = Kernels {
            gemm_weight_grad,
            flipped_input_grad,
            fused_batch_norm,
            bf16_activations,
            tuned_conv,
            custom_pool,
            explicit_gemm,
            per_model_conv,
            cudnn_conv,
            bf16_image,
            pooled_norm,
            fixed_head,
            dual_calls,
            direct_launch,
            replay_step,
            tensor_core_image,
        };
        if replay_step && !direct_launch {
            return Err(format!(
                "{s:?}: graph records the step as the training thread launches it: it needs the direct part"
            ));
        }
        if explicit_gemm && !kernels.custom_conv() {
            return Err(format!("{s:?}: xgemm is a path of the custom convolution: it needs wgrad or dgrad"));
        }
        if per_model_conv && !kernels.custom_conv() {
            return Err(format!(
                "{s:?}: mconv runs the custom convolution per model: it needs wgrad or dgrad"
            ));
        }
        if tuned_conv && !bf16_activations {
            return Err(format!("{s:?}: tconv tunes the bf16 convolutions: it needs the bf16 part"));
        }
        if cudnn_conv && !bf16_activations {
            return Err(format!("{s:?}: cudnn runs the bf16 convolutions: it needs the bf16 part"));
        }
        if dual_calls && !cudnn_conv {
            return Err(format!("{s:?}: dual chooses between cuDNN's calls: it needs the cudnn part"));
        }
        if bf16_image && (explicit_gemm || !cudnn_conv) {
            return Err(format!(
                "{s:?}: bimage runs the image's bf16 convolution on cuDNN: it needs the cudnn part and \
                 not xgemm (which runs that convolution in f32)"
            ));
        }
        if tensor_core_image && !bf16_image {
            return Err(format!(
                "{s:?}: tcimage runs the bf16 image layer's direct kernels on tensor cores: it needs the \
                 bimage part"
            ));
        }
        if pooled_norm && !(fused_batch_norm && custom_pool) {
            return Err(format!(
                "{s:?}: bnpool folds the pooling into the BatchNorm node: it needs the bn and pool parts"
            ));
        }
        if bf16_activations && !(fused_batch_norm && kernels.custom_conv()) {
            return Err(format!(
                "{s:?}: bf16 activations need the bn part (which writes them) and the wgrad or dgrad \
                 part (convolutions that take them)"
            ));
        }
        Ok(kernels)
    }
}

impl std::fmt::Display for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<&str> =
            PARTS.iter().zip(self.parts()).filter(|(_, on)| *on).map(|(p, _)| *p).collect();
        if parts.is_empty() { f.write_str("stock") } else { f.write_str(&parts.join("+")) }
    }
}

#[cfg(test)]
mod tests;
