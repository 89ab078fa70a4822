//! What the app does with an [`Action`]: hand it to the backend that does it, and turn a
//! refusal or failure into a message on the tab. One method per backend; nothing here draws.
//! Imports its parent (the app) and the tabs' state types; not the views or the event queue.

use super::{Action, App};
use crate::tui::backend::{DpSettings, Labelling, TrainConfig};
use crate::tui::data::{DataSource, JobState};
use crate::tui::privacy::AuditState;
use crate::tui::train::RunState;
use privxray::model::Technique;

fn unavailable(what: &str) -> String {
    format!("{what} is not available in this build")
}

impl App {
    /// Hands an action to the backend that does it; failures become messages on the tab.
    pub fn perform(&mut self, action: Action) {
        match action {
            Action::Quit => self.quit = true,
            Action::Preprocess {
                source,
                technique,
                labelling,
            } => self.preprocess(source, technique, labelling),
            Action::StartTraining(_)
            | Action::PauseTraining
            | Action::ResumeTraining
            | Action::StopTraining
            | Action::SetDp(..) => self.steer_training(action),
            Action::ExportCurves => self.export_curves(),
            Action::Audit(run) => self.audit(run),
            Action::StartSweep => self.start_sweep(),
            Action::LaunchParties
            | Action::ShareModel
            | Action::Predict
            | Action::StopParty(_)
            | Action::KillParty(_) => self.steer_parties(action),
        }
    }

    fn preprocess(&mut self, source: DataSource, technique: Technique, labelling: Labelling) {
        let Some(b) = self.backends.data.as_mut() else {
            self.data.job = JobState::Failed(unavailable("preprocessing"));
            return;
        };
        self.data.begin(source.roots.len(), labelling.clone());
        let cache_dir = self.data.cache_dir.clone();
        if let Err(e) = b.preprocess(source, technique, labelling, cache_dir, self.sender.clone()) {
            self.data.job = JobState::Failed(e.to_string());
        }
    }

    fn steer_training(&mut self, action: Action) {
        let Some(b) = self.backends.training.as_mut() else {
            if let Action::StartTraining(_) = action {
                self.train.message = Some((unavailable("training"), true));
            }
            return;
        };
        match action {
            Action::StartTraining(config) => {
                self.train.begin_run();
                match b.start(config.clone(), self.sender.clone()) {
                    Ok(()) => self.running_config = Some(config),
                    Err(e) => self.train.state = RunState::Failed(e.to_string()),
                }
                self.recompute_epsilon();
            }
            Action::PauseTraining => b.pause(),
            Action::ResumeTraining => b.resume(),
            Action::StopTraining => b.stop(),
            // A sweep's point stands for one sigma: its runs keep theirs.
            Action::SetDp(..) if self.privacy.sweep.running.is_some() => {
                self.train.message = Some((
                    "a sweep runs at fixed σ: stop it (x on the Privacy tab) to steer".into(),
                    true,
                ));
            }
            Action::SetDp(n, c) => b.set_dp(n, c),
            _ => {}
        }
    }

    /// The Privacy tab's sweep: refused while a run goes or before data is ready; otherwise
    /// its first run starts with the Train tab's settings.
    fn start_sweep(&mut self) {
        let refusal = match self.data.ready() {
            _ if self.privacy.sweep.running.is_some() => Some("a sweep is already running".into()),
            _ if self.train.state.active() => {
                Some("a training run is going: wait for it to end or stop it first".into())
            }
            None => Some("no data yet: preprocess on the Data tab first".into()),
            Some(r) if r.data.technique != self.train.model.technique() => Some(format!(
                "{} needs technique {}; the data was preprocessed with technique {}",
                self.train.model.name(),
                self.train.model.technique().number(),
                r.data.technique.number()
            )),
            Some(_) => None,
        };
        if let Some(why) = refusal {
            self.privacy.sweep.status = Some((why, true));
            return;
        }
        let Some(ready) = self.data.ready().cloned() else {
            return;
        };
        let dp = DpSettings {
            noise: self.train.noise,
            clip: self.train.clip,
            delta: self.train.delta,
        };
        if let Some(first) = self.privacy.sweep.start(self.train.config(&ready), dp) {
            self.start_sweep_run(first);
        }
    }

