//! `--kernels`' parsing and printing, and the checks of the parts' needs.

use super::*;
use crate::device::DeviceChoice;
use crate::train_ops::{KernelChoice, check_kernels};

#[test]
fn kernel_sets_parse_and_print_back() {
    for name in [
        "stock",
        "wgrad",
        "bn",
        "wgrad+bn",
        "wgrad+bn+bf16",
        "wgrad+dgrad+bn",
        "dgrad+bn+bf16",
        "wgrad+dgrad+bn+bf16",
        "wgrad+dgrad+bn+bf16+tconv",
        "dgrad+bn+bf16+tconv",
        "wgrad+dgrad+bn+bf16+tconv+pool",
        "pool",
        "wgrad+dgrad+bn+bf16+tconv+pool+xgemm",
        "wgrad+dgrad+bn+bf16+tconv+pool+xgemm+mconv",
        "wgrad+bn+mconv",
        "wgrad+dgrad+bn+bf16+cudnn",
        "wgrad+dgrad+bn+bf16+tconv+pool+xgemm+cudnn",
        "wgrad+dgrad+bn+bf16+tconv+pool+cudnn+bimage+direct+graph",
        "wgrad+dgrad+bn+pool+bnpool",
        "wgrad+dgrad+bn+bf16+tconv+pool+cudnn+bimage+bnpool+direct+graph",
        "head",
        "wgrad+dgrad+bn+bf16+tconv+pool+cudnn+bimage+bnpool+head+direct+graph",
        "wgrad+dgrad+bn+bf16+tconv+pool+cudnn+bimage+bnpool+head+dual+direct+graph",
        "wgrad+dgrad+bn+bf16+tconv+pool+cudnn+bimage+bnpool+head+direct+graph+tcimage",
    ] {
        let kernels: Kernels = name.parse().unwrap();
        assert_eq!(kernels.to_string(), name);
    }
    assert_eq!("fast".parse::<Kernels>().unwrap(), Kernels::FAST);
    assert_eq!("fast".parse::<Kernels>().unwrap().to_string(), "wgrad+dgrad+bn+pool");
    assert_eq!(
        "fast-bf16".parse::<Kernels>().unwrap().to_string(),
        "wgrad+dgrad+bn+bf16+tconv+pool+xgemm+head"
    );
    assert_eq!("bf16+bn+wgrad".parse::<Kernels>().unwrap().to_string(), "wgrad+bn+bf16");
    let per_model = "fast-bf16+mconv".parse::<Kernels>().unwrap();
    assert_eq!(per_model, Kernels { per_model_conv: true, ..Kernels::FAST_BF16 });
    assert_eq!("fast+mconv".parse::<Kernels>().unwrap().to_string(), "wgrad+dgrad+bn+pool+mconv");
    assert_eq!("fast+head".parse::<Kernels>().unwrap().to_string(), "wgrad+dgrad+bn+pool+head");
    assert_eq!("fast+head".parse::<Kernels>().unwrap(), Kernels { fixed_head: true, ..Kernels::FAST });
    let cudnn = "fast-bf16+cudnn".parse::<Kernels>().unwrap();
    assert_eq!(cudnn, Kernels { cudnn_conv: true, ..Kernels::FAST_BF16 });
    let named = Kernels { explicit_gemm: false, bf16_image: true, pooled_norm: true, ..cudnn };
    assert_eq!(named.to_string(), "wgrad+dgrad+bn+bf16+tconv+pool+cudnn+bimage+bnpool+head");
    assert_eq!("fast-bf16-cudnn".parse::<Kernels>().unwrap(), named);
    assert_eq!("fast-bf16-cudnn".parse::<KernelChoice>().unwrap(), KernelChoice::Set(named));
}

