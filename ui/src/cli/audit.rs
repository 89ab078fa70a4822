//! `audit`: membership inference against a trained model, by loss threshold over the dataset
//! or by the canaries `train --canaries` planted.
//!
//! Imports the engine (`pipeline`, `privacy`, `train`) and `super::{common, data}`; never `tui`
//! or `backends`.

use super::common::load_dataset;
use super::data::{LabelArgs, LimitArgs};
use anyhow::{bail, Context};
use clap::Args;
use privxray::pipeline::{self, Splits};
use privxray::privacy;
use privxray::train::engine::model_from_checkpoint;
use privxray::train::Model;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A model file's claim for the audit lines: the figure with its note, or infinite.
fn claim_text(epsilon: Option<f64>, warning: Option<String>) -> String {
    match (epsilon, warning) {
        (Some(e), Some(w)) => format!("{e:.3} ({w})"),
        (Some(e), None) => format!("{e:.3}"),
        (None, _) => "infinite (no DP)".into(),
    }
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A checkpoint written by `privxray train`.
    #[arg(long)]
    pub model: PathBuf,
    /// The dataset the model was trained on (for the loss-threshold attack; not needed with
    /// --canary-file).
    #[arg(long, required_unless_present = "canary_file")]
    pub data: Option<PathBuf>,
    /// The canary file `train --canaries M --canary-file F` wrote: scores every canary with the
    /// model, guesses which were trained on, and turns the correct guesses into a lower bound
    /// on epsilon at 95% confidence (Steinke, Nasr and Jagielski 2023).
    #[arg(long, value_name = "FILE")]
    pub canary_file: Option<PathBuf>,
    /// Import caps (as `preprocess`).
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Labels (as `preprocess`).
    #[command(flatten)]
    pub labels: LabelArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct AuditOutput {
    #[serde(flatten)]
    report: privacy::AuditReport,
    epsilon: Option<f64>,
    /// "epsilon not valid: ..." for a run with reproducible DP randomness.
    #[serde(skip_serializing_if = "Option::is_none")]
    epsilon_warning: Option<String>,
    model: String,
}

#[derive(Debug, Serialize)]
struct CanaryAuditOutput {
    epsilon_lower_bound: f64,
    /// The claim in the model file (None for a model trained without DP).
    epsilon: Option<f64>,
    /// "epsilon not valid: ..." for a run with reproducible DP randomness.
    #[serde(skip_serializing_if = "Option::is_none")]
    epsilon_warning: Option<String>,
    canaries: usize,
    guesses: usize,
    correct: usize,
    delta: f64,
    confidence: f64,
    tried: Vec<privacy::canary::GuessOutcome>,
    model: String,
}

/// `audit --canary-file`: the one-run lower bound on epsilon beside the model's claim.
fn canary_audit_cmd(
    args: &AuditArgs,
    file: &Path,
    model: &Model,
    meta: &privxray::train::checkpoint::CheckpointMeta,
) -> anyhow::Result<()> {
    let canaries = privxray::train::CanarySet::load(file)?;
    // The bound is for the delta the claim was made at (0, pure DP, without DP).
    let delta = meta.dp.as_ref().map(|d| d.delta).unwrap_or(0.0);
    let r = canaries.audit(model, delta)?;
    let out = CanaryAuditOutput {
        epsilon_lower_bound: r.epsilon_lower_bound,
        epsilon: meta.epsilon,
        epsilon_warning: meta.epsilon_warning(),
        canaries: r.canaries,
        guesses: r.guesses,
        correct: r.correct,
        delta: r.delta,
        confidence: r.confidence,
        tried: r.tried,
        model: meta.model.to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "canary audit of {}: epsilon >= {:.3} at {:.0}% confidence ({} of {} guesses right on {} canaries, delta {}); claimed epsilon {}",
            out.model,
            out.epsilon_lower_bound,
            100.0 * out.confidence,
            out.correct,
            out.guesses,
            out.canaries,
            out.delta,
            claim_text(out.epsilon, out.epsilon_warning.clone())
        );
        if let Some(e) = out.epsilon.filter(|&e| out.epsilon_lower_bound > e) {
            println!(
                "WARNING: the lower bound exceeds the claimed epsilon {e:.3}: the DP guarantee \
                 does not hold for this run (or a 5% chance event happened)"
            );
        }
    }
    Ok(())
}

pub fn audit_cmd(args: AuditArgs) -> anyhow::Result<()> {
    let (model, _, meta) = model_from_checkpoint(&args.model, &candle_core::Device::Cpu)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    if let Some(file) = &args.canary_file {
        return canary_audit_cmd(&args, file, &model, &meta);
    }
    let data = args
        .data
        .as_deref()
        .context("--data is needed without --canary-file")?;
    let set = load_dataset(
        data,
        model.kind().technique(),
        &args.limits,
        &args.labels.labelling_for(&meta.classes),
    )?;
    let Splits {
        train: members,
        evaluation: non_members,
        ..
    } = pipeline::split(&set)?;
    if non_members.is_empty() {
        bail!(
            "{} has no test/ or val/ images to use as non-members",
            data.display()
        );
    }
    let report = pipeline::membership_audit(&model, &members, &non_members)?;
    let out = AuditOutput {
        report,
        epsilon: meta.epsilon,
        epsilon_warning: meta.epsilon_warning(),
        model: meta.model.to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "membership inference (loss threshold) on {}: attack AUC {:.4}, advantage {:.4} ({} members, {} non-members); epsilon {}",
            out.model,
            out.report.auc,
            out.report.advantage,
            out.report.members,
            out.report.non_members,
            claim_text(out.epsilon, out.epsilon_warning.clone())
        );
    }
    Ok(())
}
