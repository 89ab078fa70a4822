//! From a [`NetworkSpec`] to three model shares.
//!
//! The owner first compiles the spec into secure operations in plaintext: batch normalisation
//! is folded into the convolution before it (or becomes a per-channel affine step when there is
//! none), dropout and flatten vanish (activations are already CHW row-major), and a ReLU next to
//! a max pooling is moved after the pooling, where it compares `size^2` times fewer values.
//! Every weight and bias is then encoded in fixed point and secret-shared, so no party ever
//! holds a whole weight. The dealing ([`ModelDealing`]) produces one party's share at a time
//! from two secret keys, so the owner never holds all three shares of a large model. The three
//! shares of one dealing carry the same random [`DealingId`], which the parties compare before
//! serving, so shares of two dealings are never mixed.

use super::error::{volume, MpcError, Result};
use super::fixed::FixedPoint;
use super::layers::ConvGeom;
use super::party::PartyId;
use super::prg::os_rng;
use super::share::ArithShare;
use crate::model::spec::Shape;
use crate::model::{Layer, NetworkSpec};
use rand::{CryptoRng, Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
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

/// A compiled op with plaintext parameters (owner side only). Dense weights are borrowed from
/// the spec (VGG16-2's first dense layer alone is 103M weights); convolution weights are owned
/// because folding a batch normalisation rescales them.
enum PlainOp<'a> {
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

fn compile(spec: &NetworkSpec) -> Result<Vec<PlainOp<'_>>> {
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
    fn params(&self, fixed: FixedPoint) -> Vec<(Plain<'_>, FixedPoint)> {
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
enum Plain<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
}

impl Plain<'_> {
    fn len(&self) -> usize {
        match self {
            Plain::F64(v) => v.len(),
            Plain::F32(v) => v.len(),
        }
    }

    /// Element `e` in fixed point (an f64 is rounded to f32 first, as the spec's own values).
    fn encode(&self, fixed: FixedPoint, e: usize) -> Result<u64> {
        match self {
            Plain::F64(v) => fixed.encode(v[e] as f32),
            Plain::F32(v) => fixed.encode(v[e]),
        }
    }
}

/// Words per parallel dealing task.
const DEAL_CHUNK: usize = 1 << 16;

/// The model owner's dealing of one network: every parameter `x` is split as
/// `x = c0 + c1 + c2`, where `c0` and `c1` are ChaCha20 streams of two secret keys from the
/// OS CSPRNG (one stream per parameter tensor) and `c2 = x - c0 - c1`; party `i` gets
/// `(c_i, c_{i+1})`, as [`deal`](super::share::deal) would give it. Because `c0` and `c1` can be regenerated from
/// the keys, each party's share is produced on its own, so the owner of a full-width VGG16-2
/// (2.2 GB per share) never holds more than one share at a time.
pub struct ModelDealing<'a> {
    id: DealingId,
    name: String,
    input: [usize; 3],
    fixed: FixedPoint,
    plain: Vec<PlainOp<'a>>,
    keys: [[u8; 32]; 2],
}

// The keys determine the shares: they never appear in logs.
impl std::fmt::Debug for ModelDealing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ModelDealing({}, {} ops, keys ..)",
            self.name,
            self.plain.len()
        )
    }
}

impl<'a> ModelDealing<'a> {
    /// Compiles `spec` and draws the two keys from `rng`, which must be a cryptographic
    /// generator seeded from the OS (see [`ModelDealing::new_os`]).
    pub fn new<R: CryptoRng + ?Sized>(
        spec: &'a NetworkSpec,
        fixed: FixedPoint,
        rng: &mut R,
    ) -> Result<Self> {
        let plain = compile(spec)?;
        // Every value must encode before any share is dealt: party 0's share never reads them
        // (it is two key streams), so a bad weight found later could leave it installed alone.
        for op in &plain {
            for (values, fx) in op.params(fixed) {
                (0..values.len())
                    .into_par_iter()
                    .try_for_each(|e| values.encode(fx, e).map(drop))?;
            }
        }
        let id = DealingId(rng.random());
        let mut keys = [[0u8; 32]; 2];
        for k in &mut keys {
            rng.fill_bytes(k);
        }
        Ok(ModelDealing {
            id,
            name: spec.name.clone(),
            input: spec.input,
            fixed,
            plain,
            keys,
        })
    }

    /// [`ModelDealing::new`] with keys from the OS CSPRNG.
    pub fn new_os(spec: &'a NetworkSpec, fixed: FixedPoint) -> Result<Self> {
        Self::new(spec, fixed, &mut os_rng()?)
    }

    /// The id all three shares of this dealing carry.
    pub fn id(&self) -> DealingId {
        self.id
    }

