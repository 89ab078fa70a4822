//! The shapes of one convolution call ([`Dims`], checked once against the kernel and padding)
//! and the ReLU and pooling fused after it ([`Epilogue`]). Shared by the forward
//! (`conv`) and backward (`conv_backward`) kernels; imports only `unfold`'s geometry and the
//! pooling kind.

use super::pool::PoolKind;
use super::unfold::Geom;
use candle_core::{bail, Layout, Result};

/// Shapes of one convolution call, checked once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub n: usize,
    pub o: usize,
    pub g: Geom,
    pub per_example: bool,
}

impl Dims {
    pub fn new(x: &Layout, w: &Layout, b: &Layout, kernel: usize, padding: usize) -> Result<Self> {
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
    pub fn x_len(&self) -> usize {
        self.g.c * self.g.h * self.g.w
    }
    pub fn w_len(&self) -> usize {
        self.o * self.g.rows()
    }
    pub fn y_len(&self) -> usize {
        self.o * self.g.cols()
    }
    /// Weight of example `i`.
    pub fn weight<'a>(&self, w: &'a [f32], i: usize) -> &'a [f32] {
        if self.per_example {
            &w[i * self.w_len()..(i + 1) * self.w_len()]
        } else {
            w
        }
    }
    /// Weight and bias of example `i`.
    pub fn params<'a>(&self, w: &'a [f32], b: &'a [f32], i: usize) -> (&'a [f32], &'a [f32]) {
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
    pub(crate) fn out_hw(&self, oh: usize, ow: usize) -> Result<(usize, usize)> {
        match self.pool {
            None => Ok((oh, ow)),
            Some((_, s)) if s > 0 && oh >= s && ow >= s => Ok((oh / s, ow / s)),
            Some((_, s)) => bail!("pool2d: window {s}x{s} does not fit input {oh}x{ow}"),
        }
    }
    /// Whether the backward needs a routing mask from the forward.
    pub(super) fn needs_mask(&self) -> bool {
        self.relu || self.pool.is_some()
    }
}
