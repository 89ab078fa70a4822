//! Drawing of the Train tab: the settings with the DP sliders and epsilon, the run's status,
//! the charts, and once a run has been evaluated its per-class figures and confusion matrix
//! (in place of the step loss). Reads [`TrainTab`] only; may not import the app or the event
//! queue.

use super::state::{Epsilon, Field, RunState, TrainTab, CLIP_RANGE, NOISE_RANGE};
use crate::tui::backend::{EpochPoint, OptimizerChoice};
use crate::tui::format::{self, clock, fmt_eps};
use crate::tui::theme::Theme;
use crate::tui::widgets::charts::{self, Series};
use crate::tui::widgets::{Evaluation, Slider};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};

pub struct TrainView<'a> {
    pub tab: &'a TrainTab,
    pub theme: Theme,
}

impl Widget for TrainView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [left, right] =
            Layout::horizontal([Constraint::Length(44), Constraint::Min(20)]).areas(area);
        let [settings_area, run_area] =
            Layout::vertical([Constraint::Length(15), Constraint::Min(5)]).areas(left);
        self.settings(settings_area, buf);
        self.run(run_area, buf);
        self.charts(right, buf);
    }
}

impl TrainView<'_> {
    /// The run's settings, the DP sliders, and epsilon spent and projected.
    fn settings(&self, area: Rect, buf: &mut Buffer) {
        let (t, theme) = (self.tab, self.theme);
        let block = Block::bordered().title(" Settings ");
        let inner = block.inner(area);
        block.render(area, buf);
        let rows = Layout::vertical(vec![Constraint::Length(1); 13]).split(inner);
        let focus = t.field();
        let style_for = |f: Field| {
            if f == focus {
                theme.selected()
            } else if t.state.active() && !f.live() {
                theme.dim()
            } else {
                Style::new()
            }
        };
        let text_row = |f: Field, label: &str, value: String| {
            Line::from(vec![
                Span::styled(format!("{label:<14}"), style_for(f)),
                Span::raw(value),
            ])
        };
        text_row(Field::Model, "model", format!("‹ {} ›", t.model.name())).render(rows[0], buf);
        text_row(Field::Epochs, "epochs", t.epochs.to_string()).render(rows[1], buf);
        text_row(Field::Batch, "batch size", t.batch.to_string()).render(rows[2], buf);
        text_row(
            Field::LearningRate,
            "optimizer",
            match t.optimizer {
                OptimizerChoice::Adam => format!("‹ Adam {:e} ›", t.learning_rate),
                OptimizerChoice::Sgd { momentum } => {
                    format!("‹ SGD {}, momentum {momentum} ›", t.learning_rate)
                }
            },
        )
        .render(rows[3], buf);
        text_row(
            Field::Dp,
            "DP-SGD",
            if t.dp_enabled { "[x] on" } else { "[ ] off" }.into(),
        )
        .render(rows[5], buf);
        let mut slider = |f: Field, label: &'static str, v: f64, range: [f64; 2], area: Rect| {
            Slider {
                label,
                value: v,
                min: range[0],
                max: range[1],
                text: format!("{v:.2}"),
                label_width: 14,
                style: if t.dp_enabled {
                    style_for(f)
                } else {
                    theme.dim()
                },
                knob: theme.accent(),
            }
            .render(area, buf);
        };
        slider(Field::Noise, "noise σ", t.noise.get(), NOISE_RANGE, rows[6]);
        slider(
            Field::Clip,
            "clip norm C",
            t.clip.get(),
            CLIP_RANGE,
            rows[7],
        );
        text_row(Field::Delta, "delta δ", format!("{:e}", t.delta)).render(rows[8], buf);
        text_row(
            Field::Freeze,
            "freeze",
            t.freeze.clone().unwrap_or_else(|| "none".into()),
        )
        .render(rows[9], buf);
        text_row(
            Field::Ema,
            "weight avg",
            t.ema
                .map_or_else(|| "off (last weights)".into(), |d| format!("EMA {d}")),
        )
        .render(rows[10], buf);
        text_row(
            Field::Dropout,
            "dropout",
            t.dropout.map_or_else(
                || "model's own (0.5)".into(),
                |p| {
                    if p == 0.0 {
                        "off".into()
                    } else {
                        p.to_string()
                    }
                },
            ),
        )
        .render(rows[11], buf);
        let eps = match &t.epsilon {
            Epsilon::Value { spent, projected } => Line::from(vec![
                Span::raw("ε spent "),
                Span::styled(fmt_eps(*spent), theme.bold()),
                Span::raw(" · at end "),
                Span::styled(fmt_eps(*projected), theme.accent()),
            ]),
            Epsilon::Unknown(why) => Line::styled(format!("ε: {why}"), theme.dim()),
            Epsilon::Error(e) => Line::styled(format!("ε: {e}"), theme.error()),
        };
        eps.render(rows[12], buf);
    }

    /// The run's state, device, position, speed, DP in use, clipping and outcome.
    fn run(&self, area: Rect, buf: &mut Buffer) {
        let (t, theme) = (self.tab, self.theme);
        let state = match &t.state {
            RunState::Idle => Span::styled("idle: press s to start", theme.dim()),
            RunState::Starting => Span::styled("starting…", theme.warn()),
            RunState::Running => Span::styled("running", theme.ok()),
            RunState::Paused => Span::styled("paused (p resumes)", theme.warn()),
            RunState::Finished(o) if o.stopped => Span::styled("stopped", theme.warn()),
            RunState::Finished(_) => Span::styled("finished", theme.ok()),
            RunState::Failed(_) => Span::styled("failed", theme.error()),
        };
        let mut lines = vec![
            Line::from(vec![Span::raw("state   "), state]),
            Line::raw(format!("device  {}", t.device)),
        ];
        if let Some((epoch, step)) = t.position {
            let per = t
                .steps_per_epoch
                .map(|s| s.to_string())
                .unwrap_or("?".into());
            lines.push(Line::raw(format!(
                "epoch   {}/{} · step {}/{per}",
                epoch + 1,
                t.epochs,
                step + 1
            )));
            lines.push(Line::raw(format!(
                "speed   {:.1} images/s · ETA {}",
                t.images_per_sec,
                t.eta_seconds().map(clock).unwrap_or("--:--".into())
            )));
        }
        if let Some((sigma, clip)) = t.in_use {
            // What the engine's last step used: a slider change shows here once it applies.
            let mut spans = vec![Span::raw(format!("in use  σ {sigma:.2} · C {clip:.2}"))];
            let differs = |a: f64, b: f64| (a - b).abs() > 1e-9;
            if t.state.active() && (differs(sigma, t.noise.get()) || differs(clip, t.clip.get())) {
                spans.push(Span::styled(" · slider pending", theme.warn()));
            }
            lines.push(Line::from(spans));
        }
        if let Some((share, median)) = t.clipping {
            lines.push(Line::raw(format!(
                "clipped {:.0}% · median |g| {}",
                share * 100.0,
                format::norm(median)
            )));
        }
        match &t.state {
            RunState::Finished(o) => {
                let mut s = format!("best val acc {:.1}%", o.best_val_acc * 100.0);
                if let Some(a) = o.test_acc() {
                    s.push_str(&format!(" · test {:.1}%", a * 100.0));
                }
                if let Some(e) = o.epsilon {
                    s.push_str(&format!(" · ε {}", fmt_eps(e)));
                }
                lines.push(Line::styled(s, theme.ok()));
            }
            RunState::Failed(r) => lines.push(Line::styled(r.clone(), theme.error())),
            _ => {}
        }
        if let Some((m, err)) = &t.message {
            lines.push(Line::styled(
                m.clone(),
                if *err { theme.warn() } else { theme.dim() },
            ));
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Run "))
            .render(area, buf);
    }

    /// Loss and accuracy per epoch, and the loss of each step; after an evaluated run, the
    /// evaluation in the step loss's place.
    fn charts(&self, area: Rect, buf: &mut Buffer) {
        let t = self.tab;
        let theme = self.theme;
        let evaluation = match &t.state {
            RunState::Finished(o) => o.test.as_deref().map(|metrics| Evaluation {
                metrics,
                what: "test + val",
                theme,
            }),
            _ => None,
        };
        let rows = match &evaluation {
            // At most two thirds: the charts above keep a few rows.
            Some(e) => [
                Constraint::Fill(1),
                Constraint::Fill(1),
                Constraint::Length(e.height(area.width).min(area.height * 2 / 3)),
            ],
            None => [Constraint::Ratio(1, 3); 3],
        };
        let [loss_area, acc_area, step_area] = Layout::vertical(rows).areas(area);
        let pts = |f: fn(&EpochPoint) -> f64| -> Vec<(f64, f64)> {
            t.history
                .iter()
                .map(|p| ((p.epoch + 1) as f64, f(p)))
                .collect()
        };
        let (tl, vl) = (pts(|p| p.train_loss), pts(|p| p.val_loss));
        let (ta, va) = (pts(|p| p.train_acc), pts(|p| p.val_acc));
        let axis = theme.dim();
        let two = |a: &'static str, pa, b: &'static str, pb| {
            [
                Series {
                    name: a,
                    points: pa,
                    style: theme.series(0),
                    scatter: false,
                },
                Series {
                    name: b,
                    points: pb,
                    style: theme.series(1),
                    scatter: false,
                },
            ]
        };
        let loss_series = two("train", &tl, "val", &vl);
        charts::chart(
            Block::bordered().title(" Loss per epoch "),
            &loss_series,
            "epoch",
            None,
            axis,
        )
        .render(loss_area, buf);
        // The best checkpoint (the weights the run releases) as a dot on the validation curve.
        let best: Vec<(f64, f64)> = t.best.iter().map(|&(e, a)| ((e + 1) as f64, a)).collect();
        let mut acc_series = Vec::from(two("train", &ta, "val", &va));
        if !best.is_empty() {
            acc_series.push(Series {
                name: "best",
                points: &best,
                style: theme.ok(),
                scatter: true,
            });
        }
        let acc_title = match t.best {
            Some((e, a)) => format!(
                " Accuracy · best checkpoint epoch {} ({:.1}%) ",
                e + 1,
                a * 100.0
            ),
            None => " Accuracy per epoch ".into(),
        };
        charts::chart(
            Block::bordered().title(acc_title),
            &acc_series,
            "epoch",
            Some([0.0, 1.0]),
            axis,
        )
        .render(acc_area, buf);
        if let Some(e) = evaluation {
            e.render(step_area, buf);
            return;
        }
        let step_series = [Series {
            name: "loss",
            points: &t.step_loss,
            style: theme.series(2),
            scatter: false,
        }];
        charts::chart(
            Block::bordered().title(" Step loss "),
            &step_series,
            "step",
            None,
            axis,
        )
        .render(step_area, buf);
    }
}
