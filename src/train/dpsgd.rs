//! DP-SGD (Abadi et al. 2016): per-example gradients, each clipped to an L2 norm bound, summed,
//! Gaussian noise added, divided by the expected batch size.
//!
//! The privacy parameters are the privacy module's validated newtypes, re-exported here.

use super::error::{Result, TrainError};
use crate::model::PlanLayer;
pub use crate::privacy::params::{ClipNorm, Delta, NoiseMultiplier};
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

/// Where the Gaussian noise's randomness comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSeed {
    /// ChaCha20 seeded from the OS CSPRNG: the only setting that gives the privacy guarantee.
    #[default]
    Os,
    /// A fixed seed for reproducible experiments. NOT SECURE: anyone who knows the seed can
    /// subtract the noise.
    InsecureFixed(u64),
}

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
    /// as many as fit [`ACTIVATION_BUDGET`] and [`PER_EXAMPLE_BUDGET`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_batch: Option<usize>,
    /// Augmentation multiplicity ([`super::augment`]): each unit's gradient is the mean over
    /// augmented copies of its examples before the clip. Absent: one copy (off).
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

/// Checks that every layer of a plan keeps examples independent, as per-example clipping
/// requires. Exhaustive on purpose: a new layer kind must be classified here. Batch
/// normalisation, for one, mixes the examples of a batch (each output depends on the batch's
/// statistics), so one example's influence is no longer bounded by its clipped gradient; it
/// would have to be refused (or replaced by group normalisation) for DP-SGD.
pub fn check_plan_for_dp(plan: &[PlanLayer]) -> Result<()> {
    for layer in plan {
        match layer {
            PlanLayer::Conv { .. }
            | PlanLayer::Relu
            | PlanLayer::Pool(_)
            | PlanLayer::Flatten
            | PlanLayer::Dense { .. }
            | PlanLayer::Dropout(_) => {}
        }
    }
    Ok(())
}

use super::augment::Augmentation;
use super::loss::{self, ClassWeights};
use super::model::{apply_dropout, Model, NetLayer, POOL_SIZE};
use super::ops;
use candle_core::{DType, Tensor, Var, D};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};

/// The RNG of the Gaussian noise: ChaCha20 from the OS CSPRNG, or from an explicit (insecure)
/// seed.
pub fn noise_rng(seed: NoiseSeed) -> ChaCha20Rng {
    match seed {
        NoiseSeed::Os => {
            // rand's thread RNG is itself a CSPRNG seeded (and reseeded) from the OS.
            ChaCha20Rng::try_from_os_rng()
                .unwrap_or_else(|_| ChaCha20Rng::from_rng(&mut rand::rng()))
        }
        NoiseSeed::InsecureFixed(s) => ChaCha20Rng::seed_from_u64(s),
    }
}

/// `n` independent N(0, std^2) draws.
pub fn gaussian_noise(n: usize, std: f64, rng: &mut impl RngCore) -> Result<Vec<f32>> {
    if std == 0.0 {
        return Ok(vec![0.0; n]);
    }
    let normal = Normal::new(0.0, std)
        .map_err(|e| TrainError::Config(format!("noise standard deviation {std}: {e}")))?;
    Ok((0..n).map(|_| normal.sample(rng) as f32).collect())
}

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

/// Per-step statistics of the units' gradient norms before clipping (flat L2 over all layers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipStats {
    /// Share of units whose norm exceeded C (and so were scaled down).
    pub clipped_fraction: f64,
    /// Median unit norm.
    pub median_norm: f64,
}

impl ClipStats {
    /// Statistics of `norms` against the bound `clip`; `None` when there are no units.
    pub fn of(norms: &[f32], clip: f64) -> Option<Self> {
        if norms.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = norms.iter().map(|&x| f64::from(x)).collect();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median_norm = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        let clipped = v.iter().filter(|&&x| x > clip).count();
        Some(ClipStats {
            clipped_fraction: clipped as f64 / v.len() as f64,
            median_norm,
        })
    }
}