#[test]
fn the_cudnn_part_is_refused_off_cuda_and_runs_ahead_of_the_tuned_tilings() {
    let cudnn = "fast-bf16+cudnn".parse::<Kernels>().unwrap();
    let err = check_kernels(cudnn, DeviceChoice::Cpu).unwrap_err();
    assert!(err.contains("CUDA devices only"), "{err}");
    assert_eq!(check_kernels(Kernels::FAST_BF16, DeviceChoice::Cpu), Ok(()));
    // cuDNN comes before the tuned tilings, and they before burn's kernels.
    let cuda_cores = ConvEngine::Cudnn(ImageCores::Cuda);
    assert_eq!("fast-bf16+cudnn".parse::<Kernels>().unwrap().conv_engine(), cuda_cores);
    assert_eq!("dgrad+bn+bf16+cudnn".parse::<Kernels>().unwrap().conv_engine(), cuda_cores);
    assert_eq!(Kernels::FAST_BF16.conv_engine(), ConvEngine::Tuned);
    assert_eq!(Kernels::FAST.conv_engine(), ConvEngine::Burn);
}

/// The image layer's tensor-core kernels run only where a set asks for them: no named set
/// does until they are measured on a GPU.
#[test]
fn the_tcimage_part_puts_the_image_layer_on_tensor_cores() {
    let tensor = "fast-bf16-cudnn+tcimage".parse::<Kernels>().unwrap();
    assert_eq!(tensor, Kernels { tensor_core_image: true, ..Kernels::FAST_BF16_CUDNN });
    assert_eq!(tensor.conv_engine(), ConvEngine::Cudnn(ImageCores::Tensor));
    for named in [Kernels::FAST, Kernels::FAST_BF16, Kernels::FAST_BF16_CUDNN] {
        assert_eq!(named.image_cores(), ImageCores::Cuda, "{named}");
    }
}

#[test]
fn bad_kernel_sets_are_rejected_with_the_reason() {
    let unknown = "wgrad+fp8".parse::<Kernels>().unwrap_err();
    assert!(unknown.contains("\"fp8\""), "{unknown}");
    for without in ["bf16+bn", "wgrad+bf16", "dgrad+bf16"] {
        let err = without.parse::<Kernels>().unwrap_err();
        assert!(err.contains("need the bn part") && err.contains("wgrad or dgrad"), "{err}");
    }
    let err = "wgrad+dgrad+bn+tconv".parse::<Kernels>().unwrap_err();
    assert!(err.contains("needs the bf16 part"), "{err}");
    let err = "fast-bf16+dual".parse::<Kernels>().unwrap_err();
    assert!(err.contains("dual") && err.contains("needs the cudnn part"), "{err}");
    let err = "fast+cudnn".parse::<Kernels>().unwrap_err();
    assert!(err.contains("cudnn") && err.contains("needs the bf16 part"), "{err}");
    for without in ["mconv", "bn+mconv"] {
        let err = without.parse::<Kernels>().unwrap_err();
        assert!(err.contains("mconv") && err.contains("wgrad or dgrad"), "{err}");
    }
    for bad in ["wgrad+dgrad+bn+bf16+bimage", "fast-bf16+cudnn+bimage"] {
        let err = bad.parse::<Kernels>().unwrap_err();
        assert!(err.contains("bimage") && err.contains("cudnn part and not xgemm"), "{err}");
    }
    for bad in ["wgrad+dgrad+bn+bnpool", "wgrad+dgrad+pool+bnpool"] {
        let err = bad.parse::<Kernels>().unwrap_err();
        assert!(err.contains("bnpool") && err.contains("bn and pool parts"), "{err}");
    }
    for bad in ["fast-bf16+cudnn+tcimage", "fast+tcimage"] {
        let err = bad.parse::<Kernels>().unwrap_err();
        assert!(err.contains("tcimage") && err.contains("needs the bimage part"), "{err}");
    }
    assert!("".parse::<Kernels>().is_err());
    assert!("auto".parse::<Kernels>().is_err(), "auto is a choice, not a set");
}
