//! 2-D max/average pooling with a correct backward (see the module docs of `ops` for why).
//!
//! Imports the parent's `contiguous_f32` and candle only; no sibling, nothing outside `ops`.

use super::contiguous_f32;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolKind {
    Max,
    Avg,
}

fn nchw(l: &Layout, what: &str) -> Result<[usize; 4]> {
    match *l.dims() {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref d => bail!("{what}: expected an (N, C, H, W) tensor, got shape {d:?}"),
    }
}

/// Index (within the `size` x `size` window at output `(i, j)` of one plane) of the first
/// maximum in row-major window order, as an offset into the plane.
#[inline]
fn argmax_in_window(plane: &[f32], w: usize, size: usize, i: usize, j: usize) -> usize {
    let mut best = (i * size) * w + j * size;
    let mut best_v = plane[best];
    for di in 0..size {
        let row = (i * size + di) * w + j * size;
        for dj in 0..size {
            let v = plane[row + dj];
            // `>` keeps the first maximum; NaN never wins, matching the forward's fold.
            if v > best_v {
                best_v = v;
                best = row + dj;
            }
        }
    }
    best
}

/// Forward pooling, CPU only; its backward is [`Pool2dBackward`].
#[derive(Debug, Clone, Copy)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub size: usize,
}

impl Pool2d {
    fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        if self.size == 0 || h < self.size || w < self.size {
            bail!(
                "pool2d: window {0}x{0} does not fit input {h}x{w}",
                self.size
            );
        }
        Ok((h / self.size, w / self.size))
    }
}

impl CustomOp1 for Pool2d {
    fn name(&self) -> &'static str {
        "privxray-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "pool2d")?;
        let [n, c, h, w] = nchw(l, "pool2d")?;
        let (oh, ow) = self.out_hw(h, w)?;
        let size = self.size;
        let mut y = vec![0f32; n * c * oh * ow];
        let inv = 1.0 / (size * size) as f32;
        y.par_chunks_mut(oh * ow.max(1))
            .zip(x.par_chunks(h * w))
            .for_each(|(out, plane)| {
                for i in 0..oh {
                    for j in 0..ow {
                        out[i * ow + j] = match self.kind {
                            PoolKind::Max => plane[argmax_in_window(plane, w, size, i, j)],
                            PoolKind::Avg => {
                                let mut acc = 0f32;
                                for di in 0..size {
                                    let row = (i * size + di) * w + j * size;
                                    acc += plane[row..row + size].iter().sum::<f32>();
                                }
                                acc * inv
                            }
                        };
                    }
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(
            &g,
            &Pool2dBackward {
                kind: self.kind,
                size: self.size,
            },
        )?))
    }
}

/// Gradient of [`Pool2d`] w.r.t. its input: `(x, grad_out) -> grad_x`. Max pooling routes each
/// output gradient to the first maximum of its window; average pooling spreads it evenly. Rows
/// and columns dropped by the floor get zero.
#[derive(Debug, Clone, Copy)]
pub struct Pool2dBackward {
    pub kind: PoolKind,
    pub size: usize,
}

impl CustomOp2 for Pool2dBackward {
    fn name(&self) -> &'static str {
        "privxray-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "pool2d backward (input)")?;
        let g = contiguous_f32(s2, l2, "pool2d backward (gradient)")?;
        let [n, c, h, w] = nchw(l1, "pool2d backward")?;
        let (oh, ow) = Pool2d {
            kind: self.kind,
            size: self.size,
        }
        .out_hw(h, w)?;
        if l2.dims() != [n, c, oh, ow] {
            bail!(
                "pool2d backward: gradient shape {:?}, expected {:?}",
                l2.dims(),
                [n, c, oh, ow]
            );
        }
        let size = self.size;
        let inv = 1.0 / (size * size) as f32;
        let mut dx = vec![0f32; n * c * h * w];
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w))
            .zip(g.par_chunks(oh * ow.max(1)))
            .for_each(|((dplane, plane), gplane)| {
                for i in 0..oh {
                    for j in 0..ow {
                        let gv = gplane[i * ow + j];
                        match self.kind {
                            PoolKind::Max => {
                                dplane[argmax_in_window(plane, w, size, i, j)] += gv;
                            }
                            PoolKind::Avg => {
                                for di in 0..size {
                                    let row = (i * size + di) * w + j * size;
                                    for v in &mut dplane[row..row + size] {
                                        *v += gv * inv;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

/// Reference pooling from reshapes and reductions (whose candle backwards are correct): crop to
/// a multiple of `size`, view windows as their own axes, reduce them. Ties in max pooling send
/// the gradient to every maximum (candle's reduction rule); inputs in tests have no ties.
pub fn pool2d_reference(x: &Tensor, kind: PoolKind, size: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if size == 0 || h < size || w < size {
        bail!("pool2d: window {size}x{size} does not fit input {h}x{w}");
    }
    let (oh, ow) = (h / size, w / size);
    let cropped = x
        .narrow(2, 0, oh * size)?
        .narrow(3, 0, ow * size)?
        .contiguous()?
        .reshape((n, c, oh, size, ow, size))?;
    match kind {
        PoolKind::Max => cropped.max(5)?.max(3),
        PoolKind::Avg => cropped.mean(5)?.mean(3),
    }
}
