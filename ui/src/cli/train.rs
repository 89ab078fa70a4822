//! `train`: the training engine from the command line, with the argument groups `sweep` shares
//! (`TrainSettings`, `DpSettings`) and `run_training`, which prints a run's progress. Imports
//! `common` and `data` among the command modules.

use super::common::{epsilon_text, load_dataset, print_metrics};
use super::data::LimitArgs;
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use privxray::model::ModelKind;
use privxray::pipeline::{self, Splits, TrainingRun};
use privxray::train::augment::Augmentation;
use privxray::train::dpsgd::{AdaptiveClip, Clipping, DpConfig, NoiseSeed, Sampling, SamplingSeed};
use privxray::train::ema::EmaDecay;
use privxray::train::engine::model_from_checkpoint;
use privxray::train::loss::ClassWeighting;
use privxray::train::optim::OptimizerConfig;
use privxray::train::DropoutRate;
use privxray::train::{self, Seed, TrainConfig, TrainControl, TrainData, TrainingEvent};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    Sgd,
    Adam,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClippingArg {
    /// The gradient over all parameters is clipped to C.
    Flat,
    /// Each layer is clipped to C/sqrt(layers) on its own.
    PerLayer,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SamplingArg {
    Poisson,
    Shuffled,
}

/// What `train` and `sweep` both set about a run (`sweep` changes some defaults and help lines).
#[derive(Debug, Args, Clone)]
pub struct TrainSettings {
    /// dnn-max, dnn-av, vgg16-1 or vgg16-2.
    #[arg(long)]
    pub model: ModelKind,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Learning rate (default 1e-3 for Adam, 1e-2 for SGD).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerArg,
    /// Class weights NORMAL:PNEUMONIA, e.g. 1:3 (a public prior: no privacy cost), or `auto`:
    /// inverse class frequency (the Kermany set is about 3:1 PNEUMONIA:NORMAL). Under --dp,
    /// `auto` releases the class counts with Gaussian noise (std 20) and the ledger adds the
    /// cost; exact counts are never used under DP.
    #[arg(long, value_name = "N:P|auto", value_parser = parse_class_weights)]
    pub class_weights: Option<ClassWeighting>,
    /// Seed of data order, dropout and initialisation (default: from the OS).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Layers to keep at their initial weights, comma-separated (conv1..., fc1...): with
    /// --init-weights, fine-tuning only the head; under DP-SGD, noise only on what is trained
    /// (dnn-max's fc1 holds 905k of its 961k weights).
    #[arg(long, value_delimiter = ',')]
    pub freeze: Vec<String>,
    /// Release an exponential moving average of the weights with this decay per step (0.9
    /// averages about 10 steps): validated, reported and saved as `-best` instead of the last
    /// iterate. Under DP-SGD it averages the noise away at no privacy cost (post-processing).
    #[arg(long, value_name = "DECAY", value_parser = parse_ema)]
    pub ema: Option<EmaDecay>,
    /// Training dropout rate instead of the model's own 0.5; 0 turns dropout off (common under
    /// DP-SGD, whose noise already regularises and where a mask adds randomness to every
    /// clipped per-example gradient). The trained network is the same either way.
    #[arg(long, value_name = "P", value_parser = parse_dropout)]
    pub dropout: Option<DropoutRate>,
}

/// The DP-SGD settings `train` and `sweep` both take.
#[derive(Debug, Args, Clone)]
pub struct DpSettings {
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// flat (all parameters together) or per-layer.
    #[arg(long, value_enum, default_value = "flat")]
    pub clipping: ClippingArg,
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
    pub dp_settings: DpSettings,
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
    /// Print the final evaluation as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_dropout(s: &str) -> Result<DropoutRate, String> {
    let p: f32 = s
        .parse()
        .map_err(|_| format!("expected a dropout rate in [0, 1), got {s:?}"))?;
    DropoutRate::new(p).map_err(|e| e.to_string())
}

fn parse_class_weights(s: &str) -> Result<ClassWeighting, String> {
    ClassWeighting::parse(s).map_err(|e| e.to_string())
}

fn parse_ema(s: &str) -> Result<EmaDecay, String> {
    let d: f64 = s
        .parse()
        .map_err(|_| format!("expected a decay in (0, 1) such as 0.9, got {s:?}"))?;
    EmaDecay::new(d).map_err(|e| e.to_string())
}

impl TrainSettings {
    /// The engine configuration of these settings, with `momentum` for SGD; the rest at the
    /// engine's defaults, for the command to set.
    pub fn config(&self, momentum: f64) -> TrainConfig {
        let mut c = TrainConfig::new(self.model);
        c.epochs = self.epochs;
        c.batch_size = self.batch_size;
        c.optimizer = match self.optimizer {
            OptimizerArg::Adam => OptimizerConfig::adam(self.lr.unwrap_or(1e-3)),
            OptimizerArg::Sgd => OptimizerConfig::sgd(self.lr.unwrap_or(1e-2), momentum),
        };
        c.class_weights = self.class_weights;
        c.seed = self.seed.map(Seed::Fixed).unwrap_or(Seed::Os);
        c.frozen = self.freeze.clone();
        c.ema = self.ema;
        c.dropout = self.dropout;
        c
    }
}

impl DpSettings {
    /// DP-SGD at `noise_multiplier` with these settings; the rest at the engine's defaults
    /// (Poisson sampling, per-example clipping, randomness from the OS), for the command to set.
    pub fn config(&self, noise_multiplier: f64) -> anyhow::Result<DpConfig> {
        let mut dp = DpConfig::new(noise_multiplier, self.clip_norm)?;
        dp.delta = self.delta;
        dp.clipping = match self.clipping {
            ClippingArg::Flat => Clipping::Flat,
            ClippingArg::PerLayer => Clipping::PerLayer,
        };
        Ok(dp)
    }
}

fn config_from(a: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut c = a.settings.config(a.momentum);
    c.width = a.width;
    c.patience = (a.patience > 0).then_some(a.patience);
    c.checkpoint_dir = Some(a.checkpoint_dir.clone());
    c.resume = a.resume.clone();
    c.init_weights = a.init_weights.clone();
    c.prefer_gpu = a.device == DeviceArg::Cuda;
    if a.dp {
        let mut dp = a.dp_settings.config(a.noise_multiplier)?;
        dp.microbatch_size = a.microbatch;
        dp.physical_batch = a.physical_batch_size;
        dp.augmentation = Augmentation::copies(a.augmentations)?;
        dp.sampling = match a.sampling {
            SamplingArg::Poisson => Sampling::Poisson,
            SamplingArg::Shuffled => Sampling::Shuffled,
        };
        if let Some(s) = a.insecure_noise_seed {
            eprintln!(
                "WARNING: --insecure-noise-seed {s}: the DP noise is reproducible and NOT SECURE"
            );
            dp.noise_seed = NoiseSeed::InsecureFixed(s);
        }
        if let Some(s) = a.insecure_sampling_seed {
            eprintln!(
                "WARNING: --insecure-sampling-seed {s}: the batches are reproducible and the \
                 run is NOT PRIVATE (epsilon not valid)"
            );
            dp.sampling_seed = SamplingSeed::InsecureFixed(s);
        }
        if let Some(q) = a.adaptive_clip {
            dp.adaptive_clip = Some(AdaptiveClip::new(q)?);
        }
        c.dp = Some(dp);
    } else if a.augmentations != 1 {
        bail!(
            "--augmentations {} needs --dp: it averages each example's gradient over copies \
             before DP-SGD's clip",
            a.augmentations
        );
    } else if a.insecure_sampling_seed.is_some() || a.adaptive_clip.is_some() {
        bail!("--insecure-sampling-seed and --adaptive-clip need --dp");
    }
    Ok(c)
}

fn describe(e: &TrainingEvent, warning: Option<&str>) -> Option<String> {
    Some(match e {
        TrainingEvent::Started {
            model,
            device,
            train_images,
            val_images,
            epochs,
            sampling,
            dp,
            frozen,
            ema,
            dropout,
            ..
        } => format!(
            "training {model} on {device}: {train_images} train / {val_images} validation images, {epochs} epochs{}{}{}{}",
            if frozen.is_empty() {
                String::new()
            } else {
                format!(", frozen {}", frozen.join(", "))
            },
            ema.map(|d| format!(", releasing the weight average (decay {})", d.get()))
                .unwrap_or_default(),
            dropout
                .map(|p| format!(", training dropout {}", p.get()))
                .unwrap_or_default(),
            match dp {
                Some(d) => format!(
                    ", DP-SGD noise {} clip {}{}{} ({sampling} sampling; the {val_images} \
                     validation images choose the released epoch and get no DP guarantee)",
                    d.noise_multiplier.get(),
                    d.clip_norm.get(),
                    match d.clipping {
                        Clipping::Flat => "",
                        Clipping::PerLayer => " per layer",
                    },
                    if d.augmentation.is_off() {
                        String::new()
                    } else {
                        format!(", {} augmented copies per example", d.augmentation.copies)
                    }
                ),
                None => String::new(),
            }
        ),
        TrainingEvent::Epoch {
            epoch,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            seconds,
            eta_seconds,
            epsilon,
            raw_val_acc,
        } => format!(
            "epoch {epoch}: train loss {train_loss:.4} acc {train_acc:.4} | val loss {val_loss:.4} acc {val_acc:.4}{} | {seconds:.1} s, eta {eta_seconds:.0} s{}",
            raw_val_acc
                .map(|a| format!(" (last iterate {a:.4})"))
                .unwrap_or_default(),
            epsilon
                .map(|e| match warning {
                    Some(w) => format!(" | epsilon {e:.3} ({w})"),
                    None => format!(" | epsilon {e:.3}"),
                })
                .unwrap_or_default()
        ),
        TrainingEvent::EarlyStop { epoch, best_val_acc } => {
            format!("early stop after epoch {epoch} (best validation accuracy {best_val_acc:.4})")
        }
        TrainingEvent::Stopped { epoch, step } => format!("stopped at epoch {epoch} step {step}"),
        _ => return None,
    })
}

/// Runs a training on its own thread, printing progress and writing the event stream.
pub fn run_training(
    config: TrainConfig,
    tr: TrainData,
    va: TrainData,
    metrics: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<train::TrainOutcome> {
    let run = TrainingRun::start(config, tr, va, TrainControl::new(), "train-engine")?;
    let mut sink = match metrics {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening metrics file {}", p.display()))?,
            )
        }
        None => None,
    };
    let mut warning = None;
    for event in run.events() {
        if let TrainingEvent::Started { dp: Some(d), .. } = &event {
            warning = d.reproducible.epsilon_warning();
            if let Some(w) = &warning {
                eprintln!("WARNING: {w}; this run is NOT PRIVATE");
            }
        }
        if let Some(f) = sink.as_mut() {
            writeln!(f, "{}", serde_json::to_string(&event)?)?;
        }
        if !quiet {
            if let Some(line) = describe(&event, warning.as_deref()) {
                eprintln!("{line}");
            }
        }
    }
    Ok(run.finish()?)
}

