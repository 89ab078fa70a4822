//! A preprocessed dataset split the way training splits it: train/ less a validation share
//! (chosen by the fixed [`SPLIT_SEED`], so `audit` can rebuild who was a training member), and
//! test/ with val/ for the final evaluation. Imports the pipeline's error only.

use super::error::{PipelineError, Result};
use crate::preprocess::{self, Preprocessed};
use crate::train::TrainData;

/// Seed of the train/validation split. Fixed so `audit` can rebuild who was a training member.
pub const SPLIT_SEED: u64 = 17;
/// Share of train/ held out for validation (early stopping, best checkpoint).
pub const VAL_FRACTION: f64 = 0.1;

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

/// The images at `indices` as training data, pixels scaled to [0, 1].
pub fn subset(set: &Preprocessed, indices: &[usize]) -> Result<TrainData> {
    let n = preprocess::image_len(set.technique);
    let mut images = Vec::with_capacity(indices.len() * n);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        images.extend(preprocess::to_unit(set.image(i)));
        labels.push(set.items[i].label.0);
    }
    Ok(TrainData::with_classes(
        set.technique.input_shape(),
        images,
        labels,
        set.classes.clone(),
    )?)
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
