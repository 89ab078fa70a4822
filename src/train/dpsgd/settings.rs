//! DP-SGD settings: how batches are sampled, where the randomness comes from, the clip and its
//! adaptive rule, their validation, and the noise multiplier the ledger accounts. Plain data
//! and checks only: no tensors, and nothing of the training loop.
//!
//! Imports `crate::{model, privacy}`, `train`'s `augment` and `error`, and `super::noise`; never
//! `mpc`, `net`, `party` or `pipeline`.

use super::noise::{gaussian_noise, NoiseSeed};
use crate::model::PlanLayer;
use crate::privacy::params::{ClipNorm, Delta, NoiseMultiplier};
use crate::train::augment::Augmentation;
use crate::train::error::{Result, TrainError};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// How each step's examples are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Each example joins each step independently with probability q = B/N: the sampling the
    /// privacy accountant's subsampled-Gaussian bound assumes. Batch sizes vary.
    Poisson,
    /// A shuffled partition into fixed-size batches (what most code does). Refused under DP:
    /// under add/remove of one example every later batch boundary shifts, and no accounting of
    /// the usual kind holds for it ([`DpConfig::validate`]). Kept so plain runs and older
    /// checkpoints can name it.
    Shuffled,
}

/// Where the Poisson batch draws of a DP run come from. The accountant's amplification by
/// subsampling holds only while the draws are secret: anyone who can rebuild them knows which
/// step saw which example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplingSeed {
    /// ChaCha20 seeded from the OS CSPRNG and never written anywhere.
    #[default]
    Os,
    /// A fixed seed for reproducible experiments. NOT PRIVATE: the run's epsilon is not valid.
    InsecureFixed(u64),
}

/// Randomness a DP run asked to make reproducible. Either makes its epsilon invalid; recorded
/// (never the seeds themselves) in events and checkpoints so every place that shows epsilon
/// can say so. Set by the training engine from the seeds it was given, and kept on resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Reproducible {
    #[serde(default)]
    pub noise: bool,
    #[serde(default)]
    pub sampling: bool,
}

impl Reproducible {
    pub fn any(&self) -> bool {
        self.noise || self.sampling
    }
    /// "epsilon not valid: ..." when the run is not private, for every place epsilon is shown.
    pub fn epsilon_warning(&self) -> Option<String> {
        let what = match (self.sampling, self.noise) {
            (true, true) => "reproducible sampling and noise",
            (true, false) => "reproducible sampling",
            (false, true) => "reproducible noise",
            (false, false) => return None,
        };
        Some(format!("epsilon not valid: {what}"))
    }
}

/// The neighbouring relation every epsilon privxray reports is for: datasets that differ by
/// adding or removing one example.
pub const NEIGHBOURING: &str = "add-remove";

/// How the clip norm bounds each unit's gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clipping {
    /// The gradient over all parameters is clipped to C (Abadi et al.; TF Privacy).
    #[default]
    Flat,
    /// Each of the L parameterised layers (weight and bias together) is clipped to C/sqrt(L)
    /// on its own (Opacus's "per_layer"; McMahan et al. 2018), so the whole gradient still has
    /// norm at most C. A layer with small gradients is no longer drowned by one with large
    /// ones: in DNN-Max the 905k-weight dense layer's gradient dwarfs the convolutions'.
    PerLayer,
}

