//! One DP-SGD step's gradient: the batch's clipped sums, computed in physical chunks (with
//! augmented copies when asked), plus Gaussian noise, divided by the expected number of units.
//!
//! Imports `train`'s `error`, `loss` and `model` and `super::{noise, per_example, settings}`;
//! never `mpc`, `net`, `party` or `pipeline`.

use super::noise::gaussian_noise;
use super::per_example::{clipped_gradient_sums, physical_chunk, ClipStats};
use super::settings::DpConfig;
use crate::train::error::Result;
use crate::train::loss::ClassWeights;
use crate::train::model::Model;
use candle_core::{DType, Tensor, D};
use rand::RngCore;
use rand_chacha::ChaCha20Rng;

/// Result of one DP-SGD step's gradient computation.
#[derive(Debug)]
pub struct PrivateStep {
    /// Noisy clipped mean gradients, in [`Model::named_parameters`] order.
    pub gradients: Vec<Tensor>,
    /// Class-weighted mean loss of the batch (0 for an empty Poisson batch).
    pub loss: f64,
    /// The batch's logits (`None` for an empty batch).
    pub logits: Option<Tensor>,
    /// How the clip bit this step, for choosing C (`None` for an empty batch). A diagnostic for
    /// the data holder's log, computed from the raw norms: it is not itself privatised, so it
    /// belongs beside the training run, never in the released model.
    pub clip_stats: Option<ClipStats>,
    /// Each unit's gradient norm before clipping (private: for the adaptive clip's count).
    pub unit_norms: Vec<f32>,
}

/// One DP-SGD gradient: clipped per-unit gradients summed over the batch (in memory-bounded
/// chunks), plus N(0, (sigma C)^2) noise per coordinate, divided by the expected number of
/// units (`expected_batch / microbatch_size`; fixed, so batch-size variation leaks nothing).
#[allow(clippy::too_many_arguments)]
pub fn private_gradients(
    model: &Model,
    x: &Tensor,
    labels: &Tensor,
    class_weights: Option<&ClassWeights>,
    dp: &DpConfig,
    expected_batch: f64,
    dropout_rng: &mut dyn RngCore,
    noise: &mut ChaCha20Rng,
) -> Result<PrivateStep> {
    dp.validate()?;
    let n = x.dim(0)?;
    let m = dp.microbatch_size;
    let params = model.named_parameters();
    // Poisson batches need not be multiples of m: the trailing partial microbatch is dropped
    // (as TF Privacy requires divisibility; dropping only lowers sensitivity use).
    let usable = n - n % m;
    // With k augmented copies a chunk of `len` examples is `len * k` rows, each unit's m
    // examples' copies consecutive, so a unit of m * k rows is still one microbatch.
    let k = dp.augmentation.copies;
    let chunk = (physical_chunk(model, dp.physical_batch, m * k) / k).max(m);
    let mut sums: Option<Vec<Tensor>> = None;
    let (mut lsum, mut wsum) = (0f64, 0f64);
    let mut logits = Vec::new();
    let mut norms = Vec::new();
    let mut start = 0;
    while start < usable {
        let len = chunk.min(usable - start);
        let xs = x.narrow(0, start, len)?;
        let ys = labels.narrow(0, start, len)?;
        let (xs, ys) = if k > 1 {
            let xk = dp.augmentation.expand(&xs, &mut *dropout_rng)?;
            let yk = ys
                .unsqueeze(1)?
                .broadcast_as((len, k))?
                .contiguous()?
                .flatten_all()?;
            (xk, yk)
        } else {
            (xs, ys)
        };
        let mut r = clipped_gradient_sums(
            model,
            &xs,
            &ys,
            class_weights,
            dp.clip_norm,
            dp.clipping,
            m * k,
            Some(&mut *dropout_rng),
        )?;
        if k > 1 {
            // The batch's predictions are those of copy 0, the examples themselves; the loss
            // is the mean over all copies.
            let idx: Vec<u32> = (0..len).map(|e| (e * k) as u32).collect();
            let idx = Tensor::from_vec(idx, len, r.logits.device())?;
            r.logits = r.logits.index_select(&idx, 0)?;
        }
        sums = Some(match sums {
            None => r.sums,
            Some(acc) => acc
                .iter()
                .zip(&r.sums)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<_>>()?,
        });
        lsum += r.weighted_loss_sum;
        wsum += r.weight_sum;
        logits.push(r.logits);
        norms.extend_from_slice(&r.unit_norms);
        start += len;
    }
    let std = dp.noise_multiplier.get() * dp.clip_norm.get();
    let denom = (expected_batch / m as f64).max(1.0);
    let mut gradients = Vec::with_capacity(params.len());
    let trainable = model.trainable_mask();
    for (i, (_, p)) in params.iter().enumerate() {
        if !trainable[i] {
            // Frozen: no gradient, so no noise and no privacy spent on it.
            gradients.push(p.zeros_like()?);
            continue;
        }
        let noise_t = Tensor::from_vec(
            gaussian_noise(p.elem_count(), std, noise)?,
            p.shape(),
            p.device(),
        )?;
        let g = match &sums {
            Some(s) => (&s[i] + noise_t)?,
            None => noise_t,
        };
        gradients.push((g / denom)?);
    }
    let logits = if logits.is_empty() {
        None
    } else {
        // Padding to the full batch keeps the caller's accuracy bookkeeping aligned.
        let l = Tensor::cat(&logits, 0)?;
        Some(if usable < n {
            let pad = Tensor::zeros((n - usable, l.dim(D::Minus1)?), DType::F32, l.device())?;
            Tensor::cat(&[l, pad], 0)?
        } else {
            l
        })
    };
    Ok(PrivateStep {
        gradients,
        loss: if wsum > 0.0 { lsum / wsum } else { 0.0 },
        logits,
        clip_stats: ClipStats::of(&norms, dp.clip_norm.get()),
        unit_norms: norms,
    })
}
