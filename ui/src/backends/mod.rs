//! The interface's backends on the real engine: training, the membership audit, PNG export and
//! the three secure-computation parties. The work both faces do (splits, run then evaluate,
//! plaintext prediction, the audit's losses) goes through the engine's `pipeline`, as the
//! command line's does; errors are the engine's, carried in `BackendError`. (Epsilon spent
//! comes from the training engine's ledger; the Train tab projects the rest with
//! `tui::projection`.) May import `tui::backend`, `tui::event` and `tui::data`; never `cli`.

pub mod audit;
pub mod data;
pub mod export;
pub mod in_process;
pub mod parties;
pub mod predict;
pub mod training;

use crate::tui::backend::Backends;
use crate::tui::data::DataReady;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which preprocessed data each checkpoint of this session was trained on, so the audit can
/// rebuild its members (the training split) and non-members (test and val).
#[derive(Debug, Clone, Default)]
pub struct TrainedOn(Arc<Mutex<HashMap<PathBuf, Arc<DataReady>>>>);

impl TrainedOn {
    pub fn record(&self, checkpoint: PathBuf, data: Arc<DataReady>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(checkpoint, data);
    }

    pub fn get(&self, checkpoint: &Path) -> Option<Arc<DataReady>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(checkpoint)
            .cloned()
    }
}

/// Folders the backends write to, relative to the working directory.
pub struct Folders {
    pub checkpoints: PathBuf,
    pub exports: PathBuf,
    pub parties: PathBuf,
}

impl Default for Folders {
    fn default() -> Self {
        Folders {
            checkpoints: PathBuf::from("data/checkpoints/tui"),
            exports: PathBuf::from("data/exports"),
            parties: PathBuf::from("data/parties"),
        }
    }
}

/// Every backend on the real engine.
pub fn engine_backends(folders: Folders) -> Backends {
    let trained_on = TrainedOn::default();
    Backends {
        data: Some(Box::new(data::EngineData)),
        training: Some(Box::new(training::EngineTraining::new(
            folders.checkpoints,
            trained_on.clone(),
        ))),
        audit: Some(Box::new(audit::EngineAudit::new(trained_on))),
        exporter: Some(Box::new(export::PngExporter::new(folders.exports))),
        parties: Some(parties(&folders.parties)),
    }
}

/// The three real party processes; PRIVXRAY_TUI_PARTIES=in-process runs them as threads of
/// this process instead (the same protocol without sockets, labelled as a simulation).
fn parties(dir: &Path) -> Box<dyn crate::tui::backend::PartyBackend> {
    if std::env::var("PRIVXRAY_TUI_PARTIES").is_ok_and(|v| v == "in-process") {
        Box::new(in_process::InProcessParties::new())
    } else {
        Box::new(parties::PartyProcesses::new(dir.to_path_buf()))
    }
}
