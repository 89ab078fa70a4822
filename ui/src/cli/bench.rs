//! `privxray bench ...`: benchmarks that print figures (never timed tests).

use clap::{Args, Subcommand};
use privxray::model::Technique;
use privxray::preprocess;
use privxray::synth::{self, SynthOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Images/s of both preprocessing techniques on generated 1300x1000 JPEGs.
    Preprocess(PreprocessBench),
    /// Noise channel throughput (six directions between three parties) and handshake time.
    Net(NetBench),
    /// Private inference of dnn-max (random weights) by three in-process parties: seconds,
    /// bytes between parties and rounds for one image and a batch, beside plaintext inference.
    Mpc(MpcBench),
    /// Training images/s (plain and DP-SGD, batch 32 and 64) and inference latency of dnn-max.
    Train(TrainBench),
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
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub batches: Vec<usize>,
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
        BenchCommand::Preprocess(b) => preprocess_bench(b),
        BenchCommand::Net(b) => {
            let r = privxray::net::bench::run(privxray::net::bench::BenchSettings {
                message_bytes: b.message_bytes,
                rounds: b.rounds,
                handshakes: 20,
            })?;
            println!("{r}");
            Ok(())
        }
        BenchCommand::Mpc(b) => mpc_bench(b),
        BenchCommand::Train(b) => {
            let r = privxray::train::bench::run(b.steps, b.cuda)?;
            if b.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{r}");
            }
            Ok(())
        }
    }
}

fn preprocess_bench(b: PreprocessBench) -> anyhow::Result<()> {
    let tmp;
    let dir = match b.dir {
        Some(d) => d,
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };
    let mut opts = SynthOptions::new(b.count, 42);
    opts.width_range = (1300, 1300);
    opts.aspect_range = (1000.0 / 1300.0, 1000.0 / 1300.0);
    let t0 = Instant::now();
    // Noisy synthetic radiographs (sensor noise sigma 3-9 grey levels), 1300x1000.
    synth::generate(&dir, &opts)?;
    println!(
        "generated {} 1300x1000 JPEGs in {:.1} s ({} threads)",
        b.count,
        t0.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    for t in [Technique::T1, Technique::T2] {
        // Best of three, no cache: decode + resize every time.
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t0 = Instant::now();
            let (set, _) = preprocess::run(&dir, t, None, &|_| {})?;
            assert_eq!(set.len(), b.count);
            best = best.min(t0.elapsed().as_secs_f64());
        }
        println!(
            "technique {}: {:.1} images/s ({:.3} s for {})",
            t.number(),
            b.count as f64 / best,
            best,
            b.count
        );
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("privxray-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn mpc_bench(b: MpcBench) -> anyhow::Result<()> {
    use privxray::model::{arch::random_spec, ModelKind};
    let spec = random_spec(ModelKind::DnnMax, 1.0, 7);
    let report = privxray::mpc::bench_report(
        &spec,
        &b.batches,
        std::time::Duration::from_millis(b.latency_ms),
    )?;
    println!("{report}");
    if b.loopback {
        println!(
            "{}",
            privxray::party::bench::loopback_report(&spec, &b.batches)?
        );
    }
    // Plaintext inference with the training engine (candle), batch 1, for comparison.
    let device = candle_core::Device::Cpu;
    let (model, _) = privxray::train::Model::init(ModelKind::DnnMax, 1.0, 7, &device)?;
    let x = candle_core::Tensor::zeros((1, 1, 150, 125), candle_core::DType::F32, &device)?;
    model.forward_with(&x, None)?;
    let runs = 20;
    let t0 = Instant::now();
    for _ in 0..runs {
        model.forward_with(&x, None)?;
    }
    println!(
        "plaintext dnn-max inference with candle, batch 1: {:.2} ms",
        t0.elapsed().as_secs_f64() * 1e3 / runs as f64
    );
    Ok(())
}
