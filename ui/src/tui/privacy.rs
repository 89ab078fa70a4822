//! The Privacy tab: every run so far as a point of accuracy against epsilon, and the
//! membership-inference audit of a finished model beside its epsilon.

use super::backend::{AuditUpdate, TrainOutcome};
use super::theme::Theme;
use super::train::fmt_eps;
use super::widgets::charts::{self, Series};
use privxray::model::ModelKind;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};

use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, StatefulWidget, Table, TableState, Widget, Wrap};
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
}

impl RunRecord {
    pub fn from_outcome(model: ModelKind, delta: Option<f64>, o: &TrainOutcome) -> Self {
        RunRecord {
            model,
            epsilon: o.epsilon,
            delta,
            accuracy: o.test_acc.unwrap_or(o.best_val_acc),
            accuracy_is_test: o.test_acc.is_some(),
            checkpoint: o.checkpoint.clone(),
            audit: AuditState::NotRun,
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
}

impl PrivacyTab {
    pub fn add(&mut self, run: RunRecord) {
        self.runs.push(run);
        self.selected = self.runs.len() - 1;
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

pub struct PrivacyView<'a> {
    pub tab: &'a PrivacyTab,
    pub theme: Theme,
}

impl Widget for PrivacyView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (t, theme) = (self.tab, self.theme);
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(area);
        let [table_area, detail_area] =
            Layout::vertical([Constraint::Min(5), Constraint::Length(7)]).areas(left);

        let rows: Vec<Row> = t
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let audit = match &r.audit {
                    AuditState::NotRun => "-".to_string(),
                    AuditState::Running => "running…".to_string(),
                    AuditState::Done { auc, advantage } => {
                        format!("AUC {auc:.2} adv {advantage:.2}")
                    }
                    AuditState::Failed(_) => "failed".to_string(),
                };
                Row::new(vec![
                    (i + 1).to_string(),
                    r.model.name().to_string(),
                    r.epsilon.map(fmt_eps).unwrap_or("∞ (no DP)".into()),
                    format!(
                        "{:.1}%{}",
                        r.accuracy * 100.0,
                        if r.accuracy_is_test { "" } else { " val" }
                    ),
                    audit,
                ])
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(3),
                Constraint::Length(8),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Min(10),
            ],
        )
        .header(Row::new(["#", "model", "ε", "accuracy", "membership audit"]).style(theme.bold()))
        .row_highlight_style(theme.selected())
        .block(Block::bordered().title(" Runs "));
        let mut state =
            TableState::default().with_selected((!t.runs.is_empty()).then_some(t.selected));
        StatefulWidget::render(table, table_area, buf, &mut state);
        if t.runs.is_empty() {
            let inner = Rect {
                y: table_area.y + 2,
                height: table_area.height.saturating_sub(3),
                x: table_area.x + 1,
                width: table_area.width.saturating_sub(2),
            };
            Paragraph::new("no runs yet: finished trainings appear here")
                .style(theme.dim())
                .render(inner, buf);
        }

        let detail: Vec<Line> = match t.runs.get(t.selected) {
            None => vec![Line::styled("select a run with j/k", theme.dim())],
            Some(r) => {
                let mut v = vec![Line::raw(format!(
                    "run {} · {} · ε {}{}",
                    t.selected + 1,
                    r.model.name(),
                    r.epsilon.map(fmt_eps).unwrap_or("∞".into()),
                    r.delta.map(|d| format!(" at δ {d:e}")).unwrap_or_default()
                ))];
                match &r.audit {
                    AuditState::NotRun => v.push(Line::styled(
                        "press a to audit membership inference",
                        theme.dim(),
                    )),
                    AuditState::Running => {
                        v.push(Line::styled("loss-threshold attack running…", theme.warn()))
                    }
                    AuditState::Done { auc, advantage } => {
                        v.push(Line::raw(format!(
                            "attack AUC {auc:.3} (0.5 = guessing), advantage {advantage:.3}"
                        )));
                        if let Some(e) = r.epsilon {
                            // DP bounds any test's advantage by (e^ε - 1 + δ) / (e^ε + 1).
                            let d = r.delta.unwrap_or(0.0);
                            let bound = ((e.exp() - 1.0 + d) / (e.exp() + 1.0)).min(1.0);
                            v.push(Line::raw(format!("ε-DP bound on advantage {bound:.3}")));
                        }
                    }
                    AuditState::Failed(why) => {
                        v.push(Line::styled(format!("audit failed: {why}"), theme.error()))
                    }
                }
                if let Some(b) = t.canary_bounds.get(&t.selected) {
                    let over = r.epsilon.is_some_and(|e| b.epsilon_lower_bound > e);
                    let line = format!(
                        "canaries: ε ≥ {:.2} (95%, {} of {} guesses right) beside ε {}",
                        b.epsilon_lower_bound,
                        b.correct,
                        b.guesses,
                        r.epsilon.map(fmt_eps).unwrap_or("∞".into())
                    );
                    v.push(if over {
                        Line::styled(line + ": above the claim", theme.error())
                    } else {
                        Line::raw(line)
                    });
                }
                v
            }
        };
        let mut detail = detail;
        if let Some(m) = &t.message {
            detail.push(Line::styled(m.clone(), theme.warn()));
        }
        Paragraph::new(detail)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Selected run "))
            .render(detail_area, buf);

