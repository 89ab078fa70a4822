//! privxray engine: dataset import and preprocessing, models and training, differential
//! privacy, and three-party secure computation. No terminal code lives here; the `ui` crate
//! owns the interface and the `privxray` binary.

pub mod atomic;
mod bytes;
pub mod data;
pub mod model;
pub mod mpc;
pub mod net;
pub mod party;
pub mod pipeline;
pub mod plot;
pub mod preprocess;
pub mod privacy;
pub mod report;
mod stats;
pub mod synth;
pub mod train;
