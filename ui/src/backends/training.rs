//! Training on the real engine through the pipeline: the Train tab's settings become the
//! pipeline's run settings (translated into the engine's configuration by the pipeline, as the
//! command line's are), `pipeline::train_then_evaluate` runs on a std thread, its events are
//! mapped to the interface's [`TrainUpdate`]s, and a [`TrainControl`] steers it (pause, resume,
//! stop, and the DP sliders, which the engine applies from its next step). Imports the TUI's
//! backend and event types, and `super` for [`TrainedOn`]; no other backend.

use super::TrainedOn;
use crate::tui::backend::{
    BackendError, ClipNorm, DpStep, EpochPoint, NoiseMultiplier, TrainConfig, TrainOutcome,
    TrainUpdate, TrainingBackend,
};
use crate::tui::data::DataReady;
use crate::tui::event::{AppEvent, AppSender};
use privxray::model::ModelKind;
use privxray::pipeline::{self, DpChoice, InteractiveSettings, Splits};
use privxray::train::{self, TrainControl, TrainingEvent};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Width multiplier of the VGG16 models when training on the CPU: full VGG16 on 224x224x3
/// images takes hours per epoch there. The device line says so when it applies.
pub const CPU_VGG_WIDTH: f32 = 0.25;

/// Trains with the engine; one run at a time.
pub struct EngineTraining {
    control: Option<TrainControl>,
    trained_on: TrainedOn,
    checkpoint_root: PathBuf,
    device: String,
    gpu: bool,
}

impl EngineTraining {
    /// Runs write their checkpoints under `checkpoint_root/<model>-<time>/`.
    pub fn new(checkpoint_root: PathBuf, trained_on: TrainedOn) -> Self {
        let (device, description) = train::device::select(true);
        EngineTraining {
            control: None,
            trained_on,
            checkpoint_root,
            device: description,
            gpu: !device.is_cpu(),
        }
    }

    fn width(&self, model: ModelKind) -> f32 {
        let vgg = matches!(model, ModelKind::Vgg16_1 | ModelKind::Vgg16_2);
        if vgg && !self.gpu {
            CPU_VGG_WIDTH
        } else {
            1.0
        }
    }
}

/// The engine's configuration for the interface's settings, through the pipeline's
/// [`InteractiveSettings`] (what `bench demo` measures).
pub fn engine_config(
    tab: &TrainConfig,
    width: f32,
    checkpoint_dir: PathBuf,
) -> Result<train::TrainConfig, BackendError> {
    let settings = InteractiveSettings {
        model: tab.model,
        epochs: tab.epochs,
        batch_size: tab.batch_size,
        optimizer: tab.optimizer,
        learning_rate: tab.learning_rate,
        dp: tab.dp.as_ref().map(|dp| DpChoice {
            noise_multiplier: dp.noise.get(),
            clip_norm: dp.clip.get(),
            delta: dp.delta,
        }),
        frozen: tab.frozen.clone(),
        ema: tab.ema,
        dropout: tab.dropout,
    };
    Ok(settings.run_settings(width, checkpoint_dir)?.config()?)
}

/// The interface's event for an engine event; `None` for those the screens do not show.
pub fn to_update(event: TrainingEvent) -> Option<TrainUpdate> {
    Some(match event {
        TrainingEvent::Started {
            device,
            width,
            steps_per_epoch,
            epochs,
            train_images,
            model,
            sample_rate,
            ..
        } => TrainUpdate::Started {
            device: if width != 1.0 && model.starts_with("vgg") {
                format!("{device}, {model} at width {width}")
            } else {
                device
            },
            steps_per_epoch,
            epochs,
            train_images,
            sample_rate,
        },
        TrainingEvent::Step {
            epoch,
            step,
            loss,
            images_per_sec,
            epsilon,
            noise_multiplier,
            clip_norm,
            accounted_noise_multiplier,
            clipped_fraction,
            median_grad_norm,
        } => TrainUpdate::Step {
            epoch,
            step,
            loss,
            images_per_sec,
            epsilon,
            dp: noise_multiplier.zip(clip_norm).map(|(noise, clip)| DpStep {
                noise,
                clip,
                accounted_noise: accounted_noise_multiplier,
            }),
            clipping: clipped_fraction.zip(median_grad_norm),
        },
        TrainingEvent::Epoch {
            epoch,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            eta_seconds,
            ..
        } => TrainUpdate::Epoch(EpochPoint {
            epoch,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            eta_seconds,
        }),
        TrainingEvent::DpSettingsChanged {
            noise_multiplier,
            clip_norm,
        } => TrainUpdate::DpApplied {
            noise: noise_multiplier,
            clip: clip_norm,
        },
        TrainingEvent::Paused => TrainUpdate::Paused,
        TrainingEvent::Resumed => TrainUpdate::Resumed,
        TrainingEvent::Checkpoint { val_acc, kind, .. } if kind == "best" => {
            TrainUpdate::BestCheckpoint { val_acc }
        }
        // The outcome (stopped or finished) is sent once the checkpoint has been evaluated.
        TrainingEvent::Checkpoint { .. }
        | TrainingEvent::EarlyStop { .. }
        | TrainingEvent::Stopped { .. }
        | TrainingEvent::Finished { .. } => return None,
    })
}

