//! One run's state and its steps within an epoch: the batches (Poisson from the secret sampling
//! stream, or a shuffle), the stop/pause/DP-change check at each step boundary, a plain step, a
//! private (DP-SGD) step and the step's record. Built by `start.rs`, closed by `epoch_end.rs`
//! and `finish.rs`; imports the engine's siblings only, never the interfaces.

use super::{TrainConfig, TrainingEvent};
use crate::train::accounting::Ledger;
use crate::train::checkpoint::EpochRecord;
use crate::train::control::{Directive, TrainControl};
use crate::train::data::TrainData;
use crate::train::dpsgd::{self, ClipStats, DpConfig, Sampling};
use crate::train::ema::{EmaDecay, WeightAverage};
use crate::train::error::{Result, TrainError};
use crate::train::loss::{self, ClassWeights};
use crate::train::model::{DropoutRate, Model};
use crate::train::optim::Optimizer;
use candle_core::{Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha20Rng, ChaCha8Rng};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::Instant;

/// Whether the run goes on after an epoch (or a step boundary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Stop,
}

/// The model being trained and what updates it.
pub(super) struct Learner {
    pub(super) model: Model,
    pub(super) vars: Vec<(String, Var)>,
    pub(super) optimizer: Optimizer,
    /// The released weight average, when the run averages.
    pub(super) ema: Option<WeightAverage>,
    pub(super) class_weights: Option<ClassWeights>,
}

/// DP-SGD's state: the settings as they are now, the two secret streams and the ledger.
pub(super) struct Private {
    pub(super) settings: DpConfig,
    /// Gradient noise: one ChaCha stream per optimizer step (the class-count release uses
    /// stream `u64::MAX`).
    pub(super) noise_rng: ChaCha20Rng,
    /// Poisson sampling: one stream per step of the run (`epoch * steps_per_epoch + i`).
    pub(super) sampling_rng: ChaCha20Rng,
    /// Present when the run has an accountant.
    pub(super) ledger: Option<Ledger>,
}

/// Where the run stands between epochs: what the checkpoints and the outcome report.
pub(super) struct Progress {
    pub(super) history: Vec<EpochRecord>,
    pub(super) best_val_acc: f64,
    pub(super) since_best: usize,
    pub(super) best_checkpoint: Option<PathBuf>,
    pub(super) last_checkpoint: Option<PathBuf>,
    pub(super) stopped: bool,
    pub(super) early_stopped: bool,
    pub(super) epochs_run: usize,
    pub(super) epoch_seconds: Vec<f64>,
}

/// A run in progress.
pub(super) struct Run<'a> {
    /// As asked (its accountant taken into the ledger); `dp` here is not updated, see `private`.
    pub(super) config: TrainConfig,
    pub(super) data: &'a TrainData,
    pub(super) val: &'a TrainData,
    pub(super) events: Sender<TrainingEvent>,
    pub(super) control: TrainControl,
    pub(super) device: Device,
    pub(super) width: f32,
    /// The non-secret seed of initialisation, order and dropout.
    pub(super) seed: u64,
    pub(super) ema_decay: Option<EmaDecay>,
    pub(super) dropout: Option<DropoutRate>,
    pub(super) learner: Learner,
    pub(super) private: Option<Private>,
    pub(super) steps_per_epoch: usize,
    /// The Poisson rate q = B/N.
    pub(super) sample_rate: f64,
    pub(super) start_epoch: usize,
    pub(super) progress: Progress,
}

/// What one step did.
pub(super) struct StepOutput {
    loss: f64,
    logits: Option<Tensor>,
    clip_stats: Option<ClipStats>,
    /// Private steps: the noise multiplier, clip norm and accounted noise multiplier it used.
    used: Option<(f64, f64, f64)>,
}

/// Running sums over an epoch's steps.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) loss_sum: f64,
    pub(super) correct: usize,
    pub(super) seen: usize,
}

fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    // One stream per epoch so a resumed run draws the same order and dropout masks.
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(epoch as u64 + 1);
    r
}

