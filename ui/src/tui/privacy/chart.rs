//! Drawing of accuracy against epsilon on the Privacy tab: the sweep's points labelled with
//! their sigma and joined in order of epsilon, the other runs as plain marks (runs without DP
//! at the right edge), and the non-DP baseline as a horizontal line. Reads the runs only; may
//! not import the app or the event queue.

use super::sweep::fmt_sigma;
use super::RunRecord;
use crate::tui::theme::Theme;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Line as Segment};
use ratatui::widgets::{Block, Widget};

pub struct Frontier<'a> {
    pub runs: &'a [RunRecord],
    pub theme: Theme,
}

/// Data bounds and the cells they map to.
struct Scale {
    x: [f64; 2],
    y: [f64; 2],
    area: Rect,
}

impl Scale {
    /// The cell of a data point, clamped into the plot.
    fn cell(&self, x: f64, y: f64) -> (u16, u16) {
        let frac = |v: f64, b: [f64; 2]| ((v - b[0]) / (b[1] - b[0])).clamp(0.0, 1.0);
        let col = (frac(x, self.x) * (self.area.width - 1) as f64).round() as u16;
        let row = ((1.0 - frac(y, self.y)) * (self.area.height - 1) as f64).round() as u16;
        (self.area.x + col, self.area.y + row)
    }

    /// Writes `mark` and `label` at a point: the label after the mark, or before it where it
    /// would run past the right edge.
    fn mark(&self, buf: &mut Buffer, (x, y): (f64, f64), mark: Span, label: &str, style: Style) {
        let (col, row) = self.cell(x, y);
        let len = label.chars().count() as u16;
        let right = self.area.x + self.area.width;
        if col + 1 + len <= right {
            buf.set_span(col, row, &mark, 1);
            buf.set_string(col + 1, row, label, style);
        } else {
            let start = col.saturating_sub(len).max(self.area.x);
            buf.set_string(start, row, label, style);
            buf.set_span(col, row, &mark, 1);
        }
    }
}

fn is_dp(r: &RunRecord) -> bool {
    r.epsilon.is_some_and(f64::is_finite)
}

/// Accuracy bounds to the nearest 10% around every run, so close points do not crowd the top.
fn accuracy_bounds(runs: &[RunRecord]) -> [f64; 2] {
    let (lo, hi) = runs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), r| {
            (l.min(r.accuracy), h.max(r.accuracy))
        });
    if !lo.is_finite() {
        return [0.0, 1.0];
    }
    let lo = ((lo - 0.02) * 10.0).floor().max(0.0) / 10.0;
    let hi = ((hi + 0.02) * 10.0).ceil().min(10.0) / 10.0;
    if hi - lo < 0.1 {
        [lo.min(0.9), lo.min(0.9) + 0.1]
    } else {
        [lo, hi]
    }
}

