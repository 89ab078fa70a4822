//! The work the command line and the terminal interface both do on top of the engine, written
//! once: the train/validation/evaluation split of a preprocessed dataset (seed [`SPLIT_SEED`],
//! [`VAL_FRACTION`] held out, so `audit` can rebuild who was a training member), subsets as
//! training data, a training run on its own thread, per-example losses for the
//! membership-inference audit, and plaintext prediction of images.
//!
//! May import the engine's own modules (data, preprocess, model, train, privacy). May not import
//! terminal code, clap or anyhow, nor print: errors are [`PipelineError`], and what a face shows
//! of progress is its own business.

use crate::model::spec::pneumonia_probability;
use crate::model::Technique;
use crate::preprocess::{self, Preprocessed};
use crate::privacy::{self, AuditReport, PrivacyError};
use crate::train::{self, Model, TrainConfig, TrainControl, TrainData, TrainError};
use crate::train::{TrainOutcome, TrainingEvent};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Instant;

/// Seed of the train/validation split. Fixed so `audit` can rebuild who was a training member.
pub const SPLIT_SEED: u64 = 17;
/// Share of train/ held out for validation (early stopping, best checkpoint).
pub const VAL_FRACTION: f64 = 0.1;

/// Images evaluated or scored together.
const SCORE_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{} has no training images (train/ is empty or missing)", root.display())]
    NoTrainingImages { root: PathBuf },
    /// An image that could not be loaded (the message does not repeat the file's name: the
    /// caller reports it beside the name).
    #[error("{0}")]
    Image(String),
    #[error("the model returned no logits")]
    NoLogits,
    #[error("starting the engine thread")]
    Spawn(#[source] std::io::Error),
    #[error("the training thread panicked")]
    Panicked,
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
}

impl From<candle_core::Error> for PipelineError {
    fn from(e: candle_core::Error) -> Self {
        PipelineError::Train(TrainError::Candle(e))
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// A dataset split the way training splits it.
#[derive(Debug, Clone)]
pub struct Splits {
    /// train/ less the validation share: the members of a run.
    pub train: TrainData,
    /// [`VAL_FRACTION`] of each class of train/, chosen by [`SPLIT_SEED`].
    pub validation: TrainData,
    /// test/ and val/ merged (or a single unsplit folder): never trained on.
    pub evaluation: TrainData,
}

/// The images at `idx` as training data, pixels scaled to [0, 1].
pub fn subset(set: &Preprocessed, idx: &[usize]) -> Result<TrainData> {
    let n = preprocess::image_len(set.technique);
    let mut images = Vec::with_capacity(idx.len() * n);
    let mut labels = Vec::with_capacity(idx.len());
    for &i in idx {
        images.extend(preprocess::to_unit(set.image(i)));
        labels.push(set.items[i].class.label());
    }
    Ok(TrainData::new(set.technique.input_shape(), images, labels)?)
}

/// Splits a dataset the way training does; refuses one with no training images.
pub fn split(set: &Preprocessed) -> Result<Splits> {
    let (train, validation) = set.train_validation_split(VAL_FRACTION, SPLIT_SEED);
    let evaluation = set.evaluation_indices();
    if train.is_empty() {
        return Err(PipelineError::NoTrainingImages {
            root: set.root.clone(),
        });
    }
    Ok(Splits {
        train: subset(set, &train)?,
        validation: subset(set, &validation)?,
        evaluation: subset(set, &evaluation)?,
    })
}

/// A training run on its own thread: read [`TrainingRun::events`] until it ends, then
/// [`TrainingRun::finish`].
pub struct TrainingRun {
    events: Receiver<TrainingEvent>,
    handle: JoinHandle<train::error::Result<TrainOutcome>>,
}

impl TrainingRun {
    /// Starts `train::train` on a thread named `name`, steered by `control`.
    pub fn start(
        config: TrainConfig,
        data: TrainData,
        validation: TrainData,
        control: TrainControl,
        name: &str,
    ) -> Result<Self> {
        let (tx, events) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || train::train(config, &data, &validation, tx, control))
            .map_err(PipelineError::Spawn)?;
        Ok(TrainingRun { events, handle })
    }

    /// The engine's events, in order; the iteration ends when the engine does.
    pub fn events(&self) -> impl Iterator<Item = TrainingEvent> + '_ {
        self.events.iter()
    }

    /// Waits for the engine and returns what the run did.
    pub fn finish(self) -> Result<TrainOutcome> {
        drop(self.events);
        let outcome = self.handle.join().map_err(|_| PipelineError::Panicked)??;
        Ok(outcome)
    }
}

/// Per-example cross-entropy losses of `model` on `data` (CPU), in the data's order.
pub fn per_example_losses(model: &Model, data: &TrainData) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(SCORE_BATCH) {
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

/// Loads and preprocesses one image for a model's technique, pixels scaled to [0, 1] (the
/// error does not repeat the file's name: the caller reports it beside the name).
pub fn load_input(image: &Path, t: Technique) -> Result<Vec<f32>, String> {
    preprocess::load_image(image, t).map(|px| preprocess::to_unit(&px))
}

/// The plaintext probability of PNEUMONIA that `model` (candle, CPU) gives one image of
/// `shape`, pixels in [0, 1].
pub fn plaintext_probability(model: &Model, shape: [usize; 3], pixels: Vec<f32>) -> Result<f64> {
    let data = TrainData::new(shape, pixels, vec![0])?;
    let (xb, _) = data.batch(&[0], &candle_core::Device::Cpu)?;
    let logits = model.forward_with(&xb, None)?.to_vec2::<f32>()?;
    let row = logits.first().ok_or(PipelineError::NoLogits)?;
    Ok(f64::from(pneumonia_probability(row)))
}

/// One image's plaintext prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlainPrediction {
    /// Probability of PNEUMONIA.
    pub probability: f64,
    /// Time of the model alone, loading the image left out.
    pub seconds: f64,
}

/// Plaintext predictions of `model` for image files, one result per image in the order
/// given: a bad image costs only itself.
pub fn predict_images(model: &Model, images: &[PathBuf]) -> Vec<Result<PlainPrediction>> {
    let one = |path: &Path| -> Result<PlainPrediction> {
        let x = load_input(path, model.kind().technique()).map_err(PipelineError::Image)?;
        let t0 = Instant::now();
        let probability = plaintext_probability(model, model.input_shape(), x)?;
        Ok(PlainPrediction {
            probability,
            seconds: t0.elapsed().as_secs_f64(),
        })
    };
    images.iter().map(|path| one(path)).collect()
}

#[cfg(test)]
mod tests;
