//! The Data tab's state: the chosen source and technique, the preprocessing job as its
//! notifications describe it, and the previews of a finished job. Nothing here draws or
//! starts work; may not import the app, the event queue or the views.

use super::source::{DataReady, DataSource, PreprocessUpdate};
use crate::tui::backend::Labelling;
use crate::tui::widgets::GreyImage;
use privxray::model::Technique;
use privxray::preprocess::Progress;
use std::path::PathBuf;
use std::sync::Arc;

/// A preview image with its caption.
#[derive(Debug, Clone)]
pub struct Preview {
    pub image: GreyImage,
    pub caption: String,
}

/// Up to `n` preview images taking the classes in turn, real ones first.
pub fn previews(ready: &DataReady, n: usize) -> Vec<Preview> {
    let d = &ready.data;
    let [_, h, w] = d.technique.input_shape();
    let mut order: Vec<usize> = (0..d.items.len()).collect();
    order.sort_by_key(|&i| ready.synthetic.get(i).copied().unwrap_or(false));
    let mut out = Vec::new();
    let labels: Vec<_> = d.classes.labels().collect();
    let mut wanted = labels.iter().cycle();
    let mut used = vec![false; d.items.len()];
    while out.len() < n {
        let Some(&class) = wanted.next() else { break };
        let pick = order
            .iter()
            .copied()
            .find(|&i| !used[i] && d.items[i].label == class)
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
            caption: format!(
                "{}\n{} {tag}",
                d.classes.name(d.items[i].label),
                d.items[i].split
            ),
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
    /// Where the next job's labels come from: the class folders (NORMAL, PNEUMONIA on the
    /// Kermany layout) or the pneumonia subtype by file name (BACTERIA, NORMAL, VIRUS).
    pub labelling: Labelling,
    pub cache_dir: Option<PathBuf>,
    pub job: JobState,
    /// The labelling of the job last asked for (what a finished job's counts are by).
    pub job_labelling: Option<Labelling>,
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
            labelling: Labelling::Folders,
            cache_dir,
            job: JobState::Idle,
            job_labelling: None,
            previews: Vec::new(),
            skipped_scroll: 0,
        }
    }

    /// Class folders <-> pneumonia subtype (a table of labels, `--labels FILE.csv`, is the
    /// command line's only).
    pub fn toggle_labels(&mut self) {
        self.labelling = match self.labelling {
            Labelling::Folders => Labelling::Subtype,
            _ => Labelling::Folders,
        };
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

    /// A job was asked for: show it running, nothing done yet, until its first notification.
    pub fn begin(&mut self, parts: usize, labelling: Labelling) {
        self.job_labelling = Some(labelling);
        self.job = JobState::Running {
            part: 0,
            parts,
            progress: Progress {
                done: 0,
                total: 0,
                cached: 0,
            },
            elapsed: 0.0,
        };
    }

    pub fn skipped_len(&self) -> usize {
        self.ready().map(|r| r.data.skipped.len()).unwrap_or(0)
    }
}
