//! Forward kernels for one image at evaluation time: no gradients, no routing masks, no
//! tensors, every buffer reused across calls. What plaintext prediction runs (through
//! `Model::infer_one`).
//!
//! A batch of one cannot be spread over the threads by example (what the training kernels do),
//! so a convolution's output rows are: the image is cut into bands of a few output rows (a
//! multiple of the thread count), and each rayon task unfolds its band (im2col) and runs one
//! GEMM over all output channels, so that the band's columns and GEMM output stay in the
//! core's cache (the whole-image im2col of DNN-Max's second convolution is 4.9 MB) and the
//! GEMM keeps its full height. ReLU and pooling are applied per band; the rows a floor-pooling
//! drops are never computed. A single-channel input (the first DNN layer) is convolved
//! directly instead, its output channels spread over the threads: its GEMM would have an inner
//! dimension of 9.
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

/// Output pixels per band, about: a band's columns for DNN-Max's second convolution (288
/// rows) are then at most about 300 KB, well inside a core's L2.
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
    if !direct {
        band_split(g, o, e, x, w, b, y, pw);
        return Ok(());
    }
    y.par_chunks_mut(per * plane)
        .enumerate()
        .for_each(|(gi, yg)| {
            let (o0, m) = (gi * per, yg.len() / plane);
            let (wg, bg) = (&w[o0 * r..(o0 + m) * r], &b[o0..o0 + m]);
            direct_group(g, e, x, wg, bg, yg, pw);
        });
    Ok(())
}

/// A raw pointer to the output, shared by the tasks of [`band_split`], each of which writes
/// its own rows of every channel.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint ranges (see `band_split`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// `len` values from `start`.
    ///
    /// # Safety
    /// The range lies inside the output, which outlives the slice, and no other slice of it
    /// is alive.
    unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// Bands of output rows spread over the threads, every channel in each band (one im2col per
/// band, the GEMM over all output channels).
#[allow(clippy::too_many_arguments)]
fn band_split(
    g: &Geom,
    o: usize,
    e: Epilogue,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    pw: usize,
) {
    let (s, rows) = bands(g, e);
    let (r, ow) = (g.rows(), g.ow);
    let t = rayon::current_num_threads().max(1);
    let prows = rows / s;
    let plane = y.len() / o.max(1);
    let n_bands = (rows * ow).div_ceil(BAND_COLS).max(1).div_ceil(t) * t;
    let per = prows.div_ceil(n_bands).max(1);
    let out = OutPtr(y.as_mut_ptr());
    (0..prows.div_ceil(per)).into_par_iter().for_each(|bi| {
        let (p0, p1) = (bi * per, ((bi + 1) * per).min(prows));
        let (r0, r1) = (p0 * s, p1 * s);
        let nb = (r1 - r0) * ow;
        with_scratch(r * nb, o * nb, |cols, z| {
            im2col_band(x, g, r0, r1, cols);
            for (row, bias) in z.chunks_mut(nb).zip(b) {
                row.fill(*bias);
            }
            let a = Mat {
                data: w,
                rs: r,
                cs: 1,
            };
            let bm = Mat {
                data: cols,
                rs: nb,
                cs: 1,
            };
            sgemm(o, nb, r, z, nb, true, a, bm, Parallelism::None);
            for (ch, zc) in z.chunks(nb).enumerate() {
                // SAFETY: rows p0..p1 of channel ch lie inside y (p1 <= prows = plane / pw)
                // and belong to this band alone; y outlives the parallel loop.
                let yc = unsafe { out.slice(ch * plane + p0 * pw, (p1 - p0) * pw) };
                match e.pool {
                    Some((kind, _)) => pool_rows(zc, ow, e.relu, kind, s, yc, pw),
                    None => {
                        yc.copy_from_slice(zc);
                        if e.relu {
                            relu(yc);
                        }
                    }
                }
            }
        });
    });
}

/// Pool size (1 without pooling) and the convolution rows computed (those a floor-pooling
/// drops are not).
fn bands(g: &Geom, e: Epilogue) -> (usize, usize) {
    let s = e.pool.map_or(1, |(_, s)| s);
    (s, g.oh / s * s)
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
    let (s, rows) = bands(g, e);
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
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above); the function is otherwise
        // safe.
        return unsafe { conv_row_avx2(x, g, wk, bias, i, out) };
    }
    conv_row_generic(x, g, wk, bias, i, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn conv_row_avx2(x: &[f32], g: &Geom, wk: &[f32], bias: f32, i: usize, out: &mut [f32]) {
    conv_row_generic(x, g, wk, bias, i, out);
}

/// Output columns per block of [`conv_row_generic`]: its sums stay in registers over all the
/// kernel's taps (eight AVX2 registers).
const ROW_BLOCK: usize = 64;

/// The loop [`conv_row`] compiles twice (8-wide with AVX2 and FMA, plain without).
#[inline(always)]
fn conv_row_generic(x: &[f32], g: &Geom, wk: &[f32], bias: f32, i: usize, out: &mut [f32]) {
    let (k, ow) = (g.k, out.len());
    let rows = &x[i * g.w..(i + k) * g.w];
    let mut j0 = 0;
    while j0 + ROW_BLOCK <= ow {
        let mut acc = [bias; ROW_BLOCK];
        for ki in 0..k {
            for kj in 0..k {
                let wv = wk[ki * k + kj];
                let src: &[f32; ROW_BLOCK] = rows[ki * g.w + kj + j0..][..ROW_BLOCK]
                    .try_into()
                    .expect("a block of the row");
                for (a, v) in acc.iter_mut().zip(src) {
                    *a = v.mul_add(wv, *a);
                }
            }
        }
        out[j0..j0 + ROW_BLOCK].copy_from_slice(&acc);
        j0 += ROW_BLOCK;
    }
    let tail = &mut out[j0..];
    tail.fill(bias);
    for ki in 0..k {
        for kj in 0..k {
            let wv = wk[ki * k + kj];
            let src = &rows[ki * g.w + kj + j0..][..tail.len()];
            for (a, v) in tail.iter_mut().zip(src) {
                *a = v.mul_add(wv, *a);
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
                // Column maxima first, then the pair: the same value as the row-major walk
                // (`>` keeps the earlier value, so a NaN at the window's first place still
                // wins and a NaN elsewhere never does), and it vectorises.
                let vmax = |p: f32, q: f32| if q > p { q } else { p };
                for ((out, a2), b2) in yr.iter_mut().zip(a.chunks_exact(2)).zip(b.chunks_exact(2)) {
                    *out = act(vmax(vmax(a2[0], b2[0]), vmax(a2[1], b2[1])));
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
