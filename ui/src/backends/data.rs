//! Preprocessing for the Data tab on the real engine: on a background thread, the engine's
//! pipeline generates the synthetic images a source asks for and preprocesses its folders into
//! one set; this file turns its progress into the tab's events. May import the engine and `tui::backend` with the
//! Data tab's plain types (`tui::data::source`); not the tabs, the app or the views.

use crate::tui::backend::{AppEvent, AppSender, BackendError, DataBackend, Labelling};
use crate::tui::data::source::{DataReady, DataSource, PartReport, PreprocessUpdate};
use privxray::model::Technique;
use privxray::pipeline::{self, PipelineError};
use privxray::preprocess::Progress;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Preprocesses in this process, one std thread per job.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineData;

impl DataBackend for EngineData {
    fn preprocess(
        &mut self,
        source: DataSource,
        technique: Technique,
        labelling: Labelling,
        cache_dir: Option<PathBuf>,
        events: AppSender,
    ) -> Result<(), BackendError> {
        std::thread::Builder::new()
            .name("preprocess".into())
            .spawn(move || {
                let update = match preprocess_source(
                    &source,
                    technique,
                    &labelling,
                    cache_dir.as_deref(),
                    &events,
                ) {
                    Ok(ready) => PreprocessUpdate::Finished(Arc::new(ready)),
                    Err(e) => PreprocessUpdate::Failed(e),
                };
                events.send(AppEvent::Preprocess(update));
            })
            .map_err(|source| BackendError::Io {
                what: "starting the preprocessing thread".into(),
                source,
            })?;
        Ok(())
    }
}

fn preprocess_source(
    source: &DataSource,
    technique: Technique,
    labelling: &Labelling,
    cache_dir: Option<&Path>,
    events: &AppSender,
) -> Result<DataReady, String> {
    for root in &source.roots {
        if let Some(opts) = &root.generate_if_missing {
            pipeline::ensure_synthetic(&root.path, opts, || {
                events.send(AppEvent::Preprocess(PreprocessUpdate::Generating {
                    path: root.path.clone(),
                }))
            })
            .map_err(|e| e.to_string())?;
        }
    }
    let folders: Vec<&Path> = source.roots.iter().map(|r| r.path.as_path()).collect();
    let parts = folders.len();
    let progress = |part: usize, p: Progress, elapsed: f64| {
        // Every 8th image is plenty for a progress bar and keeps the queue short.
        if p.done.is_multiple_of(8) || p.done == p.total {
            events.send(AppEvent::Preprocess(PreprocessUpdate::Progress {
                part,
                parts,
                progress: p,
                elapsed,
            }));
        }
    };
    let (data, folders) =
        pipeline::preprocess_folders_labelled(&folders, technique, labelling, cache_dir, &progress)
            .map_err(|e| match e {
                PipelineError::NoFolders => {
                    format!("data source {:?} has no folders", source.label)
                }
                e => e.to_string(),
            })?;
    let mut synthetic = Vec::with_capacity(data.items.len());
    let mut parts = Vec::with_capacity(folders.len());
    for (root, folder) in source.roots.iter().zip(folders) {
        synthetic.extend(std::iter::repeat_n(root.synthetic, folder.images));
        parts.push(PartReport {
            synthetic: root.synthetic,
            summary: folder.summary,
        });
    }
    Ok(DataReady {
        data,
        synthetic,
        parts,
    })
}
