//! `train`, `evaluate`, `predict` (plaintext), `audit` and `sweep`: the training engine from the
//! command line.

use super::data::{progress_printer, LimitArgs};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use privxray::data::Class;
use privxray::model::{ModelKind, Technique};
pub use privxray::pipeline::load_input;
use privxray::pipeline::{self, Splits, TrainingRun};
use privxray::preprocess::{self, Preprocessed};
use privxray::privacy::{self, AccountantKind, Delta, NoiseMultiplier};
use privxray::train::augment::Augmentation;
use privxray::train::dpsgd::NEIGHBOURING;
use privxray::train::dpsgd::{AdaptiveClip, Clipping, DpConfig, NoiseSeed, Sampling, SamplingSeed};
use privxray::train::ema::EmaDecay;
use privxray::train::engine::model_from_checkpoint;
use privxray::train::loss::ClassWeighting;
use privxray::train::optim::OptimizerConfig;
use privxray::train::DropoutRate;
use privxray::train::{
    self, Metrics, Model, Seed, TrainConfig, TrainControl, TrainData, TrainingEvent,
};
use serde::Serialize;
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

#[derive(Debug, Args, Clone)]
pub struct TrainArgs {
    /// Dataset root (train/ for training and validation; test/ and val/ merged for the final
    /// evaluation), e.g. data/chest_xray or a `privxray synth` folder.
    #[arg(long)]
    pub data: PathBuf,
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
    /// Class weights NORMAL:PNEUMONIA, e.g. 1:3 (a public prior: no privacy cost), or `auto`:
    /// inverse class frequency (the Kermany set is about 3:1 PNEUMONIA:NORMAL). Under --dp,
    /// `auto` releases the class counts with Gaussian noise (std 20) and the ledger adds the
    /// cost; exact counts are never used under DP.
    #[arg(long, value_name = "N:P|auto", value_parser = parse_class_weights)]
    pub class_weights: Option<ClassWeighting>,
    /// Seed of data order, dropout and initialisation (default: from the OS).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue from this checkpoint (a `-last` checkpoint keeps the optimizer state).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// ImageNet VGG16 weights (safetensors) for the convolutions of vgg16-1/vgg16-2.
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
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
    /// Folder for `-best` and `-last` checkpoints.
    #[arg(long, default_value = "data/checkpoints")]
    pub checkpoint_dir: PathBuf,
    /// Train with DP-SGD.
    #[arg(long)]
    pub dp: bool,
    #[arg(long, default_value_t = 1.0)]
    pub noise_multiplier: f64,
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
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
    /// flat (all parameters together) or per-layer.
    #[arg(long, value_enum, default_value = "flat")]
    pub clipping: ClippingArg,
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

/// Loads and preprocesses a dataset for `technique`, with the cache in data/cache.
pub fn load_dataset(
    root: &Path,
    technique: Technique,
    limits: &LimitArgs,
) -> anyhow::Result<Preprocessed> {
    let (set, summary) = preprocess::run_with(
        root,
        technique,
        Some(Path::new("data/cache")),
        &limits.limits(),
        &progress_printer("preprocessing"),
    )?;
    let synthetic = set.items.iter().all(|i| {
        i.path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("SYNTH"))
    });
    eprintln!(
        "data: {} ({} images, {}; {} skipped)",
        root.display(),
        summary.images,
        if synthetic { "SYNTHETIC" } else { "real files" },
        summary.skipped.len()
    );
    Ok(set)
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

fn config_from(a: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut c = TrainConfig::new(a.model);
    c.width = a.width;
    c.epochs = a.epochs;
    c.batch_size = a.batch_size;
    c.optimizer = match a.optimizer {
        OptimizerArg::Adam => OptimizerConfig::adam(a.lr.unwrap_or(1e-3)),
        OptimizerArg::Sgd => OptimizerConfig::sgd(a.lr.unwrap_or(1e-2), a.momentum),
    };
    c.class_weights = a.class_weights;
    c.patience = (a.patience > 0).then_some(a.patience);
    c.seed = a.seed.map(Seed::Fixed).unwrap_or(Seed::Os);
    c.checkpoint_dir = Some(a.checkpoint_dir.clone());
    c.resume = a.resume.clone();
    c.init_weights = a.init_weights.clone();
    c.frozen = a.freeze.clone();
    c.ema = a.ema;
    c.dropout = a.dropout;
    c.prefer_gpu = a.device == DeviceArg::Cuda;
    if a.dp {
        let mut dp = DpConfig::new(a.noise_multiplier, a.clip_norm)?;
        dp.delta = a.delta;
        dp.microbatch_size = a.microbatch;
        dp.physical_batch = a.physical_batch_size;
        dp.augmentation = Augmentation::copies(a.augmentations)?;
        dp.sampling = match a.sampling {
            SamplingArg::Poisson => Sampling::Poisson,
            SamplingArg::Shuffled => Sampling::Shuffled,
        };
        dp.clipping = match a.clipping {
            ClippingArg::Flat => Clipping::Flat,
            ClippingArg::PerLayer => Clipping::PerLayer,
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
        if done >= a.epochs {
            bail!(
                "{}: already trained {done} epochs; ask for more with --epochs {}",
                resume.display(),
                done + 1
            );
        }
    }
    let set = load_dataset(&a.data, a.model.technique(), &a.limits)?;
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

/// A model file's claim for the audit lines: the figure with its note, or infinite.
fn claim_text(epsilon: Option<f64>, warning: Option<String>) -> String {
    match (epsilon, warning) {
        (Some(e), Some(w)) => format!("{e:.3} ({w})"),
        (Some(e), None) => format!("{e:.3}"),
        (None, _) => "infinite (no DP)".into(),
    }
}

/// "epsilon E (add-remove neighbours)", with the warning of a run that is not private.
pub fn epsilon_text(epsilon: f64, warning: Option<String>) -> String {
    match warning {
        Some(w) => format!("epsilon {epsilon:.3} ({w})"),
        None => format!(
            "epsilon {epsilon:.3} ({} neighbours)",
            privxray::train::dpsgd::NEIGHBOURING
        ),
    }
}

fn print_metrics(m: &Metrics, json: bool, claim: Option<String>) {
    if json {
        println!("{}", serde_json::to_string_pretty(m).unwrap_or_default());
        return;
    }
    println!(
        "test (test + val merged, {} images): accuracy {:.4}, loss {:.4}, precision {:.4}, recall/sensitivity {:.4}, specificity {:.4}, F1 {:.4}, ROC-AUC {}",
        m.images,
        m.accuracy,
        m.loss,
        m.precision,
        m.recall,
        m.specificity,
        m.f1,
        m.roc_auc.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into())
    );
    let [[tn, fp], [fn_, tp]] = m.confusion;
    println!("confusion: [[tn {tn}, fp {fp}], [fn {fn_}, tp {tp}]]");
    if let Some(c) = claim {
        println!("privacy: {c}");
    }
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// A checkpoint written by `privxray train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset root; test/ and val/ are merged (a folder with NORMAL/ and PNEUMONIA/ directly
    /// is used whole).
    #[arg(long)]
    pub data: PathBuf,
    /// Import caps (as `preprocess`).
    #[command(flatten)]
    pub limits: LimitArgs,
    #[arg(long)]
    pub json: bool,
}

pub fn load_model(path: &Path) -> anyhow::Result<Model> {
    let (model, _, _) = model_from_checkpoint(path, &candle_core::Device::Cpu)
        .with_context(|| format!("loading model {}", path.display()))?;
    Ok(model)
}

pub fn evaluate_cmd(a: EvaluateArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model)?;
    let set = load_dataset(&a.data, model.kind().technique(), &a.limits)?;
    let eval = pipeline::subset(&set, &set.evaluation_indices())?;
    if eval.is_empty() {
        bail!(
            "{} has no test/ or val/ images to evaluate on",
            a.data.display()
        );
    }
    let m = train::evaluate(&model, &eval, 64)?;
    print_metrics(&m, a.json, None);
    Ok(())
}

/// One prediction, as `predict --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub image: String,
    pub class: String,
    pub probability: f64,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u64>,
}

