//! Byte format of model shares, input shares and output shares (what the network ships).
//!
//! Little-endian throughout. Every message starts with a 4-byte magic, a version byte, the
//! party id and the fractional bits. Vectors of ring elements are a `u64` count then the
//! words; shapes and sizes are `u32`; text is a `u32` length then UTF-8. The decoder checks
//! every count against the bytes actually left before allocating, checks that the decoded
//! object is consistent (shapes, share lengths), and rejects trailing bytes.
//!
//! A model share (format version 3) continues with the 16-byte dealing id, the name, the class
//! names (a `u32` count, then each as text; zero when the outputs are unnamed), the input
//! shape, the operation count and the operations. Version 2, without class names, is still
//! read (its outputs are unnamed). Version 1 had no dealing id; such files are refused with a
//! message saying to share the model again. The model decoder also caps what a
//! model may declare before it allocates anything for it: at most [`MAX_OPS`] operations,
//! [`MAX_TENSOR`] elements in one parameter tensor (full-width VGG16-2's 25088x4096 dense layer
//! has about 2^26.6) and [`MAX_MODEL`] elements in all.
//!
//! Imports `crate::bytes`, `crate::model` and the siblings whose types it encodes (`client`,
//! `error`, `fixed`, `layers`, `model`, `party`, `share`); never `net` or `party`.

use super::client::{InputShare, OutputShare};
use super::error::{MpcError, Result};
use super::fixed::FixedPoint;
use super::layers::ConvGeom;
use super::model::{DealingId, PartyModel, SecureOp};
use super::party::PartyId;
use super::protocol::SignBits;
use super::share::ArithShare;
use crate::bytes::{Cursor, Short, Writer};
use crate::model::shape::Chw;

/// Version of the input and output share formats.
const VERSION: u8 = 1;
/// Version of the model share format: 2 added the dealing id, 3 the class names, 4 the
/// comparison width of each ReLU and max pooling (older shares run at the full width).
const MODEL_VERSION: u8 = 4;
/// The oldest model share format still read.
const MODEL_VERSION_MIN: u8 = 2;
/// Most class names a model share may carry, and most bytes in one.
const MAX_CLASSES: usize = 4096;
const MAGIC_MODEL: &[u8; 4] = b"PXMS";
const MAGIC_INPUT: &[u8; 4] = b"PXIS";
const MAGIC_OUTPUT: &[u8; 4] = b"PXOS";
const MAX_NAME: usize = 4096;
/// Most operations a model share may declare (VGG16 compiles to about 40).
pub const MAX_OPS: usize = 256;
/// Most elements in one parameter tensor: 2^27, above full-width VGG16-2's largest (25088 x
/// 4096 = 102,760,448).
pub const MAX_TENSOR: usize = 1 << 27;
/// Most parameter elements in a whole model: 2^28, twice full-width VGG16-2's 1.35e8.
pub const MAX_MODEL: usize = 1 << 28;

/// The caps the model decoder applies (the constants above; smaller in tests).
#[derive(Clone, Copy, Debug)]
struct Limits {
    ops: usize,
    tensor: usize,
    model: usize,
}

const LIMITS: Limits = Limits {
    ops: MAX_OPS,
    tensor: MAX_TENSOR,
    model: MAX_MODEL,
};

const TAG_CONV: u8 = 1;
const TAG_DENSE: u8 = 2;
const TAG_AFFINE: u8 = 3;
const TAG_RELU: u8 = 4;
const TAG_MAXPOOL: u8 = 5;
const TAG_AVGPOOL: u8 = 6;

/// The format's layer over [`Writer`]: its header, its `u32` sizes and its counted vectors.
trait Put {
    fn header(magic: &[u8; 4], version: u8, party: PartyId, fixed: FixedPoint) -> Self;
    fn dim(&mut self, v: usize);
    fn chw(&mut self, d: &Chw);
    fn words(&mut self, v: &[u64]);
    fn share(&mut self, s: &ArithShare);
}

