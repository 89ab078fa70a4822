//! Data made ready for a run: a synthetic set generated once where a folder has none, and
//! several folders preprocessed into one dataset (the default source: the bundled real samples
//! together with synthetic images). The command line and the Data tab both come here.
//!
//! Imports `data` (the labelling), `preprocess` and `synth`, and the pipeline's [`error`](super::error); nothing else of
//! the pipeline.

use super::error::{PipelineError, Result};
use crate::data::Labelling;
use crate::preprocess::{self, Preprocessed, Progress, Summary, Technique};
use crate::synth::{self, Difficulty, SynthOptions};
use std::path::Path;
use std::time::Instant;

/// How many synthetic images the default data source generates where there is no dataset, and
/// their seed: the command line and the Data tab use the same set.
pub const DEFAULT_SYNTHETIC_COUNT: usize = 8000;
pub const DEFAULT_SYNTHETIC_SEED: u64 = 1;
/// Where the default set is generated, relative to the working directory. Named for what it
/// holds, so a set an older default generated elsewhere is never taken for it.
pub const DEFAULT_SYNTHETIC_DIR: &str = "data/synthetic-easy";

/// The default synthetic set: [`DEFAULT_SYNTHETIC_COUNT`] images of the easy difficulty, half
/// of them NORMAL (a balanced set, so a model stuck at one class scores 50%, not 73%), 200 to
/// 320 pixels wide (technique 1 scales to 125 wide anyway; small files generate and decode
/// four times faster), the rest as [`SynthOptions::new`]. Many images rather than many epochs:
/// at a given epsilon, DP-SGD's signal-to-noise ratio grows with the dataset's size.
pub fn default_synthetic_options() -> SynthOptions {
    let mut opts = SynthOptions::new(DEFAULT_SYNTHETIC_COUNT, DEFAULT_SYNTHETIC_SEED);
    opts.difficulty = Difficulty::Easy;
    opts.normal_fraction = 0.5;
    opts.width_range = (200, 320);
    opts
}

/// Generates the synthetic images `opts` describes in `dir` unless it already holds a `train/`
/// split, calling `before` first. Returns whether it generated.
pub fn ensure_synthetic(dir: &Path, opts: &SynthOptions, before: impl FnOnce()) -> Result<bool> {
    if dir.join("train").is_dir() {
        return Ok(false);
    }
    before();
    synth::generate(dir, opts).map_err(|source| PipelineError::Synth {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// How one folder of a merged dataset went.
#[derive(Debug, Clone)]
pub struct FolderReport {
    pub summary: Summary,
    /// Images it added to the merged dataset.
    pub images: usize,
}

/// Progress of one folder: its index among the folders, its progress, and the seconds since
/// that folder started.
pub type FolderProgress<'a> = &'a (dyn Fn(usize, Progress, f64) + Sync);

/// [`preprocess_folders_labelled`] with the class folders as labels.
pub fn preprocess_folders(
    folders: &[&Path],
    technique: Technique,
    cache_dir: Option<&Path>,
    progress: FolderProgress<'_>,
) -> Result<(Preprocessed, Vec<FolderReport>)> {
    preprocess_folders_labelled(folders, technique, &Labelling::Folders, cache_dir, progress)
}

/// Preprocesses `folders` in order, labelled by `labelling`, and merges them into one dataset
/// (items, pixels and skipped files in folder order), with a report per folder. No folders is
/// an error.
pub fn preprocess_folders_labelled(
    folders: &[&Path],
    technique: Technique,
    labelling: &Labelling,
    cache_dir: Option<&Path>,
    progress: FolderProgress<'_>,
) -> Result<(Preprocessed, Vec<FolderReport>)> {
    let mut merged: Option<Preprocessed> = None;
    let mut reports = Vec::with_capacity(folders.len());
    for (index, folder) in folders.iter().enumerate() {
        let start = Instant::now();
        let report_progress = |p: Progress| progress(index, p, start.elapsed().as_secs_f64());
        let (data, summary) = preprocess::run_with(
            folder,
            technique,
            labelling,
            cache_dir,
            &preprocess::ImportLimits::default(),
            &report_progress,
        )?;
        reports.push(FolderReport {
            summary,
            images: data.items.len(),
        });
        merged = Some(match merged {
            None => data,
            Some(mut m) => {
                m.append(data);
                m
            }
        });
    }
    let data = merged.ok_or(PipelineError::NoFolders)?;
    Ok((data, reports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_synthetic_set_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("synthetic");
        let mut told = 0;
        assert!(ensure_synthetic(&set, &SynthOptions::new(12, 1), || told += 1).unwrap());
        assert!(!ensure_synthetic(&set, &SynthOptions::new(12, 1), || told += 1).unwrap());
        assert_eq!(told, 1, "`before` runs only when generating");
        assert!(set.join("train").is_dir());
    }

    #[test]
    fn folders_are_merged_in_order_with_a_report_each() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        ensure_synthetic(&a, &SynthOptions::new(12, 1), || {}).unwrap();
        ensure_synthetic(&b, &SynthOptions::new(20, 2), || {}).unwrap();
        let (alone_a, _) = preprocess_folders(&[&a], Technique::T1, None, &|_, _, _| {}).unwrap();
        let (alone_b, _) = preprocess_folders(&[&b], Technique::T1, None, &|_, _, _| {}).unwrap();
        let calls = AtomicUsize::new(0);
        let seen_b = AtomicUsize::new(0);
        let (merged, reports) = preprocess_folders(&[&a, &b], Technique::T1, None, &|i, _, _| {
            calls.fetch_add(1, Ordering::Relaxed);
            if i == 1 {
                seen_b.fetch_add(1, Ordering::Relaxed);
            }
        })
        .unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0].images, alone_a.items.len());
        assert_eq!(reports[1].images, alone_b.items.len());
        assert_eq!(
            merged.items.len(),
            alone_a.items.len() + alone_b.items.len()
        );
        assert_eq!(
            merged.pixels.len(),
            alone_a.pixels.len() + alone_b.pixels.len()
        );
        // Folder order: a's pixels first, then b's.
        assert_eq!(&merged.pixels[..alone_a.pixels.len()], &alone_a.pixels[..]);
        assert_eq!(&merged.pixels[alone_a.pixels.len()..], &alone_b.pixels[..]);
        assert!(calls.load(Ordering::Relaxed) > 0 && seen_b.load(Ordering::Relaxed) > 0);
        assert!(matches!(
            preprocess_folders(&[], Technique::T1, None, &|_, _, _| {}),
            Err(PipelineError::NoFolders)
        ));
    }
}
