//! The Data tab: choose a dataset folder and technique, preprocess it through the data backend
//! with live progress, then show counts per split and class, skipped files, and a preview.
//! `source` holds the plain data the backends and the event queue share, `state` the tab's
//! state, `keys` what a key does to it, `view` the drawing. This module only re-exports.
//! Imports only its own children; the children import `tui::backend` and the leaves (`theme`,
//! `widgets`, `format`), never the app or another tab.

pub mod keys;
pub mod source;
pub mod state;
pub mod view;

pub use source::{DataReady, DataSource, PartReport, PreprocessUpdate, SourceRoot};
pub use state::{previews, DataTab, JobState, Preview};
pub use view::DataView;
