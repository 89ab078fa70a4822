//! Widgets shared by the tabs: a greyscale preview in real pixels (graphics protocols) or half
//! blocks (and their grey palettes), a slider, chart helpers, a model's evaluation (per-class
//! figures and confusion matrix).
//! Imports only its children, which import ratatui and the theme (and `evaluation` the engine's
//! metrics type), never the tabs or the app.

pub mod charts;
pub mod evaluation;
pub mod grey;
pub mod halfblock;
pub mod pixels;
pub mod preview;
pub mod slider;

pub use evaluation::Evaluation;
pub use halfblock::{GreyImage, HalfBlockImage};
pub use preview::Preview;
pub use slider::Slider;
