//! Training engine: candle models of the four architectures, the training loop (plain and
//! DP-SGD), checkpoints, evaluation metrics and benchmarks.

pub mod data;
pub mod error;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod optim;

pub use data::TrainData;
pub use error::TrainError;
pub use metrics::Metrics;
pub use model::Model;
