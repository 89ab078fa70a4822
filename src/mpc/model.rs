//! From a [`NetworkSpec`] to three model shares.
//!
//! The owner first compiles the spec into secure operations in plaintext: batch normalisation
//! is folded into the convolution before it (or becomes a per-channel affine step when there is
//! none), dropout and flatten vanish (activations are already CHW row-major), and a ReLU next to
//! a max pooling is moved after the pooling, where it compares `size^2` times fewer values.
//! Every weight and bias is then encoded in fixed point and secret-shared, so no party ever
//! holds a whole weight. The three shares of one dealing carry the same random [`DealingId`],
//! which the parties compare before serving, so shares of two dealings are never mixed.

use super::error::{volume, MpcError, Result};
use super::fixed::FixedPoint;
use super::layers::ConvGeom;
use super::party::PartyId;
use super::prg::os_rng;
use super::share::{deal, ArithShare};
use crate::model::spec::Shape;
use crate::model::{Layer, NetworkSpec};
use rand::{CryptoRng, Rng};
use std::fmt;

/// Random 16-byte tag of one run of [`share_model`]: all three shares of a dealing carry it.
/// Shares of different dealings are not shares of one model (each dealing draws fresh
/// randomness), so parties holding different ids must not compute together.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DealingId([u8; DealingId::LEN]);

impl DealingId {
    pub const LEN: usize = 16;

    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        DealingId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }
}

impl fmt::Display for DealingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for DealingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DealingId({self})")
    }
}

/// Most values of one image's activation after any operation, and most entries of one image's
/// convolution patch matrix: 2^27. Full-width VGG16-2 at 224x224 peaks at 64x224x224 = 3.2e6
/// and 576x224x224 = 2.9e7; the cap keeps a model share from declaring layers whose working
/// memory cannot exist.
pub const MAX_ACTIVATION: usize = 1 << 27;

/// One step of the secure forward pass, with this party's shares of its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecureOp {
    Conv {
        geom: ConvGeom,
        weight: ArithShare,
        bias: ArithShare,
    },
    Dense {
        in_features: usize,
        out_features: usize,
        weight: ArithShare,
        bias: ArithShare,
    },
    /// Per-channel `x * scale + shift` (an unfolded batch normalisation).
    ChannelAffine {
        channels: usize,
        height: usize,
        width: usize,
        scale: ArithShare,
        shift: ArithShare,
    },
    Relu,
    MaxPool {
        channels: usize,
        height: usize,
        width: usize,
        size: usize,
        /// ReLU applied after the pooling.
        relu: bool,
    },
    AvgPool {
        channels: usize,
        height: usize,
        width: usize,
        size: usize,
    },
}

impl SecureOp {
    pub fn kind(&self) -> &'static str {
        match self {
            SecureOp::Conv { .. } => "conv",
            SecureOp::Dense { .. } => "dense",
            SecureOp::ChannelAffine { .. } => "channel-affine",
            SecureOp::Relu => "relu",
            SecureOp::MaxPool { relu: false, .. } => "maxpool",
            SecureOp::MaxPool { relu: true, .. } => "maxpool+relu",
            SecureOp::AvgPool { .. } => "avgpool",
        }
    }

    /// The activation shape after this op, or an error naming what it expected.
    fn out_shape(&self, index: usize, cur: Shape) -> Result<Shape> {
        let bad = |expected: String| MpcError::Mismatch {
            what: "operation input shape",
            expected: format!("op {index} ({}): {expected}", self.kind()),
            got: format!("{cur:?}"),
        };
        let params = |what: &'static str, expected: usize, got: usize| {
            if expected == got {
                Ok(())
            } else {
                Err(MpcError::Mismatch {
                    what,
                    expected: format!("op {index} ({}): {expected}", self.kind()),
                    got: got.to_string(),
                })
            }
        };
        match self {
            SecureOp::Conv { geom, weight, bias } => {
                let g = geom;
                let weights = volume(
                    "convolution shape",
                    &[g.out_channels, g.in_channels, g.kernel, g.kernel],
                )?;
                volume("convolution padding", &[g.padding])?;
                if cur != Shape::Chw(g.in_channels, g.height, g.width)
                    || g.kernel == 0
                    || g.height + 2 * g.padding < g.kernel
                    || g.width + 2 * g.padding < g.kernel
                {
                    return Err(bad(format!(
                        "[{}, {}, {}]",
                        g.in_channels, g.height, g.width
                    )));
                }
                params("convolution weight share", weights, weight.len())?;
                params("convolution bias share", g.out_channels, bias.len())?;
                let (oh, ow) = g.out_hw();
                volume("convolution output", &[g.out_channels, oh, ow])?;
                let patches = volume("convolution output", &[oh, ow])?
                    .checked_mul(g.patch_len())
                    .filter(|&n| n <= MAX_ACTIVATION);
                if patches.is_none() {
                    return Err(MpcError::Mismatch {
                        what: "convolution patch matrix",
                        expected: format!(
                            "op {index} (conv): at most {MAX_ACTIVATION} entries per image"
                        ),
                        got: format!("{oh}x{ow} positions of {} values", g.patch_len()),
                    });
                }
                Ok(Shape::Chw(g.out_channels, oh, ow))
            }
            SecureOp::Dense {
                in_features,
                out_features,
                weight,
                bias,
            } => {
                let weights = volume("dense shape", &[*in_features, *out_features])?;
                if cur.len() != *in_features {
                    return Err(bad(format!("{in_features} values")));
                }
                params("dense weight share", weights, weight.len())?;
                params("dense bias share", *out_features, bias.len())?;
                Ok(Shape::Flat(*out_features))
            }
            SecureOp::ChannelAffine {
                channels,
                height,
                width,
                scale,
                shift,
            } => {
                if cur != Shape::Chw(*channels, *height, *width) {
                    return Err(bad(format!("[{channels}, {height}, {width}]")));
                }
                params("affine scale share", *channels, scale.len())?;
                params("affine shift share", *channels, shift.len())?;
                Ok(cur)
            }
            SecureOp::Relu => Ok(cur),
            SecureOp::MaxPool {
                channels,
                height,
                width,
                size,
                ..
            }
            | SecureOp::AvgPool {
                channels,
                height,
                width,
                size,
            } => {
                if cur != Shape::Chw(*channels, *height, *width)
                    || *size == 0
                    || *height < *size
                    || *width < *size
                {
                    return Err(bad(format!(
                        "[{channels}, {height}, {width}] with a {size}x{size} window"
                    )));
                }
                Ok(Shape::Chw(*channels, height / size, width / size))
            }
        }
    }
}

