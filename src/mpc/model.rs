//! The shared model types of the secure engine: one party's share of a model
//! ([`PartyModel`]), its operations ([`SecureOp`]) and the tag of the dealing it came from
//! ([`DealingId`]). Building them from a spec is [`super::compile`] and [`super::dealing`];
//! shipping them is [`super::codec`]; running them is [`super::network`].
//!
//! [`PartyModel::new`] is the one validation of a model share, whoever made it (the dealer or
//! the decoder): shapes flow through every op by the rules of [`crate::model::shape`], and every
//! parameter share has the length its op needs. Imports the plain model's shapes, never the
//! dealing or the codec.

use super::error::{volume, MpcError, Result};
use super::fixed::FixedPoint;
use super::layers::ConvGeom;
use super::party::PartyId;
use super::protocol::SignBits;
use super::share::ArithShare;
use crate::model::shape::{conv_out, pool_out, Chw, Shape};
use std::fmt;

/// Random 16-byte tag of one dealing ([`ModelDealing`], [`share_model`]): all three shares of a
/// dealing carry it.
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
        dims: Chw,
        scale: ArithShare,
        shift: ArithShare,
    },
    Relu {
        /// The comparison width: holds every input (public, from the owner's bound).
        sign: SignBits,
    },
    MaxPool {
        dims: Chw,
        size: usize,
        /// ReLU applied after the pooling.
        relu: bool,
        /// The comparison width: holds every difference of two inputs (public, from the
        /// owner's bound).
        sign: SignBits,
    },
    AvgPool {
        dims: Chw,
        size: usize,
    },
}

impl SecureOp {
    pub fn kind(&self) -> &'static str {
        match self {
            SecureOp::Conv { .. } => "conv",
            SecureOp::Dense { .. } => "dense",
            SecureOp::ChannelAffine { .. } => "channel-affine",
            SecureOp::Relu { .. } => "relu",
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
            SecureOp::Conv {
                geom: g,
                weight,
                bias,
            } => {
                let weights = volume(
                    "convolution shape",
                    &[g.out_channels, g.in_channels, g.kernel, g.kernel],
                )?;
                volume("convolution padding", &[g.padding])?;
                let fits = conv_out(g.height, g.width, g.kernel, g.padding).filter(|_| {
                    g.kernel != 0 && cur == Shape::Chw(g.in_channels, g.height, g.width)
                });
                let Some((oh, ow)) = fits else {
                    return Err(bad(format!(
                        "[{}, {}, {}]",
                        g.in_channels, g.height, g.width
                    )));
                };
                params("convolution weight share", weights, weight.len())?;
                params("convolution bias share", g.out_channels, bias.len())?;
                check_conv_output(index, g, (oh, ow))?;
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
            SecureOp::ChannelAffine { dims, scale, shift } => {
                if cur != dims.shape() {
                    return Err(bad(format!(
                        "[{}, {}, {}]",
                        dims.channels, dims.height, dims.width
                    )));
                }
                params("affine scale share", dims.channels, scale.len())?;
                params("affine shift share", dims.channels, shift.len())?;
                Ok(cur)
            }
            SecureOp::Relu { .. } => Ok(cur),
            SecureOp::MaxPool { dims, size, .. } | SecureOp::AvgPool { dims, size } => {
                match pool_out(dims.height, dims.width, *size).filter(|_| cur == dims.shape()) {
                    Some((oh, ow)) => Ok(Shape::Chw(dims.channels, oh, ow)),
                    None => Err(bad(format!(
                        "[{}, {}, {}] with a {size}x{size} window",
                        dims.channels, dims.height, dims.width
                    ))),
                }
            }
        }
    }
}

/// A convolution's output and patch matrix fit the per-image caps.
fn check_conv_output(index: usize, g: &ConvGeom, (oh, ow): (usize, usize)) -> Result<()> {
    volume("convolution output", &[g.out_channels, oh, ow])?;
    let patches = volume("convolution output", &[oh, ow])?
        .checked_mul(g.patch_len())
        .filter(|&n| n <= MAX_ACTIVATION);
    if patches.is_none() {
        return Err(MpcError::Mismatch {
            what: "convolution patch matrix",
            expected: format!("op {index} (conv): at most {MAX_ACTIVATION} entries per image"),
            got: format!("{oh}x{ow} positions of {} values", g.patch_len()),
        });
    }
    Ok(())
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
    /// Public names of the outputs, in order, as the model owner gave them; empty when the
    /// share does not carry them (shares made before names travelled with the model).
    classes: Vec<String>,
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
            classes: Vec::new(),
        })
    }

    /// The same share with the outputs named: exactly one name per output, or none.
    pub fn with_classes(mut self, classes: Vec<String>) -> Result<Self> {
        if !classes.is_empty() && classes.len() != self.output_len {
            return Err(MpcError::mismatch(
                "class names",
                format!("one per output ({})", self.output_len),
                format!("{} names", classes.len()),
            ));
        }
        self.classes = classes;
        Ok(self)
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
    /// The outputs' names, or an empty slice when the share carries none.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}
