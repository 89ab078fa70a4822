//! Drawing of the Privacy tab: the runs table, the sweep's list and progress, the selected run
//! with its audit and canary bound, and accuracy against epsilon (`chart`). Reads
//! [`PrivacyTab`] only; may not import the app or the event queue.

use super::sweep::{fmt_sigma, list_text};
use super::{chart, AuditState, PrivacyTab};
use crate::tui::format::fmt_eps;
use crate::tui::theme::Theme;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, StatefulWidget, Table, TableState, Widget, Wrap};

pub struct PrivacyView<'a> {
    pub tab: &'a PrivacyTab,
    pub theme: Theme,
}

impl Widget for PrivacyView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
                .areas(area);
        let [table_area, sweep_area, detail_area] = Layout::vertical([
            Constraint::Min(5),
            Constraint::Length(6),
            Constraint::Length(7),
        ])
        .areas(left);
        self.runs(table_area, buf);
        self.sweep(sweep_area, buf);
        self.selected(detail_area, buf);
        chart::Frontier {
            runs: &self.tab.runs,
            theme: self.theme,
        }
        .render(right, buf);
    }
}

impl PrivacyView<'_> {
    /// Every run: model, epsilon, accuracy and the audit's result.
    fn runs(&self, area: Rect, buf: &mut Buffer) {
        let (t, theme) = (self.tab, self.theme);
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
                    r.sweep_sigma
                        .map(|s| format!("σ{}", fmt_sigma(s)))
                        .unwrap_or_default(),
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
                Constraint::Length(2),
                Constraint::Length(7),
                Constraint::Length(4),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(["#", "model", "σ", "ε", "accuracy", "membership audit"]).style(theme.bold()),
        )
        .row_highlight_style(theme.selected())
        .block(Block::bordered().title(" Runs "));
        let mut state =
            TableState::default().with_selected((!t.runs.is_empty()).then_some(t.selected));
        StatefulWidget::render(table, area, buf, &mut state);
        if t.runs.is_empty() {
            let inner = Rect {
                y: area.y + 2,
                height: area.height.saturating_sub(3),
                x: area.x + 1,
                width: area.width.saturating_sub(2),
            };
            Paragraph::new("no runs yet: finished trainings appear here")
                .style(theme.dim())
                .render(inner, buf);
        }
    }

    /// The sweep: its list (or the editor), its progress, and its last message.
    fn sweep(&self, area: Rect, buf: &mut Buffer) {
        let (sw, theme) = (&self.tab.sweep, self.theme);
        let mut lines = vec![match &sw.editor {
            Some(text) => Line::styled(format!("σ list: {text}█"), theme.accent()),
            None if sw.running.is_some() => Line::raw(format!("σ list: {}", list_text(&sw.sigmas))),
            None => Line::from(vec![
                Span::raw(format!("σ list: {}", list_text(&sw.sigmas))),
                Span::styled("  e edit · s start", theme.dim()),
            ]),
        }];
        lines.push(match (sw.progress(), &sw.editor) {
            (Some(p), _) => Line::styled(format!("{p} · x stops"), theme.warn()),
            (None, Some(_)) => Line::styled("0 = no DP · Enter accepts · Esc cancels", theme.dim()),
            (None, None) => Line::styled(
                "one run per σ, other settings from the Train tab",
                theme.dim(),
            ),
        });
        if let Some((msg, error)) = &sw.status {
            let style = if *error { theme.error() } else { theme.ok() };
            lines.push(Line::styled(msg.clone(), style));
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Noise sweep "))
            .render(area, buf);
    }

    /// The selected run: its epsilon, the audit against the DP bound, and the canary bound.
    fn selected(&self, area: Rect, buf: &mut Buffer) {
        let (t, theme) = (self.tab, self.theme);
        let detail: Vec<Line> = match t.runs.get(t.selected) {
            None => vec![Line::styled("select a run with j/k", theme.dim())],
            Some(r) => {
                let mut v = vec![Line::raw(format!(
                    "run {} · {}{} · ε {}{}",
                    t.selected + 1,
                    r.model.name(),
                    r.sweep_sigma
                        .map(|s| format!(" · sweep σ {}", fmt_sigma(s)))
                        .unwrap_or_default(),
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
            .render(area, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::backend::AuditUpdate;
    use crate::tui::privacy::RunRecord;
    use privxray::model::ModelKind;

    fn screen(tab: &PrivacyTab) -> String {
        let area = Rect::new(0, 0, 200, 24);
        let mut buf = Buffer::empty(area);
        PrivacyView {
            tab,
            theme: Theme::PLAIN,
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
            sweep_sigma: None,
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