impl Prediction {
    pub fn new(image: &Path, probability: f64, seconds: f64) -> Self {
        let class = if probability >= 0.5 {
            Class::Pneumonia
        } else {
            Class::Normal
        };
        Prediction {
            image: image.display().to_string(),
            class: class.to_string(),
            probability,
            seconds,
            bytes: None,
            rounds: None,
        }
    }
}

/// What `predict` says about one image: its prediction, or why there is none. In JSON a
/// failure is `{"image": ..., "error": ...}`, beside the other images' predictions.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ImageResult {
    Predicted(Prediction),
    Failed { image: String, error: String },
}

impl ImageResult {
    pub fn failed(image: &Path, error: impl std::fmt::Display) -> Self {
        ImageResult::Failed {
            image: image.display().to_string(),
            error: error.to_string(),
        }
    }
}

/// Plaintext predictions with candle, one result per image: a bad image costs only itself.
pub fn predict_plain(model: &Model, images: &[PathBuf]) -> Vec<ImageResult> {
    pipeline::predict_images(model, images)
        .into_iter()
        .zip(images)
        .map(|(r, path)| match r {
            Ok(p) => ImageResult::Predicted(Prediction::new(path, p.probability, p.seconds)),
            Err(e) => ImageResult::failed(path, format!("{:#}", anyhow::Error::from(e))),
        })
        .collect()
}

