//! The Train tab: run settings, a DP panel with a live epsilon, run control, and live charts.
//! `state` holds the tab's state, `keys` what a key does to it, `view` the drawing. This
//! module only re-exports.
//! Imports only its own children; they import `tui::backend`, `projection` and the leaves
//! (`theme`, `widgets`, `format`), never the app or another tab.

pub mod keys;
pub mod state;
pub mod view;

pub use state::{
    Adjusted, Epsilon, Field, RunState, TrainTab, BATCH_SIZES, CLIP_RANGE, CLIP_STEP, DELTAS,
    DROPOUTS, EMA_DECAYS, MAX_EPOCHS, NOISE_RANGE, NOISE_STEP, OPTIMIZERS,
};
pub use view::TrainView;
