//! Fixed-point encoding of reals in the ring Z_2^64 (two's complement in wrapping `u64`).
//!
//! # Choice of the default, 12 fractional bits
//!
//! A real `v` is stored as `round(v * 2^f)`. A product of two encoded values carries `2f`
//! fractional bits until it is truncated by `f`. Two limits matter:
//!
//! 1. Overflow: every value, including a pre-truncation product, must satisfy `|x| < 2^63`.
//!    The four models on inputs in [0, 1] with trained (or He-initialised) weights keep
//!    activations, pre-activations and logits well below `2^8` in magnitude (a conservative
//!    bound: batch-normalised or He-scaled layers keep activations O(1)..O(10)). With `f = 12`
//!    a pre-truncation product is below `2^(8 + 24) = 2^32`, a margin of `2^31` to overflow.
//! 2. Truncation failure: the probabilistic truncation of [`protocol::trunc`] is exact up to one
//!    unit in the last place except with probability `|x| / 2^64` per element (see there). With
//!    `|x| < 2^32` that is at most `2^-32` per element; DNN-Max truncates about `2^20` elements
//!    per image, so at most `2^-12` per image, and in practice far less because most values are
//!    much smaller than the bound. Each extra fractional bit doubles it twice (through `2f`), so
//!    16 bits would give `2^-4` per image: too often.
//!
//! Twelve bits give a resolution of `2^-12 ~ 2.4e-4`, far finer than 8-bit pixels, and keep the
//! quantisation error of He-scaled weights near 1e-3 relative: predictions match the f32
//! reference within 1e-2 in probability (see the network tests).
//!
//! [`protocol::trunc`]: super::protocol::trunc

use super::error::{MpcError, Result};

/// A fixed-point format: the number of fractional bits. Built only through [`FixedPoint::new`],
/// so every instance is in the supported range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedPoint {
    frac_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        FixedPoint {
            frac_bits: Self::DEFAULT_FRAC_BITS,
        }
    }
}

impl FixedPoint {
    pub const DEFAULT_FRAC_BITS: u32 = 12;
    pub const MIN_FRAC_BITS: u32 = 4;
    /// Above 24 bits a product of two in-range values could overflow the ring.
    pub const MAX_FRAC_BITS: u32 = 24;

    pub fn new(frac_bits: u32) -> Result<Self> {
        if (Self::MIN_FRAC_BITS..=Self::MAX_FRAC_BITS).contains(&frac_bits) {
            Ok(FixedPoint { frac_bits })
        } else {
            Err(MpcError::FracBits {
                frac_bits,
                min: Self::MIN_FRAC_BITS,
                max: Self::MAX_FRAC_BITS,
            })
        }
    }

    pub fn frac_bits(self) -> u32 {
        self.frac_bits
    }

    /// `2^f` as a float.
    pub fn scale(self) -> f64 {
        (1u64 << self.frac_bits) as f64
    }

    /// Largest magnitude [`encode`](Self::encode) accepts: `2^(31 - f)`, so an encoded value is
    /// below `2^31` and the product of two is below `2^62`, inside the ring without overflow.
    pub fn max_abs(self) -> f64 {
        (1u64 << (31 - self.frac_bits)) as f64
    }

    /// The ring element of the real `value` (rounded to nearest).
    pub fn encode(self, value: f32) -> Result<u64> {
        let v = f64::from(value);
        if !v.is_finite() || v.abs() >= self.max_abs() {
            return Err(MpcError::Encode {
                value: v,
                frac_bits: self.frac_bits,
                limit: self.max_abs(),
            });
        }
        Ok((v * self.scale()).round() as i64 as u64)
    }

    pub fn encode_slice(self, values: &[f32]) -> Result<Vec<u64>> {
        values.iter().map(|&v| self.encode(v)).collect()
    }

    /// The real of a ring element read as a signed two's-complement number.
    pub fn decode(self, x: u64) -> f64 {
        x as i64 as f64 / self.scale()
    }

    /// The integer `round(2^f * value)` as a ring element, for public constants.
    pub fn constant(self, value: f64) -> u64 {
        (value * self.scale()).round() as i64 as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_within_half_ulp() {
        let fp = FixedPoint::default();
        for &v in &[0.0f32, 1.0, -1.0, 0.5, 1e-4, -3.25, 1234.567, -0.000_1] {
            let back = fp.decode(fp.encode(v).unwrap());
            assert!(
                (back - f64::from(v)).abs() <= 0.5 / fp.scale(),
                "{v} -> {back}"
            );
        }
    }

    #[test]
    fn negative_values_are_twos_complement() {
        let fp = FixedPoint::new(8).unwrap();
        assert_eq!(fp.encode(-1.0).unwrap(), (-256i64) as u64);
        assert_eq!(fp.encode(1.0).unwrap(), 256);
    }

    #[test]
    fn rejects_bad_values_and_formats() {
        let fp = FixedPoint::default();
        assert!(matches!(fp.encode(f32::NAN), Err(MpcError::Encode { .. })));
        assert!(matches!(
            fp.encode(f32::INFINITY),
            Err(MpcError::Encode { .. })
        ));
        assert!(fp.encode(fp.max_abs() as f32).is_err());
        assert!(matches!(
            FixedPoint::new(40),
            Err(MpcError::FracBits { frac_bits: 40, .. })
        ));
        assert!(FixedPoint::new(2).is_err());
    }
}