/// Prints every image's result (stdout), then fails, naming the count, if any image failed.
pub fn print_predictions(results: &[ImageResult], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(results)?);
    } else {
        for r in results {
            match r {
                ImageResult::Predicted(p) => {
                    print!(
                        "{}: {} (probability of PNEUMONIA {:.4}) in {:.3} s",
                        p.image, p.class, p.probability, p.seconds
                    );
                    if let (Some(b), Some(r)) = (p.bytes, p.rounds) {
                        print!(", {:.1} MB between parties, {r} rounds", b as f64 / 1e6);
                    }
                    println!();
                }
                ImageResult::Failed { image, error } => println!("{image}: error: {error}"),
            }
        }
    }
    let mut failed = results.iter().filter_map(|r| match r {
        ImageResult::Failed { image, error } => Some((image, error)),
        ImageResult::Predicted(_) => None,
    });
    if let Some((image, error)) = failed.next() {
        bail!(
            "{} of {} images could not be predicted (each is listed with its error); \
             the first: {image}: {error}",
            1 + failed.count(),
            results.len()
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A checkpoint written by `privxray train`.
    #[arg(long)]
    pub model: PathBuf,
    /// The dataset the model was trained on (for the loss-threshold attack; not needed with
    /// --canary-file).
    #[arg(long, required_unless_present = "canary_file")]
    pub data: Option<PathBuf>,
    /// The canary file `train --canaries M --canary-file F` wrote: scores every canary with the
    /// model, guesses which were trained on, and turns the correct guesses into a lower bound
    /// on epsilon at 95% confidence (Steinke, Nasr and Jagielski 2023).
    #[arg(long, value_name = "FILE")]
    pub canary_file: Option<PathBuf>,
    /// Import caps (as `preprocess`).
    #[command(flatten)]
    pub limits: LimitArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct AuditOutput {
    #[serde(flatten)]
    report: privacy::AuditReport,
    epsilon: Option<f64>,
    /// "epsilon not valid: ..." for a run with reproducible DP randomness.
    #[serde(skip_serializing_if = "Option::is_none")]
    epsilon_warning: Option<String>,
    model: String,
}

#[derive(Debug, Serialize)]
struct CanaryAuditOutput {
    epsilon_lower_bound: f64,
    /// The claim in the model file (None for a model trained without DP).
    epsilon: Option<f64>,
    /// "epsilon not valid: ..." for a run with reproducible DP randomness.
    #[serde(skip_serializing_if = "Option::is_none")]
    epsilon_warning: Option<String>,
    canaries: usize,
    guesses: usize,
    correct: usize,
    delta: f64,
    confidence: f64,
    tried: Vec<privacy::canary::GuessOutcome>,
    model: String,
}

/// `audit --canary-file`: the one-run lower bound on epsilon beside the model's claim.
fn canary_audit_cmd(
    a: &AuditArgs,
    file: &Path,
    model: &Model,
    meta: &privxray::train::checkpoint::CheckpointMeta,
) -> anyhow::Result<()> {
    let canaries = privxray::train::CanarySet::load(file)?;
    // The bound is for the delta the claim was made at (0, pure DP, without DP).
    let delta = meta.dp.as_ref().map(|d| d.delta).unwrap_or(0.0);
    let r = canaries.audit(model, delta)?;
    let out = CanaryAuditOutput {
        epsilon_lower_bound: r.epsilon_lower_bound,
        epsilon: meta.epsilon,
        epsilon_warning: meta.epsilon_warning(),
        canaries: r.canaries,
        guesses: r.guesses,
        correct: r.correct,
        delta: r.delta,
        confidence: r.confidence,
        tried: r.tried,
        model: meta.model.to_string(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "canary audit of {}: epsilon >= {:.3} at {:.0}% confidence ({} of {} guesses right on {} canaries, delta {}); claimed epsilon {}",
            out.model,
            out.epsilon_lower_bound,
            100.0 * out.confidence,
            out.correct,
            out.guesses,
            out.canaries,
            out.delta,
            claim_text(out.epsilon, out.epsilon_warning.clone())
        );
        if let Some(e) = out.epsilon.filter(|&e| out.epsilon_lower_bound > e) {
            println!(
                "WARNING: the lower bound exceeds the claimed epsilon {e:.3}: the DP guarantee \
                 does not hold for this run (or a 5% chance event happened)"
            );
        }
    }
    Ok(())
}

pub fn audit_cmd(a: AuditArgs) -> anyhow::Result<()> {
    let (model, _, meta) = model_from_checkpoint(&a.model, &candle_core::Device::Cpu)
        .with_context(|| format!("loading model {}", a.model.display()))?;
    if let Some(file) = &a.canary_file {
        return canary_audit_cmd(&a, file, &model, &meta);
    }
    let data = a
        .data
        .as_deref()
        .context("--data is needed without --canary-file")?;
    let set = load_dataset(data, model.kind().technique(), &a.limits)?;
    let Splits {
        train: members,
        evaluation: non_members,
        ..
    } = pipeline::split(&set)?;
    if non_members.is_empty() {
        bail!(
            "{} has no test/ or val/ images to use as non-members",
            data.display()
        );
    }
    let report = pipeline::membership_audit(&model, &members, &non_members)?;
    let out = AuditOutput {
        report,
        epsilon: meta.epsilon,
        epsilon_warning: meta.epsilon_warning(),
        model: meta.model.to_string(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "membership inference (loss threshold) on {}: attack AUC {:.4}, advantage {:.4} ({} members, {} non-members); epsilon {}",
            out.model,
            out.report.auc,
            out.report.advantage,
            out.report.members,
            out.report.non_members,
            claim_text(out.epsilon, out.epsilon_warning.clone())
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EpsilonArgs {
    #[arg(long, required_unless_present = "checkpoint")]
    pub dataset_size: Option<u64>,
    #[arg(long, required_unless_present = "checkpoint")]
    pub batch_size: Option<u64>,
    /// Noise multiplier sigma (leave out with --target-epsilon).
    #[arg(
        long,
        required_unless_present_any = ["target_epsilon", "checkpoint"],
        conflicts_with = "target_epsilon"
    )]
    pub noise_multiplier: Option<f64>,
    #[arg(long, required_unless_present = "checkpoint")]
    pub epochs: Option<u64>,
    /// Recompute epsilon over the privacy ledger a checkpoint records (every release of the
    /// run with its own sampling rate and noise multiplier), at --delta.
    #[arg(long, conflicts_with_all = ["dataset_size", "batch_size", "noise_multiplier", "epochs", "target_epsilon"])]
    pub checkpoint: Option<PathBuf>,
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// rdp (Renyi DP, Balle et al. 2020 conversion) or pld (privacy loss distributions, tighter).
    #[arg(long, default_value = "rdp")]
    pub accountant: AccountantKind,
    /// Find the smallest noise multiplier that reaches this epsilon (at most 1000: beyond it
    /// the guarantee says nothing).
    #[arg(long)]
    pub target_epsilon: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

fn checkpoint_epsilon(path: &Path, delta: f64, json: bool) -> anyhow::Result<()> {
    let meta = train::checkpoint::read_meta(path)?;
    if meta.dp.is_none() {
        bail!(
            "{} was trained without DP-SGD: its epsilon is infinite",
            path.display()
        );
    }
    let epsilon = train::accounting::epsilon_of(&meta.privacy_ledger, Delta::new(delta)?);
    let warning = meta.epsilon_warning();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "epsilon": epsilon,
                "delta": delta,
                "accountant": AccountantKind::Rdp,
                "neighbouring": NEIGHBOURING,
                "steps": meta.privacy_ledger.iter().map(|s| s.steps).sum::<u64>(),
                "ledger": meta.privacy_ledger,
                "epsilon_valid": warning.is_none(),
            })
        );
    } else {
        println!(
            "{} at delta {delta} over the ledger of {} (rdp accountant)",
            epsilon_text(epsilon, warning),
            path.display()
        );
    }
    Ok(())
}