        // Accuracy against epsilon; runs without DP sit at the right edge.
        let dp: Vec<(f64, f64)> = t
            .runs
            .iter()
            .filter_map(|r| r.epsilon.filter(|e| e.is_finite()).map(|e| (e, r.accuracy)))
            .collect();
        let right_edge = dp.iter().map(|p| p.0).fold(1.0_f64, f64::max) * 1.25;
        let plain: Vec<(f64, f64)> = t
            .runs
            .iter()
            .filter(|r| r.epsilon.is_none_or(|e| !e.is_finite()))
            .map(|r| (right_edge, r.accuracy))
            .collect();
        let series = [
            Series {
                name: "DP",
                points: &dp,
                style: theme.series(1),
                scatter: true,
            },
            Series {
                name: "no DP (right edge)",
                points: &plain,
                style: theme.series(0),
                scatter: true,
            },
        ];
        charts::chart(
            Block::bordered().title(" Accuracy vs ε "),
            &series,
            "ε",
            Some([0.0, 1.0]),
            theme.dim(),
        )
        .render(right, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(tab: &PrivacyTab) -> String {
        let area = Rect::new(0, 0, 200, 24);
        let mut buf = Buffer::empty(area);
        PrivacyView {
            tab,
            theme: Theme { color: false },
        }
        .render(area, &mut buf);
        (0..area.height)
            .map(|y| {
                (0..area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn tab_with_run(epsilon: Option<f64>) -> PrivacyTab {
        let mut t = PrivacyTab::default();
        t.add(RunRecord {
            model: ModelKind::DnnMax,
            epsilon,
            delta: epsilon.map(|_| 1e-5),
            accuracy: 0.9,
            accuracy_is_test: true,
            checkpoint: None,
            audit: AuditState::NotRun,
        });
        t
    }

    #[test]
    fn canary_bound_is_shown_beside_epsilon_and_flagged_above_it() {
        let mut t = tab_with_run(Some(0.97));
        assert!(!screen(&t).contains("canaries"));
        t.apply(AuditUpdate::CanaryBound {
            run: 0,
            epsilon_lower_bound: 0.42,
            correct: 11,
            guesses: 12,
        });
        let s = screen(&t);
        assert!(
            s.contains("canaries: ε ≥ 0.42 (95%, 11 of 12 guesses right) beside ε 0.97"),
            "{s}"
        );
        assert!(!s.contains("above the claim"), "{s}");
        // A bound over the claim is a bug (or a 5% event) and says so.
        t.apply(AuditUpdate::CanaryBound {
            run: 0,
            epsilon_lower_bound: 2.65,
            correct: 64,
            guesses: 64,
        });
        assert!(screen(&t).contains("above the claim"));
        // Without DP there is no claim to exceed.
        let mut plain = tab_with_run(None);
        plain.apply(AuditUpdate::CanaryBound {
            run: 0,
            epsilon_lower_bound: 2.65,
            correct: 64,
            guesses: 64,
        });
        let s = screen(&plain);
        assert!(
            s.contains("ε ≥ 2.65") && !s.contains("above the claim"),
            "{s}"
        );
    }
}
