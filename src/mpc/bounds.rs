//! The owner's proof that narrow comparisons are right: a bound on every value the secure
//! forward pass compares, for every input in `[0, 1]`, and from it the comparison width
//! ([`SignBits`]) each ReLU and max pooling runs at.
//!
//! The bound is taken on the ring's integers, the very values the parties compute: the
//! fixed-point weights as dealt, the truncation's one unit of rounding, and every bias. A
//! convolution or dense layer maps a magnitude `X` to
//! `max_o (ceil(sum_k |W_ok| X / 2^d) + 1 + |b_o|)`, where `d` is the weights' fractional bits;
//! a per-channel affine step likewise; average pooling maps it to
//! `ceil(area X c / 2^f) + 1` with the public `c = round(2^f / area)` (`X + 1` when the area is
//! a power of two); ReLU and max pooling keep `X`. A ReLU compares values of magnitude at most
//! `X`, a max pooling differences of two, at most `2X`.
//!
//! The truncation is exact only below `2^62` ([`super::protocol::TRUNC_RANGE`]), so a layer
//! whose bound before truncation reaches `2^62` is not bounded at all: from there on every
//! width is the full 64. Interval bounds of deep models grow with the product of the layers'
//! norms, so their late layers end at the full width: the bound is loose, never wrong.
//!
//! What the parties learn: each comparison's width, the bit length of its bound plus a sign
//! bit, rounded up to a multiple of 8 (at most 8 values per layer: a coarse function of the
//! weights' norms).
//!
//! Owns the bound; imports the compiled ops, the fixed-point format and [`SignBits`], never the
//! dealing (which imports this) or the shares.

use super::compile::{compile, Plain, PlainOp};
use super::error::Result;
use super::fixed::FixedPoint;
use super::protocol::SignBits;
use crate::model::NetworkSpec;
use rayon::prelude::*;

/// The inputs the bound holds for: pixels in `[0, 1]`, which encode to at most `2^f`.
pub const INPUT_RANGE: (f32, f32) = (0.0, 1.0);

/// What a dealing of `spec` tells the parties beyond the architecture: each comparison op
/// (`relu`, `maxpool` or `maxpool+relu`) with its width, in order.
pub fn comparison_widths(
    spec: &NetworkSpec,
    fixed: FixedPoint,
) -> Result<Vec<(&'static str, SignBits)>> {
    let plain = compile(spec)?;
    let widths = sign_widths(&plain, fixed)?;
    Ok(plain
        .iter()
        .zip(widths)
        .filter_map(|(op, w)| match op {
            PlainOp::Relu => Some(("relu", w)),
            PlainOp::MaxPool { relu: false, .. } => Some(("maxpool", w)),
            PlainOp::MaxPool { relu: true, .. } => Some(("maxpool+relu", w)),
            _ => None,
        })
        .collect())
}