    /// Party `party`'s share of the model.
    pub fn share(&self, party: PartyId) -> Result<PartyModel> {
        let fixed = self.fixed;
        let mut ops = Vec::with_capacity(self.plain.len());
        for (index, op) in self.plain.iter().enumerate() {
            // Two streams per op: weights (or scale) and biases (or shift).
            let deal = |tensor: u64, values: Plain<'_>, fx: FixedPoint| {
                self.deal(party, ((index as u64) << 1) | tensor, values, fx)
            };
            ops.push(match op {
                PlainOp::Conv { geom, weight, bias } => SecureOp::Conv {
                    geom: *geom,
                    weight: deal(0, Plain::F64(weight), fixed.weights())?,
                    bias: deal(1, Plain::F64(bias), fixed)?,
                },
                PlainOp::Dense {
                    in_features,
                    out_features,
                    weight,
                    bias,
                } => SecureOp::Dense {
                    in_features: *in_features,
                    out_features: *out_features,
                    weight: deal(0, Plain::F32(weight), fixed.weights())?,
                    bias: deal(1, Plain::F32(bias), fixed)?,
                },
                PlainOp::Affine { dims, scale, shift } => SecureOp::ChannelAffine {
                    channels: dims.0,
                    height: dims.1,
                    width: dims.2,
                    scale: deal(0, Plain::F64(scale), fixed)?,
                    shift: deal(1, Plain::F64(shift), fixed)?,
                },
                PlainOp::Relu => SecureOp::Relu,
                PlainOp::MaxPool { dims, size, relu } => SecureOp::MaxPool {
                    channels: dims.0,
                    height: dims.1,
                    width: dims.2,
                    size: *size,
                    relu: *relu,
                },
                PlainOp::AvgPool { dims, size } => SecureOp::AvgPool {
                    channels: dims.0,
                    height: dims.1,
                    width: dims.2,
                    size: *size,
                },
            });
        }
        PartyModel::new(party, self.id, fixed, self.name.clone(), self.input, ops)
    }

    /// `party`'s two components of one parameter tensor: `c_i` and `c_{i+1}`, each either a
    /// key stream or `x - c0 - c1`. Two vectors of the tensor's length are allocated, no more.
    fn deal(
        &self,
        party: PartyId,
        stream: u64,
        values: Plain<'_>,
        fixed: FixedPoint,
    ) -> Result<ArithShare> {
        let n = values.len();
        let c0 = key_stream(&self.keys[0], stream, n);
        let mut c1 = key_stream(&self.keys[1], stream, n);
        match party.index() {
            0 => ArithShare::new(c0, c1),
            1 => {
                let mut c2 = c0;
                fill_last(&mut c2, &c1, values, fixed)?;
                ArithShare::new(c1, c2)
            }
            _ => {
                fill_last(&mut c1, &c0, values, fixed)?;
                ArithShare::new(c1, c0)
            }
        }
    }
}

/// `n` words of the ChaCha20 stream `stream` of `key`, generated in parallel chunks (each seeks
/// to its own position, so the words do not depend on the number of threads).
fn key_stream(key: &[u8; 32], stream: u64, n: usize) -> Vec<u64> {
    let mut base = ChaCha20Rng::from_seed(*key);
    base.set_stream(stream);
    let mut out = vec![0u64; n];
    out.par_chunks_mut(DEAL_CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut r = base.clone();
            // Word positions count 32-bit words.
            r.set_word_pos(2 * (i * DEAL_CHUNK) as u128);
            r.fill(chunk);
        });
    out
}

/// Turns `acc` (one key stream) into the last component `x - acc - other`.
fn fill_last(acc: &mut [u64], other: &[u64], values: Plain<'_>, fixed: FixedPoint) -> Result<()> {
    acc.par_chunks_mut(DEAL_CHUNK)
        .zip(other.par_chunks(DEAL_CHUNK))
        .enumerate()
        .try_for_each(|(i, (a, o))| {
            for (j, (a, o)) in a.iter_mut().zip(o).enumerate() {
                let x = values.encode(fixed, i * DEAL_CHUNK + j)?;
                *a = x.wrapping_sub(*a).wrapping_sub(*o);
            }
            Ok(())
        })
}

