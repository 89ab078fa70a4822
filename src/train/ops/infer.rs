//! Forward kernels for one image at evaluation time: no gradients, no routing masks, no
//! tensors, every buffer reused across calls. What plaintext prediction runs (through
//! `Model::infer_one`).
//!
//! A batch of one cannot be spread over the threads by example (what the training kernels do),
//! so the output channels are: each rayon task takes a group of channels and walks the image in
//! bands of a few output rows, so that a band's columns (im2col), its GEMM output and the
//! group's weights stay in the core's cache (the whole-image im2col of DNN-Max's second
//! convolution is 4.9 MB). ReLU and pooling are applied per band; the rows a floor-pooling
//! drops are never computed. A single-channel input (the first DNN layer) is convolved
//! directly instead: its GEMM would have an inner dimension of 9.
//!
//! Imports `sgemm`, `unfold`'s geometry, the epilogue and the pooling kind; nothing outside
//! `ops`.

use super::conv_shape::Epilogue;
use super::pool::PoolKind;
use super::sgemm::{sgemm, with_scratch, Mat};
use super::unfold::Geom;
use candle_core::{bail, Result};
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;

/// Output pixels per band: a band's columns for DNN-Max's second convolution (288 rows) are
/// then about 270 KB, well inside a core's L2.
const BAND_COLS: usize = 256;

/// Dense layers at least this big (weights) are split over the threads.
const PAR_DENSE: usize = 1 << 16;

thread_local! {
    static ACTIVATIONS: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `f` with two activation buffers (ping-pong between layers), reused across calls on
/// this thread. Contents are arbitrary; `f` resizes them. Fresh ones if they are in use.
pub(crate) fn with_activations<R>(f: impl FnOnce(&mut Vec<f32>, &mut Vec<f32>) -> R) -> R {
    ACTIVATIONS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let [a, b] = &mut *bufs;
            f(a, b)
        }
        Err(_) => f(&mut Vec::new(), &mut Vec::new()),
    })
}

/// `(channels, rows, columns)` that [`conv_one`] writes for input geometry `g`.
pub(crate) fn conv_one_out(g: &Geom, o: usize, e: Epilogue) -> Result<[usize; 3]> {
    let (h, w) = e.out_hw(g.oh, g.ow)?;
    Ok([o, h, w])
}

/// `y = pool(relu(W x + b))` (each stage per `e`) for one image `x (C, H, W)`, weight
/// `(O, C, K, K)`, bias `(O)`, into `y` of the length [`conv_one_out`] gives.
pub(crate) fn conv_one(
    g: &Geom,
    o: usize,
    e: Epilogue,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let [_, ph, pw] = conv_one_out(g, o, e)?;
    let r = g.rows();
    if x.len() != g.c * g.h * g.w || w.len() != o * r || b.len() != o || y.len() != o * ph * pw {
        bail!(
            "conv (one image): lengths input {}, weight {}, bias {}, output {} do not fit \
             {}x{}x{} -> {o} channels, kernel {}",
            x.len(),
            w.len(),
            b.len(),
            y.len(),
            g.c,
            g.h,
            g.w,
            g.k
        );
    }
    let plane = ph * pw;
    let per = o.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let direct = g.c == 1 && g.p == 0;
    y.par_chunks_mut(per * plane)
        .enumerate()
        .for_each(|(gi, yg)| {
            let (o0, m) = (gi * per, yg.len() / plane);
            let (wg, bg) = (&w[o0 * r..(o0 + m) * r], &b[o0..o0 + m]);
            if direct {
                direct_group(g, e, x, wg, bg, yg, pw);
            } else {
                banded_group(g, e, x, wg, bg, yg, pw);
            }
        });
    Ok(())
}

/// Pool size (1 without pooling), conv rows computed, conv rows per band.
fn bands(g: &Geom, e: Epilogue) -> (usize, usize, usize) {
    let s = e.pool.map_or(1, |(_, s)| s);
    let rows = g.oh / s * s;
    let q = (BAND_COLS / (s * g.ow).max(1)).max(1);
    (s, rows, s * q)
}

