//! The training loop: plain mini-batch training or DP-SGD, evaluation after every epoch,
//! best-by-validation-accuracy and resume checkpoints, early stopping, and a JSON-serialisable
//! event stream. Meant to run on its own thread, steered through [`TrainControl`].

use super::accounting::{DpSegment, Ledger};
use super::checkpoint::{self, CheckpointMeta, EpochRecord};
use super::control::{Directive, TrainControl};
use super::data::TrainData;
use super::device;
use super::dpsgd::{self, DpConfig, NoiseSeed, Sampling, SamplingSeed};
use super::ema::{EmaDecay, WeightAverage};
use super::error::{Result, TrainError};
use super::loss::{self, ClassWeighting, ClassWeights};
use super::metrics::Metrics;
use super::model::{self, DropoutRate, Model};
use super::optim::{Optimizer, OptimizerConfig};
use crate::model::spec::pneumonia_probability;
use crate::model::ModelKind;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Instant;

/// Seed for data order, dropout and initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seed {
    /// Drawn from the OS at start (and recorded in checkpoints so resume continues the order).
    Os,
    Fixed(u64),
}

pub use super::accounting::PrivacyAccountant;

/// What to train and how.
pub struct TrainConfig {
    pub model: ModelKind,
    /// Width multiplier of the VGG models (ignored by the DNNs).
    pub width: f32,
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub class_weights: Option<ClassWeighting>,
    /// Stop after this many epochs without a better validation accuracy.
    pub patience: Option<usize>,
    pub seed: Seed,
    /// Where `{model}-best.safetensors` and `{model}-last.safetensors` go; `None`: none written.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from this checkpoint (weights, optimizer state, epoch, best accuracy, history).
    pub resume: Option<PathBuf>,
    /// ImageNet VGG16 weights for the convolutions (see [`model::load_vgg16_imagenet`]).
    pub init_weights: Option<PathBuf>,
    pub dp: Option<DpConfig>,
    /// Layers kept at their initial (or `init_weights`) values, e.g. `fc1` ([`Model::freeze`]).
    /// Empty on resume: the checkpoint's choice holds.
    pub frozen: Vec<String>,
    /// Release an exponential moving average of the weights (validated, checkpointed as
    /// `-best`) instead of the last iterate. `None` on resume: the checkpoint's choice holds.
    pub ema: Option<EmaDecay>,
    /// Training dropout rate instead of the model's own (0 turns it off). `None` on resume:
    /// the checkpoint's choice holds.
    pub dropout: Option<DropoutRate>,
    /// Turns DP steps into epsilon (default: the RDP accountant); `None`: no epsilon reported.
    pub accountant: Option<Box<dyn PrivacyAccountant>>,
    pub prefer_gpu: bool,
}

impl TrainConfig {
    /// Defaults: 10 epochs, batch 32, Adam 1e-3, patience 3, OS seed, CPU, RDP accountant.
    pub fn new(model: ModelKind) -> Self {
        Self {
            model,
            width: 1.0,
            epochs: 10,
            batch_size: 32,
            eval_batch_size: 64,
            optimizer: OptimizerConfig::adam(1e-3),
            class_weights: None,
            patience: Some(3),
            seed: Seed::Os,
            checkpoint_dir: None,
            resume: None,
            init_weights: None,
            dp: None,
            frozen: Vec::new(),
            ema: None,
            dropout: None,
            accountant: Some(Box::new(crate::privacy::RdpAccountant::new())),
            prefer_gpu: false,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return Err(TrainError::Config(format!(
                "batch sizes must be >= 1, got {} and {}",
                self.batch_size, self.eval_batch_size
            )));
        }
        self.optimizer.validate()?;
        if let Some(dp) = &self.dp {
            dp.validate_for_training()?;
        }
        if let Some(ClassWeighting::Counts { noise_std }) = self.class_weights {
            if !(noise_std.is_finite() && noise_std > 0.0) {
                return Err(TrainError::Config(format!(
                    "class count noise {noise_std}: expected a positive standard deviation"
                )));
            }
        }
        Ok(())
    }
}

