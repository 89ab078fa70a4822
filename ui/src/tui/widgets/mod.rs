//! Widgets shared by the tabs: a half-block greyscale image, a slider, chart helpers.

pub mod charts;
pub mod halfblock;
pub mod slider;

pub use halfblock::{GreyImage, HalfBlockImage};
pub use slider::Slider;