/// One group of output channels (`wg`, `bg`, `yg`) by im2col of a band and a GEMM.
fn banded_group(
    g: &Geom,
    e: Epilogue,
    x: &[f32],
    wg: &[f32],
    bg: &[f32],
    yg: &mut [f32],
    pw: usize,
) {
    let (r, m, ow) = (g.rows(), bg.len(), g.ow);
    let (s, rows, bh) = bands(g, e);
    let z_len = if e.pool.is_some() { m * bh * ow } else { 0 };
    with_scratch(r * bh * ow, z_len, |cols, zbuf| {
        let plane = yg.len() / m.max(1);
        for r0 in (0..rows).step_by(bh) {
            let r1 = (r0 + bh).min(rows);
            let nb = (r1 - r0) * ow;
            let cols = &mut cols[..r * nb];
            im2col_band(x, g, r0, r1, cols);
            let a = Mat {
                data: wg,
                rs: r,
                cs: 1,
            };
            let bm = Mat {
                data: cols,
                rs: nb,
                cs: 1,
            };
            match e.pool {
                None => {
                    // Straight into the output: channel rows are `plane` apart.
                    for (ch, bias) in bg.iter().enumerate() {
                        yg[ch * plane + r0 * ow..][..nb].fill(*bias);
                    }
                    let dst = &mut yg[r0 * ow..];
                    sgemm(m, nb, r, dst, plane, true, a, bm, Parallelism::None);
                    if e.relu {
                        for ch in 0..m {
                            relu(&mut yg[ch * plane + r0 * ow..][..nb]);
                        }
                    }
                }
                Some((kind, _)) => {
                    let z = &mut zbuf[..m * nb];
                    for (row, bias) in z.chunks_mut(nb).zip(bg) {
                        row.fill(*bias);
                    }
                    sgemm(m, nb, r, z, nb, true, a, bm, Parallelism::None);
                    let prows = (r1 - r0) / s;
                    for (ch, zc) in z.chunks(nb).enumerate() {
                        let yc = &mut yg[ch * plane + (r0 / s) * pw..][..prows * pw];
                        pool_rows(zc, ow, e.relu, kind, s, yc, pw);
                    }
                }
            }
        }
    });
}

/// Columns of output rows `r0..r1` only: `(C*K*K, (r1-r0)*OW)`, zero padding as `g` says.
fn im2col_band(x: &[f32], g: &Geom, r0: usize, r1: usize, out: &mut [f32]) {
    let (ow, nb) = (g.ow, (r1 - r0) * g.ow);
    for (r, row) in out.chunks_mut(nb).enumerate() {
        let (ch, ki, kj) = (r / (g.k * g.k), (r / g.k) % g.k, r % g.k);
        let plane = &x[ch * g.h * g.w..(ch + 1) * g.h * g.w];
        // Output columns whose input column `oj + kj - p` lies inside `0..w`.
        let lo = g.p.saturating_sub(kj).min(ow);
        let hi = (g.w + g.p).saturating_sub(kj).min(ow).max(lo);
        for (oi, dst) in (r0..r1).zip(row.chunks_mut(ow)) {
            let yi = oi + ki;
            if yi < g.p || yi - g.p >= g.h {
                dst.fill(0.0);
                continue;
            }
            let src = &plane[(yi - g.p) * g.w..(yi - g.p + 1) * g.w];
            dst[..lo].fill(0.0);
            dst[hi..].fill(0.0);
            if hi > lo {
                let s0 = lo + kj - g.p;
                dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
            }
        }
    }
}

/// One group of output channels of a single-channel, unpadded input, convolved directly.
fn direct_group(
    g: &Geom,
    e: Epilogue,
    x: &[f32],
    wg: &[f32],
    bg: &[f32],
    yg: &mut [f32],
    pw: usize,
) {
    let (kk, ow) = (g.k * g.k, g.ow);
    let (s, rows, _) = bands(g, e);
    let plane = yg.len() / bg.len().max(1);
    with_scratch(0, s * ow, |_, z| {
        for ((wk, bias), yc) in wg.chunks(kk).zip(bg).zip(yg.chunks_mut(plane)) {
            match e.pool {
                None => {
                    for (i, out) in yc.chunks_mut(ow).enumerate() {
                        conv_row(x, g, wk, *bias, i, out);
                        if e.relu {
                            relu(out);
                        }
                    }
                }
                Some((kind, _)) => {
                    for (pi, yr) in (0..rows / s).zip(yc.chunks_mut(pw)) {
                        for (di, zr) in z.chunks_mut(ow).enumerate() {
                            conv_row(x, g, wk, *bias, pi * s + di, zr);
                        }
                        pool_rows(z, ow, e.relu, kind, s, yr, pw);
                    }
                }
            }
        }
    });
}

