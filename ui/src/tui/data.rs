//! The Data tab: choose a dataset folder and technique, preprocess it on a background thread
//! with live progress, then show counts per split and class, skipped files, and a preview.

use super::event::{AppEvent, AppSender};
use super::theme::Theme;
use super::widgets::{GreyImage, HalfBlockImage};
use privxray::data::{Class, Split};
use privxray::model::Technique;
use privxray::preprocess::{self, Preprocessed, Progress, Summary};
use privxray::synth::{self, SynthOptions};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Gauge, Paragraph, Row, Table, Widget, Wrap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Number of synthetic images generated when the synthetic folder is missing (as the CLI does).
pub const SYNTHETIC_COUNT: usize = 600;

/// One folder of a data source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRoot {
    pub path: PathBuf,
    /// Shown as SYNTHETIC everywhere its images appear.
    pub synthetic: bool,
    /// Generate this many synthetic images first if the folder has no train/ split.
    pub generate_if_missing: Option<usize>,
}

/// A choice on the Data tab: one folder, or several preprocessed together.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    pub label: String,
    pub roots: Vec<SourceRoot>,
}

impl DataSource {
    pub fn folder(path: impl Into<PathBuf>, label: impl Into<String>) -> Self {
        DataSource {
            label: label.into(),
            roots: vec![SourceRoot {
                path: path.into(),
                synthetic: false,
                generate_if_missing: None,
            }],
        }
    }

    /// The default choices: the real dataset when `real` exists, then the bundled real samples
    /// together with synthetic images (generated in `synthetic` if missing).
    pub fn defaults(real: &Path, samples: &Path, synthetic: &Path) -> Vec<DataSource> {
        let mut out = Vec::new();
        if real.is_dir() {
            out.push(DataSource::folder(
                real,
                format!("{} (Kermany dataset)", real.display()),
            ));
        }
        out.push(DataSource {
            label: format!(
                "bundled real samples + {SYNTHETIC_COUNT} SYNTHETIC images (no dataset at {})",
                real.display()
            ),
            roots: vec![
                SourceRoot {
                    path: samples.to_path_buf(),
                    synthetic: false,
                    generate_if_missing: None,
                },
                SourceRoot {
                    path: synthetic.to_path_buf(),
                    synthetic: true,
                    generate_if_missing: Some(SYNTHETIC_COUNT),
                },
            ],
        });
        out.push(DataSource::folder(
            samples,
            "bundled real samples only (Kermany et al. 2018, CC BY 4.0)",
        ));
        out
    }
}

/// Notifications of a preprocessing job.
#[derive(Debug, Clone)]
pub enum PreprocessUpdate {
    Generating {
        path: PathBuf,
    },
    Progress {
        /// Which folder of the source (0-based) and how many there are.
        part: usize,
        parts: usize,
        progress: Progress,
        /// Seconds since this folder started.
        elapsed: f64,
    },
    Finished(Arc<DataReady>),
    Failed(String),
}

/// Report on one folder of a finished job.
#[derive(Debug, Clone)]
pub struct PartReport {
    pub synthetic: bool,
    pub summary: Summary,
}

/// A finished preprocessing job: every folder's items merged in one set.
#[derive(Debug)]
pub struct DataReady {
    pub data: Preprocessed,
    /// Whether each item (same index as `data.items`) is synthetic.
    pub synthetic: Vec<bool>,
    pub parts: Vec<PartReport>,
}

impl DataReady {
    /// Number of training-split items (what DP sampling rates are computed over).
    pub fn train_images(&self) -> usize {
        self.data
            .items
            .iter()
            .filter(|i| matches!(i.split, Split::Train | Split::Single))
            .count()
    }
}

/// Runs `source` on a std thread, sending progress and the result.
pub fn spawn_preprocess(
    source: DataSource,
    technique: Technique,
    cache_dir: Option<PathBuf>,
    events: AppSender,
) {
    std::thread::spawn(move || {
        let update = match preprocess_source(&source, technique, cache_dir.as_deref(), &events) {
            Ok(ready) => PreprocessUpdate::Finished(Arc::new(ready)),
            Err(e) => PreprocessUpdate::Failed(e),
        };
        events.send(AppEvent::Preprocess(update));
    });
}