impl Run<'_> {
    /// Sends `e`; a closed receiver is ignored.
    pub(super) fn emit(&self, e: TrainingEvent) {
        let _ = self.events.send(e);
    }

    pub(super) fn ledger(&self) -> Option<&Ledger> {
        self.private.as_ref().and_then(|p| p.ledger.as_ref())
    }

    pub(super) fn epsilon(&self) -> Option<f64> {
        self.ledger().map(Ledger::epsilon)
    }

    /// The DP settings as they are now (changed by the interface or the adaptive clip).
    pub(super) fn dp(&self) -> Option<DpConfig> {
        self.private.as_ref().map(|p| p.settings)
    }

    /// One epoch: its batches, a step for each, then [`Run::end_epoch`].
    pub(super) fn epoch(&mut self, epoch: usize) -> Result<Flow> {
        let t0 = Instant::now();
        let mut rng = epoch_rng(self.seed, epoch);
        let batches = self.draw_batches(epoch, &mut rng);
        let expected = (self.sample_rate * self.data.len() as f64).max(1.0);
        let mut tally = Tally::default();
        for (step, batch) in batches.iter().enumerate() {
            if self.at_step_boundary(epoch, step) == Flow::Stop {
                self.progress.stopped = true;
                return Ok(Flow::Stop);
            }
            let ts = Instant::now();
            let (x, y) = self.data.batch(batch, &self.device)?;
            let out = match self.private.as_mut() {
                Some(p) => p.step(&mut self.learner, &x, &y, expected, &mut rng)?,
                None if batch.is_empty() => continue,
                None => self.learner.plain_step(&x, &y, &mut rng)?,
            };
            self.record_step(epoch, step, batch, out, ts, &mut tally)?;
        }
        self.end_epoch(epoch, t0, tally)
    }

    /// The epoch's batches: Poisson draws at rate q from the sampling stream (one ChaCha stream
    /// per step, so a resumed run with a fixed, insecure seed continues exactly as a straight
    /// run would), or a shuffle from the epoch's stream cut into batches.
    fn draw_batches(&mut self, epoch: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
        let (n, steps, q) = (self.data.len(), self.steps_per_epoch, self.sample_rate);
        match self.private.as_mut() {
            Some(p) if p.settings.sampling == Sampling::Poisson => {
                let sr = &mut p.sampling_rng;
                (0..steps)
                    .map(|i| {
                        sr.set_stream((epoch * steps + i) as u64);
                        sr.set_word_pos(0);
                        (0..n).filter(|_| sr.random::<f64>() < q).collect()
                    })
                    .collect()
            }
            _ => {
                let mut perm: Vec<usize> = (0..n).collect();
                perm.shuffle(rng);
                perm.chunks(self.config.batch_size)
                    .map(|c| c.to_vec())
                    .collect()
            }
        }
    }

    /// Between steps: waits while paused, reports a stop, and applies DP changes the interface
    /// sent (from this step on).
    fn at_step_boundary(&mut self, epoch: usize, step: usize) -> Flow {
        let directive = self.control.at_step_boundary(
            || self.emit(TrainingEvent::Paused),
            || self.emit(TrainingEvent::Resumed),
        );
        if directive == Directive::Stop {
            self.emit(TrainingEvent::Stopped { epoch, step });
            return Flow::Stop;
        }
        if let Some(p) = self.private.as_mut() {
            let (nm, cn) = self.control.take_dp_changes();
            if nm.is_some() || cn.is_some() {
                let d = &mut p.settings;
                d.noise_multiplier = nm.unwrap_or(d.noise_multiplier);
                d.clip_norm = cn.unwrap_or(d.clip_norm);
                let changed = TrainingEvent::DpSettingsChanged {
                    noise_multiplier: d.noise_multiplier.get(),
                    clip_norm: d.clip_norm.get(),
                };
                self.emit(changed);
            }
        }
        Flow::Continue
    }

    /// Checks the step's loss, adds it to the epoch's sums and reports it.
    fn record_step(
        &self,
        epoch: usize,
        step: usize,
        batch: &[usize],
        out: StepOutput,
        started: Instant,
        tally: &mut Tally,
    ) -> Result<()> {
        if !out.loss.is_finite() {
            return Err(TrainError::NonFinite {
                loss: out.loss as f32,
                epoch,
                step,
            });
        }
        if let Some(logits) = out.logits {
            let pred = logits.argmax(1)?.to_vec1::<u32>()?;
            let labels = self.data.labels();
            tally.correct += pred
                .iter()
                .zip(batch)
                .filter(|(p, i)| **p == u32::from(labels[**i]))
                .count();
        }
        tally.loss_sum += out.loss * batch.len() as f64;
        tally.seen += batch.len();
        let secs = started.elapsed().as_secs_f64();
        self.emit(TrainingEvent::Step {
            epoch,
            step,
            loss: out.loss,
            images_per_sec: if secs > 0.0 {
                batch.len() as f64 / secs
            } else {
                0.0
            },
            epsilon: self.epsilon(),
            noise_multiplier: out.used.map(|u| u.0),
            clip_norm: out.used.map(|u| u.1),
            accounted_noise_multiplier: out.used.map(|u| u.2),
            clipped_fraction: out.clip_stats.map(|c| c.clipped_fraction),
            median_grad_norm: out.clip_stats.map(|c| c.median_norm),
        });
        Ok(())
    }
}