/// The largest `--target-epsilon` searched for: e^1000 bounds no odds anyone cares about, and
/// far larger targets only print an absurd epsilon (1e300 printed 300 digits).
pub const MAX_TARGET_EPSILON: f64 = 1000.0;

pub fn epsilon_cmd(a: EpsilonArgs) -> anyhow::Result<()> {
    if let Some(p) = &a.checkpoint {
        return checkpoint_epsilon(p, a.delta, a.json);
    }
    let (Some(n), Some(batch), Some(epochs)) = (a.dataset_size, a.batch_size, a.epochs) else {
        bail!("--dataset-size, --batch-size and --epochs are needed without --checkpoint");
    };
    let q = privacy::sample_rate(batch, n)?;
    let steps = privacy::steps_for(n, batch, epochs)?;
    let delta = Delta::new(a.delta)?;
    if let Some(target) = a.target_epsilon {
        if target > MAX_TARGET_EPSILON {
            bail!(
                "--target-epsilon {target:e}: above {MAX_TARGET_EPSILON} an epsilon bounds nothing \
                 (e^epsilon is the bound on how much one person's data may change the odds of \
                 any outcome), so no noise multiplier is worth searching for; ask for at most \
                 {MAX_TARGET_EPSILON}"
            );
        }
        let sigma = privacy::noise_multiplier_for_target(target, q, steps, delta, a.accountant)?;
        let achieved = privacy::epsilon(a.accountant, q, sigma, steps, delta)?;
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "noise_multiplier": sigma.get(),
                    "epsilon": achieved.epsilon,
                    "target_epsilon": target,
                    "accountant": a.accountant,
                    "steps": steps,
                    "neighbouring": NEIGHBOURING,
                })
            );
        } else {
            println!(
                "noise multiplier {:.4} reaches epsilon {:.4} <= {target} ({} accountant, {steps} steps, delta {})",
                sigma.get(),
                achieved.epsilon,
                a.accountant,
                a.delta
            );
        }
        return Ok(());
    }
    let sigma = NoiseMultiplier::new(a.noise_multiplier.unwrap_or(0.0))?;
    let r = privacy::epsilon(a.accountant, q, sigma, steps, delta)?;
    if a.json {
        let mut v = serde_json::to_value(r)?;
        v["neighbouring"] = NEIGHBOURING.into();
        println!("{v}");
    } else {
        println!(
            "epsilon {:.4} at delta {} ({} accountant{}, {steps} steps, q = {:.6}, add-remove neighbours)",
            r.epsilon,
            a.delta,
            r.accountant,
            r.best_order
                .map(|o| format!(", best order {o}"))
                .unwrap_or_default(),
            q.get()
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Dataset root.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "dnn-max")]
    pub model: ModelKind,
    /// Comma-separated noise multipliers; 0 trains without DP.
    #[arg(long, value_delimiter = ',', required = true)]
    pub noise_multipliers: Vec<f64>,
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Learning rate (default 1e-3 for Adam, 1e-2 for SGD).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerArg,
    /// Class weights NORMAL:PNEUMONIA or auto, as `train --class-weights`.
    #[arg(long, value_name = "N:P|auto", value_parser = parse_class_weights)]
    pub class_weights: Option<ClassWeighting>,
    /// flat (all parameters together) or per-layer.
    #[arg(long, value_enum, default_value = "flat")]
    pub clipping: ClippingArg,
    /// Layers kept at their initial weights in every run, as `train --freeze`.
    #[arg(long, value_delimiter = ',')]
    pub freeze: Vec<String>,
    /// Release the weight average in every run, as `train --ema`.
    #[arg(long, value_name = "DECAY", value_parser = parse_ema)]
    pub ema: Option<EmaDecay>,
    /// Training dropout rate in every run, as `train --dropout`.
    #[arg(long, value_name = "P", value_parser = parse_dropout)]
    pub dropout: Option<DropoutRate>,
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