/// The widths as one line: `maxpool+relu 24, relu 40 bits`.
pub fn describe(widths: &[(&'static str, SignBits)]) -> String {
    if widths.is_empty() {
        return "none (the model compares nothing)".into();
    }
    let list: Vec<String> = widths
        .iter()
        .map(|(op, w)| format!("{op} {}", w.get()))
        .collect();
    format!("{} bits", list.join(", "))
}

/// One width per op of `plain` (the full width for ops that compare nothing), for inputs in
/// [`INPUT_RANGE`] encoded with `fixed`. Fails only when a parameter does not encode.
pub(super) fn sign_widths(plain: &[PlainOp<'_>], fixed: FixedPoint) -> Result<Vec<SignBits>> {
    let f = fixed.frac_bits();
    let fw = fixed.weights().frac_bits();
    let mut x: u128 = 1 << f;
    let mut widths = Vec::with_capacity(plain.len());
    for op in plain {
        let mut width = SignBits::FULL;
        x = match op {
            PlainOp::Conv { geom, weight, bias } => {
                let rows = (Plain::F64(weight), geom.patch_len());
                affine(rows, Plain::F64(bias), x, fixed.weights(), fixed, fw)?
            }
            PlainOp::Dense {
                in_features,
                weight,
                bias,
                ..
            } => {
                let rows = (Plain::F32(weight), *in_features);
                affine(rows, Plain::F32(bias), x, fixed.weights(), fixed, fw)?
            }
            // A diagonal affine map: rows of one entry each.
            PlainOp::Affine { scale, shift, .. } => affine(
                (Plain::F64(scale), 1),
                Plain::F64(shift),
                x,
                fixed,
                fixed,
                f,
            )?,
            PlainOp::Relu => {
                width = SignBits::for_magnitude(x);
                x
            }
            PlainOp::MaxPool { .. } => {
                width = SignBits::for_magnitude(x.saturating_mul(2));
                x
            }
            PlainOp::AvgPool { size, .. } => {
                let area = (size * size) as u128;
                if area.is_power_of_two() {
                    // The window sum (at most `area X`) truncated by `log2(area)` bits.
                    let sum = area.saturating_mul(x);
                    truncated(sum, area.trailing_zeros())
                } else {
                    let c = ((1u64 << f) as f64 / area as f64).round() as u128;
                    truncated(area.saturating_mul(x).saturating_mul(c), f)
                }
            }
        };
        widths.push(width);
    }
    Ok(widths)
}

/// `max_o (ceil(sum_k |W_ok| x / 2^shift) + 1 + |b_o|)` over the rows of `len` weights each.
fn affine(
    (weight, len): (Plain<'_>, usize),
    bias: Plain<'_>,
    x: u128,
    weight_format: FixedPoint,
    bias_format: FixedPoint,
    shift: u32,
) -> Result<u128> {
    let magnitude = |values: Plain<'_>, fx: FixedPoint, e: usize| -> Result<u128> {
        Ok(u128::from((values.encode(fx, e)? as i64).unsigned_abs()))
    };
    (0..bias.len())
        .into_par_iter()
        .map(|o| {
            let mut norm: u128 = 0;
            for e in o * len..((o + 1) * len).min(weight.len()) {
                norm = norm.saturating_add(magnitude(weight, weight_format, e)?);
            }
            let b = magnitude(bias, bias_format, o)?;
            Ok(truncated(norm.saturating_mul(x), shift).saturating_add(b))
        })
        .try_reduce(|| 0, |a, b| Ok(a.max(b)))
}

/// The bound after truncating a value of magnitude at most `v` by `shift` bits:
/// `ceil(v / 2^shift) + 1` (floor or one more, and the floor of a negative value rounds away
/// from zero), or no bound ([`u128::MAX`]) when `v` may leave the range where the truncation
/// is exact.
fn truncated(v: u128, shift: u32) -> u128 {
    if v >= TRUNC_LIMIT {
        return u128::MAX;
    }
    v.div_ceil(1u128 << shift) + 1
}

/// Magnitudes from here on may be outside [`super::protocol::TRUNC_RANGE`].
const TRUNC_LIMIT: u128 = 1 << 62;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Layer;

    fn widths(spec: &NetworkSpec) -> Vec<u32> {
        sign_widths(&compile(spec).unwrap(), FixedPoint::default())
            .unwrap()
            .iter()
            .map(|w| w.get())
            .collect()
    }

    /// A convolution whose weights are all `w` on a 1-channel input, then ReLU and 2x2 max
    /// pooling fused: the bound is exact arithmetic on the encoded integers.
    #[test]
    fn the_bound_follows_the_encoded_weights() {
        let spec = |w: f32, b: f32| NetworkSpec {
            name: "one".into(),
            input: [1, 4, 4],
            layers: vec![
                Layer::Conv2d {
                    in_channels: 1,
                    out_channels: 1,
                    kernel: 3,
                    padding: 1,
                    weight: vec![w; 9],
                    bias: vec![b],
                },
                Layer::Relu,
                Layer::MaxPool2d { size: 2 },
            ],
        };
        // The ReLU moves after the pooling (one op). 9 weights of 1.0 (2^18 each) on inputs up
        // to 2^14: the sum 9 * 2^32 truncated by 18 bits is 9 * 2^14, plus one unit, plus the
        // bias 2^14: 10 * 2^14 + 1. The pooling compares differences up to 20 * 2^14 + 2 < 2^19
        // (20 bits with the sign, rounded up to 24).
        assert_eq!(widths(&spec(1.0, 1.0)), vec![64, 24]);
        // Weights of 64 (2^24 each): 9 * 2^20 + 1 + 2^14, differences < 2^25: 32 bits.
        assert_eq!(widths(&spec(64.0, 1.0)), vec![64, 32]);
        // A negative weight or bias counts by its magnitude.
        assert_eq!(widths(&spec(-64.0, -1.0)), vec![64, 32]);
        let listed = comparison_widths(&spec(1.0, 1.0), FixedPoint::default()).unwrap();
        assert_eq!(describe(&listed), "maxpool+relu 24 bits");
    }

    #[test]
    fn deep_products_of_norms_keep_the_full_width() {
        let conv = |w: f32| Layer::Conv2d {
            in_channels: 1,
            out_channels: 1,
            kernel: 3,
            padding: 1,
            weight: vec![w; 9],
            bias: vec![0.0],
        };
        let mut layers = Vec::new();
        for _ in 0..12 {
            layers.push(conv(100.0));
            layers.push(Layer::Relu);
        }
        let spec = NetworkSpec {
            name: "deep".into(),
            input: [1, 4, 4],
            layers,
        };
        let w = widths(&spec);
        assert!(w[1] < 64, "{w:?}");
        assert_eq!(*w.last().unwrap(), 64, "{w:?}");
        // Once a pre-truncation bound may reach 2^62, nothing after is bounded, however small
        // the later weights. Two layers of weights 8000 (2^31 at 18 fractional bits): after the
        // first the bound is 9 * 8000 * 2^14 + 1 < 2^31 (32 bits with the sign), before the
        // second's truncation about 9 * 2^31 * 2^30 > 2^62. A ReLU after a third layer of weights 0.01 would otherwise
        // get 48 bits.
        let mut steep = Vec::new();
        for w in [8000.0, 8000.0, 0.01] {
            steep.push(conv(w));
            steep.push(Layer::Relu);
        }
        let steep = NetworkSpec {
            name: "steep".into(),
            input: [1, 4, 4],
            layers: steep,
        };
        let w = widths(&steep);
        assert_eq!(w, [64, 32, 64, 64, 64, 64]);
        // Widths never shrink along a chain of growing norms.
        let relus: Vec<u32> = w.iter().copied().skip(1).step_by(2).collect();
        assert!(relus.windows(2).all(|p| p[0] <= p[1]), "{relus:?}");
    }
}
