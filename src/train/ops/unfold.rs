//! Convolution unfolding (im2col) and its adjoint (col2im), so that a convolution becomes one
//! GEMM per example and both of its gradients are GEMMs too.
//!
//! Imports the parent's `contiguous_f32` and candle only; no sibling, nothing outside `ops`.

use super::contiguous_f32;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Output side of a stride-1 convolution, or an error naming the sizes.
pub fn conv_out(side: usize, kernel: usize, padding: usize) -> Result<usize> {
    if kernel == 0 || side + 2 * padding < kernel {
        bail!("convolution: kernel {kernel} does not fit side {side} with padding {padding}");
    }
    Ok(side + 2 * padding + 1 - kernel)
}

/// Geometry shared by both directions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub p: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    pub fn new(c: usize, h: usize, w: usize, k: usize, p: usize) -> Result<Self> {
        Ok(Self {
            c,
            h,
            w,
            k,
            p,
            oh: conv_out(h, k, p)?,
            ow: conv_out(w, k, p)?,
        })
    }
    pub fn rows(&self) -> usize {
        self.c * self.k * self.k
    }
    pub fn cols(&self) -> usize {
        self.oh * self.ow
    }
    /// Range of output columns `oj` whose input column `oj + kj - p` lies inside `0..w`.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let lo = self.p.saturating_sub(kj);
        let hi = (self.w + self.p).saturating_sub(kj).min(self.ow);
        (lo, hi.max(lo))
    }
}

/// `(N, C, H, W) -> (N, C*K*K, OH*OW)`, zero padding `padding`. CPU only; backward is
/// [`Col2Im`].
#[derive(Debug, Clone, Copy)]
pub struct Im2Col {
    pub kernel: usize,
    pub padding: usize,
}

/// One example's columns `(C*K*K, OH*OW)` into `out` (every element written).
pub(crate) fn im2col_example(x: &[f32], g: &Geom, out: &mut [f32]) {
    for (r, row) in out.chunks_mut(g.cols()).enumerate() {
        im2col_row(x, g, r, row);
    }
}

/// [`im2col_example`] with its rows spread over the rayon pool: for a batch of one, where the
/// examples themselves cannot be spread (a single-threaded im2col of DNN-Max's second
/// convolution writes 4.9 MB while the GEMM after it runs on every core).
pub(crate) fn im2col_example_par(x: &[f32], g: &Geom, out: &mut [f32]) {
    use rayon::prelude::*;
    out.par_chunks_mut(g.cols().max(1))
        .enumerate()
        .for_each(|(r, row)| im2col_row(x, g, r, row));
}

/// Row `r` (channel, kernel row, kernel column) of one example's columns.
fn im2col_row(x: &[f32], g: &Geom, r: usize, row: &mut [f32]) {
    let (ch, ki, kj) = (r / (g.k * g.k), (r / g.k) % g.k, r % g.k);
    let plane = &x[ch * g.h * g.w..(ch + 1) * g.h * g.w];
    let (lo, hi) = g.valid_cols(kj);
    for oi in 0..g.oh {
        let dst = &mut row[oi * g.ow..(oi + 1) * g.ow];
        let yi = oi + ki;
        if yi < g.p || yi - g.p >= g.h {
            dst.fill(0.0);
            continue;
        }
        let src = &plane[(yi - g.p) * g.w..(yi - g.p + 1) * g.w];
        dst[..lo].fill(0.0);
        dst[hi..].fill(0.0);
        if hi > lo {
            // input column = oj + kj - p
            let s0 = lo + kj - g.p;
            dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
        }
    }
}

