//! The membership-inference audit of a finished run, as `privxray audit` does it: the model's
//! per-example losses on its training split (members) against the merged test and val sets
//! (non-members), scored by the loss-threshold attack; with a canary file beside the checkpoint,
//! also the one-run lower bound on epsilon (`privxray audit --canary-file`). Runs on its own
//! thread. Imports the TUI's backend and event types, and `super` for [`TrainedOn`].

use super::TrainedOn;
use crate::tui::backend::{AuditBackend, AuditUpdate, BackendError};
use crate::tui::event::{AppEvent, AppSender};
use privxray::model::ModelKind;
use privxray::pipeline::{self, PipelineError, Splits};
use privxray::privacy::{AuditReport, CanaryAuditReport};
use privxray::train::{CanarySet, Model, TrainError};
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
        let unknown = || {
            format!(
                "{} was not trained in this session: its training members are unknown",
                checkpoint.display()
            )
        };
        let data = self.trained_on.get(checkpoint);
        // A canary file beside the checkpoint adds the one-run lower bound on epsilon.
        let canaries = privxray::train::canary::file_beside(checkpoint);
        if data.is_none() && canaries.is_none() {
            return Err(BackendError::Refused(unknown()));
        }
        let unknown = unknown();
        let checkpoint = checkpoint.to_path_buf();
        std::thread::Builder::new()
            .name("tui-audit".into())
            .spawn(move || {
                events.send(AppEvent::Audit(AuditUpdate::Started { run }));
                let update = match data.map(|d| audit(&checkpoint, &d.data)) {
                    Some(Ok(r)) => AuditUpdate::Finished {
                        run,
                        auc: r.auc,
                        advantage: r.advantage,
                    },
                    Some(Err(e)) => AuditUpdate::Failed {
                        run,
                        reason: privxray::report::said_once(&e),
                    },
                    None => AuditUpdate::Failed {
                        run,
                        reason: unknown,
                    },
                };
                events.send(AppEvent::Audit(update));
                if let Some(file) = canaries {
                    let update = match canary_audit(&checkpoint, &file) {
                        Ok(r) => AuditUpdate::CanaryBound {
                            run,
                            epsilon_lower_bound: r.epsilon_lower_bound,
                            correct: r.correct,
                            guesses: r.guesses,
                        },
                        Err(e) => AuditUpdate::Failed {
                            run,
                            reason: format!("canary audit: {}", privxray::report::said_once(&e)),
                        },
                    };
                    events.send(AppEvent::Audit(update));
                }
            })
            .map_err(|source| BackendError::Io {
                what: "starting the audit thread".into(),
                source,
            })?;
        Ok(())
    }
}

/// Why an audit of a finished run could not be made.
#[derive(Debug, thiserror::Error)]
enum AuditError {
    #[error("the data has no test/ or val/ images to use as non-members")]
    NoNonMembers,
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// The checkpoint's model on the CPU, and the delta of its DP claim (0 without DP).
fn load(checkpoint: &Path) -> Result<(Model, f64), PipelineError> {
    let (model, meta) = pipeline::load_checkpoint(checkpoint)?;
    Ok((model, meta.dp.as_ref().map(|d| d.delta).unwrap_or(0.0)))
}

/// `privxray audit`: the loss-threshold attack on the run's members and non-members.
fn audit(
    checkpoint: &Path,
    data: &privxray::preprocess::Preprocessed,
) -> Result<AuditReport, AuditError> {
    let (model, _) = load(checkpoint)?;
    let Splits {
        train: members,
        evaluation: non_members,
        ..
    } = pipeline::split(data)?;
    if non_members.is_empty() {
        return Err(AuditError::NoNonMembers);
    }
    Ok(pipeline::membership_audit(&model, &members, &non_members)?)
}

/// `privxray audit --canary-file`: the canaries scored with the model, at the run's delta.
fn canary_audit(checkpoint: &Path, file: &Path) -> Result<CanaryAuditReport, AuditError> {
    let (model, delta) = load(checkpoint)?;
    Ok(CanarySet::load(file)?.audit(&model, delta)?)
}
