//! `predict`: plaintext with candle, or private with three parties (simulated in-process with
//! `--simulate-mpc`, or real party processes with `--config`).
//!
//! Imports the engine (`model`, `mpc`, `pipeline`, `train`) and `super::{common, party,
//! prediction}`; never `tui` or `backends`.

use super::common::load_model_with_classes;
use super::prediction::{print_predictions, ImageResult, Prediction};
use anyhow::Context;
use clap::Args;
use privxray::data::ClassNames;
use privxray::mpc::range::LogitBound;
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

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    if let Some(config) = &args.config {
        let timeout = args.timeout_ms.map(std::time::Duration::from_millis);
        return super::party::predict_remote(config, &args.images, args.json, timeout);
    }
    let model_path = args
        .model
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--model FILE is required"))?;
    let (model, classes) = load_model_with_classes(&model_path)?;
    let results = if args.simulate_mpc {
        predict_simulated(&model, &classes, &args.images, args.batch)?
    } else {
        predict_plain(&model, &classes, &args.images)
    };
    print_predictions(&results, args.json)
}

/// Private predictions with the three parties on threads of this process, one result per image
/// in the order given. The model is dealt once; images that load go in batches of `batch`; each
/// reports its batch's wall time and rounds, and an equal part of its batch's traffic between
/// the parties. An image that does not load, or a batch that fails, costs only those images.
pub fn predict_simulated(
    model: &privxray::train::Model,
    classes: &ClassNames,
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
    // The plaintext spec is only needed for the range and the dealing (a full-width VGG16-2
    // holds 0.55 GB of it).
    let (bound, sim) = {
        let spec = model.to_spec()?;
        let sim = Simulation::new(&spec, FixedPoint::default())
            .context("secret-sharing the model for --simulate-mpc")?;
        (LogitBound::of(&spec), sim)
    };
    for chunk in loaded.chunks(batch) {
        let xs: Vec<Vec<f32>> = chunk.iter().map(|(_, x)| x.clone()).collect();
        match sim.run(&xs, batch) {
            Ok(r) => {
                for ((i, x), logits) in chunk.iter().zip(&r.logits) {
                    results[*i] = Some(match recheck(&sim, &bound, logits, x) {
                        Ok((logits, retried)) => {
                            if retried {
                                eprintln!(
                                    "{}: the first private answer was out of the model's range; \
                                     ran it again",
                                    images[*i].display()
                                );
                            }
                            let mut p =
                                Prediction::from_logits(&images[*i], &logits, classes, r.seconds);
                            p.bytes = Some(r.bytes_between_parties / chunk.len() as u64);
                            p.rounds = Some(r.rounds);
                            p.retried = Some(retried);
                            ImageResult::Predicted(p)
                        }
                        Err(e) => ImageResult::failed(&images[*i], e),
                    });
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

/// The range check of one image's private logits: in range, as they are; out of range, the
/// image runs once more alone (fresh input shares and protocol randomness, the same model
/// shares) and that answer stands if it is in range.
fn recheck(
    sim: &Simulation,
    bound: &LogitBound,
    logits: &[f32],
    x: &[f32],
) -> Result<(Vec<f32>, bool), String> {
    let mut first = Some(logits.to_vec());
    bound
        .checked(|| match first.take() {
            Some(l) => Ok(l),
            None => sim
                .run(&[x.to_vec()], 1)
                .map_err(|e| format!("secure computation: {e}"))
                .and_then(|r| r.logits.into_iter().next().ok_or("no logits".to_string())),
        })
        .map(|c| (c.logits, c.retried))
        .map_err(|e| e.to_string())
}

/// Plaintext predictions with candle, one result per image: a bad image costs only itself.
pub fn predict_plain(model: &Model, classes: &ClassNames, images: &[PathBuf]) -> Vec<ImageResult> {
    pipeline::predict_images(model, images)
        .into_iter()
        .zip(images)
        .map(|(r, path)| match r {
            Ok(p) => {
                ImageResult::Predicted(Prediction::from_logits(path, &p.logits, classes, p.seconds))
            }
            Err(e) => ImageResult::failed(path, format!("{:#}", anyhow::Error::from(e))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use privxray::model::{arch::random_spec, ModelKind};

    /// An out-of-range answer (what a wrapped ring element decodes to) is replaced by a second,
    /// private run's answer, marked as retried; an in-range one is kept as it is.
    #[test]
    fn an_out_of_range_answer_is_run_again_privately() {
        let spec = random_spec(ModelKind::DnnAv, 1.0, 5);
        let x: Vec<f32> = (0..spec.input_len())
            .map(|i| (i % 255) as f32 / 255.0)
            .collect();
        let bound = LogitBound::ceiling();
        let plain = spec.forward(&x).unwrap();
        let sim = Simulation::new(&spec, FixedPoint::default()).unwrap();
        let (logits, retried) = recheck(&sim, &bound, &[3.0e14, 0.0], &x).unwrap();
        assert!(retried);
        for (a, b) in logits.iter().zip(&plain) {
            assert!(
                (a - b).abs() < 1e-2,
                "private {logits:?}, plaintext {plain:?}"
            );
        }
        let (kept, retried) = recheck(&sim, &bound, &[0.25, -0.5], &x).unwrap();
        assert!(!retried);
        assert_eq!(kept, vec![0.25, -0.5]);
    }
}
