//! `predict`: plaintext with candle, or private with three parties (simulated in-process with
//! `--simulate-mpc`, or real party processes with `--config`).

use super::train::{load_model, predict_plain, print_predictions};
use clap::Args;
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
    /// Print a JSON array, one object per image.
    #[arg(long)]
    pub json: bool,
    /// Image files (JPEG, PNG or DICOM).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run(a: PredictArgs) -> anyhow::Result<()> {
    let model_path = a
        .model
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--model FILE is required"))?;
    let model = load_model(&model_path)?;
    let preds = predict_plain(&model, &a.images)?;
    print_predictions(&preds, a.json)
}
