//! Stride-1 convolution, optionally fused with ReLU and pooling, as one CPU kernel per
//! direction:
//! im2col into a reused thread-local buffer, then GEMMs from the `gemm` crate (the kernel
//! candle itself uses) on slices of the output, examples spread over rayon's threads.
//!
//! The weights are either shared, `(O, C, K, K)` with bias `(O)`, or per example,
//! `(N, O, C*K*K)` with bias `(N, O, 1)`: the gradient of per-example weights is each example's
//! own gradient, computed from the same columns as the ordinary weight gradient (DP-SGD).
//!
//! The backward computes the weight, bias and input gradients in one pass (one im2col per
//! example, in `conv_backward`) and returns them as one flat tensor that [`Conv2d::bwd`]
//! splits. The input gradient is skipped when the input is not tracked (the images of the
//! first layer).
//!
//! This file holds the op and its forward kernel; the shapes and the epilogue are in
//! `conv_shape`, the GEMM in `sgemm`. It imports those, `conv_backward`, `unfold` and `pool`;
//! nothing outside `ops`.

use super::contiguous_f32;
use super::conv_backward::Conv2dBackward;
use super::conv_shape::{Dims, Epilogue};
use super::pool::PoolKind;
use super::sgemm::{inner_parallelism, sgemm, with_scratch, Mat};
use super::unfold::{im2col_example, im2col_example_par};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::sync::Mutex;

/// `y = pool(relu(W x + b))` (each stage optional, see [`Epilogue`]) for `x (N, C, H, W)`; see
/// the module docs for the weight layouts. The forward keeps, for the backward, a byte per
/// convolution output saying whether its pooled cell's gradient reaches it (the ReLU passed
/// it, it is the window's first maximum, or it lies in an average window).
#[derive(Debug)]
pub struct Conv2d {
    pub kernel: usize,
    pub padding: usize,
    pub epilogue: Epilogue,
    mask: Mutex<Vec<u8>>,
}

/// Mask buffers of dropped [`Conv2d`] ops, reused by new ones: the first layer's mask is tens
/// of megabytes, which the allocator would otherwise hand back to the OS and fault in (zeroed)
/// again every step.
static SPARE_MASKS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Enough for every convolution of a VGG16 forward.
const MAX_SPARE_MASKS: usize = 16;

impl Conv2d {
    pub fn new(kernel: usize, padding: usize, epilogue: Epilogue) -> Self {
        let mask = SPARE_MASKS
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default();
        Self {
            kernel,
            padding,
            epilogue,
            mask: Mutex::new(mask),
        }
    }
}

impl Drop for Conv2d {
    fn drop(&mut self) {
        let mask = std::mem::take(self.mask.get_mut().unwrap_or_else(|p| p.into_inner()));
        if mask.capacity() > 0 {
            if let Ok(mut spare) = SPARE_MASKS.lock() {
                if spare.len() < MAX_SPARE_MASKS {
                    spare.push(mask);
                }
            }
        }
    }
}

