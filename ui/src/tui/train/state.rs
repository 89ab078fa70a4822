//! The Train tab's state: the run's settings, the DP sliders and the epsilon they give, and
//! the running or finished run as the engine's events describe it. Nothing here draws; may not
//! import the app, the event queue or the views.

use crate::tui::backend::{
    ClipNorm, DpSettings, DpStep, EpochPoint, NoiseMultiplier, OptimizerChoice, SharedData,
    TrainConfig, TrainOutcome, TrainUpdate,
};
use crate::tui::data::source::DataReady;
use crate::tui::projection::{self, LedgerSegment, Projection};
use privxray::model::ModelKind;
use privxray::pipeline::{optimizer_following_dp, InteractiveSettings, DEFAULT_DP};
use std::sync::Arc;

/// Up to 4096: DP-SGD wants large batches (the noise per step shrinks as 1/B).
pub const BATCH_SIZES: [usize; 10] = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/// Decays of the released weight average (`train --ema`), after "off".
pub const EMA_DECAYS: [f64; 3] = [0.9, 0.95, 0.99];
/// Training dropout rates (`train --dropout`), after "the model's own".
pub const DROPOUTS: [f32; 2] = [0.25, 0.0];
/// SGD's momentum on the tab.
pub const SGD_MOMENTUM: f64 = 0.9;
/// The optimizer field's choices, in order: Adam at small rates, then SGD with momentum at
/// larger ones (the first-run default under DP-SGD, where clipping bounds every step).
pub const OPTIMIZERS: [(OptimizerChoice, f64); 12] = [
    (OptimizerChoice::Adam, 1e-4),
    (OptimizerChoice::Adam, 3e-4),
    (OptimizerChoice::Adam, 1e-3),
    (OptimizerChoice::Adam, 3e-3),
    (OptimizerChoice::Adam, 1e-2),
    (SGD, 1e-2),
    (SGD, 3e-2),
    (SGD, 0.1),
    (SGD, 0.2),
    (SGD, 0.5),
    (SGD, 1.0),
    (SGD, 2.0),
];
const SGD: OptimizerChoice = OptimizerChoice::Sgd {
    momentum: SGD_MOMENTUM,
};
pub const DELTAS: [f64; 5] = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7];
pub const NOISE_STEP: f64 = 0.05;
pub const CLIP_STEP: f64 = 0.1;
/// Slider ranges (the types allow wider values for the command line).
pub const NOISE_RANGE: [f64; 2] = [0.1, 5.0];
pub const CLIP_RANGE: [f64; 2] = [0.1, 10.0];
pub const MAX_EPOCHS: usize = 500;

/// The setting after (`up`) or before `current` in the list "none, then `choices`", stopping
/// at both ends.
fn step_optional<T: Copy + PartialEq>(current: Option<T>, choices: &[T], up: bool) -> Option<T> {
    let i = current
        .and_then(|v| choices.iter().position(|&c| c == v))
        .map_or(0, |p| p + 1);
    let j = if up {
        (i + 1).min(choices.len())
    } else {
        i.saturating_sub(1)
    };
    j.checked_sub(1).map(|k| choices[k])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Model,
    Epochs,
    Batch,
    LearningRate,
    Dp,
    Noise,
    Clip,
    Delta,
    Freeze,
    Ema,
    Dropout,
}

