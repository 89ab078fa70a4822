//! The paper's four architectures as weight-free layer plans: the single source of truth for
//! training (candle models are built from a plan) and for secure inference (a trained model is
//! exported to a [`NetworkSpec`] that follows the same plan).
//!
//! DNN-Av / DNN-Max (the paper gives no exact layers; chosen to match the benchmark model in
//! the issues): conv 1->32, 32->64, 64->64 (3x3, no padding), each followed by ReLU and 2x2
//! pooling (average or max), then dense 64 with ReLU and dropout 0.5, then dense 2.
//! On 1x150x125 input the spatial sizes are 148x123 -> 74x61 -> 72x59 -> 36x29 -> 34x27 -> 17x13.
//!
//! VGG16-1 / VGG16-2: the VGG16 layout, 13 3x3 convolutions (padding 1) in five blocks of
//! 64, 128, 256, 512, 512 channels with 2x2 max pooling after each block, then dense 4096,
//! 4096 (ReLU, dropout 0.5) and 2. `width` scales every channel and hidden size (1.0 is the real
//! VGG16; tests use e.g. 1/16). VGG16-1 takes technique-1 input (1x150x125), VGG16-2
//! technique-2 input (3x224x224).
//!
//! Imports `super::spec` only (and `serde`/`rand`); `model` is at the bottom and imports no other
//! engine module.

use super::spec::{Layer, NetworkSpec};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The preprocessing technique a model expects, and so its input shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Technique {
    /// Greyscale 1x150x125 (height 150, width 125), scaled to [0, 1].
    T1,
    /// Bicubic 3x224x224, scaled to [0, 1].
    T2,
}

impl Technique {
    pub fn input_shape(self) -> [usize; 3] {
        match self {
            Technique::T1 => [1, 150, 125],
            Technique::T2 => [3, 224, 224],
        }
    }
    pub fn number(self) -> u8 {
        match self {
            Technique::T1 => 1,
            Technique::T2 => 2,
        }
    }
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Technique::T1),
            2 => Some(Technique::T2),
            _ => None,
        }
    }
}

/// The four models of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelKind {
    DnnAv,
    DnnMax,
    Vgg16_1,
    Vgg16_2,
}

impl ModelKind {
    pub const ALL: [ModelKind; 4] = [
        ModelKind::DnnAv,
        ModelKind::DnnMax,
        ModelKind::Vgg16_1,
        ModelKind::Vgg16_2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::DnnAv => "dnn-av",
            ModelKind::DnnMax => "dnn-max",
            ModelKind::Vgg16_1 => "vgg16-1",
            ModelKind::Vgg16_2 => "vgg16-2",
        }
    }

    pub fn technique(self) -> Technique {
        match self {
            ModelKind::Vgg16_2 => Technique::T2,
            _ => Technique::T1,
        }
    }

    /// Names of the layers with weights, in order (`conv1`, `conv2`, ..., `fc1`, ...): what
    /// checkpoints, `--freeze` and the interface call them.
    pub fn layer_names(self) -> Vec<String> {
        let mut names = LayerNames::default();
        self.plan(1.0)
            .iter()
            .filter_map(|l| names.next(l))
            .collect()
    }

    /// The two-class layer plan at the given width multiplier (ignored by the DNN models).
    pub fn plan(self, width: f32) -> Vec<PlanLayer> {
        self.plan_for(width, 2)
    }

    /// The layer plan for `classes` outputs: the last dense layer has one per class.
    pub fn plan_for(self, width: f32, classes: usize) -> Vec<PlanLayer> {
        let mut plan = match self {
            ModelKind::DnnAv => dnn_plan(Pool::Avg),
            ModelKind::DnnMax => dnn_plan(Pool::Max),
            ModelKind::Vgg16_1 | ModelKind::Vgg16_2 => {
                vgg16_plan(self.technique().input_shape(), width)
            }
        };
        if let Some(PlanLayer::Dense { out_features, .. }) = plan.last_mut() {
            *out_features = classes;
        }
        plan
    }
}

/// The naming rule of layers with weights, applied to a plan's layers in order: convolutions
/// are `conv1`, `conv2`, ..., dense layers `fc1`, `fc2`, ...; other layers have no name.
#[derive(Debug, Default)]
pub struct LayerNames {
    convs: usize,
    dense: usize,
}

