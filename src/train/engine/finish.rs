//! The end of a run: the release's final privacy stamp, the released weights swapped into the
//! model, its validation metrics and the `Finished` event. Part of the run (`run.rs`); imports
//! the engine's siblings only.

use super::run::Run;
use super::{evaluate, TrainOutcome, TrainingEvent};
use crate::train::checkpoint;
use crate::train::error::Result;

impl Run<'_> {
    /// Closes the run and hands back its outcome.
    pub(super) fn finish(self) -> Result<TrainOutcome> {
        if let (Some(p), Some(l)) = (&self.progress.best_checkpoint, self.ledger()) {
            // A run stopped mid-epoch took steps after the last restamp.
            let segments = l.segments().to_vec();
            let epsilon = l.epsilon();
            checkpoint::update_meta(p, |m| {
                m.epsilon = Some(epsilon);
                m.privacy_ledger = segments;
            })?;
        }
        // The outcome's model holds what the run releases.
        if let Some(a) = &self.learner.ema {
            a.swap_in(&self.learner.vars)?;
        }
        let val_metrics = evaluate(&self.learner.model, self.val, self.config.eval_batch_size)?;
        let epsilon = self.epsilon();
        let progress = &self.progress;
        if !progress.stopped {
            self.emit(TrainingEvent::Finished {
                best_val_acc: progress.best_val_acc,
                epochs_run: progress.epochs_run,
                epsilon,
                best_checkpoint: progress.best_checkpoint.clone(),
            });
        }
        let progress = self.progress;
        Ok(TrainOutcome {
            model: self.learner.model,
            best_val_acc: progress.best_val_acc,
            best_checkpoint: progress.best_checkpoint,
            last_checkpoint: progress.last_checkpoint,
            epochs_run: progress.epochs_run,
            history: progress.history,
            stopped: progress.stopped,
            early_stopped: progress.early_stopped,
            epsilon,
            val_metrics,
        })
    }
}
