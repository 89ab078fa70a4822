//! The one walk over a model's layers that every pass shares: the forward pass
//! ([`Model::forward_with`]) and DP-SGD's per-example gradient pass
//! (`train::dpsgd::per_example`). The walker owns the order of the layers, the fusing of a
//! convolution with the ReLU and pooling right after it, and the layers without weights (ReLU,
//! pooling, flatten, dropout); a [`LayerHook`] says what a pass does at each convolution and
//! dense layer. Imports the model (`super`), dropout and the ops; never the training loop or
//! DP-SGD, which bring their own hooks.

use super::dropout::apply_dropout;
use super::{Model, NetLayer, POOL_SIZE};
use crate::train::error::Result;
use crate::train::ops::{self, Epilogue};
use candle_core::{Module, Tensor};
use rand::RngCore;

/// A convolution as a pass sees it, with the ReLU and pooling after it fused in.
#[derive(Debug, Clone, Copy)]
pub struct ConvLayer<'a> {
    pub name: &'a str,
    /// `[O, C, K, K]`
    pub weight: &'a Tensor,
    /// `[O]`
    pub bias: &'a Tensor,
    pub kernel: usize,
    pub padding: usize,
    /// The ReLU and pooling the walker skips after this layer: the hook applies them.
    pub epilogue: Epilogue,
    /// Kept at its weights ([`Model::freeze`]).
    pub frozen: bool,
}

/// A dense layer as a pass sees it.
#[derive(Debug, Clone, Copy)]
pub struct DenseLayer<'a> {
    pub name: &'a str,
    /// `[out, in]`
    pub weight: &'a Tensor,
    /// `[out]`
    pub bias: &'a Tensor,
    /// Kept at its weights ([`Model::freeze`]).
    pub frozen: bool,
}

/// What a pass does at each layer with weights; [`Model::walk`] does the rest.
pub trait LayerHook {
    fn conv(&mut self, layer: &ConvLayer<'_>, x: &Tensor) -> Result<Tensor>;
    fn dense(&mut self, layer: &DenseLayer<'_>, x: &Tensor) -> Result<Tensor>;
}

/// The plain forward pass's hook: each layer applied as it is. With `detach`, gradients flow
/// through the layers to their inputs but not to their weights (DP-SGD's frozen layers, and
/// the dense layers whose gradients it reads off a probe instead).
#[derive(Debug, Clone, Copy)]
pub struct Forward {
    pub detach: bool,
}

impl Forward {
    fn params(&self, weight: &Tensor, bias: &Tensor) -> (Tensor, Tensor) {
        if self.detach {
            (weight.detach(), bias.detach())
        } else {
            (weight.clone(), bias.clone())
        }
    }
}

impl LayerHook for Forward {
    fn conv(&mut self, l: &ConvLayer<'_>, x: &Tensor) -> Result<Tensor> {
        let (w, b) = self.params(l.weight, l.bias);
        Ok(ops::conv2d_fused(x, &w, &b, l.padding, l.epilogue)?)
    }
    fn dense(&mut self, l: &DenseLayer<'_>, x: &Tensor) -> Result<Tensor> {
        let (w, b) = self.params(l.weight, l.bias);
        Ok(x.matmul(&w.t()?)?.broadcast_add(&b)?)
    }
}

impl Model {
    /// Runs a batch through the layers, calling `hook` at each convolution (with the ReLU and
    /// pooling right after it fused in) and each dense layer.
    /// `dropout_rng`: `Some` in training (masks drawn from it, inverted dropout as in
    /// PyTorch/Keras), `None` at evaluation.
    pub fn walk(
        &self,
        x: &Tensor,
        mut dropout_rng: Option<&mut dyn RngCore>,
        hook: &mut impl LayerHook,
    ) -> Result<Tensor> {
        self.check_input(x)?;
        let mut h = x.clone();
        let mut fused = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            if fused > 0 {
                fused -= 1;
                continue;
            }
            h = match layer {
                NetLayer::Conv {
                    name,
                    weight,
                    bias,
                    kernel,
                    padding,
                } => {
                    let (epilogue, n) = epilogue_after(&self.layers, i);
                    fused = n;
                    let conv = ConvLayer {
                        name,
                        weight,
                        bias,
                        kernel: *kernel,
                        padding: *padding,
                        epilogue,
                        frozen: self.is_frozen(name),
                    };
                    hook.conv(&conv, &h)?
                }
                NetLayer::Dense { name, weight, bias } => {
                    let dense = DenseLayer {
                        name,
                        weight,
                        bias,
                        frozen: self.is_frozen(name),
                    };
                    hook.dense(&dense, &h)?
                }
                NetLayer::Relu => h.relu()?,
                NetLayer::Pool(kind) => ops::pool2d(&h, *kind, POOL_SIZE)?,
                NetLayer::Flatten => h.flatten_from(1)?,
                NetLayer::Dropout(p) => match dropout_rng.as_deref_mut() {
                    Some(rng) => apply_dropout(&h, *p, rng)?,
                    None => h,
                },
            };
        }
        Ok(h)
    }

    /// Forward pass. `dropout_rng`: `Some` in training (masks drawn from it, inverted dropout
    /// as in PyTorch/Keras), `None` at evaluation.
    pub fn forward_with(
        &self,
        x: &Tensor,
        dropout_rng: Option<&mut dyn RngCore>,
    ) -> Result<Tensor> {
        self.walk(x, dropout_rng, &mut Forward { detach: false })
    }
}

/// The ReLU and pooling right after layer `i` (fused into the convolution at `i`), and how
/// many layers that covers.
pub(super) fn epilogue_after(layers: &[NetLayer], i: usize) -> (Epilogue, usize) {
    let mut e = Epilogue::NONE;
    let mut next = i + 1;
    if matches!(layers.get(next), Some(NetLayer::Relu)) {
        e.relu = true;
        next += 1;
    }
    if let Some(NetLayer::Pool(kind)) = layers.get(next) {
        e.pool = Some((*kind, POOL_SIZE));
        next += 1;
    }
    (e, next - i - 1)
}

/// Evaluation-mode forward (dropout off). candle's blanket `ModuleT` impl then ignores its
/// train flag; training calls [`Model::forward_with`] with a dropout RNG.
impl Module for Model {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(xs, None)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}
