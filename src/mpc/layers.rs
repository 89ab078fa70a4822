//! Layers over shares, on a whole batch at once (activations are `batch x C x H x W` or
//! `batch x features`, row-major), so a layer costs the same rounds for one image or many.
//!
//! Imports `crate::model` and `super::{context, error, matmul, protocol, share, transport}`;
//! never `net`, `party` or `train`.

use super::context::Party;
use super::error::{MpcError, Result};
use super::matmul::{gemm_nt, transpose};
use super::protocol::{max, mul, relu, reshare, trunc, SignBits};
use super::share::ArithShare;
use super::transport::Transport;
use rayon::prelude::*;

/// Shape of a stride-1 convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub padding: usize,
    pub height: usize,
    pub width: usize,
}

impl ConvGeom {
    pub fn out_hw(&self) -> (usize, usize) {
        (
            self.height + 2 * self.padding + 1 - self.kernel,
            self.width + 2 * self.padding + 1 - self.kernel,
        )
    }
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }
    pub fn in_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }
    pub fn out_len(&self) -> usize {
        let (oh, ow) = self.out_hw();
        self.out_channels * oh * ow
    }
}

/// Builds the GEMM operand for a replicated product: row `o` is `[own_o | next_o]`, the two
/// components of weight row `o` (each `k` long).
pub fn concat_rows(own: &[u64], next: &[u64], rows: usize, k: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(rows * 2 * k);
    for r in 0..rows {
        out.extend_from_slice(&own[r * k..(r + 1) * k]);
        out.extend_from_slice(&next[r * k..(r + 1) * k]);
    }
    out
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(MpcError::mismatch(what, expected, got))
    }
}

/// Adds a per-channel shared bias to `batch x channels x per_channel` activations (local).
fn add_channel_bias(x: &mut ArithShare, bias: &ArithShare, channels: usize, per_channel: usize) {
    let (own, next) = x.parts_mut();
    for (dst, src) in [(own, bias.own()), (next, bias.next())] {
        for (i, run) in dst.chunks_mut(per_channel.max(1)).enumerate() {
            let b = src[i % channels];
            for v in run {
                *v = v.wrapping_add(b);
            }
        }
    }
}

/// Words of im2col patches built at once: larger convolutions (VGG16's first blocks, 462 MB
/// of patches per image at 224x224) run in bands of output rows, so memory stays bounded
/// without changing the products. DNN-Max's largest layer needs 2.4M words: one band.
const PATCH_WORDS: usize = 1 << 23;

/// Secure convolution: im2col, one local GEMM per band of output rows for the three cross terms
/// (`W_i (X_i + X_{i+1}) + W_{i+1} X_i`, as one product with doubled depth), one resharing
/// round for the whole batch, truncation by `frac_bits`, then the bias.
///
/// `weight` is this party's share of the `out_channels x patch_len` weights.
pub fn conv<T: Transport>(
    p: &mut Party<T>,
    x: &ArithShare,
    batch: usize,
    g: &ConvGeom,
    weight: &ArithShare,
    bias: &ArithShare,
    frac_bits: u32,
) -> Result<ArithShare> {
    check_len("convolution input", batch * g.in_len(), x.len())?;
    check_len(
        "convolution weights",
        g.out_channels * g.patch_len(),
        weight.len(),
    )?;
    check_len("convolution bias", g.out_channels, bias.len())?;
    let (oh, ow) = g.out_hw();
    let positions = oh * ow;
    let k = g.patch_len();
    // Per layer and small (at most 512 x 4608 x 2 words): the GEMM wants both components of a
    // weight row side by side.
    let weight_cat = concat_rows(weight.own(), weight.next(), g.out_channels, k);
    let band_rows = (PATCH_WORDS / (2 * k * ow).max(1)).clamp(1, oh.max(1));
    let mut z = vec![0u64; batch * g.out_len()];
    for (b, z_img) in z.chunks_mut(g.out_len().max(1)).enumerate().take(batch) {
        let range = b * g.in_len()..(b + 1) * g.in_len();
        let own = &x.own()[range.clone()];
        let next = &x.next()[range];
        let sum: Vec<u64> = own
            .iter()
            .zip(next)
            .map(|(a, c)| a.wrapping_add(*c))
            .collect();
        for row0 in (0..oh).step_by(band_rows) {
            let rows = band_rows.min(oh - row0);
            let band = rows * ow;
            let mut patches = vec![0u64; band * 2 * k];
            patches
                .par_chunks_mut(2 * k * ow)
                .enumerate()
                .for_each(|(i, prow)| {
                    for (j, row) in prow.chunks_mut(2 * k).enumerate() {
                        let (left, right) = row.split_at_mut(k);
                        im2col_patch(&sum, g, row0 + i, j, left);
                        im2col_patch(own, g, row0 + i, j, right);
                    }
                });
            let c = gemm_nt(&patches, &weight_cat, band, g.out_channels, 2 * k)?;
            drop(patches);
            // Output is channel-major: channel o's band sits at o * positions + row0 * ow.
            let t = transpose(&c, band, g.out_channels);
            for (o, src) in t.chunks_exact(band).enumerate() {
                let at = o * positions + row0 * ow;
                z_img[at..at + band].copy_from_slice(src);
            }
        }
    }
    let y = reshare(p, z)?;
    let mut y = trunc(p, &y, frac_bits)?;
    add_channel_bias(&mut y, bias, g.out_channels, positions);
    Ok(y)
}

