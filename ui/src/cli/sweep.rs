//! `sweep`: one training per noise multiplier, each evaluated on the test set, with the table,
//! the JSON and the accuracy-against-epsilon chart. Takes `train`'s shared argument groups.

use super::common::{load_dataset, load_model};
use super::data::LimitArgs;
use super::train::{run_training, DpSettings, TrainSettings};
use anyhow::{bail, Context};
use clap::Args;
use privxray::pipeline::{self, Splits};
use privxray::privacy::{self, AccountantKind, Delta, NoiseMultiplier};
use privxray::train::accounting::DpSegment;
use privxray::train::dpsgd::NEIGHBOURING;
use privxray::train::{self, TrainData};
use serde::Serialize;
use std::path::PathBuf;

// `train`'s groups with sweep's own defaults and help lines, as before they were shared.
#[derive(Debug, Args)]
#[command(
    mut_arg("model", |a| a.required(false).default_value("dnn-max").help(None::<&str>)),
    mut_arg("epochs", |a| a.default_value("5")),
    mut_arg("seed", |a| a.help(None::<&str>)),
    mut_arg("class_weights", |a| a.help(
        "Class weights NORMAL:PNEUMONIA or auto, as `train --class-weights`"
    )),
    mut_arg("freeze", |a| a.help(
        "Layers kept at their initial weights in every run, as `train --freeze`"
    )),
    mut_arg("ema", |a| a.help("Release the weight average in every run, as `train --ema`")),
    mut_arg("dropout", |a| a.help(
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
    pub dp_settings: DpSettings,
    /// Folder for sweep.json, sweep.md and frontier.png.
    #[arg(long, default_value = "data/sweep")]
    pub out: PathBuf,
    /// Import caps (as `preprocess`).
    #[command(flatten)]
    pub limits: LimitArgs,
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

/// The data a sweep's runs share.
struct SweepData {
    train: TrainData,
    validation: TrainData,
    evaluation: TrainData,
}

pub fn sweep_cmd(a: SweepArgs) -> anyhow::Result<()> {
    for &sigma in &a.noise_multipliers {
        // Checked before any run: a negative value must not quietly train without DP.
        NoiseMultiplier::new(sigma).context("--noise-multipliers")?;
    }
    let set = load_dataset(&a.data, a.settings.model.technique(), &a.limits)?;
    let Splits {
        train,
        validation,
        evaluation,
    } = pipeline::split(&set)?;
    if evaluation.is_empty() {
        bail!(
            "{} has no test/ or val/ images to measure accuracy on",
            a.data.display()
        );
    }
    let data = SweepData {
        train,
        validation,
        evaluation,
    };
    let mut rows = Vec::new();
    // Every run's ledger: choosing the best run looks at all of them.
    let (mut all_segments, mut any_plain) = (Vec::new(), false);
    for &sigma in &a.noise_multipliers {
        let (row, ledger) = sweep_run(&a, sigma, &data)?;
        match ledger {
            l if sigma > 0.0 && !l.is_empty() => all_segments.extend(l),
            _ => any_plain = true,
        }
        rows.push(row);
    }
    std::fs::create_dir_all(&a.out)?;
    // Releasing the best of these runs (by test accuracy) is post-processing of all of them:
    // its epsilon is that of every run's releases composed (RDP), an upper bound; Papernot
    // and Steinke 2022 give tighter ones for random search, not implemented here.
    let delta = Delta::new(a.dp_settings.delta)?;
    let selection = (!any_plain).then(|| train::accounting::epsilon_of(&all_segments, delta));
    let md = sweep_table(&rows, selection, a.dp_settings.delta);
    print!("{md}");
    privxray::atomic::write_atomic(&a.out.join("sweep.md"), md.as_bytes())?;
    privxray::atomic::write_atomic(
        &a.out.join("sweep.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "runs": rows,
            "epsilon_of_selection": selection,
            "neighbouring": NEIGHBOURING,
        }))?
        .as_bytes(),
    )?;
    let png = a.out.join("frontier.png");
    privxray::plot::write_png(&frontier_chart(&a, &rows), &png, 900, 560)?;
    eprintln!("wrote {}, sweep.md and sweep.json", png.display());
    Ok(())
}

/// One run at noise multiplier `sigma` (0: without DP), evaluated on the test set: its row and
/// the privacy ledger of its best checkpoint.
fn sweep_run(
    a: &SweepArgs,
    sigma: f64,
    data: &SweepData,
) -> anyhow::Result<(SweepRow, Vec<DpSegment>)> {
    eprintln!("sweep: noise multiplier {sigma}");
    let mut config = a.settings.config(0.9);
    config.patience = None;
    config.checkpoint_dir = Some(a.out.join(format!("sigma-{sigma}")));
    if sigma > 0.0 {
        config.dp = Some(a.dp_settings.config(sigma)?);
    }
    let outcome = run_training(
        config,
        data.train.clone(),
        data.validation.clone(),
        None,
        false,
    )?;
    let best = outcome
        .best_checkpoint
        .clone()
        .context("training wrote no checkpoint")?;
    let m = train::evaluate(&load_model(&best)?, &data.evaluation, 64)?;
    let ledger = train::checkpoint::read_meta(&best)?.privacy_ledger;
    let epsilon = if sigma > 0.0 {
        match outcome.epsilon {
            Some(e) => Some(e),
            None => {
                // Poisson sampling at q = B/N for every step run.
                let batch_size = a.settings.batch_size as u64;
                let n = data.train.len() as u64;
                let q = privacy::sample_rate(batch_size, n)?;
                let steps = privacy::steps_for(n, batch_size, outcome.epochs_run as u64)?;
                Some(
                    privacy::epsilon(
                        AccountantKind::Rdp,
                        q,
                        NoiseMultiplier::new(sigma)?,
                        steps,
                        Delta::new(a.dp_settings.delta)?,
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
        accuracy: m.accuracy,
        recall: m.recall,
        specificity: m.specificity,
        epochs_run: outcome.epochs_run,
    };
    Ok((row, ledger))
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
fn frontier_chart(a: &SweepArgs, rows: &[SweepRow]) -> privxray::plot::Chart {
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
            a.settings.model, a.dp_settings.delta
        ),
        x_label: "epsilon".into(),
        y_label: "test accuracy".into(),
        series,
        points_only: true,
    }
}
