//! What a person chooses about a training run, as the command line and the terminal interface
//! both offer it, and the one translation of those choices into the engine's [`TrainConfig`]
//! and [`DpConfig`]. Imports the pipeline's error only; parsing flags or reading sliders is
//! each face's own business.

use super::error::Result;
use crate::model::ModelKind;
use crate::train::augment::Augmentation;
use crate::train::dpsgd::{AdaptiveClip, Clipping, DpConfig, NoiseSeed, Sampling, SamplingSeed};
use crate::train::ema::EmaDecay;
use crate::train::loss::ClassWeighting;
use crate::train::optim::OptimizerConfig;
use crate::train::{DropoutRate, Seed, TrainConfig};
use std::path::PathBuf;

/// Learning rate when none is chosen: Adam's.
pub const ADAM_LEARNING_RATE: f64 = 1e-3;
/// Learning rate when none is chosen: SGD's.
pub const SGD_LEARNING_RATE: f64 = 1e-2;

/// The optimizer, with SGD's momentum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerChoice {
    Adam,
    Sgd { momentum: f64 },
}

/// A training run's settings.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub model: ModelKind,
    /// Width multiplier of the VGG16 models (1.0 is VGG16).
    pub width: f32,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerChoice,
    /// `None`: [`ADAM_LEARNING_RATE`] or [`SGD_LEARNING_RATE`].
    pub learning_rate: Option<f64>,
    pub class_weights: Option<ClassWeighting>,
    /// Seed of data order, dropout and initialisation; `None`: from the OS.
    pub seed: Option<u64>,
    /// Layers kept at their initial weights.
    pub frozen: Vec<String>,
    pub ema: Option<EmaDecay>,
    pub dropout: Option<DropoutRate>,
    /// Epochs without a better validation accuracy before stopping; `None`: never.
    pub patience: Option<usize>,
    /// Where the `-best` and `-last` checkpoints go.
    pub checkpoint_dir: PathBuf,
    pub resume: Option<PathBuf>,
    pub init_weights: Option<PathBuf>,
    pub prefer_gpu: bool,
    /// DP-SGD; `None`: plain training.
    pub dp: Option<DpSettings>,
}

impl RunSettings {
    /// Plain training of `model` at full width, checkpoints in `checkpoint_dir`: 10 epochs of
    /// batch 32 with Adam, seeds from the OS, no early stopping, on the CPU.
    pub fn new(model: ModelKind, checkpoint_dir: PathBuf) -> Self {
        RunSettings {
            model,
            width: 1.0,
            epochs: 10,
            batch_size: 32,
            optimizer: OptimizerChoice::Adam,
            learning_rate: None,
            class_weights: None,
            seed: None,
            frozen: Vec::new(),
            ema: None,
            dropout: None,
            patience: None,
            checkpoint_dir,
            resume: None,
            init_weights: None,
            prefer_gpu: false,
            dp: None,
        }
    }

    /// The engine's configuration of these settings; DP settings the engine would refuse are
    /// refused here, before anything runs.
    pub fn config(&self) -> Result<TrainConfig> {
        let mut c = TrainConfig::new(self.model);
        c.width = self.width;
        c.epochs = self.epochs;
        c.batch_size = self.batch_size;
        c.optimizer = match self.optimizer {
            OptimizerChoice::Adam => {
                OptimizerConfig::adam(self.learning_rate.unwrap_or(ADAM_LEARNING_RATE))
            }
            OptimizerChoice::Sgd { momentum } => {
                OptimizerConfig::sgd(self.learning_rate.unwrap_or(SGD_LEARNING_RATE), momentum)
            }
        };
        c.class_weights = self.class_weights.clone();
        c.seed = self.seed.map(Seed::Fixed).unwrap_or(Seed::Os);
        c.frozen = self.frozen.clone();
        c.ema = self.ema;
        c.dropout = self.dropout;
        c.patience = self.patience;
        c.checkpoint_dir = Some(self.checkpoint_dir.clone());
        c.resume = self.resume.clone();
        c.init_weights = self.init_weights.clone();
        c.prefer_gpu = self.prefer_gpu;
        c.dp = self.dp.as_ref().map(DpSettings::config).transpose()?;
        Ok(c)
    }
}

/// DP-SGD as the interactive interface offers it: the two sliders and delta.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpChoice {
    pub noise_multiplier: f64,
    pub clip_norm: f64,
    pub delta: f64,
}

/// The settings the interactive interface offers for a run; the rest are
/// [`RunSettings::new`]'s. Its `Default` is what a first run uses, chosen so that a run on the
/// default data source (the bundled samples with the easy SYNTHETIC set, see
/// [`super::data::default_synthetic_options`]) learns within minutes on two CPU cores, with and
/// without DP; `privxray bench demo` measures exactly these settings.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractiveSettings {
    pub model: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerChoice,
    pub learning_rate: f64,
    /// `None`: plain training.
    pub dp: Option<DpChoice>,
    /// Layers kept at their initial weights.
    pub frozen: Vec<String>,
    /// Decay of the released weight average; `None`: the last iterate.
    pub ema: Option<f64>,
    /// Training dropout rate; `None`: the model's own.
    pub dropout: Option<f32>,
}

/// The optimizer and rate a first run uses under DP-SGD: SGD with momentum at a large rate.
/// Every example's gradient is clipped, so the step is bounded whatever the rate; Adam, which
/// rescales each coordinate by its noisy second moment, moved the weights mostly along the
/// noise and stayed at 50% on the default set, where this reached 92% in one epoch.
pub const DP_OPTIMIZER: (OptimizerChoice, f64) = (OptimizerChoice::Sgd { momentum: 0.9 }, 0.5);
/// ... and without DP: Adam. Without clipping, SGD at DP's rate diverged (50% after two
/// epochs on the default set).
pub const PLAIN_OPTIMIZER: (OptimizerChoice, f64) = (OptimizerChoice::Adam, 3e-3);

