//! Widgets shared by the tabs: a half-block greyscale image (and its grey palettes), a slider,
//! chart helpers.
//! Imports only its children, which import ratatui and the theme, never the tabs or the app.

pub mod charts;
pub mod grey;
pub mod halfblock;
pub mod slider;

pub use halfblock::{GreyImage, HalfBlockImage};
pub use slider::Slider;