fn fmt_tick(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

impl Widget for Frontier<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let block = Block::bordered().title(" Accuracy vs ε ");
        let inner = block.inner(area);
        block.render(area, buf);
        if inner.width < 16 || inner.height < 6 {
            return;
        }
        let theme = self.theme;
        let (sweep_style, other_style, base_style) =
            (theme.series(1), theme.series(2), theme.series(0));
        let [legend, middle, ticks] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        let [y_labels, plot] =
            Layout::horizontal([Constraint::Length(5), Constraint::Min(1)]).areas(middle);
        let [_, x_labels] =
            Layout::horizontal([Constraint::Length(5), Constraint::Min(1)]).areas(ticks);
        Line::from(vec![
            Span::styled("•σ", sweep_style),
            Span::raw(" sweep  "),
            Span::styled("+", other_style),
            Span::raw(" other runs (no DP: right edge)  "),
            Span::styled("─", base_style),
            Span::raw(" no DP"),
        ])
        .render(legend, buf);

        let runs = self.runs;
        // The baseline: the latest sweep run without DP, else the latest run without DP.
        let plain = |r: &&RunRecord| !is_dp(r);
        let baseline = runs
            .iter()
            .rposition(|r| !is_dp(r) && r.sweep_sigma == Some(0.0))
            .or_else(|| runs.iter().rposition(|r| plain(&r)));
        let max_eps = runs
            .iter()
            .filter_map(|r| r.epsilon.filter(|e| e.is_finite()))
            .fold(0.0_f64, f64::max);
        let right = if max_eps > 0.0 { max_eps * 1.15 } else { 1.0 };
        let scale = Scale {
            x: [0.0, right],
            y: accuracy_bounds(runs),
            area: plot,
        };
        let mut sweep: Vec<(f64, f64, f64)> = runs
            .iter()
            .filter(|r| is_dp(r))
            .filter_map(|r| Some((r.epsilon?, r.accuracy, r.sweep_sigma?)))
            .collect();
        sweep.sort_by(|a, b| a.0.total_cmp(&b.0));

        let colour = |s: Style| s.fg.unwrap_or(Color::Reset);
        let base_acc = baseline.map(|i| runs[i].accuracy);
        Canvas::default()
            .x_bounds(scale.x)
            .y_bounds(scale.y)
            .marker(Marker::Braille)
            .paint(|ctx| {
                for w in sweep.windows(2) {
                    ctx.draw(&Segment::new(
                        w[0].0,
                        w[0].1,
                        w[1].0,
                        w[1].1,
                        colour(sweep_style),
                    ));
                }
                if let Some(a) = base_acc {
                    ctx.draw(&Segment::new(0.0, a, right, a, colour(base_style)));
                }
            })
            .render(plot, buf);

        if let Some(a) = base_acc {
            let (_, row) = scale.cell(0.0, a);
            let label = format!("no DP {:.1}%", a * 100.0);
            buf.set_stringn(plot.x, row, label, plot.width as usize, base_style);
        }
        for (i, r) in runs.iter().enumerate() {
            if Some(i) == baseline || (is_dp(r) && r.sweep_sigma.is_some()) {
                continue;
            }
            let x = r.epsilon.filter(|e| e.is_finite()).unwrap_or(right);
            scale.mark(
                buf,
                (x, r.accuracy),
                Span::styled("+", other_style),
                "",
                other_style,
            );
        }
        // Last, so the sweep's labels stay readable where marks meet.
        for &(e, acc, sigma) in &sweep {
            let label = format!("σ{}", fmt_sigma(sigma));
            let mark = Span::styled("•", sweep_style);
            scale.mark(buf, (e, acc), mark, &label, sweep_style);
        }

        for (row, y) in [
            (plot.y, scale.y[1]),
            (plot.y + plot.height / 2, (scale.y[0] + scale.y[1]) / 2.0),
            (plot.y + plot.height - 1, scale.y[0]),
        ] {
            let text = format!("{:>4.0}%", y * 100.0);
            buf.set_stringn(y_labels.x, row, text, y_labels.width as usize, theme.dim());
        }
        Line::styled(format!("ε {}", fmt_tick(0.0)), theme.dim()).render(x_labels, buf);
        Line::styled(fmt_tick(right / 2.0), theme.dim())
            .centered()
            .render(x_labels, buf);
        Line::styled(fmt_tick(right), theme.dim())
            .right_aligned()
            .render(x_labels, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::privacy::AuditState;
    use privxray::model::ModelKind;

    fn run(epsilon: Option<f64>, accuracy: f64, sweep_sigma: Option<f64>) -> RunRecord {
        RunRecord {
            model: ModelKind::DnnAv,
            epsilon,
            delta: epsilon.map(|_| 1e-5),
            accuracy,
            accuracy_is_test: true,
            checkpoint: None,
            audit: AuditState::NotRun,
            sweep_sigma,
        }
    }

    fn draw(runs: &[RunRecord]) -> Vec<String> {
        let area = Rect::new(0, 0, 60, 20);
        let mut buf = Buffer::empty(area);
        Frontier {
            runs,
            theme: Theme::PLAIN,
        }
        .render(area, &mut buf);
        (0..area.height)
            .map(|y| (0..area.width).map(|x| buf[(x, y)].symbol()).collect())
            .collect()
    }

    fn row_of(lines: &[String], text: &str) -> usize {
        lines
            .iter()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| panic!("{text:?} not drawn:\n{}", lines.join("\n")))
    }

    #[test]
    fn sweep_points_carry_their_sigma_at_their_accuracy() {
        let runs = [
            run(None, 0.92, Some(0.0)),
            run(Some(6.0), 0.85, Some(0.5)),
            run(Some(0.8), 0.65, Some(4.0)),
            run(Some(3.0), 0.75, None),
        ];
        let lines = draw(&runs);
        let (base, high, low) = (
            row_of(&lines, "no DP 92.0%"),
            row_of(&lines, "σ0.5"),
            row_of(&lines, "σ4"),
        );
        // Higher accuracy is higher on screen; the baseline above both.
        assert!(base < high && high < low, "{base} {high} {low}");
        // The weaker noise spent more epsilon: further right.
        assert!(lines[high].find("σ0.5") > lines[low].find("σ4"));
        // The Train tab's run is a mark without a sigma.
        assert!(lines.iter().any(|l| l.contains('+')));
        assert!(!lines.iter().any(|l| l.contains("σ0 ") || l.ends_with("σ0")));
    }

    #[test]
    fn accuracy_bounds_round_to_ten_percent() {
        let runs = [run(None, 0.91, None), run(Some(1.0), 0.74, None)];
        assert_eq!(accuracy_bounds(&runs), [0.7, 1.0]);
        assert_eq!(accuracy_bounds(&[]), [0.0, 1.0]);
        let flat = [run(None, 0.734, None)];
        let b = accuracy_bounds(&flat);
        assert!(
            b[0] <= 0.734 && b[1] >= 0.734 && b[1] - b[0] >= 0.1 - 1e-12,
            "{b:?}"
        );
    }
}