impl Learner {
    /// Applies `gradients` and moves the average, if any.
    fn apply(&mut self, gradients: &[Tensor]) -> Result<()> {
        self.optimizer.step(gradients)?;
        if let Some(a) = self.ema.as_mut() {
            a.update(&self.vars)?;
        }
        Ok(())
    }

    /// A plain step: class-weighted cross-entropy, its gradients (zeros for variables it does
    /// not reach) and the optimizer. Dropout masks come from the epoch's stream.
    fn plain_step(&mut self, x: &Tensor, y: &Tensor, rng: &mut ChaCha8Rng) -> Result<StepOutput> {
        let logits = self.model.forward_with(x, Some(&mut *rng))?;
        let loss = loss::cross_entropy(&logits, y, self.class_weights.as_ref())?;
        let grads = loss.backward()?;
        let g: Vec<Tensor> = self
            .vars
            .iter()
            .map(|(_, v)| match grads.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => v.as_tensor().zeros_like(),
            })
            .collect::<candle_core::Result<_>>()?;
        self.apply(&g)?;
        Ok(StepOutput {
            loss: f64::from(loss.to_scalar::<f32>()?),
            logits: Some(logits),
            clip_stats: None,
            used: None,
        })
    }
}

impl Private {
    /// A DP-SGD step: clipped, noised gradients over `expected` units, the optimizer, the
    /// ledger's record, and the adaptive clip's noisy update when the run adapts C.
    fn step(
        &mut self,
        learner: &mut Learner,
        x: &Tensor,
        y: &Tensor,
        expected: f64,
        rng: &mut ChaCha8Rng,
    ) -> Result<StepOutput> {
        let (d, nr) = (&mut self.settings, &mut self.noise_rng);
        // Each step's noise comes from its own ChaCha stream, numbered by the optimizer step.
        // With a fixed (research) seed a resumed run would otherwise draw the first steps'
        // noise again, and noise used twice can be subtracted out; this way it continues
        // exactly as a straight run would.
        nr.set_stream(learner.optimizer.steps());
        nr.set_word_pos(0);
        let r = dpsgd::private_gradients(
            &learner.model,
            x,
            y,
            learner.class_weights.as_ref(),
            d,
            expected,
            rng,
            nr,
        )?;
        learner.apply(&r.gradients)?;
        let accounted = d.accounted_noise_multiplier(expected)?;
        if let Some(l) = self.ledger.as_mut() {
            l.step(accounted);
        }
        let (sigma, clip) = (d.noise_multiplier.get(), d.clip_norm.get());
        let mut stats = r.clip_stats;
        if let Some(a) = d.adaptive_clip {
            // The released count of units under the clip (same noise stream, after the
            // gradient's noise); only its noisy share leaves the step.
            let under = r.unit_norms.iter().filter(|&&u| f64::from(u) <= clip);
            let (share, next) = a.update(d.clip_norm, under.count(), expected, nr)?;
            d.clip_norm = next;
            stats = stats.map(|s| ClipStats {
                clipped_fraction: (1.0 - share).clamp(0.0, 1.0),
                ..s
            });
        }
        Ok(StepOutput {
            loss: r.loss,
            logits: r.logits,
            clip_stats: stats,
            used: Some((sigma, clip, accounted.get())),
        })
    }
}
