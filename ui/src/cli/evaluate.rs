//! `evaluate`: a checkpoint's metrics on the merged test and val sets.
//!
//! Imports the engine (`pipeline`, `train`) and `super::{common, data}` only; never `tui` or
//! `backends`.

use super::common::{load_dataset, load_model_with_classes, print_metrics};
use super::data::{LabelArgs, LimitArgs};
use anyhow::bail;
use clap::Args;
use privxray::pipeline;
use privxray::train;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// A checkpoint written by `privxray train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset root; test/ and val/ are merged (a folder with NORMAL/ and PNEUMONIA/ directly
    /// is used whole).
    #[arg(long)]
    pub data: PathBuf,
    /// Import caps (as `preprocess`).
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Labels (as `preprocess`).
    #[command(flatten)]
    pub labels: LabelArgs,
    #[arg(long)]
    pub json: bool,
}

pub fn evaluate_cmd(args: EvaluateArgs) -> anyhow::Result<()> {
    let (model, classes) = load_model_with_classes(&args.model)?;
    let set = load_dataset(
        &args.data,
        model.kind().technique(),
        &args.limits,
        &args.labels.labelling_for(&classes),
    )?;
    if set.classes != classes {
        bail!(
            "{} tells apart {classes}; the data at {} have {} (choose the labelling with --labels)",
            args.model.display(),
            args.data.display(),
            set.classes
        );
    }
    let eval = pipeline::subset(&set, &set.evaluation_indices())?;
    if eval.is_empty() {
        bail!(
            "{} has no test/ or val/ images to evaluate on",
            args.data.display()
        );
    }
    let m = train::evaluate(&model, &eval, 64)?;
    print_metrics(&m, args.json, None);
    Ok(())
}
