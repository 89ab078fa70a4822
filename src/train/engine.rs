//! The training loop: plain mini-batch training or DP-SGD, evaluation after every epoch,
//! best-by-validation-accuracy and resume checkpoints, early stopping, and a JSON-serialisable
//! event stream. Meant to run on its own thread, steered through [`TrainControl`].
//!
//! This file holds the public face ([`train`], [`evaluate`], checkpoint loading); the run itself
//! is in named steps under `engine/`: `start` (start or resume), `run` (batches, plain and
//! private steps), `epoch_end` (evaluate, record, checkpoints, early stop) and `finish`. The
//! engine imports its siblings in `train` and the model and privacy layers below; nothing above.

mod config;
mod epoch_end;
mod events;
mod finish;
mod run;
mod start;

use super::checkpoint::{self, CheckpointMeta, EpochRecord};
use super::control::TrainControl;
use super::data::TrainData;
use super::dpsgd::NoiseSeed;
use super::error::{Result, TrainError};
use super::loss;
use super::metrics::Metrics;
use super::model::{self, Model};
use crate::model::spec::{pneumonia_probability, softmax};
use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

pub use config::TrainConfig;
pub use events::TrainingEvent;

/// Seed for data order, dropout and initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seed {
    /// Drawn from the OS at start (and recorded in checkpoints so resume continues the order).
    Os,
    Fixed(u64),
}

pub use super::accounting::PrivacyAccountant;

/// The result of [`train`].
#[derive(Debug)]
pub struct TrainOutcome {
    /// The model with its final weights (the best ones are in `best_checkpoint`).
    pub model: Model,
    pub best_val_acc: f64,
    pub best_checkpoint: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
    pub epochs_run: usize,
    pub history: Vec<EpochRecord>,
    pub stopped: bool,
    pub early_stopped: bool,
    pub epsilon: Option<f64>,
    /// Validation metrics of the final weights.
    pub val_metrics: Metrics,
}

/// Model variables in parameter order, for the optimizer and checkpoints.
pub fn model_vars(model: &Model, varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
    model
        .named_parameters()
        .into_iter()
        .map(|(name, _)| {
            data.get(&name)
                .cloned()
                .map(|v| (name.clone(), v))
                .ok_or_else(|| {
                    TrainError::Config(format!("model parameter {name} has no variable"))
                })
        })
        .collect()
}

/// Loads a checkpoint into a fresh model (eval or further training).
pub fn model_from_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(Model, VarMap, CheckpointMeta)> {
    let loaded = checkpoint::load(path, device)?;
    let meta = loaded.meta.clone();
    let classes = meta.classes.len();
    let varmap = model::init_varmap(meta.model, meta.width, classes, 0, device)?;
    let m = Model::new(
        VarBuilder::from_varmap(&varmap, DType::F32, device),
        meta.model,
        meta.width,
        classes,
    )?;
    loaded.restore_vars(&model_vars(&m, &varmap)?)?;
    Ok((m, varmap, meta))
}

/// Evaluates `model` (dropout off) on `data`: metrics with the mean unweighted cross-entropy.
pub fn evaluate(model: &Model, data: &TrainData, batch_size: usize) -> Result<Metrics> {
    if model.classes() != data.classes().len() {
        return Err(TrainError::Data(format!(
            "the model tells {} classes apart; the data have {} ({})",
            model.classes(),
            data.classes().len(),
            data.classes()
        )));
    }
    let device = model
        .layers()
        .iter()
        .find_map(|l| match l {
            model::NetLayer::Conv { weight, .. } => Some(weight.device().clone()),
            _ => None,
        })
        .unwrap_or(Device::Cpu);
    let mut scores = Vec::with_capacity(data.len());
    let mut probabilities = Vec::with_capacity(data.len());
    let mut loss_sum = 0f64;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, y) = data.batch(chunk, &device)?;
        let logits = model.forward_with(&x, None)?;
        let nll = loss::per_example_nll(&logits, &y)?;
        loss_sum += f64::from(nll.sum_all()?.to_scalar::<f32>()?);
        for row in logits.to_vec2::<f32>()? {
            scores.push(pneumonia_probability(&row));
            probabilities.push(softmax(&row));
        }
    }
    let loss = if data.is_empty() {
        0.0
    } else {
        loss_sum / data.len() as f64
    };
    Ok(Metrics::from_probabilities(
        &probabilities,
        &scores,
        data.labels(),
        loss,
        data.classes().names(),
    ))
}

/// Trains per `config` on `data`, validating on `val` after every epoch; sends progress to
/// `events` (a closed receiver is ignored) and obeys `control` between steps.
pub fn train(
    config: TrainConfig,
    data: &TrainData,
    val: &TrainData,
    events: Sender<TrainingEvent>,
    control: TrainControl,
) -> Result<TrainOutcome> {
    let mut run = run::Run::start_or_resume(config, data, val, events, control)?;
    for epoch in run.start_epoch..run.config.epochs {
        if run.epoch(epoch)? == run::Flow::Stop {
            break;
        }
    }
    run.finish()
}

/// A seed for non-secret randomness when none was given (used by callers building configs).
pub fn os_seed() -> u64 {
    rand::rng().random()
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<TrainControl>();
    is_send::<TrainingEvent>();
    let _ = NoiseSeed::Os;
}

#[cfg(test)]
mod dp_tests;
#[cfg(test)]
mod tests;