/// One party's share of a model: public architecture, secret parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyModel {
    party: PartyId,
    dealing: DealingId,
    fixed: FixedPoint,
    name: String,
    input: [usize; 3],
    ops: Vec<SecureOp>,
    output_len: usize,
}

impl PartyModel {
    /// Assembles and validates a model share (shapes flow through every op, parameter shares
    /// have the sizes their op needs).
    pub fn new(
        party: PartyId,
        dealing: DealingId,
        fixed: FixedPoint,
        name: String,
        input: [usize; 3],
        ops: Vec<SecureOp>,
    ) -> Result<Self> {
        volume("model input shape", &input)?;
        let mut cur = Shape::Chw(input[0], input[1], input[2]);
        if cur.is_empty() || cur.len() > MAX_ACTIVATION {
            return Err(MpcError::mismatch(
                "model input shape",
                format!("non-empty, at most {MAX_ACTIVATION} values"),
                format!("{input:?}"),
            ));
        }
        for (i, op) in ops.iter().enumerate() {
            cur = op.out_shape(i, cur)?;
            if cur.len() > MAX_ACTIVATION {
                return Err(MpcError::mismatch(
                    "operation output",
                    format!(
                        "at most {MAX_ACTIVATION} values per image after op {i} ({})",
                        op.kind()
                    ),
                    format!("{cur:?}"),
                ));
            }
            if cur.is_empty() {
                return Err(MpcError::mismatch(
                    "operation output",
                    format!("at least one value after op {i} ({})", op.kind()),
                    format!("{cur:?}"),
                ));
            }
        }
        Ok(PartyModel {
            party,
            dealing,
            fixed,
            name,
            input,
            ops,
            output_len: cur.len(),
        })
    }

    pub fn party(&self) -> PartyId {
        self.party
    }
    /// The dealing this share belongs to (the same in all three shares of one dealing).
    pub fn dealing(&self) -> DealingId {
        self.dealing
    }
    pub fn fixed(&self) -> FixedPoint {
        self.fixed
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn input_shape(&self) -> [usize; 3] {
        self.input
    }
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }
    pub fn output_len(&self) -> usize {
        self.output_len
    }
    pub fn ops(&self) -> &[SecureOp] {
        &self.ops
    }
}

