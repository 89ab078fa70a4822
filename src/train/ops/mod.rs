//! Tensor operations the models are built from, with CPU kernels of our own where candle's are
//! wrong or slow, each beside a slow, obviously-right reference made of plain candle ops.
//!
//! Why our own: candle 0.11.1's `max_pool2d` backward scales every gradient by 1/4 (2x2 window),
//! and both pooling backwards misalign rows when an input side is odd (DNN-Max has widths 123,
//! 59 and 27). Its CPU convolution backward is also slow. On CPU we therefore use
//! [`pool::Pool2d`] (a `CustomOp1` whose backward is a second custom op) and
//! [`conv::Conv2d`] (im2col into reused buffers + GEMM, ReLU fused, one-pass backward that
//! skips the images' gradient and yields per-example weight gradients for DP-SGD). On other
//! devices candle's own ops or the reference formulations (built from reshape/narrow/stack/
//! matmul, whose candle backwards are correct) are used.
//!
//! Imports only its children and candle; nothing else of `train` and no other engine module.

pub mod conv;
mod conv_backward;
mod conv_shape;
pub mod infer;
pub mod pool;
mod sgemm;
pub mod unfold;

use candle_core::{bail, CpuStorage, Device, Layout, Result, Tensor};

/// The f32 values of a contiguous CPU tensor; custom ops only accept those.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected f32 storage")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!(
            "{what}: expected a contiguous tensor, got strides {:?}",
            l.stride()
        ),
    }
}

pub use conv_shape::Epilogue;
pub use pool::PoolKind;

/// 2-D pooling of an `(N, C, H, W)` tensor with a `size` x `size` window and stride `size`,
/// dropping a trailing partial row/column (floor), with a correct backward on every device.
pub fn pool2d(x: &Tensor, kind: PoolKind, size: usize) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op1(pool::Pool2d { kind, size }),
        _ => pool::pool2d_reference(x, kind, size),
    }
}

/// Unfolds `(N, C, H, W)` into convolution columns `(N, C*K*K, OH*OW)` (rows ordered as the
/// `[O, C, K, K]` weight's flattened `C, K, K`), zero-padding by `padding`.
pub fn unfold(x: &Tensor, kernel: usize, padding: usize) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => x
            .contiguous()?
            .apply_op1(unfold::Im2Col { kernel, padding }),
        _ => unfold::unfold_reference(x, kernel, padding),
    }
}

/// Stride-1 convolution: `x (N, C, H, W)`, `weight (O, C, K, K)`, `bias (O)`.
/// On CPU: [`conv::Conv2d`] (im2col + GEMM kernels of our own). Elsewhere: candle's own
/// `conv2d`, whose backward is correct.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor, padding: usize) -> Result<Tensor> {
    conv2d_fused(x, weight, bias, padding, Epilogue::NONE)
}

/// `relu(conv2d(..))` in one kernel on CPU (no separate activation tensor or ReLU backward).
pub fn conv2d_relu(x: &Tensor, weight: &Tensor, bias: &Tensor, padding: usize) -> Result<Tensor> {
    conv2d_fused(
        x,
        weight,
        bias,
        padding,
        Epilogue {
            relu: true,
            pool: None,
        },
    )
}

/// Applies the epilogue's stages with separate ops (devices other than the CPU, references).
fn epilogue_unfused(y: Tensor, e: Epilogue) -> Result<Tensor> {
    let y = if e.relu { y.relu()? } else { y };
    match e.pool {
        Some((kind, size)) => pool2d(&y, kind, size),
        None => Ok(y),
    }
}

/// `pool(relu(conv2d(..)))`, each stage per `epilogue`, in one kernel on CPU: the full-size
/// convolution output never becomes a tensor (nor do its gradients).
pub fn conv2d_fused(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    padding: usize,
    epilogue: Epilogue,
) -> Result<Tensor> {
    let (o, _c, k, _) = weight.dims4()?;
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            conv::Conv2d::new(k, padding, epilogue),
        ),
        _ => epilogue_unfused(
            x.conv2d(weight, padding, 1, 1, 1)?
                .broadcast_add(&bias.reshape((1, o, 1, 1))?)?,
            epilogue,
        ),
    }
}

/// Slow, obviously-right convolution from the reference unfold and a batched matrix product
/// (plain candle ops), for tests.
pub fn conv2d_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    padding: usize,
) -> Result<Tensor> {
    let (n, _c, h, w) = x.dims4()?;
    let (o, c, k, _) = weight.dims4()?;
    let (oh, ow) = (
        unfold::conv_out(h, k, padding)?,
        unfold::conv_out(w, k, padding)?,
    );
    let cols = unfold::unfold_reference(x, k, padding)?;
    weight
        .reshape((o, c * k * k))?
        .broadcast_matmul(&cols)?
        .broadcast_add(&bias.reshape((1, o, 1))?)?
        .reshape((n, o, oh, ow))
}

/// Stride-1 convolution with one weight tensor per example, `weights (N, O, C*K*K)` and
/// `biases (N, O, 1)`: the gradient of those tensors is the per-example gradient DP-SGD needs.
/// The epilogue (ReLU, pooling) is fused on CPU.
pub fn conv2d_per_example(
    x: &Tensor,
    weights: &Tensor,
    biases: &Tensor,
    kernel: usize,
    padding: usize,
    epilogue: Epilogue,
) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => x.contiguous()?.apply_op3(
            &weights.contiguous()?,
            &biases.contiguous()?,
            conv::Conv2d::new(kernel, padding, epilogue),
        ),
        _ => epilogue_unfused(
            conv2d_per_example_reference(x, weights, biases, kernel, padding)?,
            epilogue,
        ),
    }
}

/// [`conv2d_per_example`] (without activation) from the reference unfold and a batched
/// matrix product.
pub fn conv2d_per_example_reference(
    x: &Tensor,
    weights: &Tensor,
    biases: &Tensor,
    kernel: usize,
    padding: usize,
) -> Result<Tensor> {
    let (n, _c, h, w) = x.dims4()?;
    let o = weights.dim(1)?;
    let (oh, ow) = (
        unfold::conv_out(h, kernel, padding)?,
        unfold::conv_out(w, kernel, padding)?,
    );
    let cols = unfold::unfold_reference(x, kernel, padding)?;
    weights
        .matmul(&cols)?
        .broadcast_add(biases)?
        .reshape((n, o, oh, ow))
}

#[cfg(test)]
mod tests;
