//! Fresh parameters of a model: their names and shapes in plan order, and Keras's default
//! initialisation drawn from a seeded RNG. Imports the model (`super`) and the plans; nothing of
//! training.

use super::{check_width, Model};
use crate::model::arch::LayerNames;
use crate::model::{ModelKind, PlanLayer};
use crate::train::error::{Result, TrainError};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};

/// Names and shapes of every parameter of `kind` at `width` with `classes` outputs, in plan
/// order, with the fan-in used for initialisation.
pub fn parameter_shapes(
    kind: ModelKind,
    width: f32,
    classes: usize,
) -> Vec<(String, Vec<usize>, usize)> {
    let mut out = Vec::new();
    let mut names = LayerNames::default();
    for p in kind.plan_for(width, classes) {
        let Some(name) = names.next(&p) else {
            continue;
        };
        match p {
            PlanLayer::Conv {
                in_channels,
                out_channels,
                kernel,
                ..
            } => {
                let fan_in = in_channels * kernel * kernel;
                out.push((
                    format!("{name}.weight"),
                    vec![out_channels, in_channels, kernel, kernel],
                    fan_in,
                ));
                out.push((format!("{name}.bias"), vec![out_channels], fan_in));
            }
            PlanLayer::Dense {
                in_features,
                out_features,
            } => {
                out.push((
                    format!("{name}.weight"),
                    vec![out_features, in_features],
                    in_features,
                ));
                out.push((format!("{name}.bias"), vec![out_features], in_features));
            }
            _ => {}
        }
    }
    out
}

/// A `VarMap` holding freshly initialised parameters of `kind`: Keras's defaults, as the paper
/// used (Glorot-uniform weights, zero biases), drawn from a ChaCha RNG seeded with `seed` so
/// runs are reproducible. (PyTorch's defaults, uniform in `±1/sqrt(fan_in)` for weights and
/// biases, shrink the signal through the layers; with Adam and the 3:1 class imbalance the
/// 14144-input dense layer's units then died within the first steps and DNN-Max never left
/// the majority class.)
pub fn init_varmap(
    kind: ModelKind,
    width: f32,
    classes: usize,
    seed: u64,
    device: &Device,
) -> Result<VarMap> {
    check_width(width)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let varmap = VarMap::new();
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
        for (name, shape, fan_in) in parameter_shapes(kind, width, classes) {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                // fan_out: output channels x kernel area (conv) or output features (dense).
                let fan_out = shape[0] * shape.iter().skip(2).product::<usize>();
                let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let t = Tensor::from_vec(v, shape, device)?;
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

impl Model {
    /// A freshly initialised two-class model and the `VarMap` that owns its trainable
    /// variables.
    pub fn init(kind: ModelKind, width: f32, seed: u64, device: &Device) -> Result<(Self, VarMap)> {
        Self::init_for(kind, width, 2, seed, device)
    }

    /// [`Model::init`] with `classes` outputs.
    pub fn init_for(
        kind: ModelKind,
        width: f32,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        let varmap = init_varmap(kind, width, classes, seed, device)?;
        let model = Self::new(
            VarBuilder::from_varmap(&varmap, DType::F32, device),
            kind,
            width,
            classes,
        )?;
        Ok((model, varmap))
    }
}
