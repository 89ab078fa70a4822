//! How `train` and `sweep` show a run as it goes: a line on stderr for each event worth a
//! line, the warning of a run that is not private, and the JSON-lines event stream of
//! `--metrics`. Imports no other command module.

use anyhow::Context;
use privxray::train::dpsgd::Clipping;
use privxray::train::TrainingEvent;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Follows one run's events (hand it to `pipeline::train_then_evaluate`).
pub struct Progress {
    /// The `--metrics` file, appended to.
    sink: Option<File>,
    /// Why this run's epsilon is not valid, once the run has said so.
    warning: Option<String>,
}

impl Progress {
    /// Progress on stderr, and every event appended to `metrics` when given.
    pub fn new(metrics: Option<&Path>) -> anyhow::Result<Self> {
        let sink = match metrics {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("opening metrics file {}", path.display()))?,
                )
            }
            None => None,
        };
        Ok(Progress {
            sink,
            warning: None,
        })
    }

    /// Shows one event.
    pub fn event(&mut self, event: TrainingEvent) -> anyhow::Result<()> {
        if let TrainingEvent::Started { dp: Some(d), .. } = &event {
            self.warning = d.reproducible.epsilon_warning();
            if let Some(w) = &self.warning {
                eprintln!("WARNING: {w}; this run is NOT PRIVATE");
            }
        }
        if let Some(f) = self.sink.as_mut() {
            writeln!(f, "{}", serde_json::to_string(&event)?)?;
        }
        if let Some(line) = describe(&event, self.warning.as_deref()) {
            eprintln!("{line}");
        }
        Ok(())
    }
}

/// The line for an event, or `None` for those not worth one.
fn describe(event: &TrainingEvent, warning: Option<&str>) -> Option<String> {
    Some(match event {
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
                .map(|acc| format!(" (last iterate {acc:.4})"))
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