impl Put for Writer {
    fn header(magic: &[u8; 4], version: u8, party: PartyId, fixed: FixedPoint) -> Self {
        let mut w = Writer::default();
        w.raw(magic);
        w.u8(version);
        w.u8(party.get());
        // frac_bits is at most FixedPoint::MAX_FRAC_BITS (24).
        w.u8(fixed.frac_bits() as u8);
        w
    }
    fn dim(&mut self, v: usize) {
        self.u32(v as u32);
    }
    fn chw(&mut self, d: &Chw) {
        for v in [d.channels, d.height, d.width] {
            self.dim(v);
        }
    }
    fn words(&mut self, v: &[u64]) {
        self.u64(v.len() as u64);
        self.u64s(v);
    }
    fn share(&mut self, s: &ArithShare) {
        self.words(s.own());
        self.words(s.next());
    }
}

struct Reader<'a> {
    what: &'static str,
    cur: Cursor<'a>,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: impl Into<String>) -> MpcError {
        MpcError::Decode {
            what: self.what,
            reason: reason.into(),
        }
    }
    fn short(&self, s: Short) -> MpcError {
        self.err(format!(
            "needs {} more bytes at offset {}, only {} left",
            s.needed, s.offset, s.available
        ))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        self.cur.take(n).map_err(|s| self.short(s))
    }
    fn u8(&mut self) -> Result<u8> {
        self.cur.u8().map_err(|s| self.short(s))
    }
    fn u32(&mut self) -> Result<usize> {
        Ok(self.cur.u32().map_err(|s| self.short(s))? as usize)
    }
    fn u64(&mut self) -> Result<u64> {
        self.cur.u64().map_err(|s| self.short(s))
    }
    fn chw(&mut self) -> Result<Chw> {
        Ok(Chw {
            channels: self.u32()?,
            height: self.u32()?,
            width: self.u32()?,
        })
    }
    fn words(&mut self) -> Result<Vec<u64>> {
        let n = self.u64()?;
        self.words_body(n)
    }
    /// The `n` words after a count that has been read.
    fn words_body(&mut self, n: u64) -> Result<Vec<u64>> {
        let left = self.cur.remaining() as u64;
        if n > left / 8 {
            return Err(self.err(format!("declares {n} words but only {left} bytes are left")));
        }
        let bytes = self.take(n as usize * 8)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }
    fn share(&mut self) -> Result<ArithShare> {
        let own = self.words()?;
        let next = self.words()?;
        ArithShare::new(own, next)
    }
    /// A model parameter share: its declared length is checked against the per-tensor cap and
    /// against what is left of the model's `budget` before anything is read.
    fn param(&mut self, what: &str, limits: Limits, budget: &mut usize) -> Result<ArithShare> {
        let mut parts = [Vec::new(), Vec::new()];
        for part in &mut parts {
            let n = self.u64()?;
            if n > limits.tensor as u64 {
                return Err(self.err(format!(
                    "{what} declares {n} elements, at most {} per tensor",
                    limits.tensor
                )));
            }
            if n > *budget as u64 {
                return Err(self.err(format!(
                    "{what} declares {n} elements, past the limit of {} parameter elements in \
                     a model",
                    limits.model
                )));
            }
            *part = self.words_body(n)?;
        }
        let [own, next] = parts;
        *budget -= own.len();
        ArithShare::new(own, next)
    }
    fn header(
        data: &'a [u8],
        what: &'static str,
        magic: &[u8; 4],
        version: u8,
    ) -> Result<(Self, PartyId, FixedPoint)> {
        let (r, _, party, fixed) = Self::header_versions(data, what, magic, version..=version)?;
        Ok((r, party, fixed))
    }
    /// [`Reader::header`] accepting any version in `versions`, and returning the one found.
    fn header_versions(
        data: &'a [u8],
        what: &'static str,
        magic: &[u8; 4],
        versions: std::ops::RangeInclusive<u8>,
    ) -> Result<(Self, u8, PartyId, FixedPoint)> {
        let (oldest, version) = (*versions.start(), *versions.end());
        let mut r = Reader {
            what,
            cur: Cursor::new(data),
        };
        let m = r.take(4)?;
        if m != magic {
            return Err(r.err(format!("magic {m:?}, expected {magic:?}")));
        }
        let v = r.u8()?;
        if v < oldest && magic == MAGIC_MODEL {
            return Err(r.err(format!(
                "format version {v} was written by an older privxray (this one reads versions \
                 {oldest} to {version}, which carry a dealing id); the model owner must run \
                 `privxray share-model` again"
            )));
        }
        if !versions.contains(&v) {
            return Err(r.err(if oldest == version {
                format!("format version {v}, expected {version}")
            } else {
                format!("format version {v}, expected {oldest} to {version}")
            }));
        }
        let id = r.u8()?;
        let party = PartyId::new(id).ok_or(MpcError::PartyId(u64::from(id)))?;
        let fixed = FixedPoint::new(u32::from(r.u8()?))?;
        Ok((r, v, party, fixed))
    }
    fn finish(&self) -> Result<()> {
        if self.cur.remaining() != 0 {
            return Err(self.err(format!("{} trailing bytes", self.cur.remaining())));
        }
        Ok(())
    }
}

