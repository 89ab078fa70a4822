//! DP-SGD (Abadi et al. 2016): per-example gradients, each clipped to an L2 norm bound, summed,
//! Gaussian noise added, divided by the expected batch size.
//!
//! The privacy parameters are the privacy module's validated newtypes, re-exported here.
//!
//! This module owns the settings (`settings`), per-example gradients and their clipping
//! (`per_example`), the noise (`noise`) and one step's noisy gradient (`step`); its
//! items are re-exported here, so callers name them `dpsgd::X`. It may import the model,
//! loss, ops, augment, error and privacy modules, never the training loop (`train::engine`).

mod noise;
mod per_example;
mod settings;
mod step;

pub use crate::privacy::params::{ClipNorm, Delta, NoiseMultiplier};
pub use noise::{gaussian_noise, noise_rng, NoiseSeed};
pub use per_example::{
    clipped_gradient_sums, physical_chunk, ClipStats, ClippedSums, ACTIVATION_BUDGET,
    PER_EXAMPLE_BUDGET,
};
pub use settings::{
    check_plan_for_dp, AdaptiveClip, Clipping, DpConfig, Reproducible, Sampling, SamplingSeed,
    NEIGHBOURING,
};
pub use step::{private_gradients, PrivateStep};

#[cfg(test)]
mod tests;
