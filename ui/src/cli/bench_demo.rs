//! `privxray bench demo`: what a first run gives, measured. The default data source as the Data
//! tab builds it (the bundled real samples with a freshly generated default SYNTHETIC set), the
//! Train tab's first-run settings ([`InteractiveSettings::default`]) through the pipeline's one
//! translation into the engine's configuration and its `train_then_evaluate`, run with DP off,
//! at the default noise multiplier, and at other noise multipliers. Prints test accuracy,
//! epsilon and seconds per run, beside the goals a first run must meet. A measurement, never a
//! test: the figures depend on the machine and its load.
//!
//! Imports the engine (`pipeline`, `train`, `model`, `synth`), `super::data` for the bundled
//! samples' folder and `super::scratch`; no other sibling, never `tui` or `backends`.

use super::data::bundled_samples;
use super::scratch::Scratch;
use anyhow::Context;
use clap::Args;
use privxray::pipeline::{self, DpChoice, InteractiveSettings, PipelineError, Splits};
use privxray::train::{TrainControl, TrainingEvent};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// DP off must reach this test accuracy within [`PLAIN_SECONDS`].
const PLAIN_ACCURACY: f64 = 0.90;
const PLAIN_SECONDS: f64 = 120.0;
/// DP at the default noise multiplier: this accuracy at epsilon at most [`DP_EPSILON`], within
/// [`DP_SECONDS`].
const DP_ACCURACY: f64 = 0.80;
const DP_EPSILON: f64 = 10.0;
const DP_SECONDS: f64 = 240.0;

#[derive(Debug, Args)]
pub struct DemoBench {
    /// The runs, in order: `off` (DP off), `default` (the default noise multiplier) or a noise
    /// multiplier. The default ends with 0.5 and 3, the pair a first run's frontier must tell
    /// apart.
    #[arg(long, value_delimiter = ',', default_value = "off,default,0.5,3")]
    pub runs: Vec<DemoRun>,
    /// Folder for the synthetic set (generated there when it has no train/; default: a fresh
    /// temporary folder, so nothing cached helps).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the results as JSON on stdout as well.
    #[arg(long)]
    pub json: bool,
}

/// One run of `bench demo`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DemoRun {
    Off,
    Default,
    Sigma(f64),
}

impl std::str::FromStr for DemoRun {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" => Ok(DemoRun::Off),
            "default" => Ok(DemoRun::Default),
            v => match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok(DemoRun::Sigma(x)),
                _ => Err(format!(
                    "run {v:?}: expected off, default or a positive noise multiplier"
                )),
            },
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct DemoRow {
    /// "off", "default" or "sigma".
    pub run: String,
    pub noise_multiplier: Option<f64>,
    pub test_accuracy: f64,
    pub epsilon: Option<f64>,
    pub delta: Option<f64>,
    /// From pressing start to the best checkpoint measured on the test set.
    pub seconds: f64,
    pub epochs: usize,
}

pub fn demo_bench(bench: DemoBench) -> anyhow::Result<()> {
    let tmp = Scratch::new("demo")?;
    let synthetic = bench
        .dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("synthetic-easy"));
    let opts = pipeline::default_synthetic_options();
    let start = Instant::now();
    let generated = pipeline::ensure_synthetic(&synthetic, &opts, || {
        eprintln!(
            "generating {} {} SYNTHETIC images in {}",
            opts.count,
            opts.difficulty.name(),
            synthetic.display()
        )
    })?;
    let generate_s = start.elapsed().as_secs_f64();
    let first = InteractiveSettings::default();
    let samples = bundled_samples();
    let start = Instant::now();
    let folders: [&Path; 2] = [&samples, &synthetic];
    let (data, _) =
        pipeline::preprocess_folders(&folders, first.model.technique(), None, &|_, _, _| {})?;
    eprintln!(
        "data: {} images (bundled real samples + SYNTHETIC){}, preprocessed in {:.1} s",
        data.items.len(),
        if generated {
            format!(", generated in {generate_s:.1} s")
        } else {
            String::new()
        },
        start.elapsed().as_secs_f64()
    );
    let splits = pipeline::split(&data)?;
    let default_dp = first.dp.unwrap_or(pipeline::DEFAULT_DP);
    let mut rows = Vec::with_capacity(bench.runs.len());
    for run in &bench.runs {
        let (run, dp) = match *run {
            DemoRun::Off => ("off", None),
            DemoRun::Default => ("default", Some(default_dp)),
            DemoRun::Sigma(sigma) => (
                "sigma",
                Some(DpChoice {
                    noise_multiplier: sigma,
                    ..default_dp
                }),
            ),
        };
        let settings = first.clone().with_dp(dp);
        rows.push(measure(run, &settings, &splits, tmp.path())?);
    }
    print_table(&rows, &first);
    if bench.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

