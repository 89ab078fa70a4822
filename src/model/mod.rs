//! Model descriptions shared by training, plaintext inference and the secure engine.

pub mod arch;
pub mod spec;

pub use arch::{ModelKind, PlanLayer, Pool, Technique};
pub use spec::{Layer, NetworkSpec, SpecError};
