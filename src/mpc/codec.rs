//! Byte format of model shares, input shares and output shares (what the network ships).
//!
//! Little-endian throughout. Every message starts with a 4-byte magic, a version byte, the
//! party id and the fractional bits. Vectors of ring elements are a `u64` count then the
//! words; shapes and sizes are `u32`; text is a `u32` length then UTF-8. The decoder checks
//! every count against the bytes actually left before allocating, checks that the decoded
//! object is consistent (shapes, share lengths), and rejects trailing bytes.

use super::client::{InputShare, OutputShare};
use super::error::{MpcError, Result};
use super::fixed::FixedPoint;
use super::layers::ConvGeom;
use super::model::{PartyModel, SecureOp};
use super::party::PartyId;
use super::share::ArithShare;
use crate::bytes::{Cursor, Short};

const VERSION: u8 = 1;
const MAGIC_MODEL: &[u8; 4] = b"PXMS";
const MAGIC_INPUT: &[u8; 4] = b"PXIS";
const MAGIC_OUTPUT: &[u8; 4] = b"PXOS";
const MAX_NAME: usize = 4096;

const TAG_CONV: u8 = 1;
const TAG_DENSE: u8 = 2;
const TAG_AFFINE: u8 = 3;
const TAG_RELU: u8 = 4;
const TAG_MAXPOOL: u8 = 5;
const TAG_AVGPOOL: u8 = 6;

struct Writer(Vec<u8>);

impl Writer {
    fn header(magic: &[u8; 4], party: PartyId, fixed: FixedPoint) -> Self {
        let mut w = Writer(Vec::new());
        w.0.extend_from_slice(magic);
        w.0.push(VERSION);
        w.0.push(party.get());
        // frac_bits is at most FixedPoint::MAX_FRAC_BITS (24).
        w.0.push(fixed.frac_bits() as u8);
        w
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: usize) {
        self.0.extend_from_slice(&(v as u32).to_le_bytes());
    }
    fn words(&mut self, v: &[u64]) {
        self.0.extend_from_slice(&(v.len() as u64).to_le_bytes());
        self.0.reserve(v.len() * 8);
        for w in v {
            self.0.extend_from_slice(&w.to_le_bytes());
        }
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
    fn words(&mut self) -> Result<Vec<u64>> {
        let n = self.u64()?;
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
    fn header(
        data: &'a [u8],
        what: &'static str,
        magic: &[u8; 4],
    ) -> Result<(Self, PartyId, FixedPoint)> {
        let mut r = Reader {
            what,
            cur: Cursor::new(data),
        };
        let m = r.take(4)?;
        if m != magic {
            return Err(r.err(format!("magic {m:?}, expected {magic:?}")));
        }
        let v = r.u8()?;
        if v != VERSION {
            return Err(r.err(format!("format version {v}, expected {VERSION}")));
        }
        let party = PartyId::new(r.u8()?)?;
        let fixed = FixedPoint::new(u32::from(r.u8()?))?;
        Ok((r, party, fixed))
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
        let mut w = Writer::header(MAGIC_INPUT, self.party(), self.fixed());
        for d in self.shape() {
            w.u32(d);
        }
        w.share(self.share());
        w.0
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let (mut r, party, fixed) = Reader::header(data, "input share", MAGIC_INPUT)?;
        let shape = [r.u32()?, r.u32()?, r.u32()?];
        let share = r.share()?;
        r.finish()?;
        InputShare::new(party, fixed, shape, share)
    }
}

impl OutputShare {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::header(MAGIC_OUTPUT, self.party(), self.fixed());
        w.words(self.part());
        w.0
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let (mut r, party, fixed) = Reader::header(data, "output share", MAGIC_OUTPUT)?;
        let part = r.words()?;
        r.finish()?;
        Ok(OutputShare::new(party, fixed, part))
    }
}

impl PartyModel {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::header(MAGIC_MODEL, self.party(), self.fixed());
        w.u32(self.name().len());
        w.0.extend_from_slice(self.name().as_bytes());
        for d in self.input_shape() {
            w.u32(d);
        }
        w.u32(self.ops().len());
        for op in self.ops() {
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
                        w.u32(v);
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
                    w.u32(*in_features);
                    w.u32(*out_features);
                    w.share(weight);
                    w.share(bias);
                }
                SecureOp::ChannelAffine {
                    channels,
                    height,
                    width,
                    scale,
                    shift,
                } => {
                    w.u8(TAG_AFFINE);
                    w.u32(*channels);
                    w.u32(*height);
                    w.u32(*width);
                    w.share(scale);
                    w.share(shift);
                }
                SecureOp::Relu => w.u8(TAG_RELU),
                SecureOp::MaxPool {
                    channels,
                    height,
                    width,
                    size,
                    relu,
                } => {
                    w.u8(TAG_MAXPOOL);
                    for v in [*channels, *height, *width, *size] {
                        w.u32(v);
                    }
                    w.u8(u8::from(*relu));
                }
                SecureOp::AvgPool {
                    channels,
                    height,
                    width,
                    size,
                } => {
                    w.u8(TAG_AVGPOOL);
                    for v in [*channels, *height, *width, *size] {
                        w.u32(v);
                    }
                }
            }
        }
        w.0
    }

    /// Decodes and validates a model share ([`PartyModel::new`] checks every shape).
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let (mut r, party, fixed) = Reader::header(data, "model share", MAGIC_MODEL)?;
        let name_len = r.u32()?;
        if name_len > MAX_NAME {
            return Err(r.err(format!(
                "model name of {name_len} bytes, at most {MAX_NAME}"
            )));
        }
        let name = String::from_utf8(r.take(name_len)?.to_vec())
            .map_err(|_| r.err("model name is not UTF-8"))?;
        let input = [r.u32()?, r.u32()?, r.u32()?];
        let count = r.u32()?;
        // Every op takes at least one byte.
        if count > data.len() {
            return Err(r.err(format!(
                "declares {count} operations in {} bytes",
                data.len()
            )));
        }
        let mut ops = Vec::with_capacity(count);
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
                        weight: r.share()?,
                        bias: r.share()?,
                    }
                }
                TAG_DENSE => SecureOp::Dense {
                    in_features: r.u32()?,
                    out_features: r.u32()?,
                    weight: r.share()?,
                    bias: r.share()?,
                },
                TAG_AFFINE => SecureOp::ChannelAffine {
                    channels: r.u32()?,
                    height: r.u32()?,
                    width: r.u32()?,
                    scale: r.share()?,
                    shift: r.share()?,
                },
                TAG_RELU => SecureOp::Relu,
                TAG_MAXPOOL => SecureOp::MaxPool {
                    channels: r.u32()?,
                    height: r.u32()?,
                    width: r.u32()?,
                    size: r.u32()?,
                    relu: match r.u8()? {
                        0 => false,
                        1 => true,
                        b => return Err(r.err(format!("max-pool ReLU flag {b}, expected 0 or 1"))),
                    },
                },
                TAG_AVGPOOL => SecureOp::AvgPool {
                    channels: r.u32()?,
                    height: r.u32()?,
                    width: r.u32()?,
                    size: r.u32()?,
                },
                t => return Err(r.err(format!("unknown operation tag {t}"))),
            };
            ops.push(op);
        }
        r.finish()?;
        PartyModel::new(party, fixed, name, input, ops)
    }
}
