//! Fixed-point encoding of reals in the ring Z_2^64 (two's complement in wrapping `u64`).
//!
//! # Choice of the default: 14 fractional bits, weights 4 more
//!
//! A real `v` is stored as `round(v * 2^f)`. Convolution and dense weights are stored with
//! `f + 4` bits ([`WEIGHT_EXTRA_BITS`]): trained weights are small (DNN-Max's 14144-input dense
//! layer has |w| ~ 0.01), and at `f` bits their rounding errors, summed over thousands of inputs,
//! moved a trained DNN-Max's probabilities by up to 4e-3, enough to flip images near the
//! decision boundary. A product of an activation and a weight carries `2f + 4 = 32` fractional
//! bits until it is truncated by `f + 4`. Two limits matter:
//!
//! 1. Range: every value, including a pre-truncation product, must lie in
//!    [`protocol::TRUNC_RANGE`] (`-2^62 <= x < 2^62`), where the truncation is exact up to one
//!    unit in the last place with no failure probability. The four models on inputs in [0, 1]
//!    keep activations, pre-activations and logits well below `2^8` in magnitude, so a
//!    pre-truncation product is below `2^(8 + 32) = 2^40`, a margin of `2^22`.
//! 2. Precision: each truncation rounds stochastically (error below one unit in the last
//!    place); more fractional bits make the error smaller and cost nothing else now that
//!    truncation cannot wrap, up to the range limit above ([`FixedPoint::MAX_FRAC_BITS`]).
//!
//! Measured: on 200 synthetic images and the 8 real samples, the shipped dnn-max and dnn-av
//! models' private probabilities are within 3e-4 of plaintext and every class agrees
//! (tests/mpc_agreement.rs).
//!
//! [`protocol::TRUNC_RANGE`]: super::protocol::TRUNC_RANGE
//!
//! Imports `super::error` only; no other engine module.

use super::error::{MpcError, Result};

/// See the module documentation.
pub const WEIGHT_EXTRA_BITS: u32 = 4;

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
    pub const DEFAULT_FRAC_BITS: u32 = 14;
    /// Fractional bits of convolution and dense weights beyond the activations' (see above).
    pub const WEIGHT_EXTRA_BITS: u32 = WEIGHT_EXTRA_BITS;
    pub const MIN_FRAC_BITS: u32 = 4;
    /// Above 24 bits a product of an in-range value and a weight (`2f + 4` fractional bits)
    /// could overflow the ring.
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

    /// The format of convolution and dense weights: [`WEIGHT_EXTRA_BITS`] more fractional bits.
    pub fn weights(self) -> FixedPoint {
        FixedPoint {
            frac_bits: self.frac_bits + WEIGHT_EXTRA_BITS,
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