    /// Starts one run of the sweep; a run that does not start ends the sweep.
    pub(super) fn start_sweep_run(&mut self, config: TrainConfig) {
        self.perform(Action::StartTraining(config));
        if !self.train.state.active() {
            let reason = match &self.train.state {
                RunState::Failed(r) => r.clone(),
                _ => self
                    .train
                    .message
                    .as_ref()
                    .map_or("the run did not start".into(), |m| m.0.clone()),
            };
            self.privacy.sweep.failed(&reason);
        }
    }

    fn export_curves(&mut self) {
        let model = self.train.model;
        let result = match &self.backends.exporter {
            None => Err(unavailable("PNG export")),
            Some(_) if self.train.history.is_empty() && self.train.step_loss.is_empty() => {
                Err("nothing to export yet: train first".into())
            }
            Some(x) => x
                .export(model, &self.train.history, &self.train.step_loss)
                .map_err(|e| e.to_string()),
        };
        self.train.message = Some(match result {
            Ok(paths) => (
                format!(
                    "wrote {}",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                false,
            ),
            Err(e) => (e, true),
        });
    }

    fn audit(&mut self, run: usize) {
        let Some(r) = self.privacy.runs.get_mut(run) else {
            return;
        };
        let Some(ckpt) = r.checkpoint.clone() else {
            r.audit = AuditState::Failed("the run saved no checkpoint".into());
            return;
        };
        match self.backends.audit.as_mut() {
            None => r.audit = AuditState::Failed(unavailable("the audit")),
            Some(b) => {
                r.audit = AuditState::Running;
                if let Err(e) = b.audit(run, r.model, &ckpt, self.sender.clone()) {
                    r.audit = AuditState::Failed(e.to_string());
                }
            }
        }
    }

    fn steer_parties(&mut self, action: Action) {
        match action {
            Action::LaunchParties => match self.backends.parties.as_mut() {
                None => self.predict.message = Some((unavailable("private prediction"), true)),
                Some(b) => {
                    if let Err(e) = b.launch(self.sender.clone()) {
                        self.predict.message = Some((e.to_string(), true));
                    }
                }
            },
            Action::ShareModel => self.share_model(),
            Action::Predict => self.predict(),
            Action::StopParty(p) => {
                if let Some(b) = self.backends.parties.as_mut() {
                    b.stop(p)
                }
            }
            Action::KillParty(p) => {
                if let Some(b) = self.backends.parties.as_mut() {
                    b.kill(p)
                }
            }
            _ => {}
        }
    }

    /// Shares the selected run's model, or else the latest run that saved a checkpoint.
    fn share_model(&mut self) {
        let run = self
            .privacy
            .runs
            .get(self.privacy.selected)
            .filter(|r| r.checkpoint.is_some())
            .or_else(|| {
                self.privacy
                    .runs
                    .iter()
                    .rev()
                    .find(|r| r.checkpoint.is_some())
            })
            .and_then(|r| r.checkpoint.clone().map(|c| (r.model, c)));
        let result = match (self.backends.parties.as_mut(), run) {
            (None, _) => Err(unavailable("private prediction")),
            (_, None) => Err("train a model first (Train tab)".to_string()),
            (Some(b), Some((model, ckpt))) => {
                b.share_model(model, &ckpt).map_err(|e| e.to_string())
            }
        };
        if let Err(e) = result {
            self.predict.message = Some((e, true));
        }
    }

    fn predict(&mut self) {
        match self.predict.request() {
            Err(e) => self.predict.message = Some((e, true)),
            Ok(req) => {
                let r = match self.backends.parties.as_mut() {
                    None => Err(unavailable("private prediction")),
                    Some(b) => b.predict(req).map_err(|e| e.to_string()),
                };
                if let Err(e) = r {
                    self.predict.pending.pop();
                    self.predict.message = Some((e, true));
                }
            }
        }
    }
}
