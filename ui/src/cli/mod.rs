//! Command-line definitions and dispatch. One module per group of subcommands.

mod bench;
mod data;
mod plot;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "privxray",
    version,
    about = "Privacy-preserving pneumonia detection on chest X-rays: preprocessing, training, \
             DP-SGD and three-party private prediction",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write synthetic chest radiographs in the Kermany folder layout (labelled SYNTHETIC).
    Synth(data::SynthArgs),
    /// Import a dataset folder and preprocess it with technique 1 or 2, using a cache.
    Preprocess(data::PreprocessArgs),
    /// Accuracy and loss curves of a training run as PNGs.
    Plot(plot::PlotArgs),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Synth(a)) => data::synth(a),
        Some(Command::Preprocess(a)) => data::preprocess(a),
        Some(Command::Plot(a)) => plot::run(a),
        Some(Command::Bench(b)) => bench::run(b),
        None => data::default_job(),
    }
}