/// The model owner's step: compiles `spec` and secret-shares every parameter with randomness
/// from `rng`, which must be a cryptographic generator seeded from the OS (see
/// [`share_model_os`]); the dealing id comes from it too. Returns the shares for parties 0, 1
/// and 2. A caller that sends the shares away one at a time should use [`ModelDealing`], which
/// holds none of them.
pub fn share_model<R: CryptoRng + ?Sized>(
    spec: &NetworkSpec,
    fixed: FixedPoint,
    rng: &mut R,
) -> Result<[PartyModel; 3]> {
    let dealing = ModelDealing::new(spec, fixed, rng)?;
    Ok([
        dealing.share(PartyId::ALL[0])?,
        dealing.share(PartyId::ALL[1])?,
        dealing.share(PartyId::ALL[2])?,
    ])
}

/// [`share_model`] with a ChaCha20 generator seeded from the OS CSPRNG.
pub fn share_model_os(spec: &NetworkSpec, fixed: FixedPoint) -> Result<[PartyModel; 3]> {
    share_model(spec, fixed, &mut os_rng()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::random_spec;
    use crate::model::ModelKind;
    use crate::mpc::share::open;

    fn shares_of(op: &SecureOp) -> Vec<&ArithShare> {
        match op {
            SecureOp::Conv { weight, bias, .. } | SecureOp::Dense { weight, bias, .. } => {
                vec![weight, bias]
            }
            SecureOp::ChannelAffine { scale, shift, .. } => vec![scale, shift],
            _ => vec![],
        }
    }

    #[test]
    fn shares_dealt_one_at_a_time_open_to_the_encoded_weights() {
        let spec = random_spec(ModelKind::DnnAv, 1.0, 5);
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let dealing = ModelDealing::new(&spec, FixedPoint::default(), &mut rng).unwrap();
        // Dealt in an order other than 0, 1, 2, each on its own.
        let [s2, s0, s1] = [2, 0, 1].map(|i| dealing.share(PartyId::ALL[i]).unwrap());
        assert_eq!(
            dealing.share(PartyId::ALL[1]).unwrap(),
            s1,
            "not reproducible"
        );
        let fixed = FixedPoint::default();
        let dense: Vec<&Layer> = spec
            .layers
            .iter()
            .filter(|l| matches!(l, Layer::Conv2d { .. } | Layer::Dense { .. }))
            .collect();
        let ops = |m: &PartyModel| -> Vec<Vec<ArithShare>> {
            m.ops()
                .iter()
                .map(|o| shares_of(o).into_iter().cloned().collect::<Vec<_>>())
                .filter(|v: &Vec<ArithShare>| !v.is_empty())
                .collect()
        };
        let (o0, o1, o2) = (ops(&s0), ops(&s1), ops(&s2));
        assert_eq!(o0.len(), dense.len());
        for (i, layer) in dense.iter().enumerate() {
            let (w, b) = match layer {
                Layer::Conv2d { weight, bias, .. } | Layer::Dense { weight, bias, .. } => {
                    (weight, bias)
                }
                _ => unreachable!(),
            };
            for (t, (values, fx)) in [(w, fixed.weights()), (b, fixed)].into_iter().enumerate() {
                // open() also checks that the replicated components agree between neighbours.
                let got = open(&[o0[i][t].clone(), o1[i][t].clone(), o2[i][t].clone()]).unwrap();
                assert_eq!(
                    got,
                    fx.encode_slice(values).unwrap(),
                    "layer {i} tensor {t}"
                );
                // No party's pair is the plaintext or constant.
                assert_ne!(o0[i][t].own(), got.as_slice());
            }
        }
        // Fresh keys give other shares of the same weights.
        let other = ModelDealing::new(&spec, fixed, &mut rng).unwrap();
        assert_ne!(other.share(PartyId::ALL[0]).unwrap(), s0);
    }

    #[test]
    fn key_streams_are_one_sequential_stream_per_tensor() {
        // The parallel chunks must tile one ChaCha20 stream exactly: a chunk that reused
        // another's position would repeat mask words.
        let key = [7u8; 32];
        let n = 3 * DEAL_CHUNK + 1234;
        let mut rng = ChaCha20Rng::from_seed(key);
        rng.set_stream(9);
        let mut want = vec![0u64; n];
        rng.fill(&mut want[..]);
        assert_eq!(key_stream(&key, 9, n), want);
        assert_ne!(key_stream(&key, 8, 64), want[..64]);
    }

    #[test]
    fn an_unencodable_weight_is_an_error_naming_the_value() {
        let mut spec = random_spec(ModelKind::DnnMax, 1.0, 5);
        if let Some(Layer::Dense { weight, .. }) = spec.layers.last_mut() {
            weight[3] = f32::INFINITY;
        }
        // Refused before any share exists: party 0's share never reads the values, so a check
        // at dealing time could let it be sent alone.
        let err = ModelDealing::new_os(&spec, FixedPoint::default()).unwrap_err();
        assert!(err.to_string().contains("inf"), "{err}");
    }
}