/// Progress events, serialised as `{"event": "step", ...}` JSON lines.
// `Started` is the large one and comes once per run; boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainingEvent {
    Started {
        model: String,
        width: f32,
        device: String,
        train_images: usize,
        val_images: usize,
        steps_per_epoch: usize,
        epochs: usize,
        start_epoch: usize,
        batch_size: usize,
        dp: Option<DpConfig>,
        /// DP runs: the Poisson sampling rate q = B/N the ledger records steps at.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sample_rate: Option<f64>,
        /// "poisson" or "shuffled" for DP runs, "shuffled" otherwise.
        sampling: String,
        /// How epsilon is accounted (DP runs with an accountant): with Poisson sampling the
        /// subsampled Gaussian at q = B/N; with shuffled batches no amplification is assumed.
        accounting: Option<String>,
        /// Layers kept at their initial weights.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        frozen: Vec<String>,
        /// Decay of the released weight average, if the run averages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ema: Option<EmaDecay>,
        /// Training dropout rate, when the run set one instead of the model's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropout: Option<DropoutRate>,
    },
    Step {
        epoch: usize,
        step: usize,
        loss: f64,
        images_per_sec: f64,
        /// Epsilon of the engine's ledger after this step (DP runs with an accountant): the
        /// one figure of privacy spent; interfaces show it rather than keeping ledgers of
        /// their own.
        epsilon: Option<f64>,
        /// DP runs: the noise multiplier this step's gradient noise actually used (a change
        /// from the interface applies from the step after it arrives).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        noise_multiplier: Option<f64>,
        /// DP runs: the clip norm this step actually used.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clip_norm: Option<f64>,
        /// DP runs: the noise multiplier the ledger recorded for this step at the run's
        /// sampling rate (sigma/2 with microbatches, whose sensitivity is 2C; lower than sigma
        /// when a noisy clip count is released beside the gradient). Project future epsilon
        /// from these, not from `noise_multiplier`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accounted_noise_multiplier: Option<f64>,
        /// DP runs: share of this step's examples (or microbatches) whose gradient norm
        /// exceeded the clip norm. From raw norms (the data holder's private metrics stream)
        /// unless `--adaptive-clip` releases it with noise; see [`dpsgd::ClipStats`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clipped_fraction: Option<f64>,
        /// DP runs: median per-unit gradient norm before clipping.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        median_grad_norm: Option<f64>,
    },
    Epoch {
        epoch: usize,
        train_loss: f64,
        train_acc: f64,
        val_loss: f64,
        /// Of the weights the run releases: the average when it averages.
        val_acc: f64,
        seconds: f64,
        eta_seconds: f64,
        epsilon: Option<f64>,
        /// Runs that average: validation accuracy of the last iterate, for comparison.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raw_val_acc: Option<f64>,
    },
    Checkpoint {
        path: PathBuf,
        val_acc: f64,
        /// "best" or "last".
        kind: String,
    },
    EarlyStop {
        epoch: usize,
        best_val_acc: f64,
    },
    DpSettingsChanged {
        noise_multiplier: f64,
        clip_norm: f64,
    },
    Paused,
    Resumed,
    Stopped {
        epoch: usize,
        step: usize,
    },
    Finished {
        best_val_acc: f64,
        epochs_run: usize,
        epsilon: Option<f64>,
        best_checkpoint: Option<PathBuf>,
    },
}

/// The result of [`train`].
#[derive(Debug)]
pub struct TrainOutcome {
    /// The model with its final weights (the best ones are in `best_checkpoint`).
    pub model: Model,
    pub best_val_acc: f64,
    pub best_checkpoint: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
    pub epochs_run: usize,
    pub history: Vec<EpochRecord>,
    pub stopped: bool,
    pub early_stopped: bool,
    pub epsilon: Option<f64>,
    /// Validation metrics of the final weights.
    pub val_metrics: Metrics,
}