impl LayerNames {
    pub fn next(&mut self, layer: &PlanLayer) -> Option<String> {
        match layer {
            PlanLayer::Conv { .. } => {
                self.convs += 1;
                Some(format!("conv{}", self.convs))
            }
            PlanLayer::Dense { .. } => {
                self.dense += 1;
                Some(format!("fc{}", self.dense))
            }
            _ => None,
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!("unknown model {s:?}: expected one of dnn-av, dnn-max, vgg16-1, vgg16-2")
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pool {
    Max,
    Avg,
}

/// One layer of a plan: shapes and hyper-parameters, no weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PlanLayer {
    Conv {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        padding: usize,
    },
    Relu,
    Pool(Pool),
    Flatten,
    Dense {
        in_features: usize,
        out_features: usize,
    },
    Dropout(f32),
}

fn dnn_plan(pool: Pool) -> Vec<PlanLayer> {
    let conv = |i, o| PlanLayer::Conv {
        in_channels: i,
        out_channels: o,
        kernel: 3,
        padding: 0,
    };
    vec![
        conv(1, 32),
        PlanLayer::Relu,
        PlanLayer::Pool(pool),
        conv(32, 64),
        PlanLayer::Relu,
        PlanLayer::Pool(pool),
        conv(64, 64),
        PlanLayer::Relu,
        PlanLayer::Pool(pool),
        PlanLayer::Flatten,
        PlanLayer::Dense {
            in_features: 64 * 17 * 13,
            out_features: 64,
        },
        PlanLayer::Relu,
        PlanLayer::Dropout(0.5),
        PlanLayer::Dense {
            in_features: 64,
            out_features: 2,
        },
    ]
}

fn scaled(n: usize, width: f32) -> usize {
    ((n as f32 * width).round() as usize).max(1)
}

fn vgg16_plan(input: [usize; 3], width: f32) -> Vec<PlanLayer> {
    let blocks: [(usize, usize); 5] = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)];
    let mut plan = Vec::new();
    let (mut c, mut h, mut w) = (input[0], input[1], input[2]);
    for (channels, convs) in blocks {
        let out = scaled(channels, width);
        for _ in 0..convs {
            plan.push(PlanLayer::Conv {
                in_channels: c,
                out_channels: out,
                kernel: 3,
                padding: 1,
            });
            plan.push(PlanLayer::Relu);
            c = out;
        }
        plan.push(PlanLayer::Pool(Pool::Max));
        h /= 2;
        w /= 2;
    }
    let hidden = scaled(4096, width);
    plan.push(PlanLayer::Flatten);
    plan.extend([
        PlanLayer::Dense {
            in_features: c * h * w,
            out_features: hidden,
        },
        PlanLayer::Relu,
        PlanLayer::Dropout(0.5),
        PlanLayer::Dense {
            in_features: hidden,
            out_features: hidden,
        },
        PlanLayer::Relu,
        PlanLayer::Dropout(0.5),
        PlanLayer::Dense {
            in_features: hidden,
            out_features: 2,
        },
    ]);
    plan
}

/// A two-class [`random_spec_for`].
pub fn random_spec(kind: ModelKind, width: f32, seed: u64) -> NetworkSpec {
    random_spec_for(kind, width, 2, seed)
}

/// A [`NetworkSpec`] following `kind`'s plan for `classes` outputs with He-uniform random
/// weights from `seed`: for tests and benchmarks of anything that runs a model, not for
/// predictions.
pub fn random_spec_for(kind: ModelKind, width: f32, classes: usize, seed: u64) -> NetworkSpec {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut uniform = |n: usize, fan_in: usize| -> Vec<f32> {
        let bound = (6.0 / fan_in as f32).sqrt();
        (0..n).map(|_| rng.random_range(-bound..bound)).collect()
    };
    let layers = kind
        .plan_for(width, classes)
        .into_iter()
        .map(|p| match p {
            PlanLayer::Conv {
                in_channels,
                out_channels,
                kernel,
                padding,
            } => {
                let fan_in = in_channels * kernel * kernel;
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    padding,
                    weight: uniform(out_channels * fan_in, fan_in),
                    bias: uniform(out_channels, fan_in)
                        .iter()
                        .map(|b| b * 0.1)
                        .collect(),
                }
            }
            PlanLayer::Relu => Layer::Relu,
            PlanLayer::Pool(Pool::Max) => Layer::MaxPool2d { size: 2 },
            PlanLayer::Pool(Pool::Avg) => Layer::AvgPool2d { size: 2 },
            PlanLayer::Flatten => Layer::Flatten,
            PlanLayer::Dense {
                in_features,
                out_features,
            } => Layer::Dense {
                in_features,
                out_features,
                weight: uniform(in_features * out_features, in_features),
                bias: uniform(out_features, in_features)
                    .iter()
                    .map(|b| b * 0.1)
                    .collect(),
            },
            PlanLayer::Dropout(p) => Layer::Dropout { p },
        })
        .collect();
    NetworkSpec {
        name: kind.name().to_string(),
        input: kind.technique().input_shape(),
        layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::spec::Shape;

    #[test]
    fn every_plan_is_shape_consistent() {
        for kind in ModelKind::ALL {
            let spec = random_spec(kind, 1.0 / 16.0, 1);
            let shapes = spec.shapes().unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(*shapes.last().unwrap(), Shape::Flat(2), "{kind}");
        }
    }

    #[test]
    fn dnn_max_widths_are_the_documented_ones() {
        let spec = random_spec(ModelKind::DnnMax, 1.0, 1);
        let shapes = spec.shapes().unwrap();
        assert_eq!(shapes[0], Shape::Chw(32, 148, 123));
        assert_eq!(shapes[3], Shape::Chw(64, 72, 59));
        assert_eq!(shapes[6], Shape::Chw(64, 34, 27));
        assert_eq!(shapes[8], Shape::Chw(64, 17, 13));
    }

    #[test]
    fn model_names_round_trip() {
        for kind in ModelKind::ALL {
            assert_eq!(kind.name().parse::<ModelKind>().unwrap(), kind);
        }
        assert!("vgg19".parse::<ModelKind>().is_err());
    }
}
