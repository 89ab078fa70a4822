//! `train`: the training engine from the command line. Its flags become the pipeline's run
//! settings here (the groups it shares with `sweep` are in `run_args`), the run goes through
//! `pipeline::train_then_evaluate`, and the best checkpoint is copied and its metrics printed.
//! Imports `common`, `data`, `progress` and `run_args` among the command modules.

use super::common::{epsilon_text, load_dataset, print_metrics};
use super::data::{LabelArgs, LimitArgs};
use super::progress::Progress;
use super::run_args::{DpArgs, TrainSettings};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use privxray::pipeline::{self, RunSettings, Splits};
use privxray::train::dpsgd::{NoiseSeed, Sampling, SamplingSeed};
use privxray::train::{self, TrainControl, TrainData};
use std::path::Path;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SamplingArg {
    Poisson,
    Shuffled,
}

#[derive(Debug, Args, Clone)]
pub struct TrainArgs {
    /// Dataset root (train/ for training and validation; test/ and val/ merged for the final
    /// evaluation), e.g. data/chest_xray or a `privxray synth` folder.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub settings: TrainSettings,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Stop after this many epochs without a better validation accuracy (0: never).
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Where the best checkpoint (by validation accuracy) is written.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// JSON-lines event stream for scripts and `privxray plot`.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Width multiplier of the VGG16 models (1.0 is VGG16; small values fit a CPU).
    #[arg(long, default_value_t = 1.0)]
    pub width: f32,
    /// Continue from this checkpoint (a `-last` checkpoint keeps the optimizer state).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// ImageNet VGG16 weights (safetensors) for the convolutions of vgg16-1/vgg16-2.
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
    /// Folder for `-best` and `-last` checkpoints.
    #[arg(long, default_value = "data/checkpoints")]
    pub checkpoint_dir: PathBuf,
    /// Train with DP-SGD.
    #[arg(long)]
    pub dp: bool,
    #[arg(long, default_value_t = 1.0)]
    pub noise_multiplier: f64,
    #[command(flatten)]
    pub dp_settings: DpArgs,
    /// Examples per microbatch (1: per-example clipping).
    #[arg(long, default_value_t = 1)]
    pub microbatch: usize,
    /// Augmentation multiplicity under DP-SGD: each example's gradient is averaged over K
    /// copies (itself and K-1 shifted by up to 8 pixels and flipped left-right at random)
    /// before the clip, as De et al. 2022. Same privacy; K times the compute per step.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub augmentations: usize,
    /// Most examples whose per-example gradients are computed at once; a larger (logical)
    /// --batch-size is processed in parts of this size and noised once, so only memory changes
    /// (default: what fits about 2 GB of activations and per-example gradients).
    #[arg(long, value_name = "N")]
    pub physical_batch_size: Option<usize>,
    #[arg(long, value_enum, default_value = "poisson")]
    pub sampling: SamplingArg,
    /// Fixed seed for the DP noise: reproducible but NOT SECURE.
    #[arg(long)]
    pub insecure_noise_seed: Option<u64>,
    /// Fixed seed for DP-SGD's Poisson batch draws: reproducible but NOT PRIVATE (the run's
    /// epsilon is marked not valid). Without it the draws come from the OS CSPRNG and no file
    /// holds them; --seed never reaches them.
    #[arg(long)]
    pub insecure_sampling_seed: Option<u64>,
    /// Adapt the clip norm to this quantile of the per-example gradient norms (0.5: the
    /// median), estimated from a noisy count of examples under the clip released at each step
    /// (Andrew et al. 2021); its cost is in the ledger. --clip-norm is the starting value.
    #[arg(long, value_name = "QUANTILE")]
    pub adaptive_clip: Option<f64>,
    /// Add M canaries (noise images with random labels) to the training set, each included
    /// with probability 1/2 from the OS CSPRNG, for `privxray audit --canary-file` (a lower
    /// bound on epsilon from this one run). Needs --canary-file.
    #[arg(long, value_name = "M", default_value_t = 0, requires = "canary_file")]
    pub canaries: usize,
    /// Where the canaries and their inclusion choices are written (mode 0600) before training
    /// starts. PRIVATE: it says which canaries were trained on; never release it.
    #[arg(long, value_name = "FILE")]
    pub canary_file: Option<PathBuf>,
    /// Import caps (as `preprocess`).
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Labels (as `preprocess`).
    #[command(flatten)]
    pub labels: LabelArgs,
    /// Print the final evaluation as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The pipeline's settings of `train`'s flags; refuses DP-only flags without --dp.
fn run_settings(args: &TrainArgs) -> anyhow::Result<RunSettings> {
    let mut settings = args
        .settings
        .run_settings(args.momentum, args.checkpoint_dir.clone());
    settings.width = args.width;
    settings.patience = (args.patience > 0).then_some(args.patience);
    settings.resume = args.resume.clone();
    settings.init_weights = args.init_weights.clone();
    settings.prefer_gpu = args.device == DeviceArg::Cuda;
    if args.dp {
        let mut dp = args.dp_settings.settings(args.noise_multiplier);
        dp.microbatch = args.microbatch;
        dp.physical_batch = args.physical_batch_size;
        dp.augmentations = args.augmentations;
        dp.sampling = match args.sampling {
            SamplingArg::Poisson => Sampling::Poisson,
            SamplingArg::Shuffled => Sampling::Shuffled,
        };
        if let Some(seed) = args.insecure_noise_seed {
            dp.noise_seed = NoiseSeed::InsecureFixed(seed);
        }
        if let Some(seed) = args.insecure_sampling_seed {
            dp.sampling_seed = SamplingSeed::InsecureFixed(seed);
        }
        dp.adaptive_clip = args.adaptive_clip;
        settings.dp = Some(dp);
    } else if args.augmentations != 1 {
        bail!(
            "--augmentations {} needs --dp: it averages each example's gradient over copies \
             before DP-SGD's clip",
            args.augmentations
        );
    } else if args.insecure_sampling_seed.is_some() || args.adaptive_clip.is_some() {
        bail!("--insecure-sampling-seed and --adaptive-clip need --dp");
    }
    Ok(settings)
}

/// The warnings of DP randomness fixed by a flag: reproducible, and not secure or not private.
fn warn_insecure_seeds(args: &TrainArgs) {
    if !args.dp {
        return;
    }
    if let Some(seed) = args.insecure_noise_seed {
        eprintln!(
            "WARNING: --insecure-noise-seed {seed}: the DP noise is reproducible and NOT SECURE"
        );
    }
    if let Some(seed) = args.insecure_sampling_seed {
        eprintln!(
            "WARNING: --insecure-sampling-seed {seed}: the batches are reproducible and the \
             run is NOT PRIVATE (epsilon not valid)"
        );
    }
}

fn copy_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    privxray::atomic::write_atomic(to, &bytes).with_context(|| format!("writing {}", to.display()))
}

