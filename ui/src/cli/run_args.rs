//! The argument groups `train` and `sweep` share (flattened into both with
//! `#[command(flatten)]`), and their translation into the engine pipeline's run settings.
//! Imports no other command module.

use clap::{Args, ValueEnum};
use privxray::model::ModelKind;
use privxray::pipeline::{self, OptimizerChoice, RunSettings};
use privxray::train::dpsgd::Clipping;
use privxray::train::ema::EmaDecay;
use privxray::train::loss::ClassWeighting;
use privxray::train::DropoutRate;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    Sgd,
    Adam,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClippingArg {
    /// The gradient over all parameters is clipped to C.
    Flat,
    /// Each layer is clipped to C/sqrt(layers) on its own.
    PerLayer,
}

/// What `train` and `sweep` both set about a run (`sweep` changes some defaults and help lines).
#[derive(Debug, Args, Clone)]
pub struct TrainSettings {
    /// dnn-max, dnn-av, vgg16-1 or vgg16-2.
    #[arg(long)]
    pub model: ModelKind,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Learning rate (default 1e-3 for Adam, 1e-2 for SGD).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerArg,
    /// Class weights, one per class in label order: NORMAL:PNEUMONIA, e.g. 1:3, or 2:1:3 for
    /// three classes (a public prior: no privacy cost), or `auto`:
    /// inverse class frequency (the Kermany set is about 3:1 PNEUMONIA:NORMAL). Under --dp,
    /// `auto` releases the class counts with Gaussian noise (std 20) and the ledger adds the
    /// cost; exact counts are never used under DP.
    #[arg(long, value_name = "W0:W1[:W2...]|auto", value_parser = parse_class_weights)]
    pub class_weights: Option<ClassWeighting>,
    /// Seed of data order, dropout and initialisation (default: from the OS).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Layers to keep at their initial weights, comma-separated (conv1..., fc1...): with
    /// --init-weights, fine-tuning only the head; under DP-SGD, noise only on what is trained
    /// (dnn-max's fc1 holds 905k of its 961k weights).
    #[arg(long, value_delimiter = ',')]
    pub freeze: Vec<String>,
    /// Release an exponential moving average of the weights with this decay per step (0.9
    /// averages about 10 steps): validated, reported and saved as `-best` instead of the last
    /// iterate. Under DP-SGD it averages the noise away at no privacy cost (post-processing).
    #[arg(long, value_name = "DECAY", value_parser = parse_ema)]
    pub ema: Option<EmaDecay>,
    /// Training dropout rate instead of the model's own 0.5; 0 turns dropout off (common under
    /// DP-SGD, whose noise already regularises and where a mask adds randomness to every
    /// clipped per-example gradient). The trained network is the same either way.
    #[arg(long, value_name = "P", value_parser = parse_dropout)]
    pub dropout: Option<DropoutRate>,
}

/// The DP-SGD settings `train` and `sweep` both take.
#[derive(Debug, Args, Clone)]
pub struct DpArgs {
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// flat (all parameters together) or per-layer.
    #[arg(long, value_enum, default_value = "flat")]
    pub clipping: ClippingArg,
}

fn parse_dropout(s: &str) -> Result<DropoutRate, String> {
    let p: f32 = s
        .parse()
        .map_err(|_| format!("expected a dropout rate in [0, 1), got {s:?}"))?;
    DropoutRate::new(p).map_err(|e| e.to_string())
}

fn parse_class_weights(s: &str) -> Result<ClassWeighting, String> {
    ClassWeighting::parse(s).map_err(|e| e.to_string())
}

fn parse_ema(s: &str) -> Result<EmaDecay, String> {
    let d: f64 = s
        .parse()
        .map_err(|_| format!("expected a decay in (0, 1) such as 0.9, got {s:?}"))?;
    EmaDecay::new(d).map_err(|e| e.to_string())
}

impl TrainSettings {
    /// The pipeline's settings of these flags, SGD with `momentum`, checkpoints in
    /// `checkpoint_dir`; the rest at the pipeline's defaults, for the command to set.
    pub fn run_settings(&self, momentum: f64, checkpoint_dir: PathBuf) -> RunSettings {
        RunSettings {
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: match self.optimizer {
                OptimizerArg::Adam => OptimizerChoice::Adam,
                OptimizerArg::Sgd => OptimizerChoice::Sgd { momentum },
            },
            learning_rate: self.lr,
            class_weights: self.class_weights.clone(),
            seed: self.seed,
            frozen: self.freeze.clone(),
            ema: self.ema,
            dropout: self.dropout,
            ..RunSettings::new(self.model, checkpoint_dir)
        }
    }
}

impl DpArgs {
    /// DP-SGD at `noise_multiplier` with these flags; the rest at the pipeline's defaults
    /// (Poisson sampling, per-example clipping, randomness from the OS), for the command to set.
    pub fn settings(&self, noise_multiplier: f64) -> pipeline::DpSettings {
        pipeline::DpSettings {
            clipping: match self.clipping {
                ClippingArg::Flat => Clipping::Flat,
                ClippingArg::PerLayer => Clipping::PerLayer,
            },
            ..pipeline::DpSettings::new(noise_multiplier, self.clip_norm, self.delta)
        }
    }
}
