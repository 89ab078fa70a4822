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
//! example) and returns them as one flat tensor that [`Conv2d::bwd`] splits. The input
//! gradient is skipped when the input is not tracked (the images of the first layer).

use super::contiguous_f32;
use super::pool::PoolKind;
use super::unfold::{col2im_example, im2col_example, im2col_example_par, Geom};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::Mutex;

/// A read-only matrix view: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `dst (m x n, row stride dst_rs) = [dst +] a (m x k) * b (k x n)`.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: Mat,
    b: Mat,
    par: Parallelism,
) {
    // The bounds the raw-pointer GEMM relies on (internal shapes; a failure is a bug here).
    assert!(
        span(m, n, dst_rs, 1) <= dst.len(),
        "sgemm: destination too small"
    );
    assert!(
        span(m, k, a.rs, a.cs) <= a.data.len(),
        "sgemm: lhs too small"
    );
    assert!(
        span(k, n, b.rs, b.cs) <= b.data.len(),
        "sgemm: rhs too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * dst_rs..i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: every index the GEMM touches, (m-1, n-1) at most, lies within the slices
    // (checked above); `dst` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with two scratch buffers of the given lengths, reused across calls on this thread
/// (no fresh zeroed pages per step). Contents are arbitrary. If the buffers are in use (a
/// rayon task stolen while this thread waits inside a parallel GEMM), fresh ones are used.
fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            let (sa, sb) = &mut *s;
            if sa.len() < a {
                sa.resize(a, 0.0);
            }
            if sb.len() < b {
                sb.resize(b, 0.0);
            }
            f(&mut sa[..a], &mut sb[..b])
        }
        Err(_) => f(&mut vec![0.0; a], &mut vec![0.0; b]),
    })
}

/// Shapes of one convolution call, checked once.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    o: usize,
    g: Geom,
    per_example: bool,
}

impl Dims {
    fn new(x: &Layout, w: &Layout, b: &Layout, kernel: usize, padding: usize) -> Result<Self> {
        let [n, c, h, wd] = match *x.dims() {
            [n, c, h, w] => [n, c, h, w],
            ref d => bail!("conv2d: expected an (N, C, H, W) input, got shape {d:?}"),
        };
        let g = Geom::new(c, h, wd, kernel, padding)?;
        let (o, per_example) = match *w.dims() {
            [o, wc, k1, k2] if wc == c && k1 == kernel && k2 == kernel => (o, false),
            [wn, o, r] if wn == n && r == g.rows() => (o, true),
            ref d => bail!(
                "conv2d: weight shape {d:?} does not fit input {:?} with kernel {kernel} \
                 (expected (O, {c}, {kernel}, {kernel}) or ({n}, O, {}))",
                x.dims(),
                g.rows()
            ),
        };
        let want_b = if per_example { n * o } else { o };
        if b.shape().elem_count() != want_b {
            bail!(
                "conv2d: bias shape {:?}, expected {want_b} values",
                b.dims()
            );
        }
        Ok(Self {
            n,
            o,
            g,
            per_example,
        })
    }
    fn x_len(&self) -> usize {
        self.g.c * self.g.h * self.g.w
    }
    fn w_len(&self) -> usize {
        self.o * self.g.rows()
    }
    fn y_len(&self) -> usize {
        self.o * self.g.cols()
    }
    /// Weight of example `i`.
    fn weight<'a>(&self, w: &'a [f32], i: usize) -> &'a [f32] {
        if self.per_example {
            &w[i * self.w_len()..(i + 1) * self.w_len()]
        } else {
            w
        }
    }
    /// Weight and bias of example `i`.
    fn params<'a>(&self, w: &'a [f32], b: &'a [f32], i: usize) -> (&'a [f32], &'a [f32]) {
        if self.per_example {
            (
                &w[i * self.w_len()..(i + 1) * self.w_len()],
                &b[i * self.o..(i + 1) * self.o],
            )
        } else {
            (w, b)
        }
    }
}

/// Parallelism inside the GEMMs: all threads for a single example, none when the examples
/// themselves are spread over the threads.
fn inner_parallelism(examples_in_parallel: bool) -> Parallelism {
    if examples_in_parallel {
        Parallelism::None
    } else {
        Parallelism::Rayon(rayon::current_num_threads())
    }
}

/// The activation and pooling that follow a convolution inside the same kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epilogue {
    pub relu: bool,
    /// Window (and stride) `size`; trailing rows/columns that do not fill a window are dropped.
    pub pool: Option<(PoolKind, usize)>,
}

impl Epilogue {
    pub const NONE: Self = Self {
        relu: false,
        pool: None,
    };
    /// Output side of a convolution output side.
    fn out_hw(&self, oh: usize, ow: usize) -> Result<(usize, usize)> {
        match self.pool {
            None => Ok((oh, ow)),
            Some((_, s)) if s > 0 && oh >= s && ow >= s => Ok((oh / s, ow / s)),
            Some((_, s)) => bail!("pool2d: window {s}x{s} does not fit input {oh}x{ow}"),
        }
    }
    /// Whether the backward needs a routing mask from the forward.
    fn needs_mask(&self) -> bool {
        self.relu || self.pool.is_some()
    }
}

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

/// The gradients of [`Conv2d`] from its output gradient: a flat tensor `[dW | db | dx]` (dx
/// only when `input_grad`). Borrows the forward's tensors and routing mask.
struct Conv2dBackward<'a> {
    kernel: usize,
    padding: usize,
    epilogue: Epilogue,
    input_grad: bool,
    x: &'a Tensor,
    w: &'a Tensor,
    b: &'a Tensor,
    mask: &'a [u8],
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