/// Adjoint of [`im2col_example`]: overwrites `dx` (one example) with the summed windows.
pub(crate) fn col2im_example(cols: &[f32], g: &Geom, dx: &mut [f32]) {
    let p_len = g.cols();
    let kk = g.k * g.k;
    for (ch, plane) in dx.chunks_mut(g.h * g.w).enumerate() {
        plane.fill(0.0);
        for ki in 0..g.k {
            for kj in 0..g.k {
                let r = ch * kk + ki * g.k + kj;
                let row = &cols[r * p_len..(r + 1) * p_len];
                let (lo, hi) = g.valid_cols(kj);
                if hi <= lo {
                    continue;
                }
                for oi in 0..g.oh {
                    let yi = oi + ki;
                    if yi < g.p || yi - g.p >= g.h {
                        continue;
                    }
                    let s0 = lo + kj - g.p;
                    let dst = &mut plane[(yi - g.p) * g.w + s0..(yi - g.p) * g.w + s0 + (hi - lo)];
                    for (d, s) in dst.iter_mut().zip(&row[oi * g.ow + lo..oi * g.ow + hi]) {
                        *d += *s;
                    }
                }
            }
        }
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "privxray-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "im2col")?;
        let [n, c, h, w] = match *l.dims() {
            [n, c, h, w] => [n, c, h, w],
            ref d => bail!("im2col: expected an (N, C, H, W) tensor, got shape {d:?}"),
        };
        let g = Geom::new(c, h, w, self.kernel, self.padding)?;
        let per = g.rows() * g.cols();
        let mut out = vec![0f32; n * per];
        // Parallel over row blocks of every example: enough work items even at batch 1.
        let rows_per_task = (g.k * g.k).max(1);
        let chunk = rows_per_task * g.cols();
        out.par_chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(|(t, dst)| {
                let rows_per_example = g.rows() / rows_per_task;
                let (ex, ch) = (t / rows_per_example, t % rows_per_example);
                let xe = &x[ex * c * h * w..(ex + 1) * c * h * w];
                let plane = &xe[ch * h * w..(ch + 1) * h * w];
                let one = Geom { c: 1, ..g };
                im2col_example(plane, &one, dst);
            });
        Ok((CpuStorage::F32(out), Shape::from((n, g.rows(), g.cols()))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, c, h, w) = arg.dims4()?;
        let g = grad_res.contiguous()?;
        Ok(Some(g.apply_op1_no_bwd(&Col2Im {
            channels: c,
            height: h,
            width: w,
            kernel: self.kernel,
            padding: self.padding,
        })?))
    }
}

/// Adjoint of [`Im2Col`]: `(N, C*K*K, OH*OW) -> (N, C, H, W)`, summing overlapping windows.
#[derive(Debug, Clone, Copy)]
pub struct Col2Im {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub padding: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "privxray-col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = contiguous_f32(s, l, "col2im")?;
        let g = Geom::new(
            self.channels,
            self.height,
            self.width,
            self.kernel,
            self.padding,
        )?;
        let n = match *l.dims() {
            [n, r, p] if r == g.rows() && p == g.cols() => n,
            ref d => bail!(
                "col2im: expected columns (N, {}, {}), got shape {d:?}",
                g.rows(),
                g.cols()
            ),
        };
        let (h, w) = (g.h, g.w);
        let mut dx = vec![0f32; n * g.c * h * w];
        let kk_len = g.k * g.k * g.cols();
        dx.par_chunks_mut(h * w).enumerate().for_each(|(t, plane)| {
            // Plane t is example t / C, channel t % C; its K*K rows are contiguous.
            let src = &cols[t * kk_len..(t + 1) * kk_len];
            col2im_example(src, &Geom { c: 1, ..g }, plane);
        });
        Ok((CpuStorage::F32(dx), Shape::from((n, g.c, h, w))))
    }
}

/// Reference unfold from padding, narrowing and stacking (all with correct candle backwards),
/// usable on any device.
pub fn unfold_reference(x: &Tensor, kernel: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (conv_out(h, kernel, padding)?, conv_out(w, kernel, padding)?);
    let xp = if padding > 0 {
        x.pad_with_zeros(2, padding, padding)?
            .pad_with_zeros(3, padding, padding)?
    } else {
        x.clone()
    };
    let mut shifted = Vec::with_capacity(kernel * kernel);
    for ki in 0..kernel {
        for kj in 0..kernel {
            shifted.push(xp.narrow(2, ki, oh)?.narrow(3, kj, ow)?);
        }
    }
    Tensor::stack(&shifted, 2)?.reshape((n, c * kernel * kernel, oh * ow))
}