/// DP-SGD settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpConfig {
    pub noise_multiplier: NoiseMultiplier,
    pub clip_norm: ClipNorm,
    pub sampling: Sampling,
    /// Examples per microbatch (TF Privacy): each microbatch's mean gradient is clipped as a
    /// unit. 1 = per-example clipping.
    pub microbatch_size: usize,
    /// The delta of (epsilon, delta)-DP reported by the accountant, in (0, 1) (checked by
    /// [`DpConfig::validate`]; see [`DpConfig::delta`]).
    pub delta: f64,
    /// Never serialised: a checkpoint or event holding the seed would let anyone subtract the
    /// noise. [`DpConfig::reproducible`] records that a seed was used.
    #[serde(skip)]
    pub noise_seed: NoiseSeed,
    /// Never serialised, for the same reason (see [`SamplingSeed`]).
    #[serde(skip)]
    pub sampling_seed: SamplingSeed,
    /// Which randomness was reproducible (set by the engine; absent: none, a private run).
    /// Read it through [`DpConfig::marks`], which also flags files of older versions.
    #[serde(default, skip_serializing_if = "is_private")]
    pub reproducible: Reproducible,
    /// Present only when read from a checkpoint of a version that wrote the noise seed into
    /// the file. Those versions drew the Poisson batches from the run's recorded `seed`, so
    /// their sampling is reproducible from the file whatever the noise seed was.
    #[serde(default, rename = "noise_seed", skip_serializing)]
    pub legacy_noise_seed: Option<NoiseSeed>,
    /// Adaptive clipping (Andrew et al. 2021): the clip norm follows a target quantile of the
    /// gradient norms, estimated from a noisy count released beside each step's gradient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_clip: Option<AdaptiveClip>,
    /// Absent in checkpoints written before per-layer clipping existed: flat.
    #[serde(default)]
    pub clipping: Clipping,
    /// Most examples whose gradients are computed at once (Opacus's "max physical batch
    /// size"). The logical batch, which the noise and the accountant see, is unchanged: the
    /// clipped per-example gradients of its physical parts are summed before the noise. `None`:
    /// as many as fit [`ACTIVATION_BUDGET`](super::ACTIVATION_BUDGET) and
    /// [`PER_EXAMPLE_BUDGET`](super::PER_EXAMPLE_BUDGET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_batch: Option<usize>,
    /// Augmentation multiplicity ([`crate::train::augment`]): each unit's gradient is the mean
    /// over augmented copies of its examples before the clip. Absent: one copy (off).
    #[serde(default, skip_serializing_if = "Augmentation::is_off")]
    pub augmentation: Augmentation,
}

impl DpConfig {
    pub fn new(noise_multiplier: f64, clip_norm: f64) -> Result<Self> {
        Ok(Self {
            noise_multiplier: NoiseMultiplier::new(noise_multiplier)?,
            clip_norm: ClipNorm::new(clip_norm)?,
            sampling: Sampling::Poisson,
            microbatch_size: 1,
            delta: 1e-5,
            noise_seed: NoiseSeed::Os,
            sampling_seed: SamplingSeed::Os,
            reproducible: Reproducible::default(),
            legacy_noise_seed: None,
            adaptive_clip: None,
            clipping: Clipping::Flat,
            physical_batch: None,
            augmentation: Augmentation::default(),
        })
    }
    pub fn validate(&self) -> Result<()> {
        if self.microbatch_size == 0 {
            return Err(TrainError::Config(
                "microbatch size 0: expected at least 1".into(),
            ));
        }
        if let Some(p) = self.physical_batch {
            if p < self.microbatch_size {
                return Err(TrainError::Config(format!(
                    "physical batch size {p}: expected at least the microbatch size {}",
                    self.microbatch_size
                )));
            }
        }
        self.augmentation.validate()?;
        self.delta()?;
        if let Some(a) = &self.adaptive_clip {
            a.validate()?;
        }
        Ok(())
    }

    /// The reproducibility marks, including those implied by a file of an older version.
    pub fn marks(&self) -> Reproducible {
        let mut r = self.reproducible;
        if let Some(legacy) = self.legacy_noise_seed {
            r.sampling = true;
            r.noise |= matches!(legacy, NoiseSeed::InsecureFixed(_));
        }
        r
    }

    /// The validated delta.
    pub fn delta(&self) -> Result<Delta> {
        Ok(Delta::new(self.delta)?)
    }

    /// Checks what a DP-SGD *training run* needs beyond [`DpConfig::validate`]: settings whose
    /// epsilon the ledger could not honestly account under add/remove are refused.
    pub fn validate_for_training(&self) -> Result<()> {
        self.validate()?;
        // At sigma 0 nothing is claimed (epsilon is infinite), so shuffled batches may still
        // be used to compare DP-SGD's mechanics with plain SGD on the same batches.
        if self.sampling == Sampling::Shuffled && self.noise_multiplier.get() > 0.0 {
            return Err(TrainError::Config(
                "shuffled batches under DP-SGD: adding or removing one example shifts every \
                 later batch boundary, so no epsilon of the usual kind holds; use Poisson \
                 sampling (the default)"
                    .into(),
            ));
        }
        if self.microbatch_size > 1 {
            return Err(TrainError::Config(format!(
                "microbatch size {} under DP-SGD: microbatches are consecutive runs of the \
                 batch, so adding one example regroups every later microbatch and the sum can \
                 move by far more than C; use per-example clipping (microbatch 1)",
                self.microbatch_size
            )));
        }
        Ok(())
    }

