//! `sweep`: one training per noise multiplier, each evaluated on the test set, with the table,
//! the JSON and the accuracy-against-epsilon chart. Takes the argument groups it shares with
//! `train` from `run_args`; each run goes through `pipeline::train_then_evaluate`. Imports
//! `common`, `data`, `progress` and `run_args` among the command modules.

use super::common::load_dataset;
use super::data::{LabelArgs, LimitArgs};
use super::progress::Progress;
use super::run_args::{DpArgs, TrainSettings};
use anyhow::{bail, Context};
use clap::Args;
use privxray::pipeline::{self, Splits};
use privxray::privacy::{self, AccountantKind, Delta, NoiseMultiplier};
use privxray::train::accounting::DpSegment;
use privxray::train::dpsgd::NEIGHBOURING;
use privxray::train::{self, TrainControl};
use serde::Serialize;
use std::path::PathBuf;

// `train`'s groups with sweep's own defaults and help lines, as before they were shared.
#[derive(Debug, Args)]
#[command(
    mut_arg("model", |arg| arg.required(false).default_value("dnn-max").help(None::<&str>)),
    mut_arg("epochs", |arg| arg.default_value("5")),
    mut_arg("seed", |arg| arg.help(None::<&str>)),
    mut_arg("class_weights", |arg| arg.help(
        "Class weights NORMAL:PNEUMONIA or auto, as `train --class-weights`"
    )),
    mut_arg("freeze", |arg| arg.help(
        "Layers kept at their initial weights in every run, as `train --freeze`"
    )),
    mut_arg("ema", |arg| arg.help("Release the weight average in every run, as `train --ema`")),
    mut_arg("dropout", |arg| arg.help(
        "Training dropout rate in every run, as `train --dropout`"
    )),
)]
pub struct SweepArgs {
    /// Dataset root.
    #[arg(long)]
    pub data: PathBuf,
    /// Comma-separated noise multipliers; 0 trains without DP.
    #[arg(long, value_delimiter = ',', required = true)]
    pub noise_multipliers: Vec<f64>,
    #[command(flatten)]
    pub settings: TrainSettings,
    #[command(flatten)]
    pub dp_settings: DpArgs,
    /// Folder for sweep.json, sweep.md and frontier.png.
    #[arg(long, default_value = "data/sweep")]
    pub out: PathBuf,
    /// Import caps (as `preprocess`).
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Labels (as `preprocess`).
    #[command(flatten)]
    pub labels: LabelArgs,
}

#[derive(Debug, Serialize)]
struct SweepRow {
    noise_multiplier: f64,
    epsilon: Option<f64>,
    accuracy: f64,
    recall: f64,
    specificity: f64,
    epochs_run: usize,
}

pub fn sweep_cmd(args: SweepArgs) -> anyhow::Result<()> {
    for &sigma in &args.noise_multipliers {
        // Checked before any run: a negative value must not quietly train without DP.
        NoiseMultiplier::new(sigma).context("--noise-multipliers")?;
    }
    let set = load_dataset(
        &args.data,
        args.settings.model.technique(),
        &args.limits,
        &args.labels.labelling(),
    )?;
    let data = pipeline::split(&set)?;
    if data.evaluation.is_empty() {
        bail!(
            "{} has no test/ or val/ images to measure accuracy on",
            args.data.display()
        );
    }
    let mut rows = Vec::new();
    // Every run's ledger: choosing the best run looks at all of them.
    let (mut all_segments, mut any_plain) = (Vec::new(), false);
    for &sigma in &args.noise_multipliers {
        let (row, ledger) = sweep_run(&args, sigma, &data)?;
        match ledger {
            l if sigma > 0.0 && !l.is_empty() => all_segments.extend(l),
            _ => any_plain = true,
        }
        rows.push(row);
    }
    std::fs::create_dir_all(&args.out)?;
    // Releasing the best of these runs (by test accuracy) is post-processing of all of them:
    // its epsilon is that of every run's releases composed (RDP), an upper bound; Papernot
    // and Steinke 2022 give tighter ones for random search, not implemented here.
    let delta = Delta::new(args.dp_settings.delta)?;
    let selection = (!any_plain).then(|| train::accounting::epsilon_of(&all_segments, delta));
    let md = sweep_table(&rows, selection, args.dp_settings.delta);
    print!("{md}");
    privxray::atomic::write_atomic(&args.out.join("sweep.md"), md.as_bytes())?;
    privxray::atomic::write_atomic(
        &args.out.join("sweep.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "runs": rows,
            "epsilon_of_selection": selection,
            "neighbouring": NEIGHBOURING,
        }))?
        .as_bytes(),
    )?;
    let png = args.out.join("frontier.png");
    privxray::plot::write_png(&frontier_chart(&args, &rows), &png, 900, 560)?;
    eprintln!("wrote {}, sweep.md and sweep.json", png.display());
    Ok(())
}