impl InputShare {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::header(MAGIC_INPUT, VERSION, self.party(), self.fixed());
        for d in self.shape() {
            w.dim(d);
        }
        w.share(self.share());
        w.into_bytes()
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let (mut r, party, fixed) = Reader::header(data, "input share", MAGIC_INPUT, VERSION)?;
        let shape = [r.u32()?, r.u32()?, r.u32()?];
        let share = r.share()?;
        r.finish()?;
        InputShare::new(party, fixed, shape, share)
    }
}

impl OutputShare {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::header(MAGIC_OUTPUT, VERSION, self.party(), self.fixed());
        w.words(self.part());
        w.into_bytes()
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let (mut r, party, fixed) = Reader::header(data, "output share", MAGIC_OUTPUT, VERSION)?;
        let part = r.words()?;
        r.finish()?;
        Ok(OutputShare::new(party, fixed, part))
    }
}

impl PartyModel {
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_model(self, MODEL_VERSION)
    }

    /// Decodes and validates a model share ([`PartyModel::new`] checks every shape). Counts and
    /// sizes are checked against [`MAX_OPS`], [`MAX_TENSOR`] and [`MAX_MODEL`] before anything
    /// is allocated for them.
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        decode_model(data, LIMITS)
    }
}

/// A model share in format `version` (3 or later; older formats are only read): what
/// [`PartyModel::to_bytes`] writes, and in tests the formats before it.
fn encode_model(m: &PartyModel, version: u8) -> Vec<u8> {
    let mut w = Writer::header(MAGIC_MODEL, version, m.party(), m.fixed());
    w.raw(m.dealing().as_bytes());
    w.dim(m.name().len());
    w.raw(m.name().as_bytes());
    w.dim(m.classes().len());
    for c in m.classes() {
        w.dim(c.len());
        w.raw(c.as_bytes());
    }
    for d in m.input_shape() {
        w.dim(d);
    }
    w.dim(m.ops().len());
    for op in m.ops() {
        match op {
            SecureOp::Conv { geom, weight, bias } => {
                w.u8(TAG_CONV);
                for v in [
                    geom.in_channels,
                    geom.out_channels,
                    geom.kernel,
                    geom.padding,
                    geom.height,
                    geom.width,
                ] {
                    w.dim(v);
                }
                w.share(weight);
                w.share(bias);
            }
            SecureOp::Dense {
                in_features,
                out_features,
                weight,
                bias,
            } => {
                w.u8(TAG_DENSE);
                w.dim(*in_features);
                w.dim(*out_features);
                w.share(weight);
                w.share(bias);
            }
            SecureOp::ChannelAffine { dims, scale, shift } => {
                w.u8(TAG_AFFINE);
                w.chw(dims);
                w.share(scale);
                w.share(shift);
            }
            SecureOp::Relu { sign } => {
                w.u8(TAG_RELU);
                if version >= 4 {
                    w.u8(sign.get() as u8);
                }
            }
            SecureOp::MaxPool {
                dims,
                size,
                relu,
                sign,
            } => {
                w.u8(TAG_MAXPOOL);
                w.chw(dims);
                w.dim(*size);
                w.u8(u8::from(*relu));
                if version >= 4 {
                    w.u8(sign.get() as u8);
                }
            }
            SecureOp::AvgPool { dims, size } => {
                w.u8(TAG_AVGPOOL);
                w.chw(dims);
                w.dim(*size);
            }
        }
    }
    w.into_bytes()
}

