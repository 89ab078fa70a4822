//! Errors of the secure-computation engine.
//!
//! Imports `crate::model` (its spec errors) and `super::party` only; never `net` or the party
//! layer.

use super::party::PartyId;
use crate::model::SpecError;

/// Everything that can go wrong while sharing, running or decoding a secure computation.
#[derive(Debug, thiserror::Error)]
pub enum MpcError {
    #[error(
        "fixed point: {frac_bits} fractional bits is outside the supported range {min}..={max}"
    )]
    FracBits { frac_bits: u32, min: u32, max: u32 },
    #[error(
        "value {value} cannot be encoded with {frac_bits} fractional bits: expected a finite \
         number with magnitude below {limit}"
    )]
    Encode {
        value: f64,
        frac_bits: u32,
        limit: f64,
    },
    #[error("party id {0} is invalid: expected 0, 1 or 2")]
    PartyId(u64),
    #[error("transport with party {peer}: {reason}")]
    Transport { peer: PartyId, reason: String },
    #[error("message from party {peer}: expected {expected} bytes, got {got}")]
    MessageLen {
        peer: PartyId,
        expected: usize,
        got: usize,
    },
    #[error("model: {0}")]
    Spec(#[from] SpecError),
    #[error("{what}: expected {expected}, got {got}")]
    Mismatch {
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("decoding {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("the OS random number generator failed: {0}")]
    Randomness(String),
    #[error("party {party} stopped: {reason}")]
    PartyFailed { party: PartyId, reason: String },
}

impl MpcError {
    pub(crate) fn mismatch(
        what: &'static str,
        expected: impl ToString,
        got: impl ToString,
    ) -> Self {
        MpcError::Mismatch {
            what,
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }
}

pub type Result<T, E = MpcError> = std::result::Result<T, E>;

/// Largest single dimension (channels, height, width, features, kernel) a decoded object may
/// declare; with it, products of up to three dimensions cannot overflow `usize`.
pub(crate) const MAX_DIM: usize = 1 << 20;

/// The product of `dims`, or an error if a dimension exceeds [`MAX_DIM`] or the product
/// overflows.
pub(crate) fn volume(what: &'static str, dims: &[usize]) -> Result<usize> {
    let mut v: usize = 1;
    for &d in dims {
        if d > MAX_DIM {
            return Err(MpcError::mismatch(
                what,
                format!("dimensions up to {MAX_DIM}"),
                d,
            ));
        }
        v = v.checked_mul(d).ok_or_else(|| {
            MpcError::mismatch(what, "a size that fits in memory", format!("{dims:?}"))
        })?;
    }
    Ok(v)
}