impl TrainingBackend for EngineTraining {
    fn device(&self) -> String {
        self.device.clone()
    }

    fn start(&mut self, config: TrainConfig, events: AppSender) -> Result<(), BackendError> {
        let data = config.data.clone().ok_or_else(|| {
            BackendError::Refused("no preprocessed data: preprocess on the Data tab first".into())
        })?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let dir = self
            .checkpoint_root
            .join(format!("{}-{stamp}", config.model.name()));
        let engine = engine_config(&config, self.width(config.model), dir)?;
        let control = TrainControl::new();
        self.control = Some(control.clone());
        let trained_on = self.trained_on.clone();
        std::thread::Builder::new()
            .name("tui-training".into())
            .spawn(move || {
                let update = match train_and_evaluate(engine, data.0, &control, &events, trained_on)
                {
                    Ok(outcome) => TrainUpdate::Finished(outcome),
                    Err(e) => TrainUpdate::Failed(privxray::report::said_once(&e)),
                };
                events.send(AppEvent::Train(update));
            })
            .map_err(|source| BackendError::Io {
                what: "starting the training thread".into(),
                source,
            })?;
        Ok(())
    }

    fn pause(&mut self) {
        if let Some(c) = &self.control {
            c.pause();
        }
    }

    fn resume(&mut self) {
        if let Some(c) = &self.control {
            c.resume();
        }
    }

    fn stop(&mut self) {
        if let Some(c) = &self.control {
            c.stop();
        }
    }

    fn set_dp(&mut self, noise: NoiseMultiplier, clip: ClipNorm) {
        let Some(c) = &self.control else { return };
        // The slider types are narrower than the engine's, so these conversions always succeed.
        if let Ok(n) = train::dpsgd::NoiseMultiplier::new(noise.get()) {
            c.set_noise_multiplier(n);
        }
        if let Ok(v) = train::dpsgd::ClipNorm::new(clip.get()) {
            c.set_clip_norm(v);
        }
    }
}

