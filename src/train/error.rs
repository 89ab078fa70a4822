//! Errors of the training engine.
//!
//! Imports `crate::model` and `crate::privacy` (their errors) only; no sibling.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("training data: {0}")]
    Data(String),
    #[error("model {model}: input shape {got:?} does not match the expected {expected:?}")]
    InputShape {
        model: String,
        expected: [usize; 3],
        got: [usize; 3],
    },
    #[error("privacy parameter: {0}")]
    Privacy(#[from] crate::privacy::PrivacyError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("initial weights {path}: {reason}")]
    InitWeights { path: PathBuf, reason: String },
    #[error("canary file {path}: {reason}")]
    CanaryFile { path: PathBuf, reason: String },
    #[error("canaries: {0}")]
    Canary(String),
    #[error("model export: {0}")]
    Spec(#[from] crate::model::SpecError),
    #[error("training produced a non-finite loss ({loss}) at epoch {epoch}, step {step}")]
    NonFinite {
        loss: f32,
        epoch: usize,
        step: usize,
    },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