/// Model variables in parameter order, for the optimizer and checkpoints.
pub fn model_vars(model: &Model, varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
    model
        .named_parameters()
        .into_iter()
        .map(|(name, _)| {
            data.get(&name)
                .cloned()
                .map(|v| (name.clone(), v))
                .ok_or_else(|| {
                    TrainError::Config(format!("model parameter {name} has no variable"))
                })
        })
        .collect()
}

/// Loads a checkpoint into a fresh model (eval or further training).
pub fn model_from_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(Model, VarMap, CheckpointMeta)> {
    let loaded = checkpoint::load(path, device)?;
    let meta = loaded.meta.clone();
    let varmap = model::init_varmap(meta.model, meta.width, 0, device)?;
    let m = Model::new(
        VarBuilder::from_varmap(&varmap, DType::F32, device),
        meta.model,
        meta.width,
    )?;
    loaded.restore_vars(&model_vars(&m, &varmap)?)?;
    Ok((m, varmap, meta))
}

/// Evaluates `model` (dropout off) on `data`: metrics with the mean unweighted cross-entropy.
pub fn evaluate(model: &Model, data: &TrainData, batch_size: usize) -> Result<Metrics> {
    let device = model
        .layers()
        .iter()
        .find_map(|l| match l {
            model::NetLayer::Conv { weight, .. } => Some(weight.device().clone()),
            _ => None,
        })
        .unwrap_or(Device::Cpu);
    let mut scores = Vec::with_capacity(data.len());
    let mut loss_sum = 0f64;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, y) = data.batch(chunk, &device)?;
        let logits = model.forward_with(&x, None)?;
        let nll = loss::per_example_nll(&logits, &y)?;
        loss_sum += f64::from(nll.sum_all()?.to_scalar::<f32>()?);
        for row in logits.to_vec2::<f32>()? {
            scores.push(pneumonia_probability(&row));
        }
    }
    let loss = if data.is_empty() {
        0.0
    } else {
        loss_sum / data.len() as f64
    };
    Ok(Metrics::from_scores(&scores, data.labels(), loss))
}

fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    // One stream per epoch so a resumed run draws the same order and dropout masks.
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(epoch as u64 + 1);
    r
}

