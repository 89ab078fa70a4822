//! A model's evaluation as the engine measured it, for any number of classes: per class the
//! one-vs-rest precision, recall, specificity, F1 and ROC-AUC with the macro F1, and the
//! confusion matrix (rows true, columns predicted) under the class names. Side by side when
//! the area is wide enough, else one above the other.
//! Imports the engine's metrics type and the theme only.

use crate::tui::theme::Theme;
use privxray::train::Metrics;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Row, Table, Widget};

/// Widths of the per-class figures after the class name: precision, recall, specificity, F1,
/// ROC-AUC.
const FIGURES: [(&str, u16); 5] = [
    ("precision", 9),
    ("recall", 6),
    ("specificity", 11),
    ("F1", 4),
    ("ROC-AUC", 7),
];
/// Spacing between table columns (ratatui's default).
const GAP: u16 = 1;

pub struct Evaluation<'a> {
    pub metrics: &'a Metrics,
    /// What was evaluated, for the title ("test + val", say).
    pub what: &'a str,
    pub theme: Theme,
}

impl Evaluation<'_> {
    fn classes(&self) -> usize {
        self.metrics.classes.len()
    }

    fn name_width(&self) -> u16 {
        let longest = self.metrics.classes.iter().map(|c| c.chars().count());
        longest.max().unwrap_or(0).max(8) as u16
    }

    /// Width of the per-class table.
    fn per_class_width(&self) -> u16 {
        self.name_width() + FIGURES.iter().map(|(_, w)| w + GAP).sum::<u16>()
    }

    /// Width of one count column of the confusion matrix: the longest name, or the largest
    /// count, whichever is wider.
    fn count_width(&self) -> u16 {
        let digits = self
            .metrics
            .confusion
            .iter()
            .flatten()
            .max()
            .map_or(1, |m| m.to_string().len());
        let names = self.metrics.classes.iter().map(|c| c.chars().count());
        names.max().unwrap_or(0).max(digits) as u16
    }

    fn confusion_width(&self) -> u16 {
        self.name_width() + (self.count_width() + GAP) * self.classes() as u16 + GAP
    }

    /// Whether the two tables fit side by side in `width` (borders included).
    fn side_by_side(&self, width: u16) -> bool {
        width >= self.per_class_width() + self.confusion_width() + 2 + 2
    }

    /// Rows (borders included) the widget wants at `width`.
    pub fn height(&self, width: u16) -> u16 {
        let n = self.classes() as u16;
        // Per class: a header, a row per class, the macro F1. Confusion: a caption, a header
        // of predicted names, a row per true class.
        if self.side_by_side(width) {
            n + 2 + 2
        } else {
            (n + 2) + (n + 2) + 2
        }
    }

    fn per_class(&self, area: Rect, buf: &mut Buffer) {
        let (m, theme) = (self.metrics, self.theme);
        let fig = |v: f64| format!("{v:.2}");
        let mut rows: Vec<Row> = m
            .per_class
            .iter()
            .map(|c| {
                Row::new(vec![
                    c.class.clone(),
                    fig(c.precision),
                    fig(c.recall),
                    fig(c.specificity),
                    fig(c.f1),
                    c.roc_auc.map_or("-".into(), fig),
                ])
            })
            .collect();
        rows.push(
            Row::new(vec![
                Cell::from("macro F1"),
                Cell::from(""),
                Cell::from(""),
                Cell::from(""),
                Cell::from(fig(m.macro_f1)).style(theme.bold()),
            ])
            .style(theme.dim()),
        );
        let mut widths = vec![Constraint::Length(self.name_width())];
        widths.extend(FIGURES.iter().map(|(_, w)| Constraint::Length(*w)));
        let mut header = vec!["class"];
        header.extend(FIGURES.iter().map(|(h, _)| *h));
        Table::new(rows, widths)
            .column_spacing(GAP)
            .header(Row::new(header).style(theme.bold()))
            .render(area, buf);
    }

    fn confusion(&self, area: Rect, buf: &mut Buffer) {
        let (m, theme) = (self.metrics, self.theme);
        let [caption, table] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
        Line::styled("confusion: rows true, columns predicted", theme.dim()).render(caption, buf);
        let cw = self.count_width() as usize;
        let rows: Vec<Row> =
            m.confusion
                .iter()
                .enumerate()
                .map(|(t, counts)| {
                    let mut cells = vec![Cell::from(m.classes.get(t).cloned().unwrap_or_default())
                        .style(theme.bold())];
                    cells.extend(counts.iter().enumerate().map(|(p, c)| {
                        let style = if p == t { theme.ok() } else { Style::new() };
                        Cell::from(format!("{c:>cw$}")).style(style)
                    }));
                    Row::new(cells)
                })
                .collect();
        let mut widths = vec![Constraint::Length(self.name_width())];
        widths.extend((0..self.classes()).map(|_| Constraint::Length(cw as u16)));
        let mut header = vec![String::new()];
        header.extend(m.classes.iter().map(|c| format!("{c:>cw$}")));
        Table::new(rows, widths)
            .column_spacing(GAP)
            .header(Row::new(header).style(theme.bold()))
            .render(table, buf);
    }
}

