//! Dropout: the validated training-time rate and inverted dropout with a mask drawn from an
//! RNG. Imports only the error type.

use crate::train::error::{Result, TrainError};
use candle_core::Tensor;
use rand::{Rng, RngCore};

/// The training-time probability of dropping a unit, in `[0, 1)`; 0 turns dropout off.
///
/// Why a run may change the model's own rate (0.5 in all four plans): under DP-SGD each
/// example's gradient is clipped as a whole, and a dropout mask makes that gradient flow
/// through a random half of the hidden units, so the per-example gradient carries the mask's
/// randomness on top of the noise. Dropout only acts in training; the trained model, its
/// export and its predictions are the same network either way.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "f32", into = "f32")]
pub struct DropoutRate(f32);

impl DropoutRate {
    pub fn new(p: f32) -> Result<Self> {
        if p.is_finite() && (0.0..1.0).contains(&p) {
            Ok(DropoutRate(p))
        } else {
            Err(TrainError::Config(format!(
                "dropout rate must be in [0, 1) (0 turns dropout off), got {p}"
            )))
        }
    }
    pub fn get(self) -> f32 {
        self.0
    }
}

impl TryFrom<f32> for DropoutRate {
    type Error = TrainError;
    fn try_from(p: f32) -> Result<Self> {
        DropoutRate::new(p)
    }
}

impl From<DropoutRate> for f32 {
    fn from(p: DropoutRate) -> f32 {
        p.0
    }
}

/// Inverted dropout with a mask drawn from `rng`: kept values are scaled by `1/(1-p)`.
pub fn apply_dropout(x: &Tensor, p: f32, rng: &mut dyn RngCore) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let scale = 1.0 / keep;
    let n = x.elem_count();
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            if rng.random::<f32>() < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
    Ok(x.mul(&mask)?)
}