/// Pools (after the optional ReLU) one example's convolution output `z (O, OH*OW)` into `y`
/// and writes the routing `mask` (same layout as `z`).
fn pool_example(
    d: &Dims,
    relu: bool,
    kind: PoolKind,
    s: usize,
    z: &[f32],
    y: &mut [f32],
    mask: &mut [u8],
) {
    let (oh, ow, p) = (d.g.oh, d.g.ow, d.g.cols());
    // `< 0` rather than `max`: NaN must survive to be reported as a non-finite loss.
    let act = |v: f32| if relu && v < 0.0 { 0.0 } else { v };
    let passes = |v: f32| !relu || v > 0.0;
    let (ph, pw) = (oh / s, ow / s);
    let inv = 1.0 / (s * s) as f32;
    mask.fill(0);
    for ((zp, yp), mp) in z
        .chunks(p)
        .zip(y.chunks_mut(ph * pw))
        .zip(mask.chunks_mut(p))
    {
        for (i, yr) in yp.chunks_mut(pw.max(1)).enumerate().take(ph) {
            let top = i * s * ow;
            if s == 2 && kind == PoolKind::Max {
                // The common case, with the window's four reads as plain slice walks.
                let (r0, r1) = (&zp[top..top + ow], &zp[top + ow..top + 2 * ow]);
                for (j, out) in yr.iter_mut().enumerate() {
                    let c = 2 * j;
                    let cand = [
                        (r0[c], c),
                        (r0[c + 1], c + 1),
                        (r1[c], ow + c),
                        (r1[c + 1], ow + c + 1),
                    ];
                    let mut best = cand[0];
                    for v in &cand[1..] {
                        // `>` keeps the first maximum in row-major window order.
                        if v.0 > best.0 {
                            best = *v;
                        }
                    }
                    mp[top + best.1] = u8::from(passes(best.0));
                    *out = act(best.0);
                }
                continue;
            }
            for (j, out) in yr.iter_mut().enumerate() {
                *out = match kind {
                    PoolKind::Max => {
                        let mut best = top + j * s;
                        for di in 0..s {
                            let row = top + di * ow + j * s;
                            for dj in 0..s {
                                if zp[row + dj] > zp[best] {
                                    best = row + dj;
                                }
                            }
                        }
                        mp[best] = u8::from(passes(zp[best]));
                        act(zp[best])
                    }
                    PoolKind::Avg => {
                        let mut acc = 0f32;
                        for di in 0..s {
                            let row = top + di * ow + j * s;
                            for (v, m) in zp[row..row + s].iter().zip(&mut mp[row..row + s]) {
                                acc += act(*v);
                                *m = u8::from(passes(*v));
                            }
                        }
                        acc * inv
                    }
                };
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_example(
    d: &Dims,
    e: Epilogue,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    y: &mut [f32],
    mask: &mut [u8],
    par: Parallelism,
) {
    let (r, p) = (d.g.rows(), d.g.cols());
    let z_len = if e.pool.is_some() { d.o * p } else { 0 };
    with_scratch(r * p, z_len, |cols, zbuf| {
        match par {
            Parallelism::None => im2col_example(x, &d.g, cols),
            _ => im2col_example_par(x, &d.g, cols),
        }
        // Without pooling the convolution output is written in place of y.
        let z: &mut [f32] = if e.pool.is_some() { zbuf } else { &mut *y };
        for (row, bias) in z.chunks_mut(p).zip(b) {
            row.fill(*bias);
        }
        sgemm(
            d.o,
            p,
            r,
            z,
            p,
            true,
            Mat {
                data: w,
                rs: r,
                cs: 1,
            },
            Mat {
                data: cols,
                rs: p,
                cs: 1,
            },
            par,
        );
        if let Some((kind, s)) = e.pool {
            pool_example(d, e.relu, kind, s, zbuf, y, mask);
        } else if e.relu {
            // In place: y holds z.
            for (v, m) in y.iter_mut().zip(mask.iter_mut()) {
                *m = u8::from(*v > 0.0);
                if *v < 0.0 {
                    *v = 0.0;
                }
            }
        }
    });
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "privxray-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(l1, l2, l3, self.kernel, self.padding)?;
        let e = self.epilogue;
        let (ph, pw) = e.out_hw(d.g.oh, d.g.ow)?;
        let x = contiguous_f32(s1, l1, "conv2d input")?;
        let w = contiguous_f32(s2, l2, "conv2d weight")?;
        let b = contiguous_f32(s3, l3, "conv2d bias")?;
        let out_len = d.o * ph * pw;
        let mut y = vec![0f32; d.n * out_len];
        let mut mask = self
            .mask
            .lock()
            .map_err(|_| candle_core::Error::Msg("conv2d mask lock poisoned".into()))?;
        let mask_len = if e.needs_mask() { d.y_len() } else { 0 };
        // Every byte is rewritten below (pooling clears each example's part first).
        mask.resize(d.n * mask_len, 0);
        let parallel = d.n > 1;
        let par = inner_parallelism(parallel);
        let masks: Vec<&mut [u8]> = if mask_len > 0 {
            mask.chunks_mut(mask_len).collect()
        } else {
            (0..d.n).map(|_| &mut [][..]).collect()
        };
        let run = |(i, (yi, mi)): (usize, (&mut [f32], &mut [u8]))| {
            let (wi, bi) = d.params(w, b, i);
            let xi = &x[i * d.x_len()..(i + 1) * d.x_len()];
            forward_example(&d, e, xi, wi, bi, yi, mi, par);
        };
        if parallel {
            y.par_chunks_mut(out_len.max(1))
                .zip(masks)
                .enumerate()
                .for_each(run);
        } else {
            y.chunks_mut(out_len.max(1))
                .zip(masks)
                .enumerate()
                .for_each(run);
        }
        Ok((CpuStorage::F32(y), Shape::from((d.n, d.o, ph, pw))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Nothing needs the gradient of an untracked input (the images): skip its GEMM.
        let input_grad = x.track_op();
        let mask = self
            .mask
            .lock()
            .map_err(|_| candle_core::Error::Msg("conv2d mask lock poisoned".into()))?;
        let flat = grad_res.contiguous()?.apply_op1_no_bwd(&Conv2dBackward {
            kernel: self.kernel,
            padding: self.padding,
            epilogue: self.epilogue,
            input_grad,
            x,
            w,
            b,
            mask: &mask,
        })?;
        let (nw, nb) = (w.elem_count(), b.elem_count());
        let dw = flat.narrow(0, 0, nw)?.reshape(w.shape())?;
        let db = flat.narrow(0, nw, nb)?.reshape(b.shape())?;
        let dx = if input_grad {
            Some(
                flat.narrow(0, nw + nb, x.elem_count())?
                    .reshape(x.shape())?,
            )
        } else {
            None
        };
        Ok((dx, Some(dw), Some(db)))
    }
}
