//! What the Data tab preprocesses and what comes back: data sources (one folder or several
//! preprocessed together), the notifications of a preprocessing job and its merged result.
//! Plain data shared by the tab, the backend traits and the event queue; imports nothing else
//! of the interface.

use privxray::data::Split;
use privxray::preprocess::{Preprocessed, Progress, Summary};
use privxray::synth::SynthOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One folder of a data source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRoot {
    pub path: PathBuf,
    /// Shown as SYNTHETIC everywhere its images appear.
    pub synthetic: bool,
    /// Generate these synthetic images first if the folder has no train/ split.
    pub generate_if_missing: Option<SynthOptions>,
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
        let synthetic_options = privxray::pipeline::default_synthetic_options();
        let mut out = Vec::new();
        if real.is_dir() {
            out.push(DataSource::folder(
                real,
                format!("{} (Kermany dataset)", real.display()),
            ));
        }
        out.push(DataSource {
            label: format!(
                "bundled real samples + {} {} SYNTHETIC images (no dataset at {})",
                synthetic_options.count,
                synthetic_options.difficulty.name(),
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
                    generate_if_missing: Some(synthetic_options.clone()),
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
