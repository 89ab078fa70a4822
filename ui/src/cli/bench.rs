//! `privxray bench ...`: benchmarks that print figures (never timed tests).
//!
//! Imports the engine's benchmarks (`model`, `mpc`, `net`, `party`, `preprocess`, `synth`,
//! `train`), its `bench_demo` sibling for `bench demo` and `scratch`; never `tui` or `backends`.

use super::scratch::Scratch;
use clap::{Args, Subcommand};
use privxray::model::{ModelKind, Technique};
use privxray::preprocess;
use privxray::synth::{self, SynthOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Images/s of both preprocessing techniques on generated 1300x1000 JPEGs.
    Preprocess(PreprocessBench),
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

#[derive(Debug, Args)]
pub struct PreprocessBench {
    /// Number of generated images.
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Folder for the generated images (default: a temporary folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Preprocess(bench) => preprocess_bench(bench),
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

fn preprocess_bench(bench: PreprocessBench) -> anyhow::Result<()> {
    let tmp;
    let dir = match bench.dir {
        Some(d) => d,
        None => {
            tmp = Scratch::new("bench")?;
            tmp.path().to_path_buf()
        }
    };
    let mut opts = SynthOptions::new(bench.count, 42);
    opts.width_range = (1300, 1300);
    opts.aspect_range = (1000.0 / 1300.0, 1000.0 / 1300.0);
    let t0 = Instant::now();
    // Noisy synthetic radiographs (sensor noise sigma 3-9 grey levels), 1300x1000.
    synth::generate(&dir, &opts)?;
    println!(
        "generated {} 1300x1000 JPEGs in {:.1} s ({} threads)",
        bench.count,
        t0.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    for technique in [Technique::T1, Technique::T2] {
        // Best of three, no cache: decode + resize every time.
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t0 = Instant::now();
            let (set, _) = preprocess::run(&dir, technique, None, &|_| {})?;
            assert_eq!(set.len(), bench.count);
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!(
            "technique {}: {:.1} images/s ({:.3} s for {})",
            technique.number(),
            bench.count as f64 / best,
            best,
            bench.count
        );
    }
    Ok(())
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
            privxray::party::bench::loopback_report(&spec, &batches)?
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