/// One run at noise multiplier `sigma` (0: without DP), evaluated on the test set: its row and
/// the privacy ledger of its best checkpoint.
fn sweep_run(
    args: &SweepArgs,
    sigma: f64,
    data: &Splits,
) -> anyhow::Result<(SweepRow, Vec<DpSegment>)> {
    eprintln!("sweep: noise multiplier {sigma}");
    let mut settings = args
        .settings
        .run_settings(0.9, args.out.join(format!("sigma-{sigma}")));
    if sigma > 0.0 {
        settings.dp = Some(args.dp_settings.settings(sigma));
    }
    let mut progress = Progress::new(None)?;
    let report = pipeline::train_then_evaluate(
        settings.config()?,
        data.train.clone(),
        data.validation.clone(),
        &data.evaluation,
        TrainControl::new(),
        "train-engine",
        |event| progress.event(event),
    )?;
    let best = report.best.context("training wrote no checkpoint")?;
    let metrics = best
        .test
        .context("no test/ or val/ images to measure accuracy on")?;
    let outcome = report.outcome;
    let epsilon = if sigma > 0.0 {
        match outcome.epsilon {
            Some(e) => Some(e),
            None => {
                // Poisson sampling at q = B/N for every step run.
                let batch_size = args.settings.batch_size as u64;
                let n = data.train.len() as u64;
                let q = privacy::sample_rate(batch_size, n)?;
                let steps = privacy::steps_for(n, batch_size, outcome.epochs_run as u64)?;
                Some(
                    privacy::epsilon(
                        AccountantKind::Rdp,
                        q,
                        NoiseMultiplier::new(sigma)?,
                        steps,
                        Delta::new(args.dp_settings.delta)?,
                    )?
                    .epsilon,
                )
            }
        }
    } else {
        None
    };
    let row = SweepRow {
        noise_multiplier: sigma,
        epsilon,
        accuracy: metrics.accuracy,
        recall: metrics.recall,
        specificity: metrics.specificity,
        epochs_run: outcome.epochs_run,
    };
    Ok((row, best.meta.privacy_ledger))
}

/// sweep.md: a row per run, then the epsilon of releasing the best of them.
fn sweep_table(rows: &[SweepRow], selection: Option<f64>, delta: f64) -> String {
    let mut md = String::from(
        "| noise multiplier | epsilon | test accuracy | sensitivity | specificity | epochs |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {} |\n",
            r.noise_multiplier,
            r.epsilon
                .map(|e| format!("{e:.3}"))
                .unwrap_or_else(|| "inf (no DP)".into()),
            r.accuracy,
            r.recall,
            r.specificity,
            r.epochs_run
        ));
    }
    md.push_str(&format!(
        "\nepsilon of releasing the best of these {} runs (all runs composed, {NEIGHBOURING} neighbours, delta {}): {}\n",
        rows.len(),
        delta,
        selection
            .map(|e| format!("{e:.3}"))
            .unwrap_or_else(|| "inf (a run without DP)".into())
    ));
    md
}

/// Test accuracy against epsilon; runs without DP drawn at the right edge.
fn frontier_chart(args: &SweepArgs, rows: &[SweepRow]) -> privxray::plot::Chart {
    let finite: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.epsilon.map(|e| (e, r.accuracy)))
        .collect();
    let right = finite.iter().map(|p| p.0).fold(1.0, f64::max) * 1.2;
    let mut series = vec![privxray::plot::Series {
        label: "DP-SGD".into(),
        points: finite,
    }];
    let no_dp: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.epsilon.is_none())
        .map(|r| (right, r.accuracy))
        .collect();
    if !no_dp.is_empty() {
        series.push(privxray::plot::Series {
            label: "no DP (epsilon infinite, drawn at right)".into(),
            points: no_dp,
        });
    }
    privxray::plot::Chart {
        title: format!(
            "{}: test accuracy against epsilon (delta {})",
            args.settings.model, args.dp_settings.delta
        ),
        x_label: "epsilon".into(),
        y_label: "test accuracy".into(),
        series,
        points_only: true,
    }
}