/// A compiled op with plaintext parameters (owner side only).
enum PlainOp {
    Conv {
        geom: ConvGeom,
        weight: Vec<f64>,
        bias: Vec<f64>,
    },
    Dense {
        in_features: usize,
        out_features: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    Affine {
        dims: (usize, usize, usize),
        scale: Vec<f64>,
        shift: Vec<f64>,
    },
    Relu,
    MaxPool {
        dims: (usize, usize, usize),
        size: usize,
        relu: bool,
    },
    AvgPool {
        dims: (usize, usize, usize),
        size: usize,
    },
}

fn compile(spec: &NetworkSpec) -> Result<Vec<PlainOp>> {
    let shapes = spec.shapes()?;
    let [c0, h0, w0] = spec.input;
    let mut cur = Shape::Chw(c0, h0, w0);
    let mut ops: Vec<PlainOp> = Vec::new();
    for (index, (layer, next)) in spec.layers.iter().zip(shapes).enumerate() {
        // shapes() has checked every layer against its input; pooling, convolution and batch
        // normalisation only ever see CHW here.
        let chw = match cur {
            Shape::Chw(c, h, w) => Some((c, h, w)),
            Shape::Flat(_) => None,
        };
        let need_chw = || {
            chw.ok_or_else(|| {
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
                let (_, h, w) = need_chw()?;
                ops.push(PlainOp::Conv {
                    geom: ConvGeom {
                        in_channels: *in_channels,
                        out_channels: *out_channels,
                        kernel: *kernel,
                        padding: *padding,
                        height: h,
                        width: w,
                    },
                    weight: weight.iter().map(|&v| f64::from(v)).collect(),
                    bias: bias.iter().map(|&v| f64::from(v)).collect(),
                });
            }
            Layer::BatchNorm2d {
                gamma,
                beta,
                mean,
                var,
                eps,
            } => {
                let dims = need_chw()?;
                let scale: Vec<f64> = (0..dims.0)
                    .map(|c| f64::from(gamma[c]) / (f64::from(var[c]) + f64::from(*eps)).sqrt())
                    .collect();
                let shift: Vec<f64> = (0..dims.0)
                    .map(|c| f64::from(beta[c]) - f64::from(mean[c]) * scale[c])
                    .collect();
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
                weight: weight.clone(),
                bias: bias.clone(),
            }),
        }
        cur = next;
    }
    Ok(ops)
}

fn encode64(fixed: FixedPoint, v: &[f64]) -> Result<Vec<u64>> {
    v.iter().map(|&x| fixed.encode(x as f32)).collect()
}

/// The model owner's step: compiles `spec` and secret-shares every parameter with randomness
/// from `rng`, which must be a cryptographic generator seeded from the OS (see
/// [`share_model_os`]); the dealing id comes from it too. Returns the shares for parties 0, 1
/// and 2.
pub fn share_model<R: CryptoRng + ?Sized>(
    spec: &NetworkSpec,
    fixed: FixedPoint,
    rng: &mut R,
) -> Result<[PartyModel; 3]> {
    let plain = compile(spec)?;
    let dealing = DealingId(rng.random());
    let mut ops: [Vec<SecureOp>; 3] = Default::default();
    let mut share = |values: Vec<u64>| deal(&values, rng);
    for op in plain {
        let per_party: [SecureOp; 3] = match op {
            PlainOp::Conv { geom, weight, bias } => {
                let [w0, w1, w2] = share(encode64(fixed.weights(), &weight)?);
                let [b0, b1, b2] = share(encode64(fixed, &bias)?);
                [(w0, b0), (w1, b1), (w2, b2)].map(|(weight, bias)| SecureOp::Conv {
                    geom,
                    weight,
                    bias,
                })
            }
            PlainOp::Dense {
                in_features,
                out_features,
                weight,
                bias,
            } => {
                let [w0, w1, w2] = share(fixed.weights().encode_slice(&weight)?);
                let [b0, b1, b2] = share(fixed.encode_slice(&bias)?);
                [(w0, b0), (w1, b1), (w2, b2)].map(|(weight, bias)| SecureOp::Dense {
                    in_features,
                    out_features,
                    weight,
                    bias,
                })
            }
            PlainOp::Affine { dims, scale, shift } => {
                let [s0, s1, s2] = share(encode64(fixed, &scale)?);
                let [t0, t1, t2] = share(encode64(fixed, &shift)?);
                [(s0, t0), (s1, t1), (s2, t2)].map(|(scale, shift)| SecureOp::ChannelAffine {
                    channels: dims.0,
                    height: dims.1,
                    width: dims.2,
                    scale,
                    shift,
                })
            }
            PlainOp::Relu => [SecureOp::Relu, SecureOp::Relu, SecureOp::Relu],
            PlainOp::MaxPool { dims, size, relu } => std::array::from_fn(|_| SecureOp::MaxPool {
                channels: dims.0,
                height: dims.1,
                width: dims.2,
                size,
                relu,
            }),
            PlainOp::AvgPool { dims, size } => std::array::from_fn(|_| SecureOp::AvgPool {
                channels: dims.0,
                height: dims.1,
                width: dims.2,
                size,
            }),
        };
        for (list, op) in ops.iter_mut().zip(per_party) {
            list.push(op);
        }
    }
    let [o0, o1, o2] = ops;
    let party = |i: usize, ops| {
        PartyModel::new(
            PartyId::ALL[i],
            dealing,
            fixed,
            spec.name.clone(),
            spec.input,
            ops,
        )
    };
    Ok([party(0, o0)?, party(1, o1)?, party(2, o2)?])
}

/// [`share_model`] with a ChaCha20 generator seeded from the OS CSPRNG.
pub fn share_model_os(spec: &NetworkSpec, fixed: FixedPoint) -> Result<[PartyModel; 3]> {
    share_model(spec, fixed, &mut os_rng()?)
}
