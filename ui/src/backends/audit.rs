//! The membership-inference audit of a finished run, as `privxray audit` does it: the model's
//! per-example losses on its training split (members) against the merged test and val sets
//! (non-members), scored by the loss-threshold attack. Runs on its own thread.

use super::TrainedOn;
use crate::cli::train::{per_example_losses, split};
use crate::tui::backend::{AuditBackend, AuditUpdate, BackendError};
use crate::tui::event::{AppEvent, AppSender};
use anyhow::Context;
use privxray::model::ModelKind;
use privxray::privacy::{loss_threshold_audit, AuditReport};
use privxray::train::engine::model_from_checkpoint;
use std::path::Path;

pub struct EngineAudit {
    trained_on: TrainedOn,
}

impl EngineAudit {
    pub fn new(trained_on: TrainedOn) -> Self {
        EngineAudit { trained_on }
    }
}

impl AuditBackend for EngineAudit {
    fn audit(
        &mut self,
        run: usize,
        _model: ModelKind,
        checkpoint: &Path,
        events: AppSender,
    ) -> Result<(), BackendError> {
        let data = self.trained_on.get(checkpoint).ok_or_else(|| {
            BackendError::Failed(format!(
                "{} was not trained in this session: its training members are unknown",
                checkpoint.display()
            ))
        })?;
        let checkpoint = checkpoint.to_path_buf();
        std::thread::Builder::new()
            .name("tui-audit".into())
            .spawn(move || {
                events.send(AppEvent::Audit(AuditUpdate::Started { run }));
                let update = match audit(&checkpoint, &data.data) {
                    Ok(r) => AuditUpdate::Finished {
                        run,
                        auc: r.auc,
                        advantage: r.advantage,
                    },
                    Err(e) => AuditUpdate::Failed {
                        run,
                        reason: format!("{e:#}"),
                    },
                };
                events.send(AppEvent::Audit(update));
            })
            .map_err(|e| BackendError::Failed(format!("starting the audit thread: {e}")))?;
        Ok(())
    }
}

fn audit(
    checkpoint: &Path,
    data: &privxray::preprocess::Preprocessed,
) -> anyhow::Result<AuditReport> {
    let (model, _, _) = model_from_checkpoint(checkpoint, &candle_core::Device::Cpu)
        .with_context(|| format!("loading {}", checkpoint.display()))?;
    let (members, _, non_members) = split(data)?;
    if non_members.is_empty() {
        anyhow::bail!("the data has no test/ or val/ images to use as non-members");
    }
    Ok(loss_threshold_audit(
        &per_example_losses(&model, &members)?,
        &per_example_losses(&model, &non_members)?,
    )?)
}
