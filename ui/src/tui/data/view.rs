//! Drawing of the Data tab: the sources with the technique and labels, the preprocessing
//! progress, counts per split and class (one column per class, any number), previews and
//! skipped files. Reads [`DataTab`] only; may not import the app or the event queue.

use super::state::{DataTab, JobState};
use crate::tui::backend::Labelling;
use crate::tui::format::clock;
use crate::tui::theme::Theme;
use crate::tui::widgets::Preview;
use privxray::model::Technique;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Gauge, Paragraph, Row, Table, Widget, Wrap};

pub struct DataView<'a> {
    pub tab: &'a DataTab,
    pub theme: Theme,
}

impl Widget for DataView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let tab = self.tab;
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(area);
        let src_h = tab.choices() as u16 + 5;
        // A failure shows its whole message (the expected layout included).
        let prog_h = match &tab.job {
            JobState::Failed(reason) => (reason.lines().count() as u16 + 3).min(10),
            _ => 4,
        };
        let [src_area, prog_area, counts_area] = Layout::vertical([
            Constraint::Length(src_h),
            Constraint::Length(prog_h),
            Constraint::Min(3),
        ])
        .areas(left);
        self.sources(src_area, buf);
        self.progress(prog_area, buf);
        self.counts(counts_area, buf);
        let [prev_area, skip_area] =
            Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(right);
        self.previews(prev_area, buf);
        self.skipped(skip_area, buf);
    }
}

