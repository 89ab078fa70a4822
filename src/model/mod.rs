//! Model descriptions shared by training, plaintext inference and the secure engine.

pub mod arch;
pub mod shape;
pub mod spec;

pub use arch::{ModelKind, PlanLayer, Pool, Technique};
pub use shape::{Chw, Shape};
pub use spec::{BatchNormChannel, Layer, NetworkSpec, SpecError};
