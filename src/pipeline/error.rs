//! The pipeline's error type. Owns [`PipelineError`] only; imports nothing of the pipeline.

use crate::preprocess::PreprocessError;
use crate::privacy::PrivacyError;
use crate::synth::SynthError;
use crate::train::TrainError;
use std::path::PathBuf;

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
    #[error("loading {}: {source}", path.display())]
    LoadCheckpoint {
        path: PathBuf,
        #[source]
        source: TrainError,
    },
    #[error("starting the engine thread")]
    Spawn(#[source] std::io::Error),
    #[error("the training thread panicked")]
    Panicked,
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("generating synthetic images in {}: {source}", dir.display())]
    Synth {
        dir: PathBuf,
        #[source]
        source: SynthError,
    },
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error("no folders to preprocess")]
    NoFolders,
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
}

impl From<candle_core::Error> for PipelineError {
    fn from(e: candle_core::Error) -> Self {
        PipelineError::Train(TrainError::Candle(e))
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