/// With `--canaries M`: draws M canaries, writes them and their inclusion choices to the
/// (private) canary file, and returns `train` with the included ones appended.
fn with_canaries(args: &TrainArgs, train: TrainData) -> anyhow::Result<TrainData> {
    let Some(file) = &args.canary_file else {
        return Ok(train);
    };
    if args.canaries == 0 {
        bail!(
            "--canary-file {} needs --canaries M (M > 0): there are no canaries to write",
            file.display()
        );
    }
    if args.resume.is_some() {
        bail!(
            "--canaries with --resume: the resumed run's earlier steps never saw these \
             canaries; start a fresh run to audit with canaries"
        );
    }
    let canaries = privxray::train::CanarySet::draw(args.canaries, train.shape())?;
    canaries.save(file)?;
    eprintln!(
        "canaries: {} of {} added to the training set; {} is PRIVATE (it says which), keep it \
         out of any release",
        canaries.included_count(),
        canaries.len(),
        file.display()
    );
    Ok(canaries.attach(&train)?)
}

/// Refuses a resume of a run that already has the epochs asked for, before anything is read
/// or written: a finished run is left as it is.
fn check_resume(args: &TrainArgs) -> anyhow::Result<()> {
    if let Some(resume) = &args.resume {
        let done = train::checkpoint::read_meta(resume)?.epoch;
        if done >= args.settings.epochs {
            bail!(
                "{}: already trained {done} epochs; ask for more with --epochs {}",
                resume.display(),
                done + 1
            );
        }
    }
    Ok(())
}

pub fn train_cmd(args: TrainArgs) -> anyhow::Result<()> {
    check_resume(&args)?;
    let set = load_dataset(
        &args.data,
        args.settings.model.technique(),
        &args.limits,
        &args.labels.labelling(),
    )?;
    let Splits {
        train,
        validation,
        evaluation,
    } = pipeline::split(&set)?;
    let train = with_canaries(&args, train)?;
    let config = run_settings(&args)?.config()?;
    warn_insecure_seeds(&args);
    let mut progress = Progress::new(args.metrics.as_deref())?;
    let report = pipeline::train_then_evaluate(
        config,
        train,
        validation,
        &evaluation,
        TrainControl::new(),
        "train-engine",
        |event| progress.event(event),
    )?;
    let best = report
        .best
        .context("the run ended before its first epoch finished: there is no model to write")?;
    if let Some(out) = &args.out {
        copy_atomic(&best.path, out)?;
        eprintln!("best checkpoint: {}", out.display());
    } else {
        eprintln!("best checkpoint: {}", best.path.display());
    }
    let Some(metrics) = best.test else {
        eprintln!("no test/ or val/ images: skipping the final evaluation");
        return Ok(());
    };
    let claim = best
        .meta
        .epsilon
        .map(|e| epsilon_text(e, best.meta.epsilon_warning()));
    print_metrics(&metrics, args.json, claim);
    Ok(())
}