fn copy_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    privxray::atomic::write_atomic(to, &bytes).with_context(|| format!("writing {}", to.display()))
}

/// With `--canaries M`: draws M canaries, writes them and their inclusion choices to the
/// (private) canary file, and returns `tr` with the included ones appended.
fn with_canaries(a: &TrainArgs, tr: TrainData) -> anyhow::Result<TrainData> {
    let Some(file) = &a.canary_file else {
        return Ok(tr);
    };
    if a.canaries == 0 {
        bail!(
            "--canary-file {} needs --canaries M (M > 0): there are no canaries to write",
            file.display()
        );
    }
    if a.resume.is_some() {
        bail!(
            "--canaries with --resume: the resumed run's earlier steps never saw these \
             canaries; start a fresh run to audit with canaries"
        );
    }
    let canaries = privxray::train::CanarySet::draw(a.canaries, tr.shape())?;
    canaries.save(file)?;
    eprintln!(
        "canaries: {} of {} added to the training set; {} is PRIVATE (it says which), keep it \
         out of any release",
        canaries.included_count(),
        canaries.len(),
        file.display()
    );
    Ok(canaries.attach(&tr)?)
}

pub fn train_cmd(a: TrainArgs) -> anyhow::Result<()> {
    if let Some(resume) = &a.resume {
        // Before anything is read or written: a finished run is left as it is.
        let done = train::checkpoint::read_meta(resume)?.epoch;
        if done >= a.settings.epochs {
            bail!(
                "{}: already trained {done} epochs; ask for more with --epochs {}",
                resume.display(),
                done + 1
            );
        }
    }
    let set = load_dataset(&a.data, a.settings.model.technique(), &a.limits)?;
    let Splits {
        train: tr,
        validation: va,
        evaluation: eval,
    } = pipeline::split(&set)?;
    let tr = with_canaries(&a, tr)?;
    let config = config_from(&a)?;
    let outcome = run_training(config, tr, va, a.metrics.as_deref(), false)?;
    let best = outcome
        .best_checkpoint
        .clone()
        .context("the run ended before its first epoch finished: there is no model to write")?;
    if let Some(out) = &a.out {
        copy_atomic(&best, out)?;
        eprintln!("best checkpoint: {}", out.display());
    } else {
        eprintln!("best checkpoint: {}", best.display());
    }
    let (model, _, _) = model_from_checkpoint(&best, &candle_core::Device::Cpu)?;
    if eval.is_empty() {
        eprintln!("no test/ or val/ images: skipping the final evaluation");
        return Ok(());
    }
    let m = train::evaluate(&model, &eval, 64)?;
    let meta = train::checkpoint::read_meta(&best)?;
    let claim = meta
        .epsilon
        .map(|e| epsilon_text(e, meta.epsilon_warning()));
    print_metrics(&m, a.json, claim);
    Ok(())
}
