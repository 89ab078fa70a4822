//! The Privacy tab: every run so far as a point of accuracy against epsilon, and the
//! membership-inference audit of a finished model beside its epsilon, and the noise sweep that
//! fills the chart from one key. This module holds the tab's state; `sweep` the sweep's, `keys`
//! what a key does to it, `view` and `chart` the drawing.
//! Imports `tui::backend` and the engine's plain types; never the app or the other tabs.

mod chart;
pub mod keys;
pub mod sweep;
pub mod view;

pub use sweep::Sweep;
pub use view::PrivacyView;

use crate::tui::backend::{AuditUpdate, TrainConfig, TrainOutcome};
use privxray::model::ModelKind;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Default)]
pub enum AuditState {
    #[default]
    NotRun,
    Running,
    Done {
        auc: f64,
        advantage: f64,
    },
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub model: ModelKind,
    /// `None`: trained without DP.
    pub epsilon: Option<f64>,
    pub delta: Option<f64>,
    /// Accuracy on the evaluation set, or the best validation accuracy when not measured.
    pub accuracy: f64,
    pub accuracy_is_test: bool,
    pub checkpoint: Option<PathBuf>,
    pub audit: AuditState,
    /// The noise multiplier a sweep ran it at (0: the sweep's baseline without DP); `None`
    /// for runs started on the Train tab.
    pub sweep_sigma: Option<f64>,
}

impl RunRecord {
    pub fn from_outcome(model: ModelKind, delta: Option<f64>, o: &TrainOutcome) -> Self {
        RunRecord {
            model,
            epsilon: o.epsilon,
            delta,
            accuracy: o.test_acc().unwrap_or(o.best_val_acc),
            accuracy_is_test: o.test.is_some(),
            checkpoint: o.checkpoint.clone(),
            audit: AuditState::NotRun,
            sweep_sigma: None,
        }
    }
}

/// A canary audit's result: the lower bound on epsilon and the guesses behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryBound {
    pub epsilon_lower_bound: f64,
    pub correct: usize,
    pub guesses: usize,
}

#[derive(Default)]
pub struct PrivacyTab {
    pub runs: Vec<RunRecord>,
    pub selected: usize,
    pub message: Option<String>,
    /// Canary lower bounds by run index, for runs whose canary file sits beside the checkpoint.
    pub canary_bounds: std::collections::HashMap<usize, CanaryBound>,
    pub sweep: Sweep,
}

impl PrivacyTab {
    pub fn add(&mut self, run: RunRecord) {
        self.runs.push(run);
        self.selected = self.runs.len() - 1;
    }

    /// A training run ended (`stopped`: by the user): adds it, marked with its sigma when a
    /// sweep ran it to the end, and returns the sweep's next run, if any.
    pub fn run_finished(&mut self, mut run: RunRecord, stopped: bool) -> Option<TrainConfig> {
        if !stopped {
            run.sweep_sigma = self.sweep.current_sigma();
        }
        self.add(run);
        self.sweep.finished(stopped)
    }

    pub fn move_selection(&mut self, down: bool) {
        if self.runs.is_empty() {
            return;
        }
        self.selected = if down {
            (self.selected + 1).min(self.runs.len() - 1)
        } else {
            self.selected.saturating_sub(1)
        };
    }

    pub fn apply(&mut self, update: AuditUpdate) {
        let (run, state) = match update {
            AuditUpdate::CanaryBound {
                run,
                epsilon_lower_bound,
                correct,
                guesses,
            } => {
                let bound = CanaryBound {
                    epsilon_lower_bound,
                    correct,
                    guesses,
                };
                self.canary_bounds.insert(run, bound);
                return;
            }
            AuditUpdate::Started { run } => (run, AuditState::Running),
            AuditUpdate::Finished {
                run,
                auc,
                advantage,
            } => (run, AuditState::Done { auc, advantage }),
            AuditUpdate::Failed { run, reason } => (run, AuditState::Failed(reason)),
        };
        match self.runs.get_mut(run) {
            Some(r) => r.audit = state,
            None => self.message = Some(format!("audit result for unknown run {}", run + 1)),
        }
    }
}
