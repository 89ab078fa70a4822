//! What a run is asked to do: [`TrainConfig`] and its checks. Imports only settings types of
//! the engine's siblings (optimizer, loss, DP-SGD, averaging, model); never the loop.

use super::{PrivacyAccountant, Seed};
use crate::model::ModelKind;
use crate::train::dpsgd::DpConfig;
use crate::train::ema::EmaDecay;
use crate::train::error::{Result, TrainError};
use crate::train::loss::ClassWeighting;
use crate::train::model::DropoutRate;
use crate::train::optim::OptimizerConfig;
use std::path::PathBuf;

/// What to train and how.
pub struct TrainConfig {
    pub model: ModelKind,
    /// Width multiplier of the VGG models (ignored by the DNNs).
    pub width: f32,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub class_weights: Option<ClassWeighting>,
    /// Stop after this many epochs without a better validation accuracy.
    pub patience: Option<usize>,
    pub seed: Seed,
    /// Where `{model}-best.safetensors` and `{model}-last.safetensors` go; `None`: none written.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from this checkpoint (weights, optimizer state, epoch, best accuracy, history).
    pub resume: Option<PathBuf>,
    /// ImageNet VGG16 weights for the convolutions (see
    /// [`model::load_vgg16_imagenet`](crate::train::model::load_vgg16_imagenet)).
    pub init_weights: Option<PathBuf>,
    pub dp: Option<DpConfig>,
    /// Layers kept at their initial (or `init_weights`) values, e.g. `fc1`
    /// ([`Model::freeze`](crate::train::Model::freeze)).
    /// Empty on resume: the checkpoint's choice holds.
    pub frozen: Vec<String>,
    /// Release an exponential moving average of the weights (validated, checkpointed as
    /// `-best`) instead of the last iterate. `None` on resume: the checkpoint's choice holds.
    pub ema: Option<EmaDecay>,
    /// Training dropout rate instead of the model's own (0 turns it off). `None` on resume:
    /// the checkpoint's choice holds.
    pub dropout: Option<DropoutRate>,
    /// Turns DP steps into epsilon (default: the RDP accountant); `None`: no epsilon reported.
    pub accountant: Option<Box<dyn PrivacyAccountant>>,
    pub prefer_gpu: bool,
}

impl TrainConfig {
    /// Defaults: 10 epochs, batch 32, Adam 1e-3, patience 3, OS seed, CPU, RDP accountant.
    pub fn new(model: ModelKind) -> Self {
        Self {
            model,
            width: 1.0,
            epochs: 10,
            batch_size: 32,
            eval_batch_size: 64,
            optimizer: OptimizerConfig::adam(1e-3),
            class_weights: None,
            patience: Some(3),
            seed: Seed::Os,
            checkpoint_dir: None,
            resume: None,
            init_weights: None,
            dp: None,
            frozen: Vec::new(),
            ema: None,
            dropout: None,
            accountant: Some(Box::new(crate::privacy::RdpAccountant::new())),
            prefer_gpu: false,
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(TrainError::Config(format!(
                "batch sizes must be >= 1, got {} and {}",
                self.batch_size, self.eval_batch_size
            )));
        }
        self.optimizer.validate()?;
        if let Some(dp) = &self.dp {
            dp.validate_for_training()?;
        }
        if let Some(ClassWeighting::Counts { noise_std }) = self.class_weights {
            if !(noise_std.is_finite() && noise_std > 0.0) {
                return Err(TrainError::Config(format!(
                    "class count noise {noise_std}: expected a positive standard deviation"
                )));
            }
        }
        Ok(())
    }
}
