//! The Train tab: run settings, a DP panel with a live epsilon, run control, and live charts.
//! `state` holds the tab's state, `keys` what a key does to it, `view` the drawing. This
//! module only re-exports.

pub mod keys;
pub mod state;
pub mod view;

pub use crate::tui::format::fmt_eps;
pub use state::*;
pub use view::TrainView;