fn preprocess_source(
    source: &DataSource,
    technique: Technique,
    cache_dir: Option<&Path>,
    events: &AppSender,
) -> Result<DataReady, String> {
    let parts = source.roots.len();
    let mut merged: Option<Preprocessed> = None;
    let mut synthetic = Vec::new();
    let mut reports = Vec::new();
    for (part, root) in source.roots.iter().enumerate() {
        if let Some(count) = root.generate_if_missing {
            if !root.path.join("train").is_dir() {
                events.send(AppEvent::Preprocess(PreprocessUpdate::Generating {
                    path: root.path.clone(),
                }));
                synth::generate(&root.path, &SynthOptions::new(count, 1)).map_err(|e| {
                    format!(
                        "generating synthetic images in {}: {e}",
                        root.path.display()
                    )
                })?;
            }
        }
        let start = Instant::now();
        let progress = |p: Progress| {
            // Every 8th image is plenty for a progress bar and keeps the queue short.
            if p.done.is_multiple_of(8) || p.done == p.total {
                events.send(AppEvent::Preprocess(PreprocessUpdate::Progress {
                    part,
                    parts,
                    progress: p,
                    elapsed: start.elapsed().as_secs_f64(),
                }));
            }
        };
        let (data, summary) = preprocess::run(&root.path, technique, cache_dir, &progress)
            .map_err(|e| e.to_string())?;
        synthetic.extend(std::iter::repeat_n(root.synthetic, data.items.len()));
        reports.push(PartReport {
            synthetic: root.synthetic,
            summary,
        });
        merged = Some(match merged {
            None => data,
            Some(mut m) => {
                m.items.extend(data.items);
                m.pixels.extend_from_slice(&data.pixels);
                m.skipped.extend(data.skipped);
                m
            }
        });
    }
    let data = merged.ok_or_else(|| format!("data source {:?} has no folders", source.label))?;
    Ok(DataReady {
        data,
        synthetic,
        parts: reports,
    })
}

/// A preview image with its caption.
#[derive(Debug, Clone)]
pub struct Preview {
    pub image: GreyImage,
    pub caption: String,
}

/// Up to `n` preview images alternating NORMAL and PNEUMONIA, real ones first.
pub fn previews(ready: &DataReady, n: usize) -> Vec<Preview> {
    let d = &ready.data;
    let [_, h, w] = d.technique.input_shape();
    let mut order: Vec<usize> = (0..d.items.len()).collect();
    order.sort_by_key(|&i| ready.synthetic.get(i).copied().unwrap_or(false));
    let mut out = Vec::new();
    let mut wanted = Class::ALL.iter().cycle();
    let mut used = vec![false; d.items.len()];
    while out.len() < n {
        let Some(&class) = wanted.next() else { break };
        let pick = order
            .iter()
            .copied()
            .find(|&i| !used[i] && d.items[i].class == class)
            .or_else(|| order.iter().copied().find(|&i| !used[i]));
        let Some(i) = pick else { break };
        used[i] = true;
        // The first channel: technique 2 replicates grey into three.
        let plane = d.image(i)[..h * w].to_vec();
        let Ok(image) = GreyImage::new(w, h, plane) else {
            continue;
        };
        let tag = if ready.synthetic.get(i).copied().unwrap_or(false) {
            "SYNTHETIC"
        } else {
            "real"
        };
        out.push(Preview {
            image,
            caption: format!("{}\n{} {tag}", d.items[i].class, d.items[i].split),
        });
    }
    out
}

#[derive(Debug, Clone, Default)]
pub enum JobState {
    #[default]
    Idle,
    Generating(PathBuf),
    Running {
        part: usize,
        parts: usize,
        progress: Progress,
        elapsed: f64,
    },
    Finished(Arc<DataReady>),
    Failed(String),
}

pub struct DataTab {
    pub sources: Vec<DataSource>,
    pub selected: usize,
    /// A folder typed by the user, offered after the default sources.
    pub custom: String,
    pub editing: bool,
    pub technique: Technique,
    pub cache_dir: Option<PathBuf>,
    pub job: JobState,
    pub previews: Vec<Preview>,
    pub skipped_scroll: usize,
}

impl DataTab {
    pub fn new(sources: Vec<DataSource>, cache_dir: Option<PathBuf>) -> Self {
        DataTab {
            sources,
            selected: 0,
            custom: String::new(),
            editing: false,
            technique: Technique::T1,
            cache_dir,
            job: JobState::Idle,
            previews: Vec::new(),
            skipped_scroll: 0,
        }
    }

    /// Number of choices: the sources plus the custom folder.
    pub fn choices(&self) -> usize {
        self.sources.len() + 1
    }

    pub fn is_custom(&self) -> bool {
        self.selected == self.sources.len()
    }

