//! Starting or resuming a run: the checks on the configuration, the data and the checkpoint to
//! resume, the model, optimizer and average (restored on resume), the DP settings with their
//! reproducibility marks, the secret streams, the ledger, the class weights, and the `Started`
//! event. Part of the run (`run.rs`); imports the engine's siblings only.

use super::run::{Learner, Private, Progress, Run};
use super::{model_vars, Seed, TrainConfig, TrainingEvent};
use crate::model::ModelKind;
use crate::train::accounting::{DpSegment, Ledger, PrivacyAccountant};
use crate::train::checkpoint::{self, Loaded};
use crate::train::control::TrainControl;
use crate::train::data::TrainData;
use crate::train::device;
use crate::train::dpsgd::{self, DpConfig, NoiseSeed, Sampling, SamplingSeed};
use crate::train::ema::WeightAverage;
use crate::train::error::{Result, TrainError};
use crate::train::loss::{ClassWeighting, ClassWeights};
use crate::train::model::{self, DropoutRate, Model};
use crate::train::optim::Optimizer;
use candle_core::Device;
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::mpsc::Sender;

impl<'a> Run<'a> {
    /// Builds the run `config` asks for (from its checkpoint when it resumes one) and reports
    /// it with a `Started` event. Nothing is written before every check has passed.
    pub(super) fn start_or_resume(
        mut config: TrainConfig,
        data: &'a TrainData,
        val: &'a TrainData,
        events: Sender<TrainingEvent>,
        control: TrainControl,
    ) -> Result<Self> {
        config.validate()?;
        check_data(config.model, data, val)?;
        let (device, device_name) = device::select(config.prefer_gpu);
        let resumed = match &config.resume {
            Some(p) => Some(checkpoint::load(p, &device)?),
            None => None,
        };
        let (width, seed) = width_and_seed(&config, resumed.as_ref())?;
        let (model, varmap, dropout) =
            build_model(&config, resumed.as_ref(), data, width, seed, &device)?;
        let vars = model_vars(&model, &varmap)?;
        let mut optimizer = Optimizer::new(config.optimizer, vars.clone())?;
        optimizer.set_trainable(&model.trainable_mask())?;
        let ema_decay = config
            .ema
            .or_else(|| resumed.as_ref().and_then(|r| r.meta.ema));
        let mut progress = Progress {
            history: Vec::new(),
            best_val_acc: f64::NEG_INFINITY,
            since_best: 0,
            best_checkpoint: None,
            last_checkpoint: None,
            stopped: false,
            early_stopped: false,
            epochs_run: 0,
            epoch_seconds: Vec::new(),
        };
        let mut start_epoch = 0usize;
        let mut dp = config.dp;
        if let Some(r) = &resumed {
            r.restore_vars(&vars)?;
            optimizer.load_state(&r.tensors, r.meta.optimizer_step)?;
            progress.history = r.meta.history.clone();
            progress.best_val_acc = r.meta.best_val_acc;
            progress.since_best = r.meta.epochs_without_improvement;
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
            dpsgd::check_plan_for_dp(&config.model.plan(width))?;
        }
        // Started after the weights are restored: a resume without a stored average (a `-best`
        // checkpoint, which holds only the average, or one of a run that did not average) starts
        // it at the resumed weights.
        let ema = match ema_decay {
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
        let accountant = config.accountant.take();
        let mut private = match dp {
            Some(d) => Some(Private::start(
                d,
                resumed.as_ref(),
                sample_rate,
                accountant,
            )?),
            None => None,
        };
        let class_weights = class_weights(config.class_weights.clone(), data, private.as_mut())?;
        let mut run = Run {
            config,
            data,
            val,
            events,
            control,
            device,
            width,
            seed,
            ema_decay,
            dropout,
            learner: Learner {
                model,
                vars,
                optimizer,
                ema,
                class_weights,
            },
            private,
            steps_per_epoch,
            sample_rate,
            start_epoch,
            progress,
        };
        run.emit(run.started(device_name));
        // A resumed run continues the release it already wrote (if it is still there): later
        // epochs replace it only when they beat it, and restamp its epsilon either way.
        let resuming = resumed.is_some();
        run.progress.best_checkpoint = run
            .checkpoint_path("best")
            .filter(|p| resuming && p.exists());
        if resuming && run.progress.best_checkpoint.is_none() {
            // That release is not at hand (resumed from elsewhere): this run's epochs choose a
            // new one, so the run always ends with a model.
            run.progress.best_val_acc = f64::NEG_INFINITY;
        }
        Ok(run)
    }

    /// The `Started` event: what the run is, on which device.
    fn started(&self, device: String) -> TrainingEvent {
        let dp = self.dp();
        TrainingEvent::Started {
            model: self.config.model.name().into(),
            width: self.width,
            device,
            train_images: self.data.len(),
            val_images: self.val.len(),
            steps_per_epoch: self.steps_per_epoch,
            epochs: self.config.epochs,
            start_epoch: self.start_epoch,
            batch_size: self.config.batch_size,
            dp,
            sample_rate: dp.map(|_| self.sample_rate),
            sampling: match dp.map(|d| d.sampling) {
                Some(Sampling::Poisson) => "poisson",
                _ => "shuffled",
            }
            .into(),
            accounting: self.ledger().map(|l| {
                format!(
                    "poisson subsampled Gaussian, q = {:.6} per step, {} neighbours (RDP accountant)",
                    l.sample_rate().get(),
                    dpsgd::NEIGHBOURING
                )
            }),
            frozen: self.learner.model.frozen().to_vec(),
            ema: self.ema_decay,
            dropout: self.dropout,
        }
    }
}

/// Both sets have examples of the model's input shape.
fn check_data(kind: ModelKind, data: &TrainData, val: &TrainData) -> Result<()> {
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
    if data.classes() != val.classes() {
        return Err(TrainError::Data(format!(
            "training classes ({}) differ from validation classes ({})",
            data.classes(),
            val.classes()
        )));
    }
    Ok(())
}

/// The width and seed of the run: the checkpoint's on resume (after checking that it holds the
/// same model and has epochs left to train), else the configuration's.
fn width_and_seed(config: &TrainConfig, resumed: Option<&Loaded>) -> Result<(f32, u64)> {
    let kind = config.model;
    Ok(match resumed {
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
    })
}

/// The initialised model with its frozen layers (the checkpoint's on resume, which cannot be
/// changed), its dropout rate, and ImageNet weights on a fresh start when asked.
fn build_model(
    config: &TrainConfig,
    resumed: Option<&Loaded>,
    data: &TrainData,
    width: f32,
    seed: u64,
    device: &Device,
) -> Result<(Model, VarMap, Option<DropoutRate>)> {
    let kind = config.model;
    if let Some(r) = resumed.filter(|r| r.meta.classes != *data.classes()) {
        return Err(TrainError::Checkpoint {
            path: r.path.clone(),
            reason: format!(
                "was trained on classes {}; the data have {}",
                r.meta.classes,
                data.classes()
            ),
        });
    }
    let (mut model, varmap) = Model::init_for(kind, width, data.classes().len(), seed, device)?;
    let frozen = match resumed {
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
        .or_else(|| resumed.and_then(|r| r.meta.dropout));
    if let Some(p) = dropout {
        model.set_dropout(p);
    }
    if let Some(p) = &config.init_weights {
        if resumed.is_none() {
            model::load_vgg16_imagenet(&varmap, kind, p)?;
        }
    }
    Ok((model, varmap, dropout))
}

impl Private {
    /// DP-SGD's state for settings `dp`: the noise and sampling streams (the sampling one
    /// secret unless the run asked for a reproducible, non-private seed), the reproducibility
    /// marks, the resumed adaptive clip, and the ledger (with the resumed run's steps).
    fn start(
        mut dp: DpConfig,
        resumed: Option<&Loaded>,
        sample_rate: f64,
        accountant: Option<Box<dyn PrivacyAccountant>>,
    ) -> Result<Self> {
        let noise_rng = dpsgd::noise_rng(dp.noise_seed);
        // The Poisson draws: secret (OS CSPRNG, never written anywhere) unless the run asked
        // for a reproducible, non-private seed.
        let sampling_rng = match dp.sampling_seed {
            SamplingSeed::Os => dpsgd::noise_rng(NoiseSeed::Os),
            SamplingSeed::InsecureFixed(s) => ChaCha20Rng::seed_from_u64(s),
        };
        // Recorded from the seeds actually used, and sticky across resumes: once reproducible,
        // the run's epsilon is never valid again.
        let before = resumed
            .and_then(|r| r.meta.dp)
            .map(|p| p.marks())
            .unwrap_or_default();
        dp.legacy_noise_seed = None;
        dp.reproducible.noise |=
            before.noise || matches!(dp.noise_seed, NoiseSeed::InsecureFixed(_));
        dp.reproducible.sampling |=
            before.sampling || matches!(dp.sampling_seed, SamplingSeed::InsecureFixed(_));
        if let Some(r) = resumed {
            // Adaptive clipping moved C during the run: continue from where it got to.
            if let (Some(_), Some(prev)) = (dp.adaptive_clip, r.meta.dp) {
                dp.clip_norm = prev.clip_norm;
            }
        }
        let ledger = match accountant {
            Some(acc) => {
                let q = crate::privacy::SampleRate::new(sample_rate)?;
                let previous = match resumed {
                    Some(r) if r.meta.privacy_ledger.is_empty() && r.meta.optimizer_step > 0 => {
                        // A checkpoint from before ledgers: its steps at its own settings.
                        let rd = r.meta.dp.unwrap_or(dp);
                        vec![DpSegment {
                            sample_rate: q,
                            noise_multiplier: rd.noise_multiplier,
                            steps: r.meta.optimizer_step,
                        }]
                    }
                    Some(r) => r.meta.privacy_ledger.clone(),
                    None => Vec::new(),
                };
                Some(Ledger::new(q, dp.delta()?, &previous, acc))
            }
            None => None,
        };
        Ok(Private {
            settings: dp,
            noise_rng,
            sampling_rng,
            ledger,
        })
    }
}

/// The class weights asked for. Weights from the class counts of a DP run are one Gaussian
/// release of the histogram (L2 sensitivity 1 under add/remove), from its own noise stream
/// (`u64::MAX`), recorded in the ledger.
fn class_weights(
    weighting: Option<ClassWeighting>,
    data: &TrainData,
    private: Option<&mut Private>,
) -> Result<Option<ClassWeights>> {
    Ok(match weighting {
        None => None,
        Some(ClassWeighting::Prior(w)) if w.len() != data.classes().len() => {
            return Err(TrainError::Config(format!(
                "{} class weights for {} classes ({}): give one per class, in that order",
                w.len(),
                data.classes().len(),
                data.classes()
            )))
        }
        Some(ClassWeighting::Prior(w)) => Some(w),
        Some(ClassWeighting::Counts { noise_std }) => {
            let counts = data.class_counts();
            Some(match private {
                Some(p) => {
                    let nr = &mut p.noise_rng;
                    nr.set_stream(u64::MAX);
                    nr.set_word_pos(0);
                    let noise = dpsgd::gaussian_noise(counts.len(), noise_std, nr)?;
                    let noisy: Vec<usize> = counts
                        .iter()
                        .zip(&noise)
                        .map(|(&c, &z)| (c as f64 + f64::from(z)).round().max(1.0) as usize)
                        .collect();
                    if let Some(l) = p.ledger.as_mut() {
                        l.release(crate::privacy::NoiseMultiplier::new(noise_std)?)?;
                    }
                    ClassWeights::balanced(&noisy)
                }
                None => ClassWeights::balanced(&counts),
            })
        }
    })
}
