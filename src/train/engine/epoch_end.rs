//! The end of an epoch: evaluate what the run releases, record and report the epoch, write the
//! release (`-best`, or restamp its epsilon) and the resume checkpoint (`-last`), and decide on
//! an early stop. Part of the run (`run.rs`); imports the engine's siblings only.

use super::evaluate;
use super::run::{Flow, Run, Tally};
use super::TrainingEvent;
use crate::train::checkpoint::{self, CheckpointMeta, EpochRecord};
use crate::train::dpsgd;
use crate::train::ema::WeightAverage;
use crate::train::error::Result;
use crate::train::metrics::Metrics;
use candle_core::Tensor;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// An epoch's validation of what the run releases.
struct Evaluated {
    /// Of the released weights (the average when the run averages).
    metrics: Metrics,
    /// Runs that average: the last iterate's accuracy, for comparison.
    raw_val_acc: Option<f64>,
    /// The released tensors, for `-best`.
    released: Vec<(String, Tensor)>,
}

impl Run<'_> {
    /// Closes `epoch` (begun at `t0`, with the steps' sums in `tally`): evaluation, the
    /// `Epoch` event, checkpoints, and whether to stop early.
    pub(super) fn end_epoch(&mut self, epoch: usize, t0: Instant, tally: Tally) -> Result<Flow> {
        let Evaluated {
            metrics: vm,
            raw_val_acc,
            released,
        } = self.evaluate_release()?;
        let seconds = t0.elapsed().as_secs_f64();
        self.progress.epoch_seconds.push(seconds);
        self.progress.epochs_run += 1;
        let epsilon = self.epsilon();
        let mean = |sum: f64| {
            if tally.seen > 0 {
                sum / tally.seen as f64
            } else {
                0.0
            }
        };
        let record = EpochRecord {
            epoch,
            train_loss: Some(mean(tally.loss_sum)),
            train_acc: Some(mean(tally.correct as f64)),
            val_loss: vm.loss,
            val_acc: vm.accuracy,
            seconds,
            epsilon,
        };
        let secs = &self.progress.epoch_seconds;
        let mean_secs = secs.iter().sum::<f64>() / secs.len() as f64;
        self.emit(TrainingEvent::Epoch {
            epoch,
            train_loss: record.train_loss.unwrap_or(0.0),
            train_acc: record.train_acc.unwrap_or(0.0),
            val_loss: record.val_loss,
            val_acc: record.val_acc,
            seconds,
            eta_seconds: mean_secs * (self.config.epochs - epoch - 1) as f64,
            epsilon,
            raw_val_acc,
        });
        self.progress.history.push(record);
        let improved = vm.accuracy > self.progress.best_val_acc;
        if improved {
            self.progress.best_val_acc = vm.accuracy;
            self.progress.since_best = 0;
        } else {
            self.progress.since_best += 1;
        }
        let meta = self.checkpoint_meta(epoch, epsilon);
        self.save_checkpoints(&meta, improved, &released, vm.accuracy)?;
        Ok(self.early_stop(epoch))
    }

    /// Validation metrics of the weights the run releases, the last iterate's accuracy when
    /// those are an average, and the released tensors.
    ///
    /// With averaging, the last iterate is evaluated for comparison, then the average is
    /// swapped in for its own evaluation: the average is what the epoch reports and what
    /// `-best` holds.
    fn evaluate_release(&self) -> Result<Evaluated> {
        let (model, vars) = (&self.learner.model, &self.learner.vars);
        let batch = self.config.eval_batch_size;
        Ok(match &self.learner.ema {
            Some(a) => {
                let raw = evaluate(model, self.val, batch)?.accuracy;
                let iterate = a.swap_in(vars)?;
                let vm = evaluate(model, self.val, batch)?;
                WeightAverage::restore(vars, iterate)?;
                Evaluated {
                    metrics: vm,
                    raw_val_acc: Some(raw),
                    released: a.released(vars),
                }
            }
            None => Evaluated {
                metrics: evaluate(model, self.val, batch)?,
                raw_val_acc: None,
                released: vars
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                    .collect(),
            },
        })
    }

    /// The checkpoint metadata after `epoch`, with the run's privacy so far.
    fn checkpoint_meta(&self, epoch: usize, epsilon: Option<f64>) -> CheckpointMeta {
        let kind = self.config.model;
        let dp = self.dp();
        CheckpointMeta {
            format: checkpoint::FORMAT,
            model: kind,
            technique: kind.technique().number(),
            width: self.width,
            classes: self.data.classes().clone(),
            epoch: epoch + 1,
            optimizer: self.config.optimizer,
            optimizer_step: self.learner.optimizer.steps(),
            best_val_acc: self.progress.best_val_acc,
            epochs_without_improvement: self.progress.since_best,
            seed: self.seed,
            dp,
            epsilon,
            neighbouring: dp.map(|_| dpsgd::NEIGHBOURING.to_string()),
            privacy_ledger: self
                .ledger()
                .map(|l| l.segments().to_vec())
                .unwrap_or_default(),
            history: self.progress.history.clone(),
            frozen: self.learner.model.frozen().to_vec(),
            ema: self.ema_decay,
            dropout: self.dropout,
        }
    }

    /// Where the `tag` checkpoint (`best` or `last`) goes, if the run writes checkpoints.
    pub(super) fn checkpoint_path(&self, tag: &str) -> Option<PathBuf> {
        self.config
            .checkpoint_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{tag}.safetensors", self.config.model.name())))
    }

    /// Writes the release when the epoch `improved` (else restamps its epsilon) and the resume
    /// checkpoint.
    fn save_checkpoints(
        &mut self,
        meta: &CheckpointMeta,
        improved: bool,
        released: &[(String, Tensor)],
        val_acc: f64,
    ) -> Result<()> {
        if improved {
            if let Some(p) = self.checkpoint_path("best") {
                // The release: no un-noised training statistics.
                checkpoint::save(&p, &meta.for_release(), released)?;
                self.emit(TrainingEvent::Checkpoint {
                    path: p.clone(),
                    val_acc,
                    kind: "best".into(),
                });
                self.progress.best_checkpoint = Some(p);
            }
        } else if let (Some(p), Some(_)) = (&self.progress.best_checkpoint, meta.epsilon) {
            // The release was chosen looking at this epoch too: it carries the run's epsilon.
            restamp_release(p, meta)?;
        }
        if let Some(p) = self.checkpoint_path("last") {
            // The last iterate (not the average) with everything needed to continue.
            let vars = &self.learner.vars;
            let mut tensors: Vec<(String, Tensor)> = vars
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect();
            tensors.extend(self.learner.optimizer.state_tensors());
            if let Some(a) = &self.learner.ema {
                tensors.extend(a.state_tensors(vars));
            }
            checkpoint::save(&p, meta, &tensors)?;
            self.emit(TrainingEvent::Checkpoint {
                path: p.clone(),
                val_acc,
                kind: "last".into(),
            });
            self.progress.last_checkpoint = Some(p);
        }
        Ok(())
    }

    /// Stops after `patience` epochs without a better validation accuracy, unless `epoch` was
    /// the last anyway.
    fn early_stop(&mut self, epoch: usize) -> Flow {
        if let Some(patience) = self.config.patience {
            if self.progress.since_best >= patience && epoch + 1 < self.config.epochs {
                self.emit(TrainingEvent::EarlyStop {
                    epoch,
                    best_val_acc: self.progress.best_val_acc,
                });
                self.progress.early_stopped = true;
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
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
