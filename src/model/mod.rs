//! Model descriptions shared by training, plaintext inference and the secure engine.
//!
//! Imports only its children (`arch`, `classes`, `shape`, `spec`); `model` is at the bottom of the engine and
//! imports no other engine module, never `train`, `mpc` or anything above.

pub mod arch;
pub mod classes;
pub mod shape;
pub mod spec;

pub use arch::{ModelKind, PlanLayer, Pool, Technique};
pub use classes::{ClassNames, ClassNamesError, Label};
pub use shape::{Chw, Shape};
pub use spec::{BatchNormChannel, Layer, NetworkSpec, SpecError};