/// Clipped per-unit gradients summed over a batch, before noise.
#[derive(Debug)]
pub struct ClippedSums {
    /// Sum over units (examples or microbatches) of `min(1, C/|g_u|) (w_u / w_max) g_u`, per
    /// parameter, where `g_u` is the unit's unweighted gradient and `w_u` its class weight
    /// (1 without class weights).
    pub sums: Vec<Tensor>,
    /// `|g_u|` (whole-model L2 norm) of each unit before clipping.
    pub unit_norms: Vec<f32>,
    /// Sum over examples of the class-weighted loss `w_y * nll`.
    pub weighted_loss_sum: f64,
    pub weight_sum: f64,
    pub logits: Tensor,
}

/// Bound on the floats of per-example conv gradients held at once (~256 MiB); larger batches
/// are processed in chunks.
pub const PER_EXAMPLE_BUDGET: usize = 64 << 20;

/// Bound on the floats of forward activations held at once (1 GiB; the backward pass needs
/// about as much again). Without it DP-SGD at batch 2048 on dnn-max held 13 GB and batch 4096
/// 18 GB: more than the 24 GB machines the project targets can hold twice.
pub const ACTIVATION_BUDGET: usize = 256 << 20;

/// Examples per physical chunk of a logical batch: `physical`, if given, else what fits both
/// budgets; a multiple of the microbatch size `m`, at least `m`.
pub fn physical_chunk(model: &Model, physical: Option<usize>, m: usize) -> usize {
    let limit = physical.unwrap_or_else(|| {
        let conv_params: usize = model
            .layers()
            .iter()
            .map(|l| match l {
                NetLayer::Conv {
                    name, weight, bias, ..
                } if !model.is_frozen(name) => weight.elem_count() + bias.elem_count(),
                _ => 0,
            })
            .sum();
        (PER_EXAMPLE_BUDGET / conv_params.max(1))
            .min(ACTIVATION_BUDGET / model.activation_floats_per_example().max(1))
    });
    (limit / m * m).max(m)
}

enum Captured {
    /// Per-example (or per-microbatch after grouping) weight/bias variables of a convolution.
    Conv { w: Var, b: Var },
    /// A dense layer's input and a zero probe added to its output (its gradient is the
    /// gradient w.r.t. the output).
    Dense { input: Tensor, probe: Var },
}

