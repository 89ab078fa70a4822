//! Training engine.
