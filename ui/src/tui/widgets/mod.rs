//! Widgets shared by the tabs: a half-block greyscale image (and its grey palettes), a slider,
//! chart helpers.

pub mod charts;
pub mod grey;
pub mod halfblock;
pub mod slider;

pub use halfblock::{GreyImage, HalfBlockImage};
pub use slider::Slider;
