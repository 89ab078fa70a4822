//! The four CNNs as candle modules built from their [`ModelKind::plan`]: the layers, their
//! names, freezing and the dropout rate, and the input and memory figures of a pass.
//!
//! Parameter names (in checkpoints and `VarBuilder` scopes): the i-th convolution of the plan
//! is `conv{i}` and the i-th dense layer `fc{i}` (1-based), each with `weight` and `bias`;
//! layouts are candle/PyTorch (`[O, C, K, K]`, `[out, in]`), the same as `NetworkSpec`.
//!
//! Beside this file, by concern: `init` (fresh parameters), `pretrained` (ImageNet VGG16
//! weights), `walk` (the one walk over the layers that the forward pass and DP-SGD's
//! per-example pass share), `dropout` and `export` (to the framework-free [`NetworkSpec`]).
//! The model imports the ops, the error type and the plans of `crate::model`; never the
//! training loop or DP-SGD, which build on it.
//!
//! [`NetworkSpec`]: crate::model::NetworkSpec

mod dropout;
mod export;
mod infer;
mod init;
mod pretrained;
mod walk;

pub use dropout::{apply_dropout, DropoutRate};
pub use init::{init_varmap, parameter_shapes};
pub use pretrained::load_vgg16_imagenet;
pub use walk::{ConvLayer, DenseLayer, Forward, LayerHook};

use super::error::{Result, TrainError};
use super::ops::PoolKind;
use crate::model::arch::LayerNames;
use crate::model::{ModelKind, PlanLayer, Pool};
use candle_core::Tensor;
use candle_nn::VarBuilder;

/// One layer of a built model.
#[derive(Debug, Clone)]
pub enum NetLayer {
    Conv {
        name: String,
        /// `[O, C, K, K]`
        weight: Tensor,
        /// `[O]`
        bias: Tensor,
        kernel: usize,
        padding: usize,
    },
    Relu,
    Pool(PoolKind),
    Flatten,
    Dense {
        name: String,
        /// `[out, in]`
        weight: Tensor,
        /// `[out]`
        bias: Tensor,
    },
    Dropout(f32),
}

/// A sequential CNN following a model plan.
#[derive(Debug, Clone)]
pub struct Model {
    kind: ModelKind,
    width: f32,
    /// Outputs of the last layer: one logit per class.
    classes: usize,
    input: [usize; 3],
    layers: Vec<NetLayer>,
    /// Names of the parameterised layers kept at their initial (or loaded) weights.
    frozen: Vec<String>,
}

/// Pooling windows are 2x2 in every plan.
pub const POOL_SIZE: usize = 2;

/// The widest multiplier a model is built at: VGG16 at width 4 already holds about two
/// billion parameters (8 GB of f32); anything wider is a mistake or a hostile file.
pub const MAX_WIDTH: f32 = 4.0;

/// `width` if a model can be built at it: finite, above 0 and at most [`MAX_WIDTH`].
pub fn check_width(width: f32) -> Result<f32> {
    if width.is_finite() && width > 0.0 && width <= MAX_WIDTH {
        Ok(width)
    } else {
        Err(TrainError::Config(format!(
            "width {width}: expected a multiplier above 0 and at most {MAX_WIDTH}"
        )))
    }
}

fn pool_kind(p: Pool) -> PoolKind {
    match p {
        Pool::Max => PoolKind::Max,
        Pool::Avg => PoolKind::Avg,
    }
}

