//! `privxray bench ...`: benchmarks that print figures (never timed tests).
//!
//! Imports the engine's benchmarks (`model`, `mpc`, `net`, `party`, `train`) and its
//! `bench_demo` and `bench_preprocess` siblings for those two; never `tui` or `backends`.

use clap::{Args, Subcommand};
use privxray::model::ModelKind;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Images/s of both preprocessing techniques (exact and reduced decoding) on a folder of
    /// images (--dir) or a generated set (--generate smooth|noisy), on --threads threads: the
    /// median of --runs timed runs after a warm-up. Compare with scripts/preprocess_reference.py
    /// on the same folder and worker count.
    Preprocess(super::bench_preprocess::PreprocessBench),
    /// Noise channel throughput (six directions between three parties) and handshake time.
    Net(NetBench),
    /// Private inference of one model (random weights; dnn-max unless --model) by three
    /// in-process parties: seconds, bytes between parties and rounds per image and per batch,
    /// beside plaintext inference.
    Mpc(MpcBench),
    /// Training images/s (plain and DP-SGD, batch 32 and 64) and inference latency of dnn-max.
    Train(TrainBench),
    /// What a first run gives: the Train tab's default settings on the default data source
    /// (bundled samples plus a fresh SYNTHETIC set), with DP off, at the default noise
    /// multiplier and at others: test accuracy, epsilon and seconds of each.
    Demo(super::bench_demo::DemoBench),
}

#[derive(Debug, Args)]
pub struct NetBench {
    /// Bytes per message.
    #[arg(long, default_value_t = 4 << 20)]
    pub message_bytes: usize,
    /// Messages each party sends each peer.
    #[arg(long, default_value_t = 32)]
    pub rounds: usize,
}

#[derive(Debug, Args)]
pub struct MpcBench {
    /// The model: dnn-max, dnn-av, vgg16-1 or vgg16-2 (He-uniform random weights; the cost of
    /// private inference does not depend on the weights).
    #[arg(long, default_value = "dnn-max")]
    pub model: ModelKind,
    /// Width multiplier of the VGG16 models (1.0 is the real VGG16; the DNN models ignore it).
    #[arg(long, default_value_t = 1.0)]
    pub width: f32,
    /// Batch sizes to measure (default: 1,16 for the DNN models, 1 for VGG16: a full-width
    /// VGG16-2 batch of 16 would hold 16 images' activations in each party).
    #[arg(long, value_delimiter = ',')]
    pub batches: Option<Vec<usize>>,
    /// Added one-way latency per message in milliseconds (models a network).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Also run each batch over real TCP on loopback with Noise channels (three threads with
    /// fresh keys), beside the in-memory run: the cost of the network and of encryption.
    #[arg(long)]
    pub loopback: bool,
    /// With --loopback: in-memory and loopback runs per batch, alternating; the report gives
    /// the median seconds and the median of the per-run ratios.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
}

#[derive(Debug, Args)]
pub struct TrainBench {
    /// Timed steps per configuration (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Use CUDA when built with the cuda feature and a GPU is present.
    #[arg(long)]
    pub cuda: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Preprocess(bench) => super::bench_preprocess::preprocess_bench(bench),
        BenchCommand::Net(bench) => {
            let r = privxray::net::bench::run(privxray::net::bench::BenchSettings {
                message_bytes: bench.message_bytes,
                rounds: bench.rounds,
                handshakes: 20,
            })?;
            println!("{r}");
            Ok(())
        }
        BenchCommand::Mpc(bench) => mpc_bench(bench),
        BenchCommand::Demo(bench) => super::bench_demo::demo_bench(bench),
        BenchCommand::Train(bench) => {
            let r = privxray::train::bench::run(bench.steps, bench.cuda)?;
            if bench.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{r}");
            }
            Ok(())
        }
    }
}

fn mpc_bench(bench: MpcBench) -> anyhow::Result<()> {
    use privxray::model::arch::random_spec;
    let kind = bench.model;
    let width = match kind {
        ModelKind::DnnAv | ModelKind::DnnMax => 1.0,
        ModelKind::Vgg16_1 | ModelKind::Vgg16_2 => {
            privxray::train::model::check_width(bench.width)?
        }
    };
    let batches = bench.batches.unwrap_or_else(|| match kind {
        ModelKind::DnnAv | ModelKind::DnnMax => vec![1, 16],
        ModelKind::Vgg16_1 | ModelKind::Vgg16_2 => vec![1],
    });
    if bench.runs == 0 {
        anyhow::bail!("--runs must be at least 1");
    }
    if batches.is_empty() || batches.contains(&0) {
        anyhow::bail!("--batches must list batch sizes of at least 1, found {batches:?}");
    }
    if width != 1.0 {
        println!("{kind} at width {width}");
    }
    let spec = random_spec(kind, width, 7);
    let report =
        privxray::mpc::bench_report(&spec, &batches, Duration::from_millis(bench.latency_ms))?;
    println!("{report}");
    if bench.loopback {
        println!(
            "{}",
            privxray::party::bench::loopback_report(&spec, &batches, bench.runs)?
        );
    }
    drop(spec);
    // Plaintext inference with the training engine (candle), batch 1, for comparison.
    let device = candle_core::Device::Cpu;
    let (model, _) = privxray::train::Model::init(kind, width, 7, &device)?;
    let [channels, rows, columns] = kind.technique().input_shape();
    let x = candle_core::Tensor::zeros(
        (1, channels, rows, columns),
        candle_core::DType::F32,
        &device,
    )?;
    model.forward_with(&x, None)?;
    let runs = match kind {
        ModelKind::DnnAv | ModelKind::DnnMax => 20,
        ModelKind::Vgg16_1 | ModelKind::Vgg16_2 => 3,
    };
    let t0 = Instant::now();
    for _ in 0..runs {
        model.forward_with(&x, None)?;
    }
    println!(
        "plaintext {kind} inference with candle, batch 1: {:.2} ms",
        t0.elapsed().as_secs_f64() * 1e3 / runs as f64
    );
    Ok(())
}
