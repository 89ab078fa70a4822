//! The backward kernel of the convolution (`conv`): from the output gradient, the weight, bias
//! and input gradients in one pass per example, through the routing mask the forward left
//! (ReLU and pooling). Per-example weights get each example's own gradient (DP-SGD). Imports
//! `conv_shape`, `sgemm`, `unfold` and `pool`; never `conv` itself, which calls this.

use super::contiguous_f32;
use super::conv_shape::{Dims, Epilogue};
use super::pool::PoolKind;
use super::sgemm::{inner_parallelism, sgemm, with_scratch, Mat};
use super::unfold::{col2im_example, im2col_example};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// The gradients of [`Conv2d`] from its output gradient: a flat tensor `[dW | db | dx]` (dx
/// only when `input_grad`). Borrows the forward's tensors and routing mask.
pub(super) struct Conv2dBackward<'a> {
    pub kernel: usize,
    pub padding: usize,
    pub epilogue: Epilogue,
    pub input_grad: bool,
    pub x: &'a Tensor,
    pub w: &'a Tensor,
    pub b: &'a Tensor,
    pub mask: &'a [u8],
}

/// Output slices of one example's backward.
struct ExampleGrads<'a> {
    dw: &'a mut [f32],
    /// Add to `dw` rather than overwrite it.
    accumulate: bool,
    /// Added to.
    db: &'a mut [f32],
    dx: Option<&'a mut [f32]>,
}