/// One im2col row: the `in_channels x kernel x kernel` window at output position `(i, j)`,
/// zero outside the image (padding).
fn im2col_patch(x: &[u64], g: &ConvGeom, i: usize, j: usize, out: &mut [u64]) {
    let (h, w, k, pad) = (g.height, g.width, g.kernel, g.padding);
    let mut q = 0;
    for ci in 0..g.in_channels {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for ki in 0..k {
            let yi = i + ki;
            let row_ok = yi >= pad && yi - pad < h;
            for kj in 0..k {
                let xj = j + kj;
                out[q] = if row_ok && xj >= pad && xj - pad < w {
                    plane[(yi - pad) * w + xj - pad]
                } else {
                    0
                };
                q += 1;
            }
        }
    }
}

/// Secure dense layer on `batch x in_features`: the cross terms as two GEMMs straight from the
/// weight share's components (`W_i (X_i + X_{i+1})` and `W_{i+1} X_i`; VGG16-2's first dense
/// layer holds 1.6 GB of them, so they are never copied), resharing, truncation, bias.
///
/// `weight` is this party's share of the `out_features x in_features` weights.
pub fn dense<T: Transport>(
    p: &mut Party<T>,
    x: &ArithShare,
    batch: usize,
    (in_features, out_features): (usize, usize),
    weight: &ArithShare,
    bias: &ArithShare,
    frac_bits: u32,
) -> Result<ArithShare> {
    check_len("dense input", batch * in_features, x.len())?;
    check_len("dense weights", out_features * in_features, weight.len())?;
    check_len("dense bias", out_features, bias.len())?;
    let sum: Vec<u64> = x
        .own()
        .iter()
        .zip(x.next())
        .map(|(a, c)| a.wrapping_add(*c))
        .collect();
    let mut c = gemm_nt(weight.own(), &sum, out_features, batch, in_features)?;
    let c_next = gemm_nt(weight.next(), x.own(), out_features, batch, in_features)?;
    for (a, b) in c.iter_mut().zip(&c_next) {
        *a = a.wrapping_add(*b);
    }
    let y = reshare(p, transpose(&c, out_features, batch))?;
    let mut y = trunc(p, &y, frac_bits)?;
    add_channel_bias(&mut y, bias, out_features, 1);
    Ok(y)
}

/// Per-channel `x * scale + shift` with shared scale and shift (batch normalisation that has
/// no convolution to fold into). 2 rounds.
pub fn channel_affine<T: Transport>(
    p: &mut Party<T>,
    x: &ArithShare,
    (channels, per_channel): (usize, usize),
    scale: &ArithShare,
    shift: &ArithShare,
    frac_bits: u32,
) -> Result<ArithShare> {
    check_len("affine scale", channels, scale.len())?;
    check_len("affine shift", channels, shift.len())?;
    let per_image = channels * per_channel;
    if per_image == 0 || !x.len().is_multiple_of(per_image) {
        return Err(MpcError::mismatch(
            "affine input length",
            format!("a multiple of {per_image}"),
            x.len(),
        ));
    }
    let mut wide = ArithShare::zeros(x.len());
    add_channel_bias(&mut wide, scale, channels, per_channel);
    let y = mul(p, x, &wide)?;
    let mut y = trunc(p, &y, frac_bits)?;
    add_channel_bias(&mut y, shift, channels, per_channel);
    Ok(y)
}

/// Window element `(di, dj)` of every `size x size` pooling window, in output order.
fn window(
    x: &ArithShare,
    (planes, h, w): (usize, usize, usize),
    size: usize,
    d: (usize, usize),
) -> ArithShare {
    let (oh, ow) = (h / size, w / size);
    let pick = |src: &[u64]| -> Vec<u64> {
        let mut out = Vec::with_capacity(planes * oh * ow);
        for pl in 0..planes {
            for i in 0..oh {
                let row = &src[pl * h * w + (i * size + d.0) * w..];
                out.extend((0..ow).map(|j| row[j * size + d.1]));
            }
        }
        out
    };
    ArithShare::from_parts(pick(x.own()), pick(x.next()))
}