impl Widget for Evaluation<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let m = self.metrics;
        let block = Block::bordered().title(format!(
            " {}: {} images · accuracy {:.1}% ",
            self.what,
            m.images,
            m.accuracy * 100.0
        ));
        let inner = block.inner(area);
        block.render(area, buf);
        let n = self.classes() as u16;
        if self.side_by_side(area.width) {
            let [left, _, right] = Layout::horizontal([
                Constraint::Length(self.per_class_width()),
                Constraint::Length(2),
                Constraint::Min(0),
            ])
            .areas(inner);
            self.per_class(left, buf);
            self.confusion(right, buf);
        } else {
            let [top, bottom] =
                Layout::vertical([Constraint::Length(n + 2), Constraint::Min(0)]).areas(inner);
            self.per_class(top, buf);
            self.confusion(bottom, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A three-class evaluation as the engine computes it from probabilities.
    fn three() -> Metrics {
        let classes: Vec<String> = ["BACTERIA", "NORMAL", "VIRUS"].map(String::from).into();
        // Labels 0,0,0,1,1,2,2,2; predictions 0,0,2,1,1,2,2,0.
        let probs = [0usize, 0, 2, 1, 1, 2, 2, 0]
            .map(|p| (0..3).map(|c| if c == p { 0.8 } else { 0.1 }).collect());
        let labels = [0u8, 0, 0, 1, 1, 2, 2, 2];
        Metrics::from_probabilities(&probs, &[0.0; 8], &labels, 0.5, &classes)
    }

    fn draw(m: &Metrics, w: u16) -> (Vec<String>, u16) {
        let e = Evaluation {
            metrics: m,
            what: "test",
            theme: Theme::PLAIN,
        };
        let h = e.height(w);
        let area = Rect::new(0, 0, w, h);
        let mut buf = Buffer::empty(area);
        e.render(area, &mut buf);
        let lines = (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect();
        (lines, h)
    }

    /// The words after the `nth` occurrence of `name` in reading order (borders dropped), up
    /// to the end of that line.
    fn after<'a>(lines: &'a [String], name: &str, nth: usize) -> Vec<&'a str> {
        let mut seen = 0;
        for l in lines {
            let words: Vec<&str> = l.split(['│', ' ']).filter(|w| !w.is_empty()).collect();
            for (i, w) in words.iter().enumerate() {
                if *w == name {
                    if seen == nth {
                        return words[i + 1..].to_vec();
                    }
                    seen += 1;
                }
            }
        }
        panic!("no {name} number {nth}:\n{}", lines.join("\n"))
    }

    #[test]
    fn the_confusion_matrix_has_true_rows_and_predicted_columns_by_name() {
        let m = three();
        for w in [56, 110] {
            let (lines, h) = draw(&m, w);
            assert_eq!(h as usize, lines.len());
            // BACTERIA: 2 right, 1 taken for VIRUS; VIRUS: 1 taken for BACTERIA, 2 right. A
            // name's third occurrence starts its confusion row (per class and the header of
            // predicted names come first, in either layout).
            assert_eq!(after(&lines, "BACTERIA", 2)[..3], ["2", "0", "1"], "{w}");
            assert_eq!(after(&lines, "NORMAL", 2)[..3], ["0", "2", "0"], "{w}");
            assert_eq!(after(&lines, "VIRUS", 2)[..3], ["1", "0", "2"], "{w}");
            let text = lines.join("\n");
            assert!(text.contains("8 images · accuracy 75.0%"), "{text}");
        }
    }

    #[test]
    fn per_class_figures_are_one_vs_rest() {
        let m = three();
        let (lines, _) = draw(&m, 56);
        // BACTERIA: tp 2, fp 1, fn 1, tn 4: precision, recall 0.67, specificity 0.80.
        assert_eq!(
            after(&lines, "BACTERIA", 0)[..4],
            ["0.67", "0.67", "0.80", "0.67"]
        );
        // NORMAL: all right.
        assert_eq!(
            after(&lines, "NORMAL", 0)[..5],
            ["1.00", "1.00", "1.00", "1.00", "1.00"]
        );
        let text = lines.join("\n");
        assert!(text.contains(&format!("{:.2}", m.macro_f1)), "{text}");
        assert_eq!(after(&lines, "F1", 1), ["0.78"], "{text}");
    }

    #[test]
    fn narrow_areas_stack_the_tables_wide_ones_put_them_side_by_side() {
        let m = three();
        let (narrow, _) = draw(&m, 56);
        let (wide, _) = draw(&m, 110);
        assert!(narrow.len() > wide.len());
        let header = |lines: &[String]| {
            lines
                .iter()
                .position(|l| l.contains("confusion"))
                .expect("a caption")
        };
        assert!(header(&narrow) > header(&wide));
    }
}