impl Field {
    pub const ALL: [Field; 11] = [
        Field::Model,
        Field::Epochs,
        Field::Batch,
        Field::LearningRate,
        Field::Dp,
        Field::Noise,
        Field::Clip,
        Field::Delta,
        Field::Freeze,
        Field::Ema,
        Field::Dropout,
    ];
    /// Fields a running training accepts changes to.
    pub fn live(self) -> bool {
        matches!(self, Field::Noise | Field::Clip)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub enum RunState {
    #[default]
    Idle,
    Starting,
    Running,
    Paused,
    Finished(TrainOutcome),
    Failed(String),
}

impl RunState {
    pub fn active(&self) -> bool {
        matches!(
            self,
            RunState::Starting | RunState::Running | RunState::Paused
        )
    }
}

/// What changing a field asks of the rest of the app.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adjusted {
    Nothing,
    /// The DP parameters of a running training changed.
    Dp(NoiseMultiplier, ClipNorm),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Epsilon {
    /// No DP, or nothing to compute it from yet (with the reason).
    Unknown(String),
    Value {
        /// The engine ledger's epsilon after the run's last step (0 before its first).
        spent: f64,
        /// The ledger so far plus the remaining steps at the slider's settings.
        projected: f64,
    },
    Error(String),
}

pub struct TrainTab {
    pub model: ModelKind,
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: OptimizerChoice,
    pub learning_rate: f64,
    pub dp_enabled: bool,
    pub noise: NoiseMultiplier,
    pub clip: ClipNorm,
    pub delta: f64,
    /// A layer kept at its initial weights (`train --freeze`), one of the model's.
    pub freeze: Option<String>,
    /// Decay of the released weight average (`train --ema`); `None`: the last iterate.
    pub ema: Option<f64>,
    /// Training dropout rate (`train --dropout`); `None`: the model's own.
    pub dropout: Option<f32>,
    pub focus: usize,
    pub state: RunState,
    pub device: String,
    /// Training-set size from the Data tab (or the engine's Started event).
    pub train_images: Option<usize>,
    pub steps_per_epoch: Option<usize>,
    pub history: Vec<EpochPoint>,
    /// (epoch, validation accuracy) where the engine took the best checkpoint, the weights
    /// the run releases.
    pub best: Option<(usize, f64)>,
    /// (global step, loss).
    pub step_loss: Vec<(f64, f64)>,
    pub position: Option<(usize, usize)>,
    pub images_per_sec: f64,
    /// The engine's ledger of this run as its step events reported it (the noise multiplier
    /// recorded for each step, merged into segments): the projection starts from it.
    pub ledger: Vec<LedgerSegment>,
    /// The sampling rate of the run's ledger (from the engine's Started event).
    pub sample_rate: Option<f64>,
    /// The engine ledger's epsilon after the last step: epsilon spent.
    pub spent: Option<f64>,
    /// A DP step came without a ledger (the run keeps no accountant): nothing spent is known.
    pub unaccounted: bool,
    /// (noise multiplier, clip norm) the engine's last step used.
    pub in_use: Option<(f64, f64)>,
    projection: Projection,
    /// Last DP step's (clipped share, median gradient norm): tells whether C is set well.
    pub clipping: Option<(f64, f64)>,
    pub epsilon: Epsilon,
    pub message: Option<(String, bool)>,
}

impl TrainTab {
    /// The tab at the pipeline's first-run settings ([`InteractiveSettings::default`], which
    /// `bench demo` measures).
    pub fn new(device: String) -> Self {
        let first = InteractiveSettings::default();
        let dp = first.dp.unwrap_or(DEFAULT_DP);
        TrainTab {
            model: first.model,
            epochs: first.epochs,
            batch: first.batch_size,
            optimizer: first.optimizer,
            learning_rate: first.learning_rate,
            dp_enabled: first.dp.is_some(),
            noise: NoiseMultiplier::clamped(dp.noise_multiplier),
            clip: ClipNorm::clamped(dp.clip_norm),
            delta: dp.delta,
            // The tab freezes one layer at most.
            freeze: first.frozen.first().cloned(),
            ema: first.ema,
            dropout: first.dropout,
            focus: 0,
            state: RunState::Idle,
            device,
            train_images: None,
            steps_per_epoch: None,
            history: Vec::new(),
            best: None,
            step_loss: Vec::new(),
            position: None,
            images_per_sec: 0.0,
            ledger: Vec::new(),
            sample_rate: None,
            spent: None,
            unaccounted: false,
            in_use: None,
            projection: Projection::new(),
            clipping: None,
            epsilon: Epsilon::Unknown("preprocess data first".into()),
            message: None,
        }
    }

    pub fn field(&self) -> Field {
        Field::ALL[self.focus.min(Field::ALL.len() - 1)]
    }

    pub fn move_focus(&mut self, down: bool) {
        let n = Field::ALL.len();
        self.focus = if down {
            (self.focus + 1) % n
        } else {
            (self.focus + n - 1) % n
        };
    }

    pub fn config(&self, data: &Arc<DataReady>) -> TrainConfig {
        TrainConfig {
            model: self.model,
            epochs: self.epochs,
            batch_size: self.batch,
            optimizer: self.optimizer,
            learning_rate: self.learning_rate,
            dp: self.dp_enabled.then_some(DpSettings {
                noise: self.noise,
                clip: self.clip,
                delta: self.delta,
            }),
            frozen: self.freeze.iter().cloned().collect(),
            ema: self.ema,
            dropout: self.dropout,
            data_root: data.data.root.clone(),
            data: Some(SharedData(data.clone())),
        }
    }

    /// Changes the focused field by one step up or down.
    pub fn adjust(&mut self, up: bool) -> Adjusted {
        let field = self.field();
        if self.state.active() && !field.live() {
            self.message = Some((
                "only noise and clip can change while training runs".into(),
                true,
            ));
            return Adjusted::Nothing;
        }
        if self.state.active() && !self.dp_enabled {
            self.message = Some(("this run trains without DP".into(), true));
            return Adjusted::Nothing;
        }
        self.message = None;
        if !self.state.active() {
            // Planning the next run: the projection is for the settings, not the last run.
            self.forget_run();
        }
        let step = |v: usize, choices: &[usize]| {
            let i = choices.iter().position(|&c| c >= v).unwrap_or(0);
            let j = if up {
                (i + 1).min(choices.len() - 1)
            } else {
                i.saturating_sub(1)
            };
            choices[j]
        };
        let stepf = |v: f64, choices: &[f64]| {
            let i = choices
                .iter()
                .position(|&c| (c - v).abs() <= v.abs() * 1e-9)
                .unwrap_or(0);
            let j = if up {
                (i + 1).min(choices.len() - 1)
            } else {
                i.saturating_sub(1)
            };
            choices[j]
        };
        match field {
            Field::Model => {
                let all = ModelKind::ALL;
                let i = all.iter().position(|&m| m == self.model).unwrap_or(0);
                self.model = all[if up {
                    (i + 1) % all.len()
                } else {
                    (i + all.len() - 1) % all.len()
                }];
                // The DNNs share layer names, the VGGs have their own.
                if let Some(f) = &self.freeze {
                    if !self.model.layer_names().contains(f) {
                        self.freeze = None;
                    }
                }
            }
            Field::Epochs => {
                self.epochs = if up {
                    (self.epochs + 1).min(MAX_EPOCHS)
                } else {
                    self.epochs.saturating_sub(1).max(1)
                };
            }
            Field::Batch => self.batch = step(self.batch, &BATCH_SIZES),
            Field::LearningRate => {
                let now = (self.optimizer, self.learning_rate);
                let i = OPTIMIZERS
                    .iter()
                    .position(|&(o, r)| o == now.0 && (r - now.1).abs() <= r * 1e-9)
                    .unwrap_or(0);
                let j = if up {
                    (i + 1).min(OPTIMIZERS.len() - 1)
                } else {
                    i.saturating_sub(1)
                };
                (self.optimizer, self.learning_rate) = OPTIMIZERS[j];
            }
            Field::Dp => self.set_dp(!self.dp_enabled),
            Field::Noise => {
                let d = if up { NOISE_STEP } else { -NOISE_STEP };
                let v = round_to(self.noise.get() + d, NOISE_STEP);
                self.noise = NoiseMultiplier::clamped(v.clamp(NOISE_RANGE[0], NOISE_RANGE[1]));
            }
            Field::Clip => {
                let d = if up { CLIP_STEP } else { -CLIP_STEP };
                let v = round_to(self.clip.get() + d, CLIP_STEP);
                self.clip = ClipNorm::clamped(v.clamp(CLIP_RANGE[0], CLIP_RANGE[1]));
            }
            Field::Delta => self.delta = stepf(self.delta, &DELTAS),
            Field::Freeze => {
                // none, then each layer in order; wraps around like the model.
                let mut choices: Vec<Option<String>> = vec![None];
                choices.extend(self.model.layer_names().into_iter().map(Some));
                let i = choices.iter().position(|c| *c == self.freeze).unwrap_or(0);
                let n = choices.len();
                self.freeze = choices[if up { (i + 1) % n } else { (i + n - 1) % n }].clone();
            }
            Field::Ema => self.ema = step_optional(self.ema, &EMA_DECAYS, up),
            Field::Dropout => self.dropout = step_optional(self.dropout, &DROPOUTS, up),
        }
        if self.state.active() && field.live() {
            Adjusted::Dp(self.noise, self.clip)
        } else {
            Adjusted::Nothing
        }
    }

    /// Turns DP-SGD on or off (space, from whichever field has focus). Like every setting
    /// but the sliders, it only changes between runs.
    pub fn toggle_dp(&mut self) {
        if self.state.active() {
            self.message = Some(("DP can only be turned on or off between runs".into(), true));
            return;
        }
        self.message = None;
        // Planning the next run: the projection is for the settings, not the last run.
        self.forget_run();
        self.set_dp(!self.dp_enabled);
    }

    /// DP on or off, the optimizer following it while it is at a mode's default
    /// ([`optimizer_following_dp`]: SGD at a large rate under DP, Adam without).
    fn set_dp(&mut self, on: bool) {
        self.dp_enabled = on;
        (self.optimizer, self.learning_rate) =
            optimizer_following_dp(on, (self.optimizer, self.learning_rate));
    }

    /// Steps the whole run will take.
    pub fn total_steps(&self) -> Option<u64> {
        let per_epoch = self
            .steps_per_epoch
            .or_else(|| self.train_images.map(|n| n.div_ceil(self.batch.max(1))))?;
        Some(per_epoch as u64 * self.epochs as u64)
    }

    /// DP steps of this run the engine's ledger recorded.
    pub fn steps_done(&self) -> u64 {
        projection::steps(&self.ledger)
    }

    /// Recomputes the epsilon shown: spent is the engine's figure from the last step event;
    /// projected composes the engine's ledger so far with the remaining steps at the slider's
    /// settings (accounted as the engine will account them).
    pub fn recompute_epsilon(&mut self) {
        self.epsilon = self.compute_epsilon();
    }

    fn compute_epsilon(&mut self) -> Epsilon {
        if !self.dp_enabled {
            return Epsilon::Unknown("DP off: no guarantee (ε = ∞)".into());
        }
        if self.unaccounted {
            return Epsilon::Unknown("the engine keeps no ledger for this run".into());
        }
        let (Some(n), Some(total)) = (self.train_images, self.total_steps()) else {
            return Epsilon::Unknown("preprocess data first".into());
        };
        if n == 0 {
            return Epsilon::Unknown("no training images".into());
        }
        let q = self
            .sample_rate
            .unwrap_or_else(|| (self.batch as f64 / n as f64).min(1.0));
        let done = self.steps_done();
        let ended = matches!(self.state, RunState::Finished(_) | RunState::Failed(_));
        let remaining = if ended && done > 0 {
            0
        } else {
            total.saturating_sub(done)
        };
        let next = match projection::accounted_noise(
            self.noise.get(),
            self.clip.get(),
            (q * n as f64).max(1.0),
        ) {
            Ok(v) => v,
            Err(e) => return Epsilon::Error(e),
        };
        let mut all = self.ledger.clone();
        all.push(LedgerSegment {
            noise: next,
            steps: remaining,
        });
        match self.projection.epsilon(q, &all, self.delta) {
            Ok(projected) => Epsilon::Value {
                spent: self.spent.unwrap_or(0.0),
                projected,
            },
            Err(e) => Epsilon::Error(e),
        }
    }

    /// Forgets what the engine reported of the last run's privacy (not its curves).
    fn forget_run(&mut self) {
        self.ledger.clear();
        self.sample_rate = None;
        self.spent = None;
        self.unaccounted = false;
    }

    /// Clears curves for a new run.
    pub fn begin_run(&mut self) {
        self.state = RunState::Starting;
        self.history.clear();
        self.best = None;
        self.step_loss.clear();
        self.forget_run();
        self.in_use = None;
        self.position = None;
        self.images_per_sec = 0.0;
        self.clipping = None;
        self.message = None;
    }

    /// Applies an event; returns the finished outcome when the run ended.
    pub fn apply(&mut self, update: TrainUpdate) -> Option<TrainOutcome> {
        match update {
            TrainUpdate::Started {
                device,
                steps_per_epoch,
                epochs,
                train_images,
                sample_rate,
            } => {
                self.device = device;
                self.steps_per_epoch = Some(steps_per_epoch);
                self.epochs = epochs;
                self.train_images = Some(train_images);
                self.sample_rate = sample_rate;
                self.state = RunState::Running;
            }
            TrainUpdate::Step {
                epoch,
                step,
                loss,
                images_per_sec,
                epsilon,
                dp,
                clipping,
            } => {
                if self.state == RunState::Starting {
                    self.state = RunState::Running;
                }
                let per = self.steps_per_epoch.unwrap_or(1) as f64;
                self.step_loss
                    .push((epoch as f64 * per + step as f64, loss));
                self.position = Some((epoch, step));
                self.images_per_sec = images_per_sec;
                self.clipping = clipping;
                if let Some(DpStep {
                    noise,
                    clip,
                    accounted_noise,
                }) = dp
                {
                    self.in_use = Some((noise, clip));
                    match (accounted_noise, epsilon) {
                        (Some(a), Some(e)) => {
                            projection::record(&mut self.ledger, a);
                            self.spent = Some(e);
                        }
                        _ => self.unaccounted = true,
                    }
                }
            }
            TrainUpdate::Epoch(p) => self.history.push(p),
            TrainUpdate::BestCheckpoint { val_acc } => {
                // The engine writes it right after the epoch it follows.
                self.best = self.history.last().map(|p| (p.epoch, val_acc));
            }
            TrainUpdate::DpApplied { noise, clip } => {
                self.message = Some((
                    format!("applied σ {noise:.2}, C {clip:.2} to the next steps"),
                    false,
                ));
            }
            TrainUpdate::Paused => self.state = RunState::Paused,
            TrainUpdate::Resumed => self.state = RunState::Running,
            TrainUpdate::Finished(outcome) => {
                self.state = RunState::Finished(outcome.clone());
                return Some(outcome);
            }
            TrainUpdate::Failed(reason) => self.state = RunState::Failed(reason),
        }
        None
    }

    pub fn eta_seconds(&self) -> Option<f64> {
        let total = self.total_steps()?;
        let done = self.step_loss.len() as u64;
        if self.images_per_sec <= 0.0 {
            return None;
        }
        let steps_per_sec = self.images_per_sec / self.batch.max(1) as f64;
        Some(total.saturating_sub(done) as f64 / steps_per_sec)
    }
}

fn round_to(v: f64, step: f64) -> f64 {
    (v / step).round() * step
}