/// Trains per `config` on `data`, validating on `val` after every epoch; sends progress to
/// `events` (a closed receiver is ignored) and obeys `control` between steps.
pub fn train(
    mut config: TrainConfig,
    data: &TrainData,
    val: &TrainData,
    events: Sender<TrainingEvent>,
    control: TrainControl,
) -> Result<TrainOutcome> {
    config.validate()?;
    let emit = |e: TrainingEvent| {
        let _ = events.send(e);
    };
    let kind = config.model;
    let input = kind.technique().input_shape();
    for d in [data, val] {
        if d.shape() != input {
            return Err(TrainError::InputShape {
                model: kind.name().into(),
                expected: input,
                got: d.shape(),
            });
        }
    }
    if data.is_empty() || val.is_empty() {
        return Err(TrainError::Data(format!(
            "need training and validation examples, got {} and {}",
            data.len(),
            val.len()
        )));
    }
    let (device, device_name) = device::select(config.prefer_gpu);

    let resumed = match &config.resume {
        Some(p) => Some(checkpoint::load(p, &device)?),
        None => None,
    };
    let (width, seed) = match &resumed {
        Some(r) => {
            if r.meta.model != kind {
                return Err(TrainError::Checkpoint {
                    path: r.path.clone(),
                    reason: format!("holds {}, asked to train {kind}", r.meta.model),
                });
            }
            if r.meta.epoch >= config.epochs {
                // Checked before anything is built or written: a finished run stays as it is.
                return Err(TrainError::Checkpoint {
                    path: r.path.clone(),
                    reason: format!(
                        "already trained {} epochs, and {} were asked for: nothing to do; \
                         ask for more epochs to continue it",
                        r.meta.epoch, config.epochs
                    ),
                });
            }
            (r.meta.width, r.meta.seed)
        }
        None => (
            config.width,
            match config.seed {
                Seed::Fixed(s) => s,
                Seed::Os => rand::rng().random(),
            },
        ),
    };
    let (mut model, varmap) = Model::init(kind, width, seed, &device)?;
    let frozen = match &resumed {
        Some(r) if config.frozen.is_empty() => r.meta.frozen.clone(),
        Some(r) if config.frozen != r.meta.frozen => {
            return Err(TrainError::Checkpoint {
                path: r.path.clone(),
                reason: format!(
                    "was trained with frozen layers {:?}; resume cannot change them to {:?}",
                    r.meta.frozen, config.frozen
                ),
            })
        }
        _ => config.frozen.clone(),
    };
    model.freeze(&frozen)?;
    let dropout = config
        .dropout
        .or_else(|| resumed.as_ref().and_then(|r| r.meta.dropout));
    if let Some(p) = dropout {
        model.set_dropout(p);
    }
    if let Some(p) = &config.init_weights {
        if resumed.is_none() {
            model::load_vgg16_imagenet(&varmap, kind, p)?;
        }
    }
    let vars = model_vars(&model, &varmap)?;
    let mut optimizer = Optimizer::new(config.optimizer, vars.clone())?;
    optimizer.set_trainable(&model.trainable_mask())?;
    let ema_decay = config
        .ema
        .or_else(|| resumed.as_ref().and_then(|r| r.meta.ema));
    let mut history = Vec::new();
    let mut best_val_acc = f64::NEG_INFINITY;
    let mut since_best = 0usize;
    let mut start_epoch = 0usize;
    let mut dp = config.dp;
    if let Some(r) = &resumed {
        r.restore_vars(&vars)?;
        optimizer.load_state(&r.tensors, r.meta.optimizer_step)?;
        history = r.meta.history.clone();
        best_val_acc = r.meta.best_val_acc;
        since_best = r.meta.epochs_without_improvement;
        start_epoch = r.meta.epoch;
        if dp.is_none() {
            dp = r.meta.dp;
        }
        if dp.is_some() && r.meta.dp.is_none() && r.meta.optimizer_step > 0 {
            // Those weights saw the data without noise: no epsilon would be true.
            return Err(TrainError::Checkpoint {
                path: r.path.clone(),
                reason: "was trained without DP-SGD; a DP run cannot continue from it".into(),
            });
        }
    }
    if dp.is_some() {
        dpsgd::check_plan_for_dp(&kind.plan(width))?;
    }
    // Started after the weights are restored: a resume without a stored average (a `-best`
    // checkpoint, which holds only the average, or one of a run that did not average) starts
    // it at the resumed weights.
    let mut ema = match ema_decay {
        Some(d) => {
            let mut a = WeightAverage::start(d, &vars, &model.trainable_mask())?;
            if let Some(r) = &resumed {
                a.load_state(&r.tensors, &vars)?;
            }
            Some(a)
        }
        None => None,
    };

    let n = data.len();
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let sample_rate = (config.batch_size as f64 / n as f64).min(1.0);
    let mut noise_rng = dp.map(|d| dpsgd::noise_rng(d.noise_seed));
    // The Poisson draws: secret (OS CSPRNG, never written anywhere) unless the run asked for a
    // reproducible, non-private seed.
    let mut sampling_rng = dp.map(|d| match d.sampling_seed {
        SamplingSeed::Os => dpsgd::noise_rng(NoiseSeed::Os),
        SamplingSeed::InsecureFixed(s) => ChaCha20Rng::seed_from_u64(s),
    });
    if let Some(d) = dp.as_mut() {
        // Recorded from the seeds actually used, and sticky across resumes: once reproducible,
        // the run's epsilon is never valid again.
        let before = resumed
            .as_ref()
            .and_then(|r| r.meta.dp)
            .map(|p| p.marks())
            .unwrap_or_default();
        d.legacy_noise_seed = None;
        d.reproducible.noise |= before.noise || matches!(d.noise_seed, NoiseSeed::InsecureFixed(_));
        d.reproducible.sampling |=
            before.sampling || matches!(d.sampling_seed, SamplingSeed::InsecureFixed(_));
        if let Some(r) = &resumed {
            // Adaptive clipping moved C during the run: continue from where it got to.
            if let (Some(_), Some(prev)) = (d.adaptive_clip, r.meta.dp) {
                d.clip_norm = prev.clip_norm;
            }
        }
    }
    let mut ledger = match (&dp, config.accountant.take()) {
        (Some(d), Some(acc)) => {
            let q = crate::privacy::SampleRate::new(sample_rate)?;
            let previous = match &resumed {
                Some(r) if r.meta.privacy_ledger.is_empty() && r.meta.optimizer_step > 0 => {
                    // A checkpoint from before ledgers: its steps at its own settings.
                    let rd = r.meta.dp.unwrap_or(*d);
                    vec![DpSegment {
                        sample_rate: q,
                        noise_multiplier: rd.noise_multiplier,
                        steps: r.meta.optimizer_step,
                    }]
                }
                Some(r) => r.meta.privacy_ledger.clone(),
                None => Vec::new(),
            };
            Some(Ledger::new(q, d.delta()?, &previous, acc))
        }
        _ => None,
    };
    let class_weights = match config.class_weights {
        None => None,
        Some(ClassWeighting::Prior(w)) => Some(w),
        Some(ClassWeighting::Counts { noise_std }) => {
            let counts = data.class_counts();
            Some(match (&dp, noise_rng.as_mut()) {
                (Some(_), Some(nr)) => {
                    // One Gaussian release of the class histogram (L2 sensitivity 1 under
                    // add/remove), from its own noise stream, recorded in the ledger.
                    nr.set_stream(u64::MAX);
                    nr.set_word_pos(0);
                    let noise = dpsgd::gaussian_noise(2, noise_std, nr)?;
                    let noisy = [0, 1].map(|c| {
                        (counts[c] as f64 + f64::from(noise[c])).round().max(1.0) as usize
                    });
                    if let Some(l) = ledger.as_mut() {
                        l.release(crate::privacy::NoiseMultiplier::new(noise_std)?)?;
                    }
                    ClassWeights::balanced(noisy)
                }
                _ => ClassWeights::balanced(counts),
            })
        }
    };
    emit(TrainingEvent::Started {
        model: kind.name().into(),
        width,
        device: device_name,
        train_images: n,
        val_images: val.len(),
        steps_per_epoch,
        epochs: config.epochs,
        start_epoch,
        batch_size: config.batch_size,
        dp,
        sample_rate: dp.map(|_| sample_rate),
        sampling: match dp.map(|d| d.sampling) {
            Some(Sampling::Poisson) => "poisson",
            _ => "shuffled",
        }
        .into(),
        accounting: ledger.as_ref().map(|l| {
            format!(
                "poisson subsampled Gaussian, q = {:.6} per step, {} neighbours (RDP accountant)",
                l.sample_rate().get(),
                dpsgd::NEIGHBOURING
            )
        }),
        frozen: model.frozen().to_vec(),
        ema: ema_decay,
        dropout,
    });
    let ckpt_path = |tag: &str| {
        config
            .checkpoint_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{tag}.safetensors", kind.name())))
    };
    // A resumed run continues the release it already wrote (if it is still there): later epochs
    // replace it only when they beat it, and restamp its epsilon either way.
    let mut best_checkpoint = ckpt_path("best").filter(|p| resumed.is_some() && p.exists());
    if resumed.is_some() && best_checkpoint.is_none() {
        // That release is not at hand (resumed from elsewhere): this run's epochs choose a new
        // one, so the run always ends with a model.
        best_val_acc = f64::NEG_INFINITY;
    }
    let mut last_checkpoint = None;
    let mut stopped = false;
    let mut early_stopped = false;
    let mut epochs_run = 0;
    let mut epoch_seconds = Vec::new();

    'epochs: for epoch in start_epoch..config.epochs {
        let t0 = Instant::now();
        let mut rng = epoch_rng(seed, epoch);
        let batches: Vec<Vec<usize>> = match (dp.map(|d| d.sampling), sampling_rng.as_mut()) {
            (Some(Sampling::Poisson), Some(sr)) => (0..steps_per_epoch)
                .map(|i| {
                    // One stream per step, as the noise: a resumed run with a fixed (insecure)
                    // seed continues exactly as a straight run would.
                    sr.set_stream((epoch * steps_per_epoch + i) as u64);
                    sr.set_word_pos(0);
                    (0..n)
                        .filter(|_| sr.random::<f64>() < sample_rate)
                        .collect()
                })
                .collect(),
            _ => {
                let mut perm: Vec<usize> = (0..n).collect();
                perm.shuffle(&mut rng);
                perm.chunks(config.batch_size).map(|c| c.to_vec()).collect()
            }
        };
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for (step, batch) in batches.iter().enumerate() {
            let directive = control.at_step_boundary(
                || emit(TrainingEvent::Paused),
                || emit(TrainingEvent::Resumed),
            );
            if directive == Directive::Stop {
                emit(TrainingEvent::Stopped { epoch, step });
                stopped = true;
                break 'epochs;
            }
            if let Some(d) = dp.as_mut() {
                let (nm, cn) = control.take_dp_changes();
                if nm.is_some() || cn.is_some() {
                    d.noise_multiplier = nm.unwrap_or(d.noise_multiplier);
                    d.clip_norm = cn.unwrap_or(d.clip_norm);
                    emit(TrainingEvent::DpSettingsChanged {
                        noise_multiplier: d.noise_multiplier.get(),
                        clip_norm: d.clip_norm.get(),
                    });
                }
            }
            let ts = Instant::now();
            let (x, y) = data.batch(batch, &device)?;
            let mut used = None;
            let (loss_v, logits, clip_stats) = match (dp.as_mut(), noise_rng.as_mut()) {
                (Some(d), Some(nr)) => {
                    // Each step's noise comes from its own ChaCha stream, numbered by the
                    // optimizer step. With a fixed (research) seed a resumed run would
                    // otherwise draw the first steps' noise again, and noise used twice can be
                    // subtracted out; this way it continues exactly as a straight run would.
                    nr.set_stream(optimizer.steps());
                    nr.set_word_pos(0);
                    let expected = (sample_rate * n as f64).max(1.0);
                    let r = dpsgd::private_gradients(
                        &model,
                        &x,
                        &y,
                        class_weights,
                        d,
                        expected,
                        &mut rng,
                        nr,
                    )?;
                    optimizer.step(&r.gradients)?;
                    if let Some(a) = ema.as_mut() {
                        a.update(&vars)?;
                    }
                    let accounted = d.accounted_noise_multiplier(expected)?;
                    if let Some(l) = ledger.as_mut() {
                        l.step(accounted);
                    }
                    let (sigma, clip) = (d.noise_multiplier.get(), d.clip_norm.get());
                    let mut stats = r.clip_stats;
                    if let Some(a) = d.adaptive_clip {
                        // The released count of units under the clip (same noise stream,
                        // after the gradient's noise); only its noisy share leaves the step.
                        let under = r.unit_norms.iter().filter(|&&u| f64::from(u) <= clip);
                        let (share, next) = a.update(d.clip_norm, under.count(), expected, nr)?;
                        d.clip_norm = next;
                        stats = stats.map(|s| dpsgd::ClipStats {
                            clipped_fraction: (1.0 - share).clamp(0.0, 1.0),
                            ..s
                        });
                    }
                    used = Some((sigma, clip, accounted.get()));
                    (r.loss, r.logits, stats)
                }
                _ => {
                    if batch.is_empty() {
                        continue;
                    }
                    let logits = model.forward_with(&x, Some(&mut rng))?;
                    let loss = loss::cross_entropy(&logits, &y, class_weights)?;
                    let grads = loss.backward()?;
                    let g: Vec<Tensor> = vars
                        .iter()
                        .map(|(_, v)| match grads.get(v.as_tensor()) {
                            Some(g) => Ok(g.clone()),
                            None => v.as_tensor().zeros_like(),
                        })
                        .collect::<candle_core::Result<_>>()?;
                    optimizer.step(&g)?;
                    if let Some(a) = ema.as_mut() {
                        a.update(&vars)?;
                    }
                    (f64::from(loss.to_scalar::<f32>()?), Some(logits), None)
                }
            };
            if !loss_v.is_finite() {
                return Err(TrainError::NonFinite {
                    loss: loss_v as f32,
                    epoch,
                    step,
                });
            }
            if let Some(logits) = logits {
                let pred = logits.argmax(1)?.to_vec1::<u32>()?;
                correct += pred
                    .iter()
                    .zip(batch)
                    .filter(|(p, i)| **p == u32::from(data.labels()[**i]))
                    .count();
            }
            loss_sum += loss_v * batch.len() as f64;
            seen += batch.len();
            let secs = ts.elapsed().as_secs_f64();
            emit(TrainingEvent::Step {
                epoch,
                step,
                loss: loss_v,
                images_per_sec: if secs > 0.0 {
                    batch.len() as f64 / secs
                } else {
                    0.0
                },
                epsilon: ledger.as_ref().map(Ledger::epsilon),
                noise_multiplier: used.map(|u| u.0),
                clip_norm: used.map(|u| u.1),
                accounted_noise_multiplier: used.map(|u| u.2),
                clipped_fraction: clip_stats.map(|c| c.clipped_fraction),
                median_grad_norm: clip_stats.map(|c| c.median_norm),
            });
        }
        // With averaging, the last iterate is evaluated for comparison, then the average is
        // swapped in for its own evaluation: the average is what the epoch reports and what
        // `-best` holds.
        let (vm, raw_val_acc, released) = match &ema {
            Some(a) => {
                let raw = evaluate(&model, val, config.eval_batch_size)?.accuracy;
                let iterate = a.swap_in(&vars)?;
                let vm = evaluate(&model, val, config.eval_batch_size)?;
                WeightAverage::restore(&vars, iterate)?;
                (vm, Some(raw), a.released(&vars))
            }
            None => (
                evaluate(&model, val, config.eval_batch_size)?,
                None,
                vars.iter()
                    .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                    .collect(),
            ),
        };
        let seconds = t0.elapsed().as_secs_f64();
        epoch_seconds.push(seconds);
        epochs_run += 1;
        let epsilon = ledger.as_ref().map(Ledger::epsilon);
        let record = EpochRecord {
            epoch,
            train_loss: Some(if seen > 0 {
                loss_sum / seen as f64
            } else {
                0.0
            }),
            train_acc: Some(if seen > 0 {
                correct as f64 / seen as f64
            } else {
                0.0
            }),
            val_loss: vm.loss,
            val_acc: vm.accuracy,
            seconds,
            epsilon,
        };
        let mean_secs = epoch_seconds.iter().sum::<f64>() / epoch_seconds.len() as f64;
        emit(TrainingEvent::Epoch {
            epoch,
            train_loss: record.train_loss.unwrap_or(0.0),
            train_acc: record.train_acc.unwrap_or(0.0),
            val_loss: record.val_loss,
            val_acc: record.val_acc,
            seconds,
            eta_seconds: mean_secs * (config.epochs - epoch - 1) as f64,
            epsilon,
            raw_val_acc,
        });
        history.push(record);
        let improved = vm.accuracy > best_val_acc;
        if improved {
            best_val_acc = vm.accuracy;
            since_best = 0;
        } else {
            since_best += 1;
        }
        let meta = CheckpointMeta {
            format: checkpoint::FORMAT,
            model: kind,
            technique: kind.technique().number(),
            width,
            epoch: epoch + 1,
            optimizer: config.optimizer,
            optimizer_step: optimizer.steps(),
            best_val_acc,
            epochs_without_improvement: since_best,
            seed,
            dp,
            epsilon,
            neighbouring: dp.map(|_| dpsgd::NEIGHBOURING.to_string()),
            privacy_ledger: ledger
                .as_ref()
                .map(|l| l.segments().to_vec())
                .unwrap_or_default(),
            history: history.clone(),
            frozen: model.frozen().to_vec(),
            ema: ema_decay,
            dropout,
        };
        if improved {
            if let Some(p) = ckpt_path("best") {
                // The release: no un-noised training statistics.
                checkpoint::save(&p, &meta.for_release(), &released)?;
                emit(TrainingEvent::Checkpoint {
                    path: p.clone(),
                    val_acc: vm.accuracy,
                    kind: "best".into(),
                });
                best_checkpoint = Some(p);
            }
        } else if let (Some(p), Some(_)) = (&best_checkpoint, epsilon) {
            // The release was chosen looking at this epoch too: it carries the run's epsilon.
            restamp_release(p, &meta)?;
        }
        if let Some(p) = ckpt_path("last") {
            // The last iterate (not the average) with everything needed to continue.
            let mut tensors: Vec<(String, Tensor)> = vars
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect();
            tensors.extend(optimizer.state_tensors());
            if let Some(a) = &ema {
                tensors.extend(a.state_tensors(&vars));
            }
            checkpoint::save(&p, &meta, &tensors)?;
            emit(TrainingEvent::Checkpoint {
                path: p.clone(),
                val_acc: vm.accuracy,
                kind: "last".into(),
            });
            last_checkpoint = Some(p);
        }
        if let Some(patience) = config.patience {
            if since_best >= patience && epoch + 1 < config.epochs {
                emit(TrainingEvent::EarlyStop {
                    epoch,
                    best_val_acc,
                });
                early_stopped = true;
                break;
            }
        }
    }
    if let (Some(p), Some(l)) = (&best_checkpoint, &ledger) {
        // A run stopped mid-epoch took steps after the last restamp.
        let segments = l.segments().to_vec();
        let epsilon = l.epsilon();
        checkpoint::update_meta(p, |m| {
            m.epsilon = Some(epsilon);
            m.privacy_ledger = segments;
        })?;
    }
    // The outcome's model holds what the run releases.
    if let Some(a) = &ema {
        a.swap_in(&vars)?;
    }
    let val_metrics = evaluate(&model, val, config.eval_batch_size)?;
    let epsilon = ledger.as_ref().map(Ledger::epsilon);
    if !stopped {
        emit(TrainingEvent::Finished {
            best_val_acc,
            epochs_run,
            epsilon,
            best_checkpoint: best_checkpoint.clone(),
        });
    }
    Ok(TrainOutcome {
        model,
        best_val_acc,
        best_checkpoint,
        last_checkpoint,
        epochs_run,
        history,
        stopped,
        early_stopped,
        epsilon,
        val_metrics,
    })
}

/// Carries the run's privacy so far (epsilon and ledger) into the release at `path`.
fn restamp_release(path: &Path, meta: &CheckpointMeta) -> Result<()> {
    checkpoint::update_meta(path, |m| {
        m.epsilon = meta.epsilon;
        m.privacy_ledger = meta.privacy_ledger.clone();
        if let (Some(d), Some(run)) = (m.dp.as_mut(), meta.dp) {
            d.reproducible = run.reproducible;
        }
    })
}

/// A seed for non-secret randomness when none was given (used by callers building configs).
pub fn os_seed() -> u64 {
    rand::rng().random()
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<TrainControl>();
    is_send::<TrainingEvent>();
    let _ = NoiseSeed::Os;
}
