//! Preprocessing for the Data tab on the real engine: generates the synthetic images a source
//! asks for, runs `privxray::preprocess` over each folder on a background thread with progress,
//! and merges the folders into one set. May import the engine and `tui::backend` with the
//! Data tab's plain types (`tui::data::source`); not the tabs, the app or the views.

use crate::tui::backend::{AppEvent, AppSender, BackendError, DataBackend};
use crate::tui::data::source::{DataReady, DataSource, PartReport, PreprocessUpdate};
use privxray::model::Technique;
use privxray::preprocess::{self, Preprocessed, Progress};
use privxray::synth::{self, SynthOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Preprocesses in this process, one std thread per job.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineData;

impl DataBackend for EngineData {
    fn preprocess(
        &mut self,
        source: DataSource,
        technique: Technique,
        cache_dir: Option<PathBuf>,
        events: AppSender,
    ) -> Result<(), BackendError> {
        std::thread::Builder::new()
            .name("preprocess".into())
            .spawn(move || {
                let update =
                    match preprocess_source(&source, technique, cache_dir.as_deref(), &events) {
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