/// The comparison width of a ReLU or max pooling: one byte from format 4 on, the full width
/// before.
fn sign_width(r: &mut Reader<'_>, version: u8) -> Result<SignBits> {
    if version < 4 {
        return Ok(SignBits::FULL);
    }
    let bits = r.u8()?;
    SignBits::new(u32::from(bits)).map_err(|_| {
        r.err(format!(
            "comparison width of {bits} bits, expected {} to 64",
            SignBits::MIN
        ))
    })
}

fn decode_model(data: &[u8], limits: Limits) -> Result<PartyModel> {
    let (mut r, version, party, fixed) = Reader::header_versions(
        data,
        "model share",
        MAGIC_MODEL,
        MODEL_VERSION_MIN..=MODEL_VERSION,
    )?;
    let dealing = DealingId::from_bytes(r.cur.array().map_err(|s| r.short(s))?);
    let name_len = r.u32()?;
    if name_len > MAX_NAME {
        return Err(r.err(format!(
            "model name of {name_len} bytes, at most {MAX_NAME}"
        )));
    }
    let name = String::from_utf8(r.take(name_len)?.to_vec())
        .map_err(|_| r.err("model name is not UTF-8"))?;
    let mut classes = Vec::new();
    if version >= 3 {
        let count = r.u32()?;
        if count > MAX_CLASSES {
            return Err(r.err(format!("{count} class names, at most {MAX_CLASSES}")));
        }
        for _ in 0..count {
            let len = r.u32()?;
            if len > MAX_NAME {
                return Err(r.err(format!("class name of {len} bytes, at most {MAX_NAME}")));
            }
            let class = String::from_utf8(r.take(len)?.to_vec())
                .map_err(|_| r.err("class name is not UTF-8"))?;
            classes.push(class);
        }
    }
    let input = [r.u32()?, r.u32()?, r.u32()?];
    let count = r.u32()?;
    if count > limits.ops {
        return Err(r.err(format!(
            "declares {count} operations, at most {}",
            limits.ops
        )));
    }
    let mut ops = Vec::with_capacity(count);
    let mut budget = limits.model;
    for _ in 0..count {
        let tag = r.u8()?;
        let op = match tag {
            TAG_CONV => {
                let geom = ConvGeom {
                    in_channels: r.u32()?,
                    out_channels: r.u32()?,
                    kernel: r.u32()?,
                    padding: r.u32()?,
                    height: r.u32()?,
                    width: r.u32()?,
                };
                SecureOp::Conv {
                    geom,
                    weight: r.param("convolution weight", limits, &mut budget)?,
                    bias: r.param("convolution bias", limits, &mut budget)?,
                }
            }
            TAG_DENSE => SecureOp::Dense {
                in_features: r.u32()?,
                out_features: r.u32()?,
                weight: r.param("dense weight", limits, &mut budget)?,
                bias: r.param("dense bias", limits, &mut budget)?,
            },
            TAG_AFFINE => SecureOp::ChannelAffine {
                dims: r.chw()?,
                scale: r.param("affine scale", limits, &mut budget)?,
                shift: r.param("affine shift", limits, &mut budget)?,
            },
            TAG_RELU => SecureOp::Relu {
                sign: sign_width(&mut r, version)?,
            },
            TAG_MAXPOOL => SecureOp::MaxPool {
                dims: r.chw()?,
                size: r.u32()?,
                relu: match r.u8()? {
                    0 => false,
                    1 => true,
                    b => return Err(r.err(format!("max-pool ReLU flag {b}, expected 0 or 1"))),
                },
                sign: sign_width(&mut r, version)?,
            },
            TAG_AVGPOOL => SecureOp::AvgPool {
                dims: r.chw()?,
                size: r.u32()?,
            },
            t => return Err(r.err(format!("unknown operation tag {t}"))),
        };
        ops.push(op);
    }
    r.finish()?;
    PartyModel::new(party, dealing, fixed, name, input, ops)?.with_classes(classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::{ModelKind, PlanLayer};
    use crate::model::{Layer, NetworkSpec};
    use crate::mpc::dealing::share_model;
    use crate::mpc::model::MAX_ACTIVATION;
    use rand::SeedableRng;

    fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(seed)
    }

    /// A dense 16 -> 8 -> 2 network: 128 + 8 + 16 + 2 = 154 parameter elements.
    fn small_model(seed: u64) -> [PartyModel; 3] {
        let dense = |i: usize, o: usize| Layer::Dense {
            in_features: i,
            out_features: o,
            weight: (0..i * o).map(|k| (k % 7) as f32 / 10.0 - 0.3).collect(),
            bias: vec![0.1; o],
        };
        let spec = NetworkSpec {
            name: "small".into(),
            input: [1, 4, 4],
            layers: vec![Layer::Flatten, dense(16, 8), Layer::Relu, dense(8, 2)],
        };
        share_model(&spec, FixedPoint::default(), &mut rng(seed)).unwrap()
    }

    /// A model share header up to the operation count, as a hostile sender would write it.
    fn header(count: u32) -> Vec<u8> {
        let mut b = MAGIC_MODEL.to_vec();
        b.extend([MODEL_VERSION, 0, 14]);
        b.extend([7u8; DealingId::LEN]);
        b.extend(1u32.to_le_bytes()); // name length
        b.push(b'm');
        b.extend(0u32.to_le_bytes()); // no class names
        for d in [1u32, 4, 4] {
            b.extend(d.to_le_bytes());
        }
        b.extend(count.to_le_bytes());
        b
    }

    /// One dense 16 -> 2 op whose weight share declares `n` words (and carries none).
    fn claiming_dense_weight(n: u64) -> Vec<u8> {
        let mut b = header(1);
        b.push(TAG_DENSE);
        b.extend(16u32.to_le_bytes());
        b.extend(2u32.to_le_bytes());
        b.extend(n.to_le_bytes());
        b
    }

    fn decode_err(data: &[u8]) -> String {
        match PartyModel::from_bytes(data) {
            Err(e @ MpcError::Decode { .. }) => e.to_string(),
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn a_header_claiming_huge_counts_is_refused_before_allocating() {
        // Vec::with_capacity(u32::MAX) of operations would abort the process, so reaching the
        // error shows the cap came first.
        let err = decode_err(&header(u32::MAX));
        assert!(err.contains("4294967295 operations, at most 256"), "{err}");
        let err = decode_err(&header(MAX_OPS as u32 + 1));
        assert!(err.contains("at most 256"), "{err}");
        // At the cap the count is accepted and the decoder goes on to the (missing) operations.
        let err = decode_err(&header(MAX_OPS as u32));
        assert!(!err.contains("at most 256"), "{err}");

        for n in [u64::MAX, 1 << 40, MAX_TENSOR as u64 + 1] {
            let err = decode_err(&claiming_dense_weight(n));
            assert!(
                err.contains(&format!("dense weight declares {n} elements")),
                "{err}"
            );
            assert!(
                err.contains(&format!("at most {MAX_TENSOR} per tensor")),
                "{err}"
            );
        }
        // Exactly at the tensor cap: refused only because the words are not there.
        let err = decode_err(&claiming_dense_weight(MAX_TENSOR as u64));
        assert!(err.contains("bytes are left"), "{err}");
    }

    #[test]
    fn tensor_and_model_caps_apply_to_real_shares() {
        let [m, _, _] = small_model(1);
        let bytes = m.to_bytes();
        let generous = Limits {
            ops: 256,
            tensor: 128,
            model: 154,
        };
        assert_eq!(decode_model(&bytes, generous).unwrap(), m);
        let err = decode_model(
            &bytes,
            Limits {
                tensor: 127,
                ..generous
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("dense weight declares 128 elements, at most 127"),
            "{err}"
        );
        let err = decode_model(
            &bytes,
            Limits {
                model: 153,
                ..generous
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("limit of 153 parameter elements"), "{err}");
        let err = decode_model(&bytes, Limits { ops: 2, ..generous })
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 operations, at most 2"), "{err}");
    }

    #[test]
    fn full_width_vgg16_2_fits_under_the_caps() {
        // Counted from the plan: building the real 1.35e8-parameter model here would cost GBs.
        let kind = ModelKind::Vgg16_2;
        let [c0, h0, w0] = kind.technique().input_shape();
        let (mut c, mut h, mut w) = (c0, h0, w0);
        let (mut largest, mut total, mut ops) = (0usize, 0usize, 0usize);
        let mut activation = c * h * w;
        let mut patches = 0usize;
        for layer in kind.plan(1.0) {
            match layer {
                PlanLayer::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    ..
                } => {
                    let weights = in_channels * out_channels * kernel * kernel;
                    largest = largest.max(weights);
                    total += weights + out_channels;
                    patches = patches.max(in_channels * kernel * kernel * h * w);
                    c = out_channels;
                    activation = activation.max(c * h * w);
                    ops += 1;
                }
                PlanLayer::Dense {
                    in_features,
                    out_features,
                } => {
                    largest = largest.max(in_features * out_features);
                    total += in_features * out_features + out_features;
                    ops += 1;
                }
                PlanLayer::Pool(_) => {
                    (h, w) = (h / 2, w / 2);
                    ops += 1;
                }
                PlanLayer::Relu => ops += 1,
                PlanLayer::Flatten | PlanLayer::Dropout(_) => {}
            }
        }
        assert_eq!(largest, 25088 * 4096);
        assert!(largest <= MAX_TENSOR && total <= MAX_MODEL && ops <= MAX_OPS);
        assert!(total > 130_000_000, "{total}");
        assert!(activation <= MAX_ACTIVATION && patches <= MAX_ACTIVATION);
        // And the caps are not far above it: a tensor twice the largest is refused.
        assert!(2 * largest > MAX_TENSOR);
    }

    #[test]
    fn dealing_ids_round_trip_and_one_dealing_shares_one_id() {
        let a = small_model(2);
        let b = small_model(3);
        assert!(a.iter().all(|m| m.dealing() == a[0].dealing()));
        assert_ne!(a[0].dealing(), b[0].dealing(), "two dealings, one id");
        for m in a.iter().chain(&b) {
            assert_eq!(
                PartyModel::from_bytes(&m.to_bytes()).unwrap().dealing(),
                m.dealing()
            );
        }
    }

    #[test]
    fn an_old_version_model_share_says_to_share_again() {
        let [m, _, _] = small_model(4);
        let mut old = m.to_bytes();
        old[4] = 1;
        let err = decode_err(&old);
        assert!(err.contains("format version 1"), "{err}");
        assert!(err.contains("privxray share-model"), "{err}");
        // A version from the future is not called old.
        old[4] = MODEL_VERSION + 1;
        let err = decode_err(&old);
        assert!(
            err.contains("expected 2 to 4") && !err.contains("older"),
            "{err}"
        );
    }

    /// `m` with every comparison at the full width, as a share from before format 4 reads.
    fn full_width(m: &PartyModel) -> PartyModel {
        let ops = m
            .ops()
            .iter()
            .cloned()
            .map(|op| match op {
                SecureOp::Relu { .. } => SecureOp::Relu {
                    sign: SignBits::FULL,
                },
                SecureOp::MaxPool {
                    dims, size, relu, ..
                } => SecureOp::MaxPool {
                    dims,
                    size,
                    relu,
                    sign: SignBits::FULL,
                },
                op => op,
            })
            .collect();
        let name = m.name().to_string();
        PartyModel::new(
            m.party(),
            m.dealing(),
            m.fixed(),
            name,
            m.input_shape(),
            ops,
        )
        .unwrap()
        .with_classes(m.classes().to_vec())
        .unwrap()
    }

    #[test]
    fn comparison_widths_round_trip_and_a_version_3_share_runs_at_full_width() {
        let [m, _, _] = small_model(6);
        let widths = |m: &PartyModel| -> Vec<u32> {
            m.ops()
                .iter()
                .filter_map(|op| match op {
                    SecureOp::Relu { sign } => Some(sign.get()),
                    _ => None,
                })
                .collect()
        };
        // Weights below 0.4 in a 16 -> 8 dense layer on inputs up to 1: far below 2^(24 - 15).
        assert_eq!(widths(&m), [24]);
        let back = PartyModel::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
        let v3 = PartyModel::from_bytes(&encode_model(&m, 3)).unwrap();
        assert_eq!(widths(&v3), [64]);
        assert_eq!(v3, full_width(&m));
        // A width the protocol cannot run is refused, naming it.
        let mut bad = m.to_bytes();
        // The width byte is the first after the header where format 3's bytes differ.
        let old = encode_model(&m, 3);
        let at = (5..old.len()).find(|&i| bad[i] != old[i]).unwrap();
        assert_eq!(bad[at], 24);
        for w in [0u8, 1, 65, 255] {
            bad[at] = w;
            let err = decode_err(&bad);
            assert!(
                err.contains(&format!("comparison width of {w} bits, expected 2 to 64")),
                "{err}"
            );
        }
    }

    #[test]
    fn class_names_round_trip_and_a_version_2_share_is_still_read() {
        let [m, _, _] = small_model(5);
        let named = m
            .clone()
            .with_classes(vec!["cat".into(), "dög".into()])
            .unwrap();
        let back = PartyModel::from_bytes(&named.to_bytes()).unwrap();
        assert_eq!(back.classes(), ["cat", "dög"]);
        assert_eq!(back, named);
        // Names must match the outputs.
        assert!(m.clone().with_classes(vec!["one".into()]).is_err());
        // Version 2: version 3's bytes without the class count.
        let m = full_width(&m);
        let v3 = encode_model(&m, 3);
        let name_end = 4 + 3 + DealingId::LEN + 4 + m.name().len();
        assert_eq!(v3[name_end..name_end + 4], 0u32.to_le_bytes());
        let mut v2 = v3[..name_end].to_vec();
        v2.extend(&v3[name_end + 4..]);
        v2[4] = 2;
        let old = PartyModel::from_bytes(&v2).unwrap();
        assert!(old.classes().is_empty());
        assert_eq!(old, m);
        // A hostile class count is refused before anything is allocated for it.
        let mut bad = v3.clone();
        bad[name_end..name_end + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            decode_err(&bad).contains("class names"),
            "{}",
            decode_err(&bad)
        );
    }
}
