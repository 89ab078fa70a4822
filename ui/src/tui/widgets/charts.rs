//! Helpers for line and scatter charts over ratatui's `Chart`.
//! Imports ratatui only; never the tabs or the app.

use ratatui::layout::Constraint;
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::Span;
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType};

/// One named series of (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64)],
    pub style: Style,
    pub scatter: bool,
}

/// Bounds covering every finite point, padded so a flat line is still visible.
pub fn bounds(series: &[Series<'_>]) -> Option<([f64; 2], [f64; 2])> {
    let mut xs = [f64::INFINITY, f64::NEG_INFINITY];
    let mut ys = [f64::INFINITY, f64::NEG_INFINITY];
    for s in series {
        for &(x, y) in s.points {
            if x.is_finite() && y.is_finite() {
                xs = [xs[0].min(x), xs[1].max(x)];
                ys = [ys[0].min(y), ys[1].max(y)];
            }
        }
    }
    if !xs[0].is_finite() {
        return None;
    }
    if xs[1] - xs[0] < 1e-9 {
        xs = [xs[0] - 0.5, xs[1] + 0.5];
    }
    if ys[1] - ys[0] < 1e-9 {
        ys = [ys[0] - 0.05, ys[1] + 0.05];
    }
    Some((xs, ys))
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || (v.fract() == 0.0 && v.abs() < 1e6) {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A chart of the series with axis labels at the ends and middle. `y_fixed` pins the y range
/// (accuracy is always 0..1).
pub fn chart<'a>(
    block: Block<'a>,
    series: &'a [Series<'a>],
    x_title: &'a str,
    y_fixed: Option<[f64; 2]>,
    axis_style: Style,
) -> Chart<'a> {
    let (xb, yb) = bounds(series).unwrap_or(([0.0, 1.0], [0.0, 1.0]));
    let yb = y_fixed.unwrap_or(yb);
    let labels = |b: [f64; 2]| {
        vec![
            Span::raw(fmt_tick(b[0])),
            Span::raw(fmt_tick((b[0] + b[1]) / 2.0)),
            Span::raw(fmt_tick(b[1])),
        ]
    };
    let datasets = series
        .iter()
        .map(|s| {
            Dataset::default()
                .name(s.name)
                .marker(if s.scatter {
                    Marker::Dot
                } else {
                    Marker::Braille
                })
                .graph_type(if s.scatter {
                    GraphType::Scatter
                } else {
                    GraphType::Line
                })
                .style(s.style)
                .data(s.points)
        })
        .collect();
    Chart::new(datasets)
        .block(block)
        // Always show which line is which, even in small charts.
        .hidden_legend_constraints((Constraint::Ratio(1, 1), Constraint::Ratio(1, 1)))
        .x_axis(
            Axis::default()
                .title(x_title)
                .style(axis_style)
                .bounds(xb)
                .labels(labels(xb)),
        )
        .y_axis(
            Axis::default()
                .style(axis_style)
                .bounds(yb)
                .labels(labels(yb)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_skip_non_finite_and_pad_flat() {
        let pts = [
            (1.0, 0.5),
            (3.0, 0.5),
            (f64::NAN, 9.0),
            (2.0, f64::INFINITY),
        ];
        let s = [Series {
            name: "a",
            points: &pts,
            style: Style::new(),
            scatter: false,
        }];
        let (x, y) = bounds(&s).unwrap();
        assert_eq!(x, [1.0, 3.0]);
        assert!((y[0] - 0.45).abs() < 1e-12 && (y[1] - 0.55).abs() < 1e-12);
        let empty: [Series; 0] = [];
        assert!(bounds(&empty).is_none());
    }
}