pub fn sweep_cmd(a: SweepArgs) -> anyhow::Result<()> {
    for &sigma in &a.noise_multipliers {
        // Checked before any run: a negative value must not quietly train without DP.
        NoiseMultiplier::new(sigma).context("--noise-multipliers")?;
    }
    let set = load_dataset(&a.data, a.model.technique(), &a.limits)?;
    let Splits {
        train: tr,
        validation: va,
        evaluation: eval,
    } = pipeline::split(&set)?;
    if eval.is_empty() {
        bail!(
            "{} has no test/ or val/ images to measure accuracy on",
            a.data.display()
        );
    }
    let mut rows = Vec::new();
    // Every run's ledger: choosing the best run looks at all of them.
    let (mut all_segments, mut any_plain) = (Vec::new(), false);
    for &sigma in &a.noise_multipliers {
        let args = TrainArgs {
            data: a.data.clone(),
            model: a.model,
            epochs: a.epochs,
            batch_size: a.batch_size,
            lr: a.lr,
            optimizer: a.optimizer,
            momentum: 0.9,
            patience: 0,
            out: None,
            metrics: None,
            device: DeviceArg::Cpu,
            width: 1.0,
            class_weights: a.class_weights,
            seed: a.seed,
            resume: None,
            init_weights: None,
            freeze: a.freeze.clone(),
            ema: a.ema,
            dropout: a.dropout,
            checkpoint_dir: a.out.join(format!("sigma-{sigma}")),
            dp: sigma > 0.0,
            noise_multiplier: sigma,
            clip_norm: a.clip_norm,
            delta: a.delta,
            microbatch: 1,
            physical_batch_size: None,
            augmentations: 1,
            sampling: SamplingArg::Poisson,
            clipping: a.clipping,
            insecure_noise_seed: None,
            insecure_sampling_seed: None,
            adaptive_clip: None,
            limits: a.limits,
            canaries: 0,
            canary_file: None,
            json: false,
        };
        eprintln!("sweep: noise multiplier {sigma}");
        let config = config_from(&args)?;
        let outcome = run_training(config, tr.clone(), va.clone(), None, false)?;
        let best = outcome
            .best_checkpoint
            .clone()
            .context("training wrote no checkpoint")?;
        let m = train::evaluate(&load_model(&best)?, &eval, 64)?;
        match train::checkpoint::read_meta(&best)?.privacy_ledger {
            l if sigma > 0.0 && !l.is_empty() => all_segments.extend(l),
            _ => any_plain = true,
        }
        let epsilon = if sigma > 0.0 {
            match outcome.epsilon {
                Some(e) => Some(e),
                None => {
                    // Poisson sampling at q = B/N for every step run.
                    let n = tr.len() as u64;
                    let q = privacy::sample_rate(a.batch_size as u64, n)?;
                    let steps =
                        privacy::steps_for(n, a.batch_size as u64, outcome.epochs_run as u64)?;
                    Some(
                        privacy::epsilon(
                            AccountantKind::Rdp,
                            q,
                            NoiseMultiplier::new(sigma)?,
                            steps,
                            Delta::new(a.delta)?,
                        )?
                        .epsilon,
                    )
                }
            }
        } else {
            None
        };
        rows.push(SweepRow {
            noise_multiplier: sigma,
            epsilon,
            accuracy: m.accuracy,
            recall: m.recall,
            specificity: m.specificity,
            epochs_run: outcome.epochs_run,
        });
    }
    std::fs::create_dir_all(&a.out)?;
    let mut md = String::from(
        "| noise multiplier | epsilon | test accuracy | sensitivity | specificity | epochs |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
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
    // Releasing the best of these runs (by test accuracy) is post-processing of all of them:
    // its epsilon is that of every run's releases composed (RDP), an upper bound; Papernot
    // and Steinke 2022 give tighter ones for random search, not implemented here.
    let delta = Delta::new(a.delta)?;
    let selection = (!any_plain).then(|| train::accounting::epsilon_of(&all_segments, delta));
    md.push_str(&format!(
        "\nepsilon of releasing the best of these {} runs (all runs composed, {NEIGHBOURING} neighbours, delta {}): {}\n",
        rows.len(),
        a.delta,
        selection
            .map(|e| format!("{e:.3}"))
            .unwrap_or_else(|| "inf (a run without DP)".into())
    ));
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
    let chart = privxray::plot::Chart {
        title: format!(
            "{}: test accuracy against epsilon (delta {})",
            a.model, a.delta
        ),
        x_label: "epsilon".into(),
        y_label: "test accuracy".into(),
        series,
        points_only: true,
    };
    let png = a.out.join("frontier.png");
    privxray::plot::write_png(&chart, &png, 900, 560)?;
    eprintln!("wrote {}, sweep.md and sweep.json", png.display());
    Ok(())
}
