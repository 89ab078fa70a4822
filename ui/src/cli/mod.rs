//! Command-line definitions and dispatch. One module per group of subcommands; argument groups
//! several commands share (`run_args`, `data::LimitArgs`) are flattened into them with
//! `#[command(flatten)]`, and the work goes through the engine's `pipeline`.
//!
//! Imports its children and `clap` only; the subcommands import the engine, never the other way.

mod audit;
mod bench;
mod bench_demo;
mod bench_preprocess;
mod common;
mod data;
mod epsilon;
mod evaluate;
mod interface;
mod keys;
mod party;
mod plot;
mod predict;
mod prediction;
mod progress;
mod run_args;
mod scratch;
mod stderr_log;
mod sweep;
mod train;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "privxray",
    version,
    about = "Privacy-preserving pneumonia detection on chest X-rays: preprocessing, training, \
             DP-SGD and three-party private prediction",
    long_about = None,
    after_help = "Without a subcommand the terminal interface starts. Its radiograph previews use \
                  real pixels where the terminal speaks the kitty, sixel or iTerm2 graphics \
                  protocol, half blocks otherwise. PRIVXRAY_GRAPHICS=auto|kitty|sixel|iterm2|\
                  halfblocks overrides the terminal query (e.g. under tmux); NO_COLOR gives plain \
                  text."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

// Parsed once per process: the size of the largest variant (train's many flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write synthetic chest radiographs in the Kermany folder layout (labelled SYNTHETIC).
    Synth(data::SynthArgs),
    /// Import a dataset folder and preprocess it with technique 1 or 2, using a cache.
    Preprocess(data::PreprocessArgs),
    /// Train a model (optionally with DP-SGD), keeping the best checkpoint by validation accuracy.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on the merged test and val sets.
    Evaluate(evaluate::EvaluateArgs),
    /// Classify images: plaintext, or privately with three secure-computation parties.
    Predict(predict::PredictArgs),
    /// Epsilon of a DP-SGD training, or the noise multiplier for a target epsilon.
    Epsilon(epsilon::EpsilonArgs),
    /// Membership-inference audit (loss threshold attack) of a trained model.
    Audit(audit::AuditArgs),
    /// Train one run per noise multiplier: a table and a PNG of test accuracy against epsilon.
    Sweep(sweep::SweepArgs),
    /// Accuracy and loss curves of a training run as PNGs.
    Plot(plot::PlotArgs),
    /// Write a Noise static private key and print its public key.
    Keygen(keys::KeygenArgs),
    /// Run one of the three secure-computation parties (serves until stopped).
    Party(party::PartyArgs),
    /// Secret-share a trained model to the three parties (as the model owner).
    ShareModel(party::ShareModelArgs),
    /// Open the terminal interface in demo mode: a guided tour of the four tabs.
    Demo,
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Synth(args)) => data::synth(args),
        Some(Command::Preprocess(args)) => data::preprocess(args),
        Some(Command::Train(args)) => train::train_cmd(args),
        Some(Command::Evaluate(args)) => evaluate::evaluate_cmd(args),
        Some(Command::Predict(args)) => predict::run(args),
        Some(Command::Epsilon(args)) => epsilon::epsilon_cmd(args),
        Some(Command::Audit(args)) => audit::audit_cmd(args),
        Some(Command::Sweep(args)) => sweep::sweep_cmd(args),
        Some(Command::Plot(args)) => plot::run(args),
        Some(Command::Keygen(args)) => keys::keygen(args),
        Some(Command::Party(args)) => party::party_cmd(args),
        Some(Command::ShareModel(args)) => party::share_model_cmd(args),
        Some(Command::Bench(command)) => bench::run(command),
        Some(Command::Demo) => interface::open(true),
        None => interface::default_entry(),
    }
}
