//! Errors of the privacy accountant and the membership-inference audit.
//!
//! Imports `thiserror` only; no sibling and no other engine module.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PrivacyError {
    #[error("noise multiplier must be finite and >= 0, got {0}")]
    NoiseMultiplier(f64),
    #[error("clip norm must be finite and > 0, got {0}")]
    ClipNorm(f64),
    #[error("sample rate q must satisfy 0 < q <= 1, got {0}")]
    SampleRate(f64),
    #[error("delta must satisfy 0 < delta < 1, got {0}")]
    Delta(f64),
    #[error("target epsilon must be finite and > 0, got {0}")]
    TargetEpsilon(f64),
    #[error("Renyi orders must be finite and > 1, got {0}")]
    RdpOrder(f64),
    #[error("at least one Renyi order is needed")]
    NoRdpOrders,
    #[error("batch size {batch} must be in 1..={dataset} (the dataset size)")]
    BatchSize { batch: u64, dataset: u64 },
    #[error("dataset size must be > 0")]
    EmptyDataset,
    #[error("step count overflows u64: {epochs} epochs x {steps_per_epoch} steps")]
    StepOverflow { epochs: u64, steps_per_epoch: u64 },
    #[error("unknown accountant {0:?}, expected \"rdp\" or \"pld\"")]
    UnknownAccountant(String),
    #[error("PLD discretisation interval must be finite and > 0, got {0}")]
    Discretisation(f64),
    #[error("the privacy loss distribution needs {needed} grid points, more than the limit {limit}; use a coarser discretisation")]
    PldTooLarge { needed: usize, limit: usize },
    #[error(
        "target epsilon {target} is unreachable: even noise multiplier {sigma} gives epsilon {epsilon}"
    )]
    Unreachable {
        target: f64,
        sigma: f64,
        epsilon: f64,
    },
    #[error("membership audit needs at least one {0} loss")]
    EmptyLosses(&'static str),
    #[error("{set} loss #{index} is not finite: {value}")]
    NonFiniteLoss {
        set: &'static str,
        index: usize,
        value: f64,
    },
    #[error(
        "canary audit counts must satisfy correct <= guesses <= canaries, got {correct} correct of {guesses} guesses on {canaries} canaries"
    )]
    CanaryCounts {
        canaries: u64,
        guesses: u64,
        correct: u64,
    },
    #[error(
        "canary audit needs one score per canary and at least two canaries, got {scores} scores for {choices} inclusion choices"
    )]
    CanaryScores { scores: usize, choices: usize },
    #[error("canary score #{index} is not finite: {value}")]
    NonFiniteScore { index: usize, value: f64 },
    #[error("epsilon under test must be finite and >= 0, got {0}")]
    AuditEpsilon(f64),
    #[error("audit significance level must satisfy 0 < alpha < 1, got {0}")]
    AuditLevel(f64),
}

pub type Result<T, E = PrivacyError> = std::result::Result<T, E>;
