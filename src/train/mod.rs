//! Training engine: candle models of the four architectures, the training loop (plain and
//! DP-SGD), checkpoints, evaluation metrics and benchmarks.
//!
//! Imports only its children; `train` may import `privacy`, `model` and `atomic`, never `mpc`,
//! `net`, `party`, `pipeline` or any terminal code.

pub mod accounting;
pub mod augment;
pub mod bench;
pub mod canary;
pub mod checkpoint;
pub mod control;
pub mod data;
pub mod device;
pub mod dpsgd;
pub mod ema;
pub mod engine;
pub mod error;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod optim;

pub use canary::CanarySet;
pub use control::TrainControl;
pub use data::TrainData;
pub use engine::{evaluate, train, Seed, TrainConfig, TrainOutcome, TrainingEvent};
pub use error::TrainError;
pub use metrics::Metrics;
pub use model::{DropoutRate, Model};

#[cfg(test)]
mod test_support;
