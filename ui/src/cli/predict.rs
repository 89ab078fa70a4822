//! `predict`: plaintext with candle, or private with three parties (simulated in-process with
//! `--simulate-mpc`, or real party processes with `--config`).

use super::common::load_model;
use super::prediction::{print_predictions, ImageResult, Prediction};
use anyhow::Context;
use clap::Args;
use privxray::model::spec::pneumonia_probability;
use privxray::mpc::{FixedPoint, Simulation};
use privxray::pipeline::{self, load_input};
use privxray::train::Model;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A checkpoint written by `privxray train` (plaintext and --simulate-mpc).
    #[arg(long, required_unless_present = "config")]
    pub model: Option<PathBuf>,
    /// Run the three secure-computation parties in this process (threads, in-memory channels).
    #[arg(long, requires = "model")]
    pub simulate_mpc: bool,
    /// Images processed together by --simulate-mpc (shares rounds between images).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Ask the three party processes of this parties.toml (private prediction over Noise).
    #[arg(long, conflicts_with_all = ["model", "simulate_mpc"])]
    pub config: Option<PathBuf>,
    /// With --config: how long to wait for each party's answer (default: timeouts.io_ms).
    #[arg(long, requires = "config")]
    pub timeout_ms: Option<u64>,
    /// Print a JSON array, one object per image.
    #[arg(long)]
    pub json: bool,
    /// Image files (JPEG, PNG or DICOM).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run(a: PredictArgs) -> anyhow::Result<()> {
    if let Some(config) = &a.config {
        let timeout = a.timeout_ms.map(std::time::Duration::from_millis);
        return super::party::predict_remote(config, &a.images, a.json, timeout);
    }
    let model_path = a
        .model
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--model FILE is required"))?;
    let model = load_model(&model_path)?;
    let results = if a.simulate_mpc {
        predict_simulated(&model, &a.images, a.batch)?
    } else {
        predict_plain(&model, &a.images)
    };
    print_predictions(&results, a.json)
}

/// Private predictions with the three parties on threads of this process, one result per image
/// in the order given. The model is dealt once; images that load go in batches of `batch`; each
/// reports its batch's wall time and rounds, and an equal part of its batch's traffic between
/// the parties. An image that does not load, or a batch that fails, costs only those images.
pub fn predict_simulated(
    model: &privxray::train::Model,
    images: &[PathBuf],
    batch: usize,
) -> anyhow::Result<Vec<ImageResult>> {
    if batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let technique = model.kind().technique();
    let mut results: Vec<Option<ImageResult>> = vec![None; images.len()];
    let mut loaded = Vec::with_capacity(images.len());
    for (i, path) in images.iter().enumerate() {
        match load_input(path, technique) {
            Ok(x) => loaded.push((i, x)),
            Err(e) => results[i] = Some(ImageResult::failed(path, e)),
        }
    }
    if loaded.is_empty() {
        return Ok(finish(results, images));
    }
    // The plaintext spec is only needed for the dealing (a full-width VGG16-2 holds 0.55 GB).
    let sim = {
        let spec = model.to_spec()?;
        Simulation::new(&spec, FixedPoint::default())
            .context("secret-sharing the model for --simulate-mpc")?
    };
    for chunk in loaded.chunks(batch) {
        let xs: Vec<Vec<f32>> = chunk.iter().map(|(_, x)| x.clone()).collect();
        match sim.run(&xs, batch) {
            Ok(r) => {
                for ((i, _), logits) in chunk.iter().zip(&r.logits) {
                    let p = pneumonia_probability(logits) as f64;
                    let mut p = Prediction::new(&images[*i], p, r.seconds);
                    p.bytes = Some(r.bytes_between_parties / chunk.len() as u64);
                    p.rounds = Some(r.rounds);
                    results[*i] = Some(ImageResult::Predicted(p));
                }
            }
            Err(e) => {
                for (i, _) in chunk {
                    let error = format!("secure computation: {e}");
                    results[*i] = Some(ImageResult::failed(&images[*i], error));
                }
            }
        }
    }
    Ok(finish(results, images))
}

fn finish(results: Vec<Option<ImageResult>>, images: &[PathBuf]) -> Vec<ImageResult> {
    results
        .into_iter()
        .zip(images)
        .map(|(r, path)| r.unwrap_or_else(|| ImageResult::failed(path, "no result")))
        .collect()
}

/// Plaintext predictions with candle, one result per image: a bad image costs only itself.
pub fn predict_plain(model: &Model, images: &[PathBuf]) -> Vec<ImageResult> {
    pipeline::predict_images(model, images)
        .into_iter()
        .zip(images)
        .map(|(r, path)| match r {
            Ok(p) => ImageResult::Predicted(Prediction::new(path, p.probability, p.seconds)),
            Err(e) => ImageResult::failed(path, format!("{:#}", anyhow::Error::from(e))),
        })
        .collect()
}