/// The gradient at the convolution output from the epilogue's output gradient `dy`.
fn route_gradient(d: &Dims, e: Epilogue, dy: &[f32], mask: &[u8], dz: &mut [f32]) {
    let (ow, p) = (d.g.ow, d.g.cols());
    match e.pool {
        None => {
            for ((z, g), m) in dz.iter_mut().zip(dy).zip(mask) {
                *z = if *m != 0 { *g } else { 0.0 };
            }
        }
        Some((kind, s)) => {
            let (ph, pw) = (d.g.oh / s, ow / s);
            let scale = match kind {
                PoolKind::Max => 1.0,
                PoolKind::Avg => 1.0 / (s * s) as f32,
            };
            dz.fill(0.0);
            for ((zp, mp), gp) in dz.chunks_mut(p).zip(mask.chunks(p)).zip(dy.chunks(ph * pw)) {
                // Rows and columns past the last full window keep their zero.
                for (pi, grow) in gp.chunks(pw.max(1)).enumerate().take(ph) {
                    for di in 0..s {
                        let row = (pi * s + di) * ow;
                        let zr = &mut zp[row..row + pw * s];
                        let mr = &mp[row..row + pw * s];
                        for ((zc, mc), g) in
                            zr.chunks_exact_mut(s).zip(mr.chunks_exact(s)).zip(grow)
                        {
                            let v = g * scale;
                            for (z, m) in zc.iter_mut().zip(mc) {
                                if *m != 0 {
                                    *z = v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn backward_example(
    d: &Dims,
    e: Epilogue,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mask: &[u8],
    out: ExampleGrads,
    par: Parallelism,
) {
    let (r, p, o) = (d.g.rows(), d.g.cols(), d.o);
    let dz_len = if e.needs_mask() { o * p } else { 0 };
    with_scratch(r * p, dz_len, |cols, routed| {
        let dz: &[f32] = if e.needs_mask() {
            route_gradient(d, e, dy, mask, routed);
            routed
        } else {
            dy
        };
        for (acc, row) in out.db.iter_mut().zip(dz.chunks(p)) {
            *acc += row.iter().map(|v| f64::from(*v)).sum::<f64>() as f32;
        }
        im2col_example(x, &d.g, cols);
        // dW (O x R) = dZ (O x P) * cols^T (P x R)
        sgemm(
            o,
            r,
            p,
            out.dw,
            r,
            out.accumulate,
            Mat {
                data: dz,
                rs: p,
                cs: 1,
            },
            Mat {
                data: cols,
                rs: 1,
                cs: p,
            },
            par,
        );
        if let Some(dx) = out.dx {
            // dcols (R x P) = W^T (R x O) * dZ (O x P), into the columns' buffer.
            sgemm(
                r,
                p,
                o,
                cols,
                p,
                false,
                Mat {
                    data: w,
                    rs: 1,
                    cs: r,
                },
                Mat {
                    data: dz,
                    rs: p,
                    cs: 1,
                },
                par,
            );
            col2im_example(cols, &d.g, dx);
        }
    });
}

fn cpu_f32<'a>(s: &'a Storage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match s {
        Storage::Cpu(c) => contiguous_f32(c, l, what),
        _ => bail!("{what}: expected a CPU tensor"),
    }
}

impl CustomOp1 for Conv2dBackward<'_> {
    fn name(&self) -> &'static str {
        "privxray-conv2d-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (xs, xl) = self.x.storage_and_layout();
        let (ws, wl) = self.w.storage_and_layout();
        let (_, bl) = self.b.storage_and_layout();
        let d = Dims::new(xl, wl, bl, self.kernel, self.padding)?;
        let x = cpu_f32(&xs, xl, "conv2d backward input")?;
        let w = cpu_f32(&ws, wl, "conv2d backward weight")?;
        let dy = contiguous_f32(s, l, "conv2d backward gradient")?;
        let e = self.epilogue;
        let (ph, pw) = e.out_hw(d.g.oh, d.g.ow)?;
        if l.dims() != [d.n, d.o, ph, pw] {
            bail!(
                "conv2d backward: gradient shape {:?}, expected {:?}",
                l.dims(),
                [d.n, d.o, ph, pw]
            );
        }
        let mask_len = if e.needs_mask() { d.y_len() } else { 0 };
        if self.mask.len() != d.n * mask_len {
            bail!("conv2d backward: no routing mask from the forward pass");
        }
        let (nw, nb) = (wl.shape().elem_count(), bl.shape().elem_count());
        let nx = if self.input_grad { d.n * d.x_len() } else { 0 };
        let mut flat = vec![0f32; nw + nb + nx];
        let (dw_all, rest) = flat.split_at_mut(nw);
        let (db_all, dx_all) = rest.split_at_mut(nb);
        let (xl_, gl) = (d.x_len(), d.o * ph * pw);
        let mask = self.mask;
        let ex = |i: usize| {
            (
                &x[i * xl_..(i + 1) * xl_],
                &dy[i * gl..(i + 1) * gl],
                &mask[i * mask_len..(i + 1) * mask_len],
            )
        };
        if d.per_example {
            // Every example writes its own dW and db rows.
            let par = inner_parallelism(d.n > 1);
            let dxs: Vec<Option<&mut [f32]>> = if self.input_grad {
                dx_all.chunks_mut(xl_.max(1)).map(Some).collect()
            } else {
                (0..d.n).map(|_| None).collect()
            };
            dw_all
                .par_chunks_mut(d.w_len().max(1))
                .zip(db_all.par_chunks_mut(d.o.max(1)))
                .zip(dxs)
                .enumerate()
                .for_each(|(i, ((dw, db), dx))| {
                    let (xi, dyi, mi) = ex(i);
                    let out = ExampleGrads {
                        dw,
                        accumulate: false,
                        db,
                        dx,
                    };
                    backward_example(&d, e, xi, d.weight(w, i), dyi, mi, out, par);
                });
        } else {
            // Contiguous runs of examples, one per thread, each with its own dW/db sums.
            let tasks = d.n.min(rayon::current_num_threads()).max(1);
            let per_task = d.n.div_ceil(tasks).max(1);
            let tasks = d.n.div_ceil(per_task);
            let par = inner_parallelism(tasks > 1);
            let dxs: Vec<Option<&mut [f32]>> = if self.input_grad {
                dx_all
                    .chunks_mut((per_task * xl_).max(1))
                    .map(Some)
                    .collect()
            } else {
                (0..tasks).map(|_| None).collect()
            };
            let partials: Vec<(Vec<f32>, Vec<f32>)> = dxs
                .into_par_iter()
                .enumerate()
                .map(|(t, mut dx)| {
                    let mut dw = vec![0f32; nw];
                    let mut db = vec![0f32; nb];
                    let end = ((t + 1) * per_task).min(d.n);
                    for (j, i) in (t * per_task..end).enumerate() {
                        let (xi, dyi, mi) = ex(i);
                        let out = ExampleGrads {
                            dw: &mut dw,
                            accumulate: j > 0,
                            db: &mut db,
                            dx: dx.as_deref_mut().map(|s| &mut s[j * xl_..(j + 1) * xl_]),
                        };
                        backward_example(&d, e, xi, w, dyi, mi, out, par);
                    }
                    (dw, db)
                })
                .collect();
            for (pw, pb) in &partials {
                for (a, v) in dw_all.iter_mut().zip(pw) {
                    *a += v;
                }
                for (a, v) in db_all.iter_mut().zip(pb) {
                    *a += v;
                }
            }
        }
        Ok((CpuStorage::F32(flat), Shape::from(nw + nb + nx)))
    }
}
