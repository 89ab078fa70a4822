//! One prediction and how `predict` prints it: shared by plaintext, simulated and remote
//! private prediction (`predict.rs` and `party.rs`), so neither imports the other for it.

use anyhow::bail;
use privxray::data::{Class, ClassNames};
use privxray::model::spec::{argmax, pneumonia_probability, softmax};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One prediction, as `predict --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub image: String,
    pub class: String,
    pub probability: f64,
    /// Every class's probability, by name (absent where only the PNEUMONIA probability is
    /// known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<BTreeMap<String, f64>>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u64>,
    /// Private predictions only: the first run's logits were out of the model's range (a fault,
    /// see `privxray::mpc::range`) and this is the second run's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried: Option<bool>,
}

impl Prediction {
    pub fn new(image: &Path, probability: f64, seconds: f64) -> Self {
        let class = if probability >= 0.5 {
            Class::Pneumonia
        } else {
            Class::Normal
        };
        Prediction {
            image: image.display().to_string(),
            class: class.to_string(),
            probability,
            probabilities: None,
            seconds,
            bytes: None,
            rounds: None,
            retried: None,
        }
    }
}

impl Prediction {
    /// The prediction of one image's logits (one per class of `classes`). Two classes: the
    /// class and probability of [`Prediction::new`] (PNEUMONIA's). More: the most probable
    /// class and its probability.
    pub fn from_logits(image: &Path, logits: &[f32], classes: &ClassNames, seconds: f64) -> Self {
        let probs = softmax(logits);
        let mut p = if classes.is_binary() {
            let mut p = Prediction::new(image, f64::from(pneumonia_probability(logits)), seconds);
            let names = classes.names();
            p.class = if p.probability >= 0.5 {
                &names[1]
            } else {
                &names[0]
            }
            .clone();
            p
        } else {
            let best = argmax(&probs);
            let mut p = Prediction::new(image, f64::from(probs[best]), seconds);
            p.class = classes
                .names()
                .get(best)
                .cloned()
                .unwrap_or_else(|| "?".into());
            p
        };
        p.probabilities = Some(
            classes
                .names()
                .iter()
                .zip(&probs)
                .map(|(n, &v)| (n.clone(), f64::from(v)))
                .collect(),
        );
        p
    }
}

/// What `predict` says about one image: its prediction, or why there is none. In JSON a
/// failure is `{"image": ..., "error": ...}`, beside the other images' predictions.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ImageResult {
    Predicted(Prediction),
    Failed { image: String, error: String },
}

impl ImageResult {
    pub fn failed(image: &Path, error: impl std::fmt::Display) -> Self {
        ImageResult::Failed {
            image: image.display().to_string(),
            error: error.to_string(),
        }
    }
}

/// Prints every image's result (stdout), then fails, naming the count, if any image failed.
pub fn print_predictions(results: &[ImageResult], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(results)?);
    } else {
        for r in results {
            match r {
                ImageResult::Predicted(p) => {
                    print!(
                        "{}: {} (probability of {} {:.4}) in {:.3} s",
                        p.image,
                        p.class,
                        match &p.probabilities {
                            Some(all) if all.len() > 2 => p.class.as_str(),
                            _ => "PNEUMONIA",
                        },
                        p.probability,
                        p.seconds
                    );
                    if let (Some(b), Some(r)) = (p.bytes, p.rounds) {
                        print!(", {:.1} MB between parties, {r} rounds", b as f64 / 1e6);
                    }
                    if p.retried == Some(true) {
                        print!(" (run twice: the first answer was out of the model's range)");
                    }
                    println!();
                }
                ImageResult::Failed { image, error } => println!("{image}: error: {error}"),
            }
        }
    }
    let mut failed = results.iter().filter_map(|r| match r {
        ImageResult::Failed { image, error } => Some((image, error)),
        ImageResult::Predicted(_) => None,
    });
    if let Some((image, error)) = failed.next() {
        bail!(
            "{} of {} images could not be predicted (each is listed with its error); \
             the first: {image}: {error}",
            1 + failed.count(),
            results.len()
        );
    }
    Ok(())
}