/// One run of `settings`, timed from start to its best checkpoint's test accuracy.
fn measure(
    run: &str,
    settings: &InteractiveSettings,
    splits: &Splits,
    scratch: &Path,
) -> anyhow::Result<DemoRow> {
    let sigma = settings.dp.map(|d| d.noise_multiplier);
    let label = sigma.map_or("DP off".to_string(), |s| format!("sigma {s}"));
    let dir = scratch.join(format!("checkpoints-{}", label.replace(' ', "-")));
    // The Train tab's own translation: VGG16 would be narrowed on a CPU there; the DNN models
    // ignore the width.
    let config = settings.run_settings(1.0, dir)?.config()?;
    let start = Instant::now();
    let report = pipeline::train_then_evaluate(
        config,
        splits.train.clone(),
        splits.validation.clone(),
        &splits.evaluation,
        TrainControl::new(),
        "bench-demo",
        |event| {
            if let TrainingEvent::Epoch { epoch, val_acc, .. } = event {
                eprintln!(
                    "  {label}: epoch {} validation accuracy {:.3} at {:.0} s",
                    epoch + 1,
                    val_acc,
                    start.elapsed().as_secs_f64()
                );
            }
            Ok::<(), PipelineError>(())
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let test_accuracy = report
        .best
        .as_ref()
        .and_then(|b| b.test.as_ref())
        .map(|m| m.accuracy)
        .context("the run wrote no checkpoint or the test split is empty")?;
    Ok(DemoRow {
        run: run.into(),
        noise_multiplier: sigma,
        test_accuracy,
        epsilon: report.outcome.epsilon,
        delta: settings.dp.map(|d| d.delta),
        seconds,
        epochs: report.outcome.epochs_run,
    })
}

fn print_table(rows: &[DemoRow], first: &InteractiveSettings) {
    println!(
        "first-run settings: {} {} epochs, batch {}, {:?} at {} under DP ({:?} at {} without), \
         frozen [{}], EMA {:?}, dropout {:?}",
        first.model,
        first.epochs,
        first.batch_size,
        pipeline::DP_OPTIMIZER.0,
        pipeline::DP_OPTIMIZER.1,
        pipeline::PLAIN_OPTIMIZER.0,
        pipeline::PLAIN_OPTIMIZER.1,
        first.frozen.join(", "),
        first.ema,
        first.dropout
    );
    println!("run      sigma  test acc  epsilon (delta)    seconds  goal");
    for r in rows {
        let sigma = r.noise_multiplier.map_or("-".into(), |s| format!("{s}"));
        let eps = match (r.epsilon, r.delta) {
            (Some(e), Some(d)) => format!("{e:.2} ({d:e})"),
            _ => "-".into(),
        };
        let goal = match r.run.as_str() {
            "off" => verdict(
                r.test_accuracy >= PLAIN_ACCURACY && r.seconds <= PLAIN_SECONDS,
                &format!(">= {PLAIN_ACCURACY} within {PLAIN_SECONDS} s"),
            ),
            "default" => verdict(
                r.test_accuracy >= DP_ACCURACY
                    && r.epsilon.is_some_and(|e| e <= DP_EPSILON)
                    && r.seconds <= DP_SECONDS,
                &format!(">= {DP_ACCURACY} at epsilon <= {DP_EPSILON} within {DP_SECONDS} s"),
            ),
            _ => String::new(),
        };
        println!(
            "{:<8} {:>5}  {:>8.4}  {:<17} {:>8.1}  {}",
            r.run, sigma, r.test_accuracy, eps, r.seconds, goal
        );
    }
    let at = |s: f64| {
        rows.iter()
            .find(|r| r.run == "sigma" && r.noise_multiplier == Some(s))
            .map(|r| r.test_accuracy)
    };
    if let (Some(low), Some(high)) = (at(0.5), at(3.0)) {
        println!(
            "sigma 3 below sigma 0.5: {} ({high:.4} against {low:.4})",
            if high < low { "yes" } else { "NO" }
        );
    }
}

fn verdict(met: bool, goal: &str) -> String {
    format!("{} ({goal})", if met { "met" } else { "NOT met" })
}