impl DataView<'_> {
    /// The sources, the custom folder, the technique, the labels and the cache.
    fn sources(&self, area: Rect, buf: &mut Buffer) {
        let (tab, theme) = (self.tab, self.theme);
        let mut lines: Vec<Line> = Vec::new();
        for (i, s) in tab.sources.iter().enumerate() {
            let style = if i == tab.selected {
                theme.selected()
            } else if s.roots.iter().any(|r| r.synthetic) {
                theme.warn()
            } else {
                Style::new()
            };
            lines.push(Line::from(Span::styled(
                format!("{}. {}", i + 1, s.label),
                style,
            )));
        }
        let custom = if tab.editing {
            format!("{}. folder: {}▏", tab.sources.len() + 1, tab.custom)
        } else if tab.custom.is_empty() {
            format!("{}. other folder… (e to type)", tab.sources.len() + 1)
        } else {
            format!("{}. folder: {}", tab.sources.len() + 1, tab.custom)
        };
        lines.push(Line::from(Span::styled(
            custom,
            if tab.is_custom() {
                theme.selected()
            } else {
                Style::new()
            },
        )));
        lines.push(Line::from(vec![
            Span::raw("technique: "),
            Span::styled(
                match tab.technique {
                    Technique::T1 => "1 (greyscale 1x150x125, bilinear)",
                    Technique::T2 => "2 (3x224x224, bicubic)",
                },
                theme.accent(),
            ),
        ]));
        let (labels, other) = match &tab.labelling {
            Labelling::Folders => ("class folders".to_string(), "pneumonia subtype"),
            Labelling::Subtype => ("pneumonia subtype".to_string(), "class folders"),
            Labelling::Csv(p) => (format!("table {}", p.display()), "class folders"),
        };
        let mut labels = vec![Span::raw("labels: "), Span::styled(labels, theme.accent())];
        // The counts below are by the labels of the job that made them.
        if tab.ready().is_some() && tab.job_labelling.as_ref() != Some(&tab.labelling) {
            labels.push(Span::styled(" · Enter applies", theme.warn()));
        } else {
            labels.push(Span::styled(format!(" (c: {other})"), theme.dim()));
        }
        lines.push(Line::from(labels));
        let cache = match &tab.cache_dir {
            Some(c) => format!("cache: {}", c.display()),
            None => "cache: off".into(),
        };
        lines.push(Line::styled(cache, theme.dim()));
        Paragraph::new(lines)
            .block(Block::bordered().title(" Dataset "))
            .render(area, buf);
    }

    /// The job: not started, generating, a gauge with rate and ETA, done, or why it failed.
    fn progress(&self, area: Rect, buf: &mut Buffer) {
        let (tab, theme) = (self.tab, self.theme);
        let block = Block::bordered().title(" Preprocessing ");
        let inner = block.inner(area);
        block.render(area, buf);
        let [gauge_area, info_area] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(1)]).areas(inner);
        match &tab.job {
            JobState::Idle => {
                Line::styled("not started: press Enter to preprocess", theme.dim())
                    .render(gauge_area, buf);
            }
            JobState::Generating(p) => {
                Line::styled(
                    format!("generating SYNTHETIC images in {}…", p.display()),
                    theme.warn(),
                )
                .render(gauge_area, buf);
            }
            JobState::Running {
                part,
                parts,
                progress,
                elapsed,
            } => {
                let ratio = if progress.total == 0 {
                    0.0
                } else {
                    progress.done as f64 / progress.total as f64
                };
                Gauge::default()
                    .ratio(ratio.clamp(0.0, 1.0))
                    .gauge_style(theme.accent())
                    .label(format!(
                        "{}/{} (folder {}/{})",
                        progress.done,
                        progress.total,
                        part + 1,
                        parts
                    ))
                    .render(gauge_area, buf);
                let rate = progress.done as f64 / elapsed.max(1e-6);
                let eta = (progress.total - progress.done.min(progress.total)) as f64 / rate;
                Line::raw(format!(
                    "{rate:.1} images/s · ETA {} · {} from cache",
                    clock(eta),
                    progress.cached
                ))
                .render(info_area, buf);
            }
            JobState::Finished(r) => {
                let secs: f64 = r.parts.iter().map(|p| p.summary.seconds).sum();
                let n = r.data.items.len();
                let cached: usize = r.parts.iter().map(|p| p.summary.from_cache).sum();
                Gauge::default()
                    .ratio(1.0)
                    .gauge_style(theme.ok())
                    .label(format!("done: {n} images"))
                    .render(gauge_area, buf);
                Line::raw(format!(
                    "{:.2} s · {:.1} images/s · {cached} from cache",
                    secs,
                    n as f64 / secs.max(1e-6)
                ))
                .render(info_area, buf);
            }
            JobState::Failed(reason) => {
                Paragraph::new(Text::styled(format!("failed: {reason}"), theme.error()))
                    .wrap(Wrap { trim: true })
                    .render(inner, buf);
            }
        }
    }

    /// Images per folder, split and class of a finished job: one column per class of the
    /// merged set, a folder without that class showing "-".
    fn counts(&self, area: Rect, buf: &mut Buffer) {
        let (tab, theme) = (self.tab, self.theme);
        let classes: Vec<String> = tab
            .ready()
            .map(|r| r.data.classes.names().to_vec())
            .unwrap_or_else(|| vec!["NORMAL".into(), "PNEUMONIA".into()]);
        let mut rows = Vec::new();
        if let Some(r) = tab.ready() {
            for p in &r.parts {
                let tag = if p.synthetic { "SYNTHETIC" } else { "real" };
                let style = if p.synthetic {
                    theme.warn()
                } else {
                    Style::new()
                };
                let folder = p
                    .summary
                    .root
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                for c in &p.summary.counts {
                    let mut cells = vec![folder.clone(), tag.to_string(), c.split.clone()];
                    cells.extend(classes.iter().map(|name| {
                        p.summary
                            .classes
                            .iter()
                            .position(|n| n == name)
                            .map_or("-".into(), |k| {
                                c.per_class.get(k).copied().unwrap_or(0).to_string()
                            })
                    }));
                    rows.push(Row::new(cells).style(style));
                }
            }
        }
        let mut widths = vec![
            Constraint::Min(8),
            Constraint::Length(9),
            Constraint::Length(6),
        ];
        // Each column as wide as its name, and one space more but for the last.
        let last = classes.len().saturating_sub(1);
        widths.extend(classes.iter().enumerate().map(|(k, n)| {
            Constraint::Length(n.chars().count().max(5) as u16 + u16::from(k < last))
        }));
        let mut header = vec!["folder".to_string(), "origin".into(), "split".into()];
        header.extend(classes.iter().cloned());
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(theme.bold()))
            .block(Block::bordered().title(" Counts "));
        Widget::render(table, area, buf);
    }

    /// The preview images side by side, each with its caption.
    fn previews(&self, area: Rect, buf: &mut Buffer) {
        let (tab, theme) = (self.tab, self.theme);
        let block = Block::bordered().title(theme.preview_title());
        let inner = block.inner(area);
        block.render(area, buf);
        if tab.previews.is_empty() {
            Line::styled("images appear here after preprocessing", theme.dim()).render(inner, buf);
            return;
        }
        let n = tab.previews.len() as u32;
        let cols = Layout::horizontal(vec![Constraint::Ratio(1, n); n as usize]).split(inner);
        for (p, col) in tab.previews.iter().zip(cols.iter()) {
            let [img, cap] =
                Layout::vertical([Constraint::Min(1), Constraint::Length(2)]).areas(*col);
            Preview {
                image: &p.image,
                theme,
            }
            .render(img, buf);
            let style = if p.caption.contains("SYNTHETIC") {
                theme.warn()
            } else {
                theme.ok()
            };
            Paragraph::new(Text::styled(p.caption.clone(), style))
                .wrap(Wrap { trim: true })
                .centered()
                .render(cap, buf);
        }
    }

    /// Files the job skipped, with reasons, scrolled by PgUp/PgDn.
    fn skipped(&self, area: Rect, buf: &mut Buffer) {
        let (tab, theme) = (self.tab, self.theme);
        let skipped: Vec<Line> = tab
            .ready()
            .map(|r| {
                r.data
                    .skipped
                    .iter()
                    .skip(tab.skipped_scroll)
                    .map(|s| {
                        // Relative to its source folder: shorter, and the folder is in Counts.
                        let rel = r
                            .parts
                            .iter()
                            .find_map(|p| s.path.strip_prefix(&p.summary.root).ok())
                            .unwrap_or(&s.path);
                        Line::raw(format!("{}: {}", rel.display(), s.reason))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let title = format!(" Skipped files ({}) ", tab.skipped_len());
        let body = if skipped.is_empty() {
            vec![Line::styled("none", theme.dim())]
        } else {
            skipped
        };
        Paragraph::new(body)
            .block(Block::bordered().title(title))
            .wrap(Wrap { trim: false })
            .render(area, buf);
    }
}