impl Model {
    /// Builds `kind` at `width` with `classes` outputs from a `VarBuilder` (scopes `conv{i}` /
    /// `fc{i}`).
    pub fn new(vb: VarBuilder, kind: ModelKind, width: f32, classes: usize) -> Result<Self> {
        check_width(width)?;
        let mut layers = Vec::new();
        let mut names = LayerNames::default();
        for p in kind.plan_for(width, classes) {
            // Empty for the layers without weights, which have no name.
            let name = names.next(&p).unwrap_or_default();
            layers.push(match p {
                PlanLayer::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    padding,
                } => {
                    let s = vb.pp(&name);
                    NetLayer::Conv {
                        weight: s.get((out_channels, in_channels, kernel, kernel), "weight")?,
                        bias: s.get(out_channels, "bias")?,
                        name,
                        kernel,
                        padding,
                    }
                }
                PlanLayer::Dense {
                    in_features,
                    out_features,
                } => {
                    let s = vb.pp(&name);
                    NetLayer::Dense {
                        weight: s.get((out_features, in_features), "weight")?,
                        bias: s.get(out_features, "bias")?,
                        name,
                    }
                }
                PlanLayer::Relu => NetLayer::Relu,
                PlanLayer::Pool(p) => NetLayer::Pool(pool_kind(p)),
                PlanLayer::Flatten => NetLayer::Flatten,
                PlanLayer::Dropout(p) => NetLayer::Dropout(p),
            });
        }
        Ok(Self {
            kind,
            width,
            classes,
            input: kind.technique().input_shape(),
            layers,
            frozen: Vec::new(),
        })
    }

    /// Names of the parameterised layers (`conv1`..., `fc1`...), in order.
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                NetLayer::Conv { name, .. } | NetLayer::Dense { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Keeps the named layers at their current weights: training leaves them alone, and DP-SGD
    /// neither clips nor noises them. Their weights are then data-independent (a seeded random
    /// initialisation or public pretrained weights), so they cost no privacy, and the noise
    /// falls only on what is trained. Replaces any earlier choice.
    pub fn freeze(&mut self, names: &[String]) -> Result<()> {
        let known = self.layer_names();
        for n in names {
            if !known.contains(&n.as_str()) {
                return Err(TrainError::Config(format!(
                    "cannot freeze {n:?}: {} has layers {}",
                    self.kind,
                    known.join(", ")
                )));
            }
        }
        if known.iter().all(|k| names.iter().any(|n| n == k)) {
            return Err(TrainError::Config(format!(
                "freezing every layer of {} leaves nothing to train",
                self.kind
            )));
        }
        self.frozen = known
            .into_iter()
            .filter(|k| names.iter().any(|n| n == k))
            .map(String::from)
            .collect();
        Ok(())
    }

    /// Sets the training-time rate of every dropout layer (the plan's own rate until then).
    pub fn set_dropout(&mut self, rate: DropoutRate) {
        for l in &mut self.layers {
            if let NetLayer::Dropout(p) = l {
                *p = rate.get();
            }
        }
    }

    /// The training-time rate of the dropout layers, `None` for a model without any.
    pub fn dropout(&self) -> Option<f32> {
        self.layers.iter().find_map(|l| match l {
            NetLayer::Dropout(p) => Some(*p),
            _ => None,
        })
    }

    /// The frozen layers' names, in layer order.
    pub fn frozen(&self) -> &[String] {
        &self.frozen
    }

    pub fn is_frozen(&self, layer: &str) -> bool {
        self.frozen.iter().any(|f| f == layer)
    }

    /// Per entry of [`Model::named_parameters`]: whether training updates it.
    pub fn trainable_mask(&self) -> Vec<bool> {
        // Weight and bias of each parameterised layer, as `named_parameters` lists them.
        self.layer_names()
            .into_iter()
            .flat_map(|n| [!self.is_frozen(n); 2])
            .collect()
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }
    /// Number of outputs (classes).
    pub fn classes(&self) -> usize {
        self.classes
    }
    pub fn width(&self) -> f32 {
        self.width
    }
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
    }
    pub fn layers(&self) -> &[NetLayer] {
        &self.layers
    }

    /// Floats of one example's forward pass: the input, every layer's output and each
    /// convolution's im2col columns. What a batch costs in memory beyond the weights (the
    /// backward pass needs about as much again); DP-SGD sizes its physical chunks with it.
    pub fn activation_floats_per_example(&self) -> usize {
        let [mut c, mut h, mut w] = self.input;
        let mut size = c * h * w;
        let mut total = size;
        for l in &self.layers {
            match l {
                NetLayer::Conv {
                    weight,
                    kernel,
                    padding,
                    ..
                } => {
                    let out = weight.dims()[0];
                    h = (h + 2 * padding + 1).saturating_sub(*kernel);
                    w = (w + 2 * padding + 1).saturating_sub(*kernel);
                    total += c * kernel * kernel * h * w;
                    c = out;
                    size = c * h * w;
                }
                NetLayer::Pool(_) => {
                    h /= POOL_SIZE;
                    w /= POOL_SIZE;
                    size = c * h * w;
                }
                NetLayer::Dense { weight, .. } => size = weight.dims()[0],
                NetLayer::Relu | NetLayer::Dropout(_) | NetLayer::Flatten => {}
            }
            total += size;
        }
        total
    }

    /// Checks a batch's image shape against the model's input.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let d = x.dims();
        let got = match *d {
            [_, c, h, w] => [c, h, w],
            _ => [0, 0, 0],
        };
        if got != self.input {
            return Err(TrainError::InputShape {
                model: self.kind.name().into(),
                expected: self.input,
                got,
            });
        }
        Ok(())
    }

    /// Every trainable tensor by name, in plan order.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                NetLayer::Conv {
                    name, weight, bias, ..
                }
                | NetLayer::Dense {
                    name, weight, bias, ..
                } => {
                    out.push((format!("{name}.weight"), weight.clone()));
                    out.push((format!("{name}.bias"), bias.clone()));
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
