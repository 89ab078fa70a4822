//! Test-only stand-in: an approximate accountant with a closed form, which the interface tests
//! (and their snapshots) use so they do not depend on the engine's numerics. The binary uses
//! the engine's accountant ([`super::accountant::RdpEpsilon`]); this module is not built into it.

use super::backend::{Accountant, BackendError, DpSegment};

/// A rough epsilon from the small-q approximation of the subsampled Gaussian's Rényi DP,
/// `RDP(α) ≈ 2 q² α / σ²` (exact `α / (2σ²)` when q = 1), converted with
/// `ε = min_α RDP_total(α) + ln(1/δ) / (α - 1)`. APPROXIMATE: for display only until the engine's
/// accountant is wired in.
pub struct ApproxAccountant;

impl Accountant for ApproxAccountant {
    fn epsilon(&self, q: f64, segments: &[DpSegment], delta: f64) -> Result<f64, BackendError> {
        let valid = q > 0.0 && q <= 1.0 && delta > 0.0 && delta < 1.0;
        if !valid {
            return Err(BackendError::Failed(format!(
                "sample rate {q} and delta {delta} must lie in (0, 1]"
            )));
        }
        if segments.iter().all(|s| s.steps == 0) {
            return Ok(0.0);
        }
        let coeff: f64 = segments
            .iter()
            .map(|s| {
                let s2 = s.noise.get() * s.noise.get();
                let per = if q >= 1.0 {
                    0.5 / s2
                } else {
                    (2.0 * q * q / s2).min(0.5 / s2)
                };
                per * s.steps as f64
            })
            .sum();
        let best = (2..=256)
            .map(|a| {
                let a = a as f64;
                coeff * a + (1.0 / delta).ln() / (a - 1.0)
            })
            .fold(f64::INFINITY, f64::min);
        Ok(best)
    }
}