/// The optimizer that goes with turning DP-SGD `on` or off, given the one now chosen: an
/// optimizer still at the other mode's default follows to this mode's; one the user chose stays.
pub fn optimizer_following_dp(on: bool, now: (OptimizerChoice, f64)) -> (OptimizerChoice, f64) {
    let (from, to) = if on {
        (PLAIN_OPTIMIZER, DP_OPTIMIZER)
    } else {
        (DP_OPTIMIZER, PLAIN_OPTIMIZER)
    };
    let same = now.0 == from.0 && (now.1 - from.1).abs() <= from.1 * 1e-9;
    if same {
        to
    } else {
        now
    }
}

/// The first run's DP sliders.
pub const DEFAULT_DP: DpChoice = DpChoice {
    noise_multiplier: 0.7,
    clip_norm: 1.0,
    delta: 1e-5,
};

impl Default for InteractiveSettings {
    /// DNN-Max with its 905k-weight dense layer `fc1` frozen at its random initial weights (a
    /// fixed random projection: it costs no privacy, and DP-SGD's noise then falls on 56k
    /// weights rather than 961k), no training dropout, a weight average released, DP-SGD on
    /// with [`DP_OPTIMIZER`].
    fn default() -> Self {
        InteractiveSettings {
            model: ModelKind::DnnMax,
            epochs: 2,
            batch_size: 128,
            optimizer: DP_OPTIMIZER.0,
            learning_rate: DP_OPTIMIZER.1,
            dp: Some(DEFAULT_DP),
            frozen: vec!["fc1".into()],
            ema: Some(0.9),
            dropout: Some(0.0),
        }
    }
}

impl InteractiveSettings {
    /// These settings with DP-SGD set to `dp`, the optimizer following
    /// ([`optimizer_following_dp`]).
    pub fn with_dp(mut self, dp: Option<DpChoice>) -> Self {
        (self.optimizer, self.learning_rate) =
            optimizer_following_dp(dp.is_some(), (self.optimizer, self.learning_rate));
        self.dp = dp;
        self
    }

    /// The run's settings: the chosen optimizer and rate, no early stopping (the user chose the
    /// epochs and can stop the run), seeds from the OS, the GPU when there is one,
    /// per-example clipping with Poisson sampling under DP; VGG16 at `width`.
    pub fn run_settings(&self, width: f32, checkpoint_dir: PathBuf) -> Result<RunSettings> {
        let mut settings = RunSettings::new(self.model, checkpoint_dir);
        settings.width = width;
        settings.epochs = self.epochs;
        settings.batch_size = self.batch_size;
        settings.optimizer = self.optimizer;
        settings.learning_rate = Some(self.learning_rate);
        settings.prefer_gpu = true;
        settings.frozen = self.frozen.clone();
        settings.ema = self.ema.map(EmaDecay::new).transpose()?;
        settings.dropout = self.dropout.map(DropoutRate::new).transpose()?;
        settings.dp = self
            .dp
            .map(|dp| DpSettings::new(dp.noise_multiplier, dp.clip_norm, dp.delta));
        Ok(settings)
    }
}

/// DP-SGD's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DpSettings {
    pub noise_multiplier: f64,
    pub clip_norm: f64,
    pub delta: f64,
    pub clipping: Clipping,
    /// Examples per microbatch (1: per-example clipping, the only kind DP-SGD trains with).
    pub microbatch: usize,
    /// Most examples whose per-example gradients are computed at once; `None`: the engine's.
    pub physical_batch: Option<usize>,
    /// Copies each example's gradient is averaged over before the clip (1: none).
    pub augmentations: usize,
    pub sampling: Sampling,
    pub noise_seed: NoiseSeed,
    pub sampling_seed: SamplingSeed,
    /// Adapt the clip norm to this quantile of the per-example gradient norms.
    pub adaptive_clip: Option<f64>,
}

impl DpSettings {
    /// DP-SGD at these figures; the rest as the engine's defaults: flat per-example clipping,
    /// Poisson sampling, no augmentation, randomness from the OS, a fixed clip norm.
    pub fn new(noise_multiplier: f64, clip_norm: f64, delta: f64) -> Self {
        DpSettings {
            noise_multiplier,
            clip_norm,
            delta,
            clipping: Clipping::Flat,
            microbatch: 1,
            physical_batch: None,
            augmentations: 1,
            sampling: Sampling::Poisson,
            noise_seed: NoiseSeed::Os,
            sampling_seed: SamplingSeed::Os,
            adaptive_clip: None,
        }
    }

    /// The engine's DP-SGD configuration of these settings, checked.
    pub fn config(&self) -> Result<DpConfig> {
        let mut dp = DpConfig::new(self.noise_multiplier, self.clip_norm)?;
        dp.delta = self.delta;
        dp.clipping = self.clipping;
        dp.microbatch_size = self.microbatch;
        dp.physical_batch = self.physical_batch;
        dp.augmentation = Augmentation::copies(self.augmentations)?;
        dp.sampling = self.sampling;
        dp.noise_seed = self.noise_seed;
        dp.sampling_seed = self.sampling_seed;
        if let Some(quantile) = self.adaptive_clip {
            dp.adaptive_clip = Some(AdaptiveClip::new(quantile)?);
        }
        dp.validate()?;
        Ok(dp)
    }
}