/// The run through the pipeline, its events shown as they come; the outcome once the best
/// checkpoint has been measured on the merged test and val sets.
fn train_and_evaluate(
    engine: train::TrainConfig,
    data: Arc<DataReady>,
    control: &TrainControl,
    events: &AppSender,
    trained_on: TrainedOn,
) -> Result<TrainOutcome, pipeline::PipelineError> {
    let Splits {
        train,
        validation,
        evaluation,
    } = pipeline::split(&data.data)?;
    let report = pipeline::train_then_evaluate(
        engine,
        train,
        validation,
        &evaluation,
        control.clone(),
        "tui-train-engine",
        |event| {
            if !events.is_open() {
                // The interface has gone: nobody will see the rest.
                control.stop();
            }
            if let Some(update) = to_update(event) {
                events.send(AppEvent::Train(update));
            }
            Ok::<(), pipeline::PipelineError>(())
        },
    )?;
    let checkpoint = report.outcome.best_checkpoint.clone();
    if let Some(path) = &checkpoint {
        trained_on.record(path.clone(), data);
    }
    Ok(TrainOutcome {
        stopped: report.outcome.stopped,
        epochs_run: report.outcome.epochs_run,
        best_val_acc: report.outcome.best_val_acc,
        test: report.best.and_then(|best| best.test).map(Box::new),
        epsilon: report.outcome.epsilon,
        checkpoint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::backend::{DpSettings, NoiseMultiplier as Sigma};
    use privxray::train::ema::EmaDecay;
    use privxray::train::DropoutRate;

    fn started(model: &str, width: f32) -> TrainingEvent {
        TrainingEvent::Started {
            model: model.into(),
            width,
            device: "cpu (2 threads)".into(),
            train_images: 90,
            val_images: 10,
            steps_per_epoch: 3,
            epochs: 2,
            start_epoch: 0,
            batch_size: 32,
            dp: None,
            sample_rate: Some(0.25),
            sampling: "shuffled".into(),
            accounting: None,
            frozen: Vec::new(),
            ema: None,
            dropout: None,
        }
    }

    #[test]
    fn events_map_to_the_screens_and_a_narrow_vgg_says_so() {
        match to_update(started("vgg16-1", 0.25)) {
            Some(TrainUpdate::Started {
                device,
                steps_per_epoch: 3,
                epochs: 2,
                train_images: 90,
                sample_rate: Some(0.25),
            }) => assert_eq!(device, "cpu (2 threads), vgg16-1 at width 0.25"),
            other => panic!("{other:?}"),
        }
        match to_update(started("dnn-av", 1.0)) {
            Some(TrainUpdate::Started { device, .. }) => assert_eq!(device, "cpu (2 threads)"),
            other => panic!("{other:?}"),
        }
        let e = to_update(TrainingEvent::DpSettingsChanged {
            noise_multiplier: 2.0,
            clip_norm: 0.5,
        });
        assert_eq!(
            e,
            Some(TrainUpdate::DpApplied {
                noise: 2.0,
                clip: 0.5
            })
        );
        // A DP step carries the engine ledger's epsilon and what the step used and recorded.
        let step = |noise: Option<f64>, accounted: Option<f64>| TrainingEvent::Step {
            epoch: 0,
            step: 4,
            loss: 0.6,
            images_per_sec: 50.0,
            epsilon: accounted.map(|_| 0.42),
            noise_multiplier: noise,
            clip_norm: noise.map(|_| 0.8),
            accounted_noise_multiplier: accounted,
            clipped_fraction: Some(0.5),
            median_grad_norm: Some(1.2),
        };
        assert_eq!(
            to_update(step(Some(1.3), Some(1.2))),
            Some(TrainUpdate::Step {
                epoch: 0,
                step: 4,
                loss: 0.6,
                images_per_sec: 50.0,
                epsilon: Some(0.42),
                dp: Some(DpStep {
                    noise: 1.3,
                    clip: 0.8,
                    accounted_noise: Some(1.2)
                }),
                clipping: Some((0.5, 1.2)),
            })
        );
        match to_update(step(None, None)) {
            Some(TrainUpdate::Step {
                epsilon: None,
                dp: None,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // The outcome comes after the checkpoint is evaluated, not from these.
        assert_eq!(
            to_update(TrainingEvent::Stopped { epoch: 1, step: 2 }),
            None
        );
    }

    #[test]
    fn the_interface_settings_become_the_engine_config() {
        let c = TrainConfig {
            model: ModelKind::DnnMax,
            epochs: 3,
            batch_size: 16,
            optimizer: privxray::pipeline::OptimizerChoice::Sgd { momentum: 0.9 },
            learning_rate: 3e-3,
            dp: Some(DpSettings {
                noise: Sigma::new(1.3).unwrap(),
                clip: ClipNorm::new(0.7).unwrap(),
                delta: 1e-6,
            }),
            frozen: vec!["fc1".into()],
            ema: Some(0.95),
            dropout: Some(0.0),
            data_root: PathBuf::from("x"),
            data: None,
        };
        let e = engine_config(&c, 1.0, PathBuf::from("ck")).unwrap();
        assert_eq!(e.frozen, ["fc1"]);
        assert_eq!(e.ema.map(EmaDecay::get), Some(0.95));
        assert_eq!(e.dropout.map(DropoutRate::get), Some(0.0));
        assert_eq!(
            (e.model, e.epochs, e.batch_size),
            (ModelKind::DnnMax, 3, 16)
        );
        assert_eq!(e.patience, None);
        assert_eq!(
            e.optimizer,
            privxray::train::optim::OptimizerConfig::sgd(3e-3, 0.9)
        );
        let dp = e.dp.expect("DP settings");
        assert_eq!(dp.noise_multiplier.get(), 1.3);
        assert_eq!(dp.clip_norm.get(), 0.7);
        assert_eq!((dp.microbatch_size, dp.delta), (1, 1e-6));
        // The engine trains the tab's DP settings (per-example clipping) without refusing them.
        dp.validate_for_training().unwrap();
        // An invalid delta is the engine's error, which reaches the tab, not a panic.
        let mut bad = c.clone();
        if let Some(d) = bad.dp.as_mut() {
            d.delta = 2.0;
        }
        assert!(engine_config(&bad, 1.0, PathBuf::from("ck")).is_err());
    }
}
