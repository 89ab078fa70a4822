//! Compiling a [`NetworkSpec`] into plaintext secure operations (owner side only, before any
//! sharing): batch normalisation is folded into the convolution before it (or becomes a
//! per-channel affine step when there is none), dropout and flatten vanish (activations are
//! already CHW row-major), and a ReLU next to a max pooling is moved after the pooling, where
//! it compares `size^2` times fewer values.
//!
//! Owns [`PlainOp`] and [`Plain`]; imports the plain model and the fixed-point encoding, never
//! the dealing (which imports this) or the shares.

use super::error::{MpcError, Result};
use super::fixed::FixedPoint;
use super::layers::ConvGeom;
use crate::model::shape::{Chw, Shape};
use crate::model::{Layer, NetworkSpec};

/// A compiled op with plaintext parameters (owner side only). Dense weights are borrowed from
/// the spec (VGG16-2's first dense layer alone is 103M weights); convolution weights are owned
/// because folding a batch normalisation rescales them.
pub(super) enum PlainOp<'a> {
    Conv {
        geom: ConvGeom,
        weight: Vec<f64>,
        bias: Vec<f64>,
    },
    Dense {
        in_features: usize,
        out_features: usize,
        weight: &'a [f32],
        bias: &'a [f32],
    },
    Affine {
        dims: Chw,
        scale: Vec<f64>,
        shift: Vec<f64>,
    },
    Relu,
    MaxPool {
        dims: Chw,
        size: usize,
        relu: bool,
    },
    AvgPool {
        dims: Chw,
        size: usize,
    },
}

pub(super) fn compile(spec: &NetworkSpec) -> Result<Vec<PlainOp<'_>>> {
    let shapes = spec.shapes()?;
    let [c0, h0, w0] = spec.input;
    let mut cur = Shape::Chw(c0, h0, w0);
    let mut ops: Vec<PlainOp> = Vec::new();
    for (index, (layer, next)) in spec.layers.iter().zip(shapes).enumerate() {
        // shapes() has checked every layer against its input; pooling, convolution and batch
        // normalisation only ever see CHW here.
        let need_chw = || {
            cur.chw().ok_or_else(|| {
                MpcError::mismatch(
                    "layer input",
                    format!("CHW at layer {index}"),
                    format!("{cur:?}"),
                )
            })
        };
        match layer {
            Layer::Conv2d {
                in_channels,
                out_channels,
                kernel,
                padding,
                weight,
                bias,
            } => {
                let dims = need_chw()?;
                ops.push(PlainOp::Conv {
                    geom: ConvGeom {
                        in_channels: *in_channels,
                        out_channels: *out_channels,
                        kernel: *kernel,
                        padding: *padding,
                        height: dims.height,
                        width: dims.width,
                    },
                    weight: weight.iter().map(|&v| f64::from(v)).collect(),
                    bias: bias.iter().map(|&v| f64::from(v)).collect(),
                });
            }
            Layer::BatchNorm2d { .. } => {
                let dims = need_chw()?;
                let channels = layer.batch_norm_channels().unwrap_or_default();
                let scale: Vec<f64> = channels.iter().map(|c| c.scale).collect();
                let shift: Vec<f64> = channels.iter().map(|c| c.shift()).collect();
                match ops.last_mut() {
                    // BN(conv(x)) = conv with weights scaled per output channel and bias
                    // scaled and shifted.
                    Some(PlainOp::Conv { geom, weight, bias }) => {
                        let per_out = geom.patch_len();
                        for (o, (s, t)) in scale.iter().zip(&shift).enumerate() {
                            for v in &mut weight[o * per_out..(o + 1) * per_out] {
                                *v *= s;
                            }
                            bias[o] = bias[o] * s + t;
                        }
                    }
                    _ => ops.push(PlainOp::Affine { dims, scale, shift }),
                }
            }
            Layer::Relu => match ops.last_mut() {
                Some(PlainOp::MaxPool { relu, .. }) => *relu = true,
                Some(PlainOp::Relu) => {}
                _ => ops.push(PlainOp::Relu),
            },
            Layer::MaxPool2d { size } => {
                let dims = need_chw()?;
                let relu = matches!(ops.last(), Some(PlainOp::Relu));
                if relu {
                    ops.pop();
                }
                ops.push(PlainOp::MaxPool {
                    dims,
                    size: *size,
                    relu,
                });
            }
            Layer::AvgPool2d { size } => {
                let dims = need_chw()?;
                ops.push(PlainOp::AvgPool { dims, size: *size });
            }
            Layer::Flatten | Layer::Dropout { .. } => {}
            Layer::Dense {
                in_features,
                out_features,
                weight,
                bias,
            } => ops.push(PlainOp::Dense {
                in_features: *in_features,
                out_features: *out_features,
                weight,
                bias,
            }),
        }
        cur = next;
    }
    Ok(ops)
}

impl PlainOp<'_> {
    /// The op's parameter tensors with the format each is encoded in.
    pub(super) fn params(&self, fixed: FixedPoint) -> Vec<(Plain<'_>, FixedPoint)> {
        match self {
            PlainOp::Conv { weight, bias, .. } => vec![
                (Plain::F64(weight), fixed.weights()),
                (Plain::F64(bias), fixed),
            ],
            PlainOp::Dense { weight, bias, .. } => vec![
                (Plain::F32(weight), fixed.weights()),
                (Plain::F32(bias), fixed),
            ],
            PlainOp::Affine { scale, shift, .. } => {
                vec![(Plain::F64(scale), fixed), (Plain::F64(shift), fixed)]
            }
            PlainOp::Relu | PlainOp::MaxPool { .. } | PlainOp::AvgPool { .. } => vec![],
        }
    }
}

/// Plaintext parameters to encode in fixed point: convolution weights after folding (f64) or
/// dense weights straight from the spec (f32).
#[derive(Clone, Copy)]
pub(super) enum Plain<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
}

impl Plain<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Plain::F64(v) => v.len(),
            Plain::F32(v) => v.len(),
        }
    }

    /// Element `e` in fixed point (an f64 is rounded to f32 first, as the spec's own values).
    pub(super) fn encode(&self, fixed: FixedPoint, e: usize) -> Result<u64> {
        match self {
            Plain::F64(v) => fixed.encode(v[e] as f32),
            Plain::F32(v) => fixed.encode(v[e]),
        }
    }
}
