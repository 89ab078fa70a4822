//! Plaintext prediction: an image file or pixels in, the model's probability of PNEUMONIA out.
//! The one path both faces take for a plaintext answer. Imports the pipeline's error only.

use super::error::{PipelineError, Result};
use crate::model::spec::pneumonia_probability;
use crate::model::Technique;
use crate::preprocess;
use crate::train::{Model, TrainError};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Loads and preprocesses one image for a model's technique, pixels scaled to [0, 1] (the
/// error does not repeat the file's name: the caller reports it beside the name).
pub fn load_input(image: &Path, technique: Technique) -> Result<Vec<f32>, String> {
    preprocess::load_image(image, technique).map(|px| preprocess::to_unit(&px))
}

/// The plaintext probability of PNEUMONIA that `model` (candle, CPU) gives one image of
/// `shape`, pixels in [0, 1].
pub fn plaintext_probability(model: &Model, shape: [usize; 3], pixels: Vec<f32>) -> Result<f64> {
    Ok(f64::from(pneumonia_probability(&plaintext_logits(
        model, shape, pixels,
    )?)))
}

/// The plaintext logits (one per class) that `model` (CPU) gives one image of `shape`, pixels
/// in [0, 1], by the one-image inference path ([`Model::infer_one`]).
pub fn plaintext_logits(model: &Model, shape: [usize; 3], pixels: Vec<f32>) -> Result<Vec<f32>> {
    if shape != model.input_shape() {
        return Err(TrainError::InputShape {
            model: model.kind().name().into(),
            expected: model.input_shape(),
            got: shape,
        }
        .into());
    }
    let logits = model.infer_one(&pixels)?;
    if logits.is_empty() {
        return Err(PipelineError::NoLogits);
    }
    Ok(logits)
}

/// One image's plaintext prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct PlainPrediction {
    /// Probability of PNEUMONIA (of class 1; meaningful for two classes).
    pub probability: f64,
    /// The model's logits, one per class.
    pub logits: Vec<f32>,
    /// Time of the model alone, loading the image left out.
    pub seconds: f64,
}

/// Plaintext predictions of `model` for image files, one result per image in the order
/// given: a bad image costs only itself.
pub fn predict_images(model: &Model, images: &[PathBuf]) -> Vec<Result<PlainPrediction>> {
    let one = |path: &Path| -> Result<PlainPrediction> {
        let x = load_input(path, model.kind().technique()).map_err(PipelineError::Image)?;
        let t0 = Instant::now();
        let logits = plaintext_logits(model, model.input_shape(), x)?;
        Ok(PlainPrediction {
            probability: f64::from(pneumonia_probability(&logits)),
            logits,
            seconds: t0.elapsed().as_secs_f64(),
        })
    };
    images.iter().map(|path| one(path)).collect()
}
