//! One party's secure forward pass.
//!
//! Imports `crate::model` and `super::{client, context, error, layers, model, protocol, share,
//! transport}`; never `net` or the party layer.

use super::client::{InputShare, OutputShare};
use super::context::Party;
use super::error::{MpcError, Result};
use super::layers::{avg_pool, channel_affine, conv, dense, max_pool};
use super::model::{PartyModel, SecureOp};
use super::protocol::relu;
use super::share::ArithShare;
use super::transport::Transport;
use crate::model::shape::Chw;

/// Runs `model` on a batch of input shares (all images of a request together, so every layer
/// costs its rounds once for the whole batch) and returns one re-randomised output share per
/// image, for the client. The other two parties must call it with the same batch size.
pub fn infer<T: Transport>(
    p: &mut Party<T>,
    model: &PartyModel,
    inputs: &[InputShare],
) -> Result<Vec<OutputShare>> {
    if model.party() != p.id() {
        return Err(MpcError::mismatch(
            "model share party",
            p.id(),
            model.party(),
        ));
    }
    if inputs.is_empty() {
        return Err(MpcError::mismatch("batch size", "at least 1", 0));
    }
    for inp in inputs {
        if inp.party() != p.id() {
            return Err(MpcError::mismatch("input share party", p.id(), inp.party()));
        }
        if inp.shape() != model.input_shape() {
            return Err(MpcError::mismatch(
                "input shape",
                format!("{:?}", model.input_shape()),
                format!("{:?}", inp.shape()),
            ));
        }
        if inp.fixed() != model.fixed() {
            return Err(MpcError::mismatch(
                "input fractional bits",
                model.fixed().frac_bits(),
                inp.fixed().frac_bits(),
            ));
        }
    }
    let batch = inputs.len();
    let f = model.fixed().frac_bits();
    // Products with weights carry the weights' extra fractional bits until truncated.
    let fw = model.fixed().weights().frac_bits();
    let mut x = ArithShare::concat(inputs.iter().map(|i| i.share()));
    for op in model.ops() {
        x = match op {
            SecureOp::Conv { geom, weight, bias } => conv(p, &x, batch, geom, weight, bias, fw)?,
            SecureOp::Dense {
                in_features,
                out_features,
                weight,
                bias,
            } => dense(
                p,
                &x,
                batch,
                (*in_features, *out_features),
                weight,
                bias,
                fw,
            )?,
            SecureOp::ChannelAffine { dims, scale, shift } => {
                let per_channel = dims.height * dims.width;
                channel_affine(p, &x, (dims.channels, per_channel), scale, shift, f)?
            }
            SecureOp::Relu { sign } => relu(p, &x, *sign)?,
            SecureOp::MaxPool {
                dims,
                size,
                relu,
                sign,
            } => max_pool(p, &x, batch_planes(batch, dims), *size, *relu, *sign)?,
            SecureOp::AvgPool { dims, size } => {
                avg_pool(p, &x, batch_planes(batch, dims), *size, f)?
            }
        };
    }
    let out_len = model.output_len();
    if x.len() != batch * out_len {
        return Err(MpcError::mismatch(
            "output length",
            batch * out_len,
            x.len(),
        ));
    }
    // Fresh zero-sharing: the part sent to the client is independent of every share the party
    // used, and the three parts reveal nothing beyond their sum.
    let alpha = p.prg().zero_arith(x.len());
    let part: Vec<u64> = x
        .own()
        .iter()
        .zip(&alpha)
        .map(|(v, a)| v.wrapping_add(*a))
        .collect();
    Ok(part
        .chunks(out_len)
        .map(|c| OutputShare::new(p.id(), model.fixed(), c.to_vec()))
        .collect())
}

/// The planes a pooling sees: every channel of every image of the batch, each `height x width`.
fn batch_planes(batch: usize, dims: &Chw) -> (usize, usize, usize) {
    (batch * dims.channels, dims.height, dims.width)
}
