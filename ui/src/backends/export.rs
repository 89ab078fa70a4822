//! PNG export of the Train tab's curves with the engine's plotting: the paper's accuracy and
//! loss figures per epoch, plus the loss of every step. Imports the TUI's backend types only.

use crate::tui::backend::{BackendError, CurveExporter, EpochPoint};
use privxray::model::ModelKind;
use privxray::plot::{self, Chart, Series};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 560;

pub struct PngExporter {
    dir: PathBuf,
}

impl PngExporter {
    pub fn new(dir: PathBuf) -> Self {
        PngExporter { dir }
    }
}

impl CurveExporter for PngExporter {
    fn export(
        &self,
        model: ModelKind,
        epochs: &[EpochPoint],
        steps: &[(f64, f64)],
    ) -> Result<Vec<PathBuf>, BackendError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| BackendError::Io {
            what: format!("creating {}", self.dir.display()),
            source,
        })?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let base = format!("{}-{stamp}", model.name());
        let mut written = Vec::new();
        if !epochs.is_empty() {
            let points: Vec<plot::EpochPoint> = epochs
                .iter()
                .map(|e| plot::EpochPoint {
                    epoch: e.epoch,
                    train_loss: e.train_loss,
                    train_accuracy: e.train_acc,
                    val_loss: e.val_loss,
                    val_accuracy: e.val_acc,
                })
                .collect();
            let [accuracy, loss] = plot::training_charts(model.name(), &points);
            for (chart, name) in [(accuracy, "accuracy"), (loss, "loss")] {
                let path = self.dir.join(format!("{base}-{name}.png"));
                plot::write_png(&chart, &path, WIDTH, HEIGHT)?;
                written.push(path);
            }
        }
        if !steps.is_empty() {
            let chart = Chart {
                title: format!("{}: loss per step", model.name()),
                x_label: "step".into(),
                y_label: "loss".into(),
                series: vec![Series {
                    label: "training batch".into(),
                    points: steps.to_vec(),
                }],
                points_only: false,
            };
            let path = self.dir.join(format!("{base}-steps.png"));
            plot::write_png(&chart, &path, WIDTH, HEIGHT)?;
            written.push(path);
        }
        Ok(written)
    }
}
