//! The work the command line and the terminal interface both do on top of the engine, written
//! once: data made ready (a synthetic set generated once, several folders preprocessed into
//! one, [`data`]), a run's settings translated into the engine's configuration ([`settings`]), the
//! train/validation/evaluation split of a preprocessed dataset ([`splits`]), a training run on
//! its own thread followed by the evaluation of its best checkpoint ([`run`]), a checkpoint
//! loaded for the CPU ([`model`]), per-example losses for the membership-inference audit
//! ([`audit`]), and plaintext prediction of images ([`predict`]).
//!
//! May import the engine's own modules (data, preprocess, synth, model, train, privacy). May not import
//! terminal code, clap or anyhow, nor print: errors are [`PipelineError`], and what a face shows
//! of progress is its own business. The submodules import [`error`]; only [`run`] imports
//! another ([`model`]).

pub mod audit;
pub mod data;
pub mod error;
pub mod model;
pub mod predict;
pub mod run;
pub mod settings;
pub mod splits;

pub use audit::{membership_audit, per_example_losses};
pub use data::{
    default_synthetic_options, ensure_synthetic, preprocess_folders, preprocess_folders_labelled,
    FolderReport, DEFAULT_SYNTHETIC_COUNT, DEFAULT_SYNTHETIC_DIR, DEFAULT_SYNTHETIC_SEED,
};
pub use error::{PipelineError, Result};
pub use model::load_checkpoint;
pub use predict::{
    load_input, plaintext_logits, plaintext_probability, predict_images, PlainPrediction,
};
pub use run::{evaluate_checkpoint, train_then_evaluate, BestCheckpoint, RunReport, TrainingRun};
pub use settings::{
    optimizer_following_dp, DpChoice, DpSettings, InteractiveSettings, OptimizerChoice,
    RunSettings, DEFAULT_DP, DP_OPTIMIZER, PLAIN_OPTIMIZER,
};
pub use splits::{split, subset, Splits, SPLIT_SEED, VAL_FRACTION};

#[cfg(test)]
mod tests;
