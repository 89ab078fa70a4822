//! A training run on its own thread, followed to its end, then its best checkpoint measured on
//! the evaluation split: "train, then evaluate the best checkpoint", written once for the
//! command line's `train` and `sweep` and the terminal interface's Train tab. Imports the
//! pipeline's error and `model`; what a face shows of the events is its own business.

use super::error::{PipelineError, Result};
use super::model::load_checkpoint;
use crate::train::checkpoint::CheckpointMeta;
use crate::train::{self, Metrics, TrainConfig, TrainControl, TrainData};
use crate::train::{TrainOutcome, TrainingEvent};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

/// Images evaluated together.
const EVAL_BATCH: usize = 64;

/// A training run on its own thread: read [`TrainingRun::events`] until it ends, then
/// [`TrainingRun::finish`] (or both at once with [`TrainingRun::follow`]).
pub struct TrainingRun {
    events: Receiver<TrainingEvent>,
    handle: JoinHandle<train::error::Result<TrainOutcome>>,
}

impl TrainingRun {
    /// Starts `train::train` on a thread named `name`, steered by `control`.
    pub fn start(
        config: TrainConfig,
        data: TrainData,
        validation: TrainData,
        control: TrainControl,
        name: &str,
    ) -> Result<Self> {
        let (tx, events) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || train::train(config, &data, &validation, tx, control))
            .map_err(PipelineError::Spawn)?;
        Ok(TrainingRun { events, handle })
    }

    /// The engine's events, in order; the iteration ends when the engine does.
    pub fn events(&self) -> impl Iterator<Item = TrainingEvent> + '_ {
        self.events.iter()
    }

    /// Waits for the engine and returns what the run did.
    pub fn finish(self) -> Result<TrainOutcome> {
        drop(self.events);
        let outcome = self.handle.join().map_err(|_| PipelineError::Panicked)??;
        Ok(outcome)
    }

    /// Hands every event to `on_event` until the engine ends, then [`TrainingRun::finish`]es.
    /// An error from `on_event` ends the following at once (the engine stops when it next
    /// finds nobody listening).
    pub fn follow<E: From<PipelineError>>(
        self,
        mut on_event: impl FnMut(TrainingEvent) -> Result<(), E>,
    ) -> Result<TrainOutcome, E> {
        for event in self.events() {
            on_event(event)?;
        }
        Ok(self.finish()?)
    }
}

/// A run's best checkpoint, measured.
#[derive(Debug, Clone)]
pub struct BestCheckpoint {
    pub path: PathBuf,
    /// What the checkpoint says of itself: its epsilon and privacy ledger among the rest.
    pub meta: CheckpointMeta,
    /// Its metrics on the evaluation split; `None` when that split is empty.
    pub test: Option<Metrics>,
}

/// What a run did, and its best checkpoint measured (`None` when it ended before its first
/// epoch and wrote none).
#[derive(Debug)]
pub struct RunReport {
    pub outcome: TrainOutcome,
    pub best: Option<BestCheckpoint>,
}

/// Loads a checkpoint on the CPU and measures it on `evaluation` (nothing measured when
/// `evaluation` is empty).
pub fn evaluate_checkpoint(path: &Path, evaluation: &TrainData) -> Result<BestCheckpoint> {
    let (model, meta) = load_checkpoint(path)?;
    let test = if evaluation.is_empty() {
        None
    } else {
        Some(train::evaluate(&model, evaluation, EVAL_BATCH)?)
    };
    Ok(BestCheckpoint {
        path: path.to_path_buf(),
        meta,
        test,
    })
}

/// Trains on `train` (choosing the best epoch on `validation`) on a thread named
/// `thread_name`, handing every event to `on_event`, then measures the best checkpoint on
/// `evaluation`.
pub fn train_then_evaluate<E: From<PipelineError>>(
    config: TrainConfig,
    train: TrainData,
    validation: TrainData,
    evaluation: &TrainData,
    control: TrainControl,
    thread_name: &str,
    on_event: impl FnMut(TrainingEvent) -> Result<(), E>,
) -> Result<RunReport, E> {
    let run = TrainingRun::start(config, train, validation, control, thread_name)?;
    let outcome = run.follow(on_event)?;
    let best = match &outcome.best_checkpoint {
        Some(path) => Some(evaluate_checkpoint(path, evaluation)?),
        None => None,
    };
    Ok(RunReport { outcome, best })
}