    /// The noise multiplier the ledger records for one step at the run's sampling rate. With
    /// adaptive clipping each step releases two Gaussian queries of the same Poisson batch:
    /// the clipped gradient sum (sensitivity C, noise sigma C) and the count of examples under
    /// the clip (sensitivity 1, noise sigma_b). Together they are one Gaussian mechanism on
    /// the stacked vector, whose per-example contribution, scaled by the noise, has norm at
    /// most sqrt(sigma^-2 + sigma_b^-2): the effective multiplier is the inverse of that.
    pub fn accounted_noise_multiplier(&self, expected_batch: f64) -> Result<NoiseMultiplier> {
        let sigma = self.noise_multiplier.get();
        let eff = match &self.adaptive_clip {
            None => sigma,
            Some(a) => {
                let sb = a.count_noise(expected_batch);
                if sigma == 0.0 || sb == 0.0 {
                    0.0
                } else {
                    (sigma.powi(-2) + sb.powi(-2)).powf(-0.5)
                }
            }
        };
        Ok(NoiseMultiplier::new(eff)?)
    }
}

fn is_private(r: &Reproducible) -> bool {
    !r.any()
}

/// Adaptive clipping by a privately estimated quantile (Andrew et al. 2021, "Differentially
/// private learning with adaptive clipping"): after each step
/// `C <- C * exp(-learning_rate * (b - quantile))`, where b is the noisy share of the step's
/// examples whose gradient norm was at most C. Opacus and TF Privacy use the same rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveClip {
    /// Target share of examples left unclipped, in (0, 1); 0.5 follows the median.
    pub quantile: f64,
    /// Geometric step size (the paper's default 0.2).
    pub learning_rate: f64,
    /// Standard deviation of the count's noise as a share of the expected batch size (the
    /// paper's default 1/20: sigma_b = B/20).
    pub count_noise_fraction: f64,
}

impl AdaptiveClip {
    pub fn new(quantile: f64) -> Result<Self> {
        let a = Self {
            quantile,
            learning_rate: 0.2,
            count_noise_fraction: 0.05,
        };
        a.validate()?;
        Ok(a)
    }
    pub fn validate(&self) -> Result<()> {
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err(TrainError::Config(format!(
                "adaptive clip quantile {}: expected a share in (0, 1) such as 0.5",
                self.quantile
            )));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(TrainError::Config(format!(
                "adaptive clip learning rate {}: expected a positive number",
                self.learning_rate
            )));
        }
        if !(self.count_noise_fraction.is_finite() && self.count_noise_fraction > 0.0) {
            return Err(TrainError::Config(format!(
                "adaptive clip count noise {}: expected a positive share of the batch",
                self.count_noise_fraction
            )));
        }
        Ok(())
    }
    /// sigma_b, the count noise's standard deviation (at least 1).
    pub fn count_noise(&self, expected_batch: f64) -> f64 {
        (self.count_noise_fraction * expected_batch).max(1.0)
    }
    /// The released (noisy) share of `units` under the clip and the next clip norm.
    pub fn update(
        &self,
        clip: ClipNorm,
        under_clip: usize,
        expected_batch: f64,
        rng: &mut impl RngCore,
    ) -> Result<(f64, ClipNorm)> {
        let noise = gaussian_noise(1, self.count_noise(expected_batch), rng)?[0];
        let share = (under_clip as f64 + f64::from(noise)) / expected_batch.max(1.0);
        let next = clip.get() * (-self.learning_rate * (share - self.quantile)).exp();
        Ok((share, ClipNorm::new(next)?))
    }
}

/// Whether a layer's output for one example depends on that example alone, as per-example
/// clipping requires. Exhaustive on purpose: a new layer kind must be classified here. Batch
/// normalisation, for one, would answer false: it mixes the examples of a batch (each output
/// depends on the batch's statistics), so one example's influence is no longer bounded by its
/// clipped gradient.
fn keeps_examples_independent(layer: &PlanLayer) -> bool {
    match layer {
        PlanLayer::Conv { .. }
        | PlanLayer::Relu
        | PlanLayer::Pool(_)
        | PlanLayer::Flatten
        | PlanLayer::Dense { .. }
        | PlanLayer::Dropout(_) => true,
    }
}

/// Refuses a plan with a layer that mixes the examples of a batch (see
/// [`keeps_examples_independent`]): DP-SGD's guarantee would not hold for it.
pub fn check_plan_for_dp(plan: &[PlanLayer]) -> Result<()> {
    match plan.iter().find(|layer| !keeps_examples_independent(layer)) {
        Some(layer) => Err(TrainError::Config(format!(
            "layer {layer:?} mixes the examples of a batch: DP-SGD needs every example's \
             output to depend on that example alone"
        ))),
        None => Ok(()),
    }
}