/// Per-example gradients of one batch, clipped per unit of `microbatch` examples and summed.
///
/// Opacus-style: one forward/backward of the summed per-example losses. Convolutions run
/// with a per-example copy of their weights (`conv2d_per_example`), so the gradient of that
/// copy *is* the per-example gradient, at the cost of the ordinary weight-gradient GEMMs. Dense
/// layers get a zero probe on their output; with per-example clipping their gradient norm is
/// `|g| * sqrt(|a|^2 + 1)` (weight and bias) and the clipped sum is `(c*g)^T a`, never forming
/// per-example matrices. Frozen layers ([`Model::freeze`]) run as in the plain forward pass and
/// count towards neither the norms nor the sums (theirs are zeros).
#[allow(clippy::too_many_arguments)]
pub fn clipped_gradient_sums(
    model: &Model,
    x: &Tensor,
    labels: &Tensor,
    class_weights: Option<ClassWeights>,
    clip: ClipNorm,
    clipping: Clipping,
    microbatch: usize,
    mut dropout_rng: Option<&mut dyn RngCore>,
) -> Result<ClippedSums> {
    model.check_input(x)?;
    let n = x.dim(0)?;
    let m = microbatch.max(1);
    if n == 0 || n % m != 0 {
        return Err(TrainError::Config(format!(
            "batch of {n} examples does not split into microbatches of {m}"
        )));
    }
    let units = n / m;
    let mut caps = Vec::new();
    // Per parameterised layer, in order: its index in `caps`, or None when frozen.
    let mut slots: Vec<Option<usize>> = Vec::new();
    let mut h = x.clone();
    let mut fused = 0;
    for (i, layer) in model.layers().iter().enumerate() {
        if fused > 0 {
            fused -= 1;
            continue;
        }
        h = match layer {
            NetLayer::Conv {
                name,
                weight,
                bias,
                padding,
                ..
            } if model.is_frozen(name) => {
                // No per-example copy: nothing of this layer is trained, only its input
                // gradient flows on to the layers before it.
                let (epilogue, n) = model.epilogue_after(i);
                fused = n;
                slots.push(None);
                ops::conv2d_fused(&h, &weight.detach(), &bias.detach(), *padding, epilogue)?
            }
            NetLayer::Dense {
                name, weight, bias, ..
            } if model.is_frozen(name) => {
                slots.push(None);
                h.matmul(&weight.detach().t()?)?
                    .broadcast_add(&bias.detach())?
            }
            NetLayer::Conv {
                weight,
                bias,
                kernel,
                padding,
                ..
            } => {
                let (o, c, k, _) = weight.dims4()?;
                let w = Var::from_tensor(
                    &weight
                        .detach()
                        .reshape((1, o, c * k * k))?
                        .broadcast_as((n, o, c * k * k))?
                        .contiguous()?,
                )?;
                let b = Var::from_tensor(
                    &bias
                        .detach()
                        .reshape((1, o, 1))?
                        .broadcast_as((n, o, 1))?
                        .contiguous()?,
                )?;
                let (epilogue, n) = model.epilogue_after(i);
                fused = n;
                let y = ops::conv2d_per_example(&h, &w, &b, *kernel, *padding, epilogue)?;
                slots.push(Some(caps.len()));
                caps.push(Captured::Conv { w, b });
                y
            }
            NetLayer::Dense { weight, bias, .. } => {
                let input = h.detach();
                let z = h
                    .matmul(&weight.detach().t()?)?
                    .broadcast_add(&bias.detach())?;
                let probe = Var::zeros(z.shape(), DType::F32, z.device())?;
                let z = z.add(probe.as_tensor())?;
                slots.push(Some(caps.len()));
                caps.push(Captured::Dense { input, probe });
                z
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
    let logits = h;
    let nll = loss::per_example_nll(&logits, labels)?;
    let w = loss::example_weights(labels, class_weights)?;
    let per_example = nll.mul(&w)?;
    // Class weights act after the clip, not inside the loss: when (as usual under DP) every
    // gradient is clipped, a weight inside the loss is normalised away and the 3:1 majority
    // wins every step. Each unit's clipped gradient is instead scaled by its weight over the
    // largest weight (at most 1), so no unit contributes more than C and the sensitivity holds.
    // TF Privacy's microbatch loss is the microbatch mean; per-example (m = 1) is the same.
    let objective = (nll.sum_all()? / m as f64)?;
    let grads = objective.backward()?;

    // Per-unit gradients (or, for dense layers with m = 1, the factors of their norms).
    enum UnitGrads {
        Full(Tensor, Tensor),
        DenseFactored { g: Tensor, a: Tensor },
    }
    let mut per_layer = Vec::with_capacity(caps.len());
    let mut layer_sq = Vec::with_capacity(caps.len());
    let grad_of = |v: &Var| -> Result<Tensor> {
        match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(v.as_tensor().zeros_like()?),
        }
    };
    for cap in &caps {
        let ug = match cap {
            Captured::Conv { w, b } => {
                let gw = grad_of(w)?;
                let gb = grad_of(b)?;
                let (_, o, r) = gw.dims3()?;
                // Sum the m examples of each microbatch (the 1/m is already in the objective).
                let gw = gw.reshape((units, m, o, r))?.sum(1)?;
                let gb = gb.reshape((units, m, o))?.sum(1)?;
                UnitGrads::Full(gw, gb)
            }
            Captured::Dense { input, probe } => {
                let g = grad_of(probe)?;
                if m == 1 {
                    UnitGrads::DenseFactored {
                        g,
                        a: input.clone(),
                    }
                } else {
                    let (_, out) = g.dims2()?;
                    let inp = input.dim(1)?;
                    let gm = g.reshape((units, m, out))?;
                    let am = input.reshape((units, m, inp))?;
                    let gw = gm.transpose(1, 2)?.contiguous()?.matmul(&am)?;
                    UnitGrads::Full(gw, gm.sum(1)?)
                }
            }
        };
        layer_sq.push(match &ug {
            UnitGrads::Full(gw, gb) => {
                (gw.sqr()?.flatten_from(1)?.sum(1)? + gb.sqr()?.flatten_from(1)?.sum(1)?)?
            }
            UnitGrads::DenseFactored { g, a } => {
                let ga = g.sqr()?.sum(1)?;
                let aa = (a.sqr()?.sum(1)? + 1.0)?;
                ga.mul(&aa)?
            }
        });
        per_layer.push(ug);
    }
    let mut sq = Tensor::zeros(units, DType::F32, x.device())?;
    for l in &layer_sq {
        sq = (sq + l)?;
    }
    let norms = sq.sqrt()?;
    // c = min(1, bound / |g|), then the class weight over the largest weight.
    let unit_w = match class_weights {
        None => None,
        Some(cw) => {
            let w_max = f64::from(cw.get()[0].max(cw.get()[1]));
            Some((w.reshape((units, m))?.mean(1)? / w_max)?)
        }
    };
    let clip_factors = |norm: &Tensor, bound: f64| -> Result<Tensor> {
        let f = (norm + 1e-12)?
            .recip()?
            .affine(bound, 0.0)?
            .clamp(0f32, 1f32)?;
        Ok(match &unit_w {
            None => f,
            Some(uw) => f.mul(uw)?,
        })
    };
    let layer_factors: Vec<Tensor> = match clipping {
        Clipping::Flat => {
            let f = clip_factors(&norms, clip.get())?;
            vec![f; per_layer.len()]
        }
        Clipping::PerLayer => {
            let bound = clip.get() / (per_layer.len().max(1) as f64).sqrt();
            layer_sq
                .iter()
                .map(|l| clip_factors(&l.sqrt()?, bound))
                .collect::<Result<_>>()?
        }
    };
    let mut trained = Vec::with_capacity(per_layer.len());
    for (ug, factors) in per_layer.iter().zip(&layer_factors) {
        let mut sums = Vec::with_capacity(2);
        match ug {
            UnitGrads::Full(gw, gb) => {
                let fw = factors.reshape((units, 1, 1))?;
                sums.push(gw.broadcast_mul(&fw)?.sum(0)?);
                let fb = factors.reshape((units, 1))?;
                sums.push(gb.broadcast_mul(&fb)?.sum(0)?);
            }
            UnitGrads::DenseFactored { g, a } => {
                let cg = g.broadcast_mul(&factors.unsqueeze(1)?)?;
                sums.push(cg.t()?.matmul(a)?);
                sums.push(cg.sum(0)?);
            }
        }
        trained.push(sums);
    }
    // In parameter order and shapes; a frozen layer's sums are zeros.
    let params = model.named_parameters();
    let mut sums = Vec::with_capacity(params.len());
    for (layer, slot) in slots.iter().enumerate() {
        for part in 0..2 {
            let p = &params[2 * layer + part].1;
            sums.push(match slot {
                Some(c) => trained[*c][part].reshape(p.shape())?,
                None => p.zeros_like()?,
            });
        }
    }
    Ok(ClippedSums {
        sums,
        unit_norms: norms.to_vec1::<f32>()?,
        weighted_loss_sum: f64::from(per_example.sum_all()?.to_scalar::<f32>()?),
        weight_sum: f64::from(w.sum_all()?.to_scalar::<f32>()?),
        logits,
    })
}

/// One DP-SGD gradient: clipped per-unit gradients summed over the batch (in memory-bounded
/// chunks), plus N(0, (sigma C)^2) noise per coordinate, divided by the expected number of
/// units (`expected_batch / microbatch_size`; fixed, so batch-size variation leaks nothing).
#[allow(clippy::too_many_arguments)]
pub fn private_gradients(
    model: &Model,
    x: &Tensor,
    labels: &Tensor,
    class_weights: Option<ClassWeights>,
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
