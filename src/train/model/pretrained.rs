//! ImageNet VGG16 convolution weights from a local safetensors file, for the two VGG models.
//! Imports the plans' model kinds and the error type; nothing else of the model or training.

use crate::model::ModelKind;
use crate::train::error::{Result, TrainError};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use std::path::Path;

/// Torchvision's VGG16 `features` indices of the 13 convolutions, for loading ImageNet weights.
const TORCHVISION_VGG16_CONVS: [usize; 13] = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];

/// Loads ImageNet VGG16 convolution weights from a local safetensors file into a VGG model's
/// variables. Accepted names for the i-th convolution (1-based): torchvision's
/// `features.{idx}.weight` / `features.{idx}.bias` (idx 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24,
/// 26, 28) or ours, `conv{i}.weight` / `conv{i}.bias`. Shapes must match the model at
/// width 1.0, except that a 1-channel first convolution (vgg16-1) takes the sum of the RGB
/// filters. Dense layers keep their initialisation (their sizes differ from ImageNet's).
/// Returns the number of tensors loaded.
pub fn load_vgg16_imagenet(varmap: &VarMap, kind: ModelKind, path: &Path) -> Result<usize> {
    let err = |reason: String| TrainError::InitWeights {
        path: path.to_path_buf(),
        reason,
    };
    if !matches!(kind, ModelKind::Vgg16_1 | ModelKind::Vgg16_2) {
        return Err(err(format!(
            "ImageNet VGG16 weights apply to vgg16-1 and vgg16-2, not {kind}"
        )));
    }
    let data = varmap
        .data()
        .lock()
        .map_err(|_| err("variable map lock poisoned".into()))?;
    let device = data
        .values()
        .next()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let file = candle_core::safetensors::load(path, &device).map_err(|e| err(e.to_string()))?;
    let mut loaded = 0;
    for (i, tv_idx) in TORCHVISION_VGG16_CONVS.iter().enumerate() {
        for part in ["weight", "bias"] {
            let ours = format!("conv{}.{part}", i + 1);
            let theirs = format!("features.{tv_idx}.{part}");
            let var = data
                .get(&ours)
                .ok_or_else(|| err(format!("model has no parameter {ours}")))?;
            let src = file
                .get(&theirs)
                .or_else(|| file.get(&ours))
                .ok_or_else(|| {
                    err(format!(
                        "missing tensor {theirs:?} (or {ours:?}); the file has {} tensors",
                        file.len()
                    ))
                })?;
            let mut src = src.to_dtype(DType::F32)?;
            let want = var.dims().to_vec();
            if i == 0
                && part == "weight"
                && want.get(1) == Some(&1)
                && src.dims().get(1) == Some(&3)
            {
                // Greyscale input: an RGB filter applied to a grey image (R=G=B) is the sum of
                // its three channel filters.
                src = src.sum_keepdim(1)?;
            }
            if src.dims() != want.as_slice() {
                return Err(err(format!(
                    "tensor {theirs:?} has shape {:?}, the model's {ours} needs {want:?} \
                     (ImageNet weights need width 1.0)",
                    src.dims()
                )));
            }
            var.set(&src)?;
            loaded += 1;
        }
    }
    Ok(loaded)
}
