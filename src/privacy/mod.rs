//! Differential privacy bookkeeping: validated DP-SGD parameters, RDP and PLD privacy
//! accountants for the Poisson-subsampled Gaussian mechanism, membership-inference audit
//! statistics and a lower bound on epsilon from canaries (one training run). Pure Rust, no
//! tensor framework.
//!
//! Imports only its children; `privacy` is at the bottom of the engine and imports no other
//! engine module, never `train`, `mpc` or anything above.

pub mod accountant;
pub mod audit;
pub mod canary;
pub mod error;
mod fft;
pub mod params;
pub mod special;

pub use accountant::pld::PldAccountant;
pub use accountant::rdp::RdpAccountant;
pub use accountant::{
    epsilon, noise_multiplier_for_target, sample_rate, steps_for, AccountantKind, EpsilonReport,
};
pub use audit::{loss_threshold_audit, AuditReport};
pub use canary::{audit_canaries, CanaryAuditReport};
pub use error::PrivacyError;
pub use params::{ClipNorm, Delta, NoiseMultiplier, SampleRate};

#[cfg(test)]
mod tests;
