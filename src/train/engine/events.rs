//! What a run reports: [`TrainingEvent`], serialised as JSON lines. Imports only settings types;
//! the loop sends these, interfaces read them.

use crate::train::dpsgd::DpConfig;
use crate::train::ema::EmaDecay;
use crate::train::model::DropoutRate;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Progress events, serialised as `{"event": "step", ...}` JSON lines.
// `Started` is the large one and comes once per run; boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainingEvent {
    Started {
        model: String,
        width: f32,
        device: String,
        train_images: usize,
        val_images: usize,
        steps_per_epoch: usize,
        epochs: usize,
        start_epoch: usize,
        batch_size: usize,
        dp: Option<DpConfig>,
        /// DP runs: the Poisson sampling rate q = B/N the ledger records steps at.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sample_rate: Option<f64>,
        /// "poisson" or "shuffled" for DP runs, "shuffled" otherwise.
        sampling: String,
        /// How epsilon is accounted (DP runs with an accountant): with Poisson sampling the
        /// subsampled Gaussian at q = B/N; with shuffled batches no amplification is assumed.
        accounting: Option<String>,
        /// Layers kept at their initial weights.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        frozen: Vec<String>,
        /// Decay of the released weight average, if the run averages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ema: Option<EmaDecay>,
        /// Training dropout rate, when the run set one instead of the model's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropout: Option<DropoutRate>,
    },
    Step {
        epoch: usize,
        step: usize,
        loss: f64,
        images_per_sec: f64,
        /// Epsilon of the engine's ledger after this step (DP runs with an accountant): the
        /// one figure of privacy spent; interfaces show it rather than keeping ledgers of
        /// their own.
        epsilon: Option<f64>,
        /// DP runs: the noise multiplier this step's gradient noise actually used (a change
        /// from the interface applies from the step after it arrives).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise_multiplier: Option<f64>,
        /// DP runs: the clip norm this step actually used.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clip_norm: Option<f64>,
        /// DP runs: the noise multiplier the ledger recorded for this step at the run's
        /// sampling rate (sigma/2 with microbatches, whose sensitivity is 2C; lower than sigma
        /// when a noisy clip count is released beside the gradient). Project future epsilon
        /// from these, not from `noise_multiplier`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accounted_noise_multiplier: Option<f64>,
        /// DP runs: share of this step's examples (or microbatches) whose gradient norm
        /// exceeded the clip norm. From raw norms (the data holder's private metrics stream)
        /// unless `--adaptive-clip` releases it with noise; see
        /// [`dpsgd::ClipStats`](crate::train::dpsgd::ClipStats).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clipped_fraction: Option<f64>,
        /// DP runs: median per-unit gradient norm before clipping.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        median_grad_norm: Option<f64>,
    },
    Epoch {
        epoch: usize,
        train_loss: f64,
        train_acc: f64,
        val_loss: f64,
        /// Of the weights the run releases: the average when it averages.
        val_acc: f64,
        seconds: f64,
        eta_seconds: f64,
        epsilon: Option<f64>,
        /// Runs that average: validation accuracy of the last iterate, for comparison.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_val_acc: Option<f64>,
    },
    Checkpoint {
        path: PathBuf,
        val_acc: f64,
        /// "best" or "last".
        kind: String,
    },
    EarlyStop {
        epoch: usize,
        best_val_acc: f64,
    },
    DpSettingsChanged {
        noise_multiplier: f64,
        clip_norm: f64,
    },
    Paused,
    Resumed,
    Stopped {
        epoch: usize,
        step: usize,
    },
    Finished {
        best_val_acc: f64,
        epochs_run: usize,
        epsilon: Option<f64>,
        best_checkpoint: Option<PathBuf>,
    },
}