fn check_pool(x: &ArithShare, (planes, h, w): (usize, usize, usize), size: usize) -> Result<()> {
    if size == 0 || h < size || w < size {
        return Err(MpcError::mismatch(
            "pooling window",
            format!("1..={}", h.min(w)),
            size,
        ));
    }
    check_len("pooling input", planes * h * w, x.len())
}

/// Max pooling (`size x size`, stride `size`) as a tree of pairwise maxima: every level is one
/// batched [`max`] over all windows; with `relu`, one more level against zero (ReLU commutes
/// with max pooling, and after pooling there are `size^2` times fewer values to compare).
/// `planes` is `batch x channels`; `width` must hold the difference of any two inputs.
pub fn max_pool<T: Transport>(
    p: &mut Party<T>,
    x: &ArithShare,
    dims: (usize, usize, usize),
    size: usize,
    with_relu: bool,
    width: SignBits,
) -> Result<ArithShare> {
    check_pool(x, dims, size)?;
    let mut level: Vec<ArithShare> = (0..size * size)
        .map(|q| window(x, dims, size, (q / size, q % size)))
        .collect();
    while level.len() > 1 {
        let pairs = level.len() / 2;
        let n = level[0].len();
        let left = ArithShare::concat(level.iter().step_by(2).take(pairs));
        let right = ArithShare::concat(level.iter().skip(1).step_by(2).take(pairs));
        let m = max(p, &left, &right, width)?;
        let mut next: Vec<ArithShare> = (0..pairs).map(|t| m.slice(t * n..(t + 1) * n)).collect();
        if level.len() % 2 == 1 {
            if let Some(last) = level.pop() {
                next.push(last);
            }
        }
        level = next;
    }
    let pooled = level.pop().unwrap_or_else(|| ArithShare::zeros(0));
    if with_relu {
        relu(p, &pooled, width)
    } else {
        Ok(pooled)
    }
}

/// Average pooling: local window sums, then division by `size^2` as a truncation when it is a
/// power of two (1 round), otherwise a local product with the public constant `1 / size^2`
/// followed by truncation by `frac_bits` (1 round).
pub fn avg_pool<T: Transport>(
    p: &mut Party<T>,
    x: &ArithShare,
    dims: (usize, usize, usize),
    size: usize,
    frac_bits: u32,
) -> Result<ArithShare> {
    check_pool(x, dims, size)?;
    let mut sum = window(x, dims, size, (0, 0));
    for q in 1..size * size {
        sum = sum.add(&window(x, dims, size, (q / size, q % size)))?;
    }
    let area = (size * size) as u64;
    if area.is_power_of_two() {
        trunc(p, &sum, area.trailing_zeros())
    } else {
        let c = ((1u64 << frac_bits) as f64 / area as f64).round() as u64;
        trunc(p, &sum.mul_public(c), frac_bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Layer, NetworkSpec};
    use crate::mpc::simulate;
    use rand::{Rng, SeedableRng};

    #[test]
    fn a_convolution_built_in_bands_equals_plaintext() {
        // 64 x 96 x 96 input, 3x3 padded: 9216 positions x 1152 words of patches, more than
        // PATCH_WORDS, so the output comes in two bands of rows (75 and 21).
        let (c, h, w, out) = (64, 96, 96, 3);
        let k = c * 9;
        assert!(h * w * 2 * k > PATCH_WORDS && (PATCH_WORDS / (2 * k * w)) < h);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(31);
        let bound = (6.0 / k as f32).sqrt();
        let spec = NetworkSpec {
            name: "banded".into(),
            input: [c, h, w],
            layers: vec![Layer::Conv2d {
                in_channels: c,
                out_channels: out,
                kernel: 3,
                padding: 1,
                weight: (0..out * k)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect(),
                bias: (0..out).map(|_| rng.random_range(-0.1..0.1)).collect(),
            }],
        };
        let image: Vec<f32> = (0..c * h * w).map(|_| rng.random::<f32>()).collect();
        let got = simulate(&spec, std::slice::from_ref(&image), 1).unwrap();
        let want = spec.forward(&image).unwrap();
        assert_eq!(got.logits[0].len(), want.len());
        for (i, (g, e)) in got.logits[0].iter().zip(&want).enumerate() {
            assert!((g - e).abs() < 2e-3, "output {i}: {g} vs {e}");
        }
    }
}
