//! Per-example losses and the loss-threshold membership-inference audit built on them.
//! Imports the pipeline's error only.

use super::error::Result;
use crate::privacy::{self, AuditReport};
use crate::train::{self, Model, TrainData};

/// Images scored together.
const SCORE_BATCH: usize = 64;

/// Per-example cross-entropy losses of `model` on `data` (CPU), in the data's order.
pub fn per_example_losses(model: &Model, data: &TrainData) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(SCORE_BATCH) {
        let (x, y) = data.batch(chunk, &candle_core::Device::Cpu)?;
        let logits = model.forward_with(&x, None)?;
        let nll = train::loss::per_example_nll(&logits, &y)?;
        out.extend(nll.to_vec1::<f32>()?.into_iter().map(f64::from));
    }
    Ok(out)
}

/// The loss-threshold membership-inference attack on `model`: its losses on `members` (the
/// training split) against those on `non_members` (the evaluation split).
pub fn membership_audit(
    model: &Model,
    members: &TrainData,
    non_members: &TrainData,
) -> Result<AuditReport> {
    Ok(privacy::loss_threshold_audit(
        &per_example_losses(model, members)?,
        &per_example_losses(model, non_members)?,
    )?)
}