    pub fn is_running(&self) -> bool {
        matches!(self.job, JobState::Running { .. } | JobState::Generating(_))
    }

    /// The source to preprocess, or why there is none.
    pub fn chosen(&self) -> Result<DataSource, String> {
        if self.is_custom() {
            let path = self.custom.trim();
            if path.is_empty() {
                return Err("type a folder first: press e to edit".into());
            }
            return Ok(DataSource::folder(path, path));
        }
        self.sources
            .get(self.selected)
            .cloned()
            .ok_or_else(|| format!("no data source number {}", self.selected + 1))
    }

    pub fn ready(&self) -> Option<&Arc<DataReady>> {
        match &self.job {
            JobState::Finished(r) => Some(r),
            _ => None,
        }
    }

    pub fn apply(&mut self, update: PreprocessUpdate) {
        match update {
            PreprocessUpdate::Generating { path } => self.job = JobState::Generating(path),
            PreprocessUpdate::Progress {
                part,
                parts,
                progress,
                elapsed,
            } => {
                self.job = JobState::Running {
                    part,
                    parts,
                    progress,
                    elapsed,
                }
            }
            PreprocessUpdate::Finished(ready) => {
                self.previews = previews(&ready, 4);
                self.skipped_scroll = 0;
                self.job = JobState::Finished(ready);
            }
            PreprocessUpdate::Failed(reason) => self.job = JobState::Failed(reason),
        }
    }

    pub fn skipped_len(&self) -> usize {
        self.ready().map(|r| r.data.skipped.len()).unwrap_or(0)
    }
}

/// "1:05" style durations.
pub fn clock(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "--:--".into();
    }
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

pub struct DataView<'a> {
    pub tab: &'a DataTab,
    pub theme: Theme,
}

impl Widget for DataView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (tab, theme) = (self.tab, self.theme);
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(area);
        let src_h = tab.choices() as u16 + 4;
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

        // Sources.
        let mut lines: Vec<Line> = Vec::new();
        for (i, s) in tab.sources.iter().enumerate() {
            let style = if i == tab.selected {
                theme.selected()
            } else if s.roots.iter().any(|r| r.synthetic) {
                theme.warn()
            } else {
                ratatui::style::Style::new()
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
                ratatui::style::Style::new()
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
        let cache = match &tab.cache_dir {
            Some(c) => format!("cache: {}", c.display()),
            None => "cache: off".into(),
        };
        lines.push(Line::styled(cache, theme.dim()));
        Paragraph::new(lines)
            .block(Block::bordered().title(" Dataset "))
            .render(src_area, buf);

        // Progress.
        let block = Block::bordered().title(" Preprocessing ");
        let inner = block.inner(prog_area);
        block.render(prog_area, buf);
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

        // Counts.
        let mut rows = Vec::new();
        if let Some(r) = tab.ready() {
            for p in &r.parts {
                let tag = if p.synthetic { "SYNTHETIC" } else { "real" };
                for c in &p.summary.counts {
                    let style = if p.synthetic {
                        theme.warn()
                    } else {
                        ratatui::style::Style::new()
                    };
                    rows.push(
                        Row::new(vec![
                            p.summary
                                .root
                                .file_name()
                                .map(|f| f.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                            tag.to_string(),
                            c.split.clone(),
                            c.normal.to_string(),
                            c.pneumonia.to_string(),
                        ])
                        .style(style),
                    );
                }
            }
        }
        let table = Table::new(
            rows,
            [
                Constraint::Min(8),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(9),
            ],
        )
        .header(Row::new(["folder", "origin", "split", "NORMAL", "PNEUMONIA"]).style(theme.bold()))
        .block(Block::bordered().title(" Counts "));
        Widget::render(table, counts_area, buf);

        // Preview and skipped.
        let [prev_area, skip_area] =
            Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(right);
        let block = Block::bordered().title(" Preview ");
        let inner = block.inner(prev_area);
        block.render(prev_area, buf);
        if tab.previews.is_empty() {
            Line::styled("images appear here after preprocessing", theme.dim()).render(inner, buf);
        } else {
            let n = tab.previews.len() as u32;
            let cols = Layout::horizontal(vec![Constraint::Ratio(1, n); n as usize]).split(inner);
            for (p, col) in tab.previews.iter().zip(cols.iter()) {
                let [img, cap] =
                    Layout::vertical([Constraint::Min(1), Constraint::Length(2)]).areas(*col);
                HalfBlockImage {
                    image: &p.image,
                    color: theme.color,
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
            .render(skip_area, buf);
    }
}
