//! PNG charts with plotters: training curves (accuracy and loss per epoch, like the paper's
//! figures) and the privacy-utility frontier. Text is drawn with the DejaVu Sans font shipped in
//! `assets/fonts/` (compiled in), so nothing needs fontconfig or a system font.
//!
//! Imports `crate::atomic` and `plotters` only; never `train`, `pipeline` or terminal code.

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn ensure_font() {
    REGISTER.call_once(|| {
        // Registration only fails for unparsable font bytes, which a test pins.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("chart {0:?} has no finite points to draw")]
    Empty(String),
    #[error("drawing chart {chart:?}: {reason}")]
    Draw { chart: String, reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// One named line (or set of points).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: lines, or labelled points when `points_only` (the frontier).
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub points_only: bool,
}

/// One epoch of a training run, as the curves need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
}

/// The paper's two figures for a run: accuracy against epoch and loss against epoch, each with
/// the training and validation curves.
pub fn training_charts(model: &str, epochs: &[EpochPoint]) -> [Chart; 2] {
    let series = |f: fn(&EpochPoint) -> f64, g: fn(&EpochPoint) -> f64| {
        vec![
            Series {
                label: "train".into(),
                points: epochs.iter().map(|e| (e.epoch as f64, f(e))).collect(),
            },
            Series {
                label: "validation".into(),
                points: epochs.iter().map(|e| (e.epoch as f64, g(e))).collect(),
            },
        ]
    };
    [
        Chart {
            title: format!("{model}: accuracy"),
            x_label: "epoch".into(),
            y_label: "accuracy".into(),
            series: series(|e| e.train_accuracy, |e| e.val_accuracy),
            points_only: false,
        },
        Chart {
            title: format!("{model}: loss"),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: series(|e| e.train_loss, |e| e.val_loss),
            points_only: false,
        },
    ]
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// (min, max) of one axis.
type Range = (f64, f64);

fn bounds(chart: &Chart) -> Result<(Range, Range), PlotError> {
    let pts = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut any = false;
    for &(x, y) in pts {
        any = true;
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !any {
        return Err(PlotError::Empty(chart.title.clone()));
    }
    let pad = |lo: f64, hi: f64| {
        let span = (hi - lo).abs().max(1e-6);
        (lo - span * 0.05, hi + span * 0.05)
    };
    Ok((pad(x0, x1), pad(y0, y1)))
}

/// Renders `chart` to RGB pixels of `width` x `height`.
pub fn render_rgb(chart: &Chart, width: u32, height: u32) -> Result<Vec<u8>, PlotError> {
    ensure_font();
    let ((x0, x1), (y0, y1)) = bounds(chart)?;
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        chart: chart.title.clone(),
        reason: e.to_string(),
    };
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut ctx = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        ctx.configure_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, s) in chart.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            let drawn = if chart.points_only {
                ctx.draw_series(pts.iter().map(|&p| Circle::new(p, 5, colour.filled())))
                    .map_err(|e| err(&e))?
            } else {
                ctx.draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                    .map_err(|e| err(&e))?
            };
            drawn.label(s.label.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 4), (x + 16, y + 4)], colour.filled())
            });
        }
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(buf)
}

/// Renders `chart` and writes it as a PNG, atomically.
pub fn write_png(chart: &Chart, path: &Path, width: u32, height: u32) -> Result<(), PlotError> {
    let rgb = render_rgb(chart, width, height)?;
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| PlotError::Draw {
        chart: chart.title.clone(),
        reason: e.to_string(),
    })?;
    crate::atomic::write_atomic(path, &png).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs() -> Vec<EpochPoint> {
        (1..=6)
            .map(|e| EpochPoint {
                epoch: e,
                train_loss: 1.0 / e as f64,
                train_accuracy: 0.5 + 0.07 * e as f64,
                val_loss: 1.2 / e as f64,
                val_accuracy: 0.45 + 0.06 * e as f64,
            })
            .collect()
    }

    #[test]
    fn the_shipped_font_parses() {
        assert!(ab_glyph::FontRef::try_from_slice(FONT).is_ok());
    }

    #[test]
    fn curves_are_drawn_in_their_colours_with_text() {
        let [acc, _] = training_charts("dnn-max", &epochs());
        let rgb = render_rgb(&acc, 640, 480).unwrap();
        let count = |c: RGBColor| {
            rgb.chunks(3)
                .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
                .count()
        };
        // Both lines are present, and the caption/labels put dark text pixels on the page.
        assert!(count(COLOURS[0]) > 200, "train line missing");
        assert!(count(COLOURS[1]) > 200, "validation line missing");
        let dark = rgb
            .chunks(3)
            .filter(|p| p[0] < 60 && p[1] < 60 && p[2] < 60)
            .count();
        assert!(dark > 500, "no text or axes drawn ({dark} dark pixels)");
    }

    #[test]
    fn writes_a_png_and_rejects_empty_charts() {
        let dir = tempfile::tempdir().unwrap();
        let [_, loss] = training_charts("dnn-av", &epochs());
        let p = dir.path().join("loss.png");
        write_png(&loss, &p, 400, 300).unwrap();
        let img = image::open(&p).unwrap();
        assert_eq!((img.width(), img.height()), (400, 300));
        let empty = Chart {
            series: vec![Series {
                label: "x".into(),
                points: vec![(f64::NAN, 1.0)],
            }],
            ..loss
        };
        assert!(matches!(
            render_rgb(&empty, 100, 100),
            Err(PlotError::Empty(_))
        ));
    }
}