/// Output row `i` of one channel of a single-channel convolution: `out[j] = bias +
/// sum over (ki, kj) of wk[ki, kj] * x[i + ki, j + kj]`.
fn conv_row(x: &[f32], g: &Geom, wk: &[f32], bias: f32, i: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above); the function is otherwise safe.
        return unsafe { conv_row_avx2(x, g, wk, bias, i, out) };
    }
    conv_row_generic(x, g, wk, bias, i, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn conv_row_avx2(x: &[f32], g: &Geom, wk: &[f32], bias: f32, i: usize, out: &mut [f32]) {
    conv_row_generic(x, g, wk, bias, i, out);
}

/// The loop [`conv_row`] compiles twice (8-wide with AVX2, 4-wide without).
#[inline(always)]
fn conv_row_generic(x: &[f32], g: &Geom, wk: &[f32], bias: f32, i: usize, out: &mut [f32]) {
    let ow = out.len();
    out.fill(bias);
    for ki in 0..g.k {
        let src = &x[(i + ki) * g.w..(i + ki + 1) * g.w];
        for kj in 0..g.k {
            let wv = wk[ki * g.k + kj];
            for (o, v) in out.iter_mut().zip(&src[kj..kj + ow]) {
                *o += wv * v;
            }
        }
    }
}

fn relu(v: &mut [f32]) {
    // `< 0` rather than `max`: NaN must survive to be reported.
    for x in v {
        if *x < 0.0 {
            *x = 0.0;
        }
    }
}

/// Pools `z` (rows of `ow` values, at least `s` per output row) into the rows of `y` (`pw`
/// each), after the optional ReLU; the same comparisons and sums, in the same order, as the
/// training kernels' pooling.
pub(crate) fn pool_rows(
    z: &[f32],
    ow: usize,
    relu: bool,
    kind: PoolKind,
    s: usize,
    y: &mut [f32],
    pw: usize,
) {
    let act = |v: f32| if relu && v < 0.0 { 0.0 } else { v };
    let inv = 1.0 / (s * s) as f32;
    for (i, yr) in y.chunks_mut(pw.max(1)).enumerate() {
        let top = i * s * ow;
        match kind {
            PoolKind::Max if s == 2 => {
                let (a, b) = (&z[top..top + ow], &z[top + ow..top + 2 * ow]);
                for (j, out) in yr.iter_mut().enumerate() {
                    let c = 2 * j;
                    let mut best = a[c];
                    for v in [a[c + 1], b[c], b[c + 1]] {
                        // `>` keeps the first maximum, and NaN never wins.
                        if v > best {
                            best = v;
                        }
                    }
                    *out = act(best);
                }
            }
            PoolKind::Max => {
                for (j, out) in yr.iter_mut().enumerate() {
                    let mut best = z[top + j * s];
                    for di in 0..s {
                        for &v in &z[top + di * ow + j * s..][..s] {
                            if v > best {
                                best = v;
                            }
                        }
                    }
                    *out = act(best);
                }
            }
            PoolKind::Avg => {
                for (j, out) in yr.iter_mut().enumerate() {
                    let mut acc = 0f32;
                    for di in 0..s {
                        for &v in &z[top + di * ow + j * s..][..s] {
                            acc += act(v);
                        }
                    }
                    *out = acc * inv;
                }
            }
        }
    }
}

/// `y = [relu](W x + b)` for one input vector, weight `(out, in)` row-major.
pub(crate) fn dense_one(x: &[f32], w: &[f32], b: &[f32], relu: bool, y: &mut [f32]) -> Result<()> {
    let (n_in, n_out) = (x.len(), y.len());
    if w.len() != n_in * n_out || b.len() != n_out {
        bail!(
            "dense (one image): lengths input {n_in}, weight {}, bias {}, output {n_out} do not fit",
            w.len(),
            b.len()
        );
    }
    let one = |o: usize, v: &mut f32| {
        let d = dot(&w[o * n_in..(o + 1) * n_in], x) + b[o];
        *v = if relu && d < 0.0 { 0.0 } else { d };
    };
    if w.len() >= PAR_DENSE {
        let per = n_out.div_ceil(rayon::current_num_threads().max(1)).max(1);
        y.par_chunks_mut(per).enumerate().for_each(|(gi, yg)| {
            for (j, v) in yg.iter_mut().enumerate() {
                one(gi * per + j, v);
            }
        });
    } else {
        for (o, v) in y.iter_mut().enumerate() {
            one(o, v);
        }
    }
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above); the function is otherwise safe.
        return unsafe { dot_avx2(a, b) };
    }
    dot_generic(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_generic(a, b)
}

/// Sixteen running sums, so the loop vectorises (float addition is not reassociated).
#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for l in 0..L {
            acc[l] += xa[l] * xb[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}
