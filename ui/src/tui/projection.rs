//! The engine's Rényi-DP accountant behind the Train tab's live epsilon: each stretch of steps
//! at one noise multiplier is composed per step for the Poisson-subsampled Gaussian, then
//! converted to (epsilon, delta). One-step curves are cached, so a slider move costs
//! microseconds once a (q, sigma) pair has been seen.

use super::backend::{Accountant, BackendError, DpSegment};
use privxray::privacy::{Delta, NoiseMultiplier, RdpAccountant, SampleRate};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct RdpEpsilon {
    // Behind a mutex because the trait takes `&self`; the accountant keeps its curve cache
    // across calls (`reset` forgets the composed steps only).
    inner: Mutex<RdpAccountant>,
}

impl RdpEpsilon {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Accountant for RdpEpsilon {
    fn epsilon(
        &self,
        sample_rate: f64,
        segments: &[DpSegment],
        delta: f64,
    ) -> Result<f64, BackendError> {
        let q = SampleRate::new(sample_rate).map_err(|e| BackendError::Failed(e.to_string()))?;
        let delta = Delta::new(delta).map_err(|e| BackendError::Failed(e.to_string()))?;
        let mut acc = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        acc.reset();
        for s in segments.iter().filter(|s| s.steps > 0) {
            let sigma = NoiseMultiplier::new(s.noise.get())
                .map_err(|e| BackendError::Failed(e.to_string()))?;
            acc.step(q, sigma, s.steps);
        }
        if acc.steps() == 0 {
            return Ok(0.0);
        }
        Ok(acc.epsilon(delta).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::backend::NoiseMultiplier as Sigma;
    use privxray::privacy::{self, AccountantKind};

    fn seg(sigma: f64, steps: u64) -> DpSegment {
        DpSegment {
            noise: Sigma::new(sigma).unwrap(),
            steps,
        }
    }

    #[test]
    fn one_segment_matches_the_engine_epsilon() {
        let (q, sigma, steps, delta) = (0.01, 1.1, 1000, 1e-5);
        let reference = privacy::epsilon(
            AccountantKind::Rdp,
            SampleRate::new(q).unwrap(),
            NoiseMultiplier::new(sigma).unwrap(),
            steps,
            Delta::new(delta).unwrap(),
        )
        .unwrap()
        .epsilon;
        let got = RdpEpsilon::new()
            .epsilon(q, &[seg(sigma, steps)], delta)
            .unwrap();
        assert!((got - reference).abs() < 1e-9, "{got} vs {reference}");
    }

    #[test]
    fn segments_compose_and_calls_do_not_accumulate() {
        let acc = RdpEpsilon::new();
        let whole = acc.epsilon(0.02, &[seg(1.5, 500)], 1e-5).unwrap();
        let split = acc
            .epsilon(0.02, &[seg(1.5, 200), seg(1.5, 0), seg(1.5, 300)], 1e-5)
            .unwrap();
        assert!((whole - split).abs() < 1e-9, "{whole} vs {split}");
        // More noise for part of the run spends less than the whole run at the lower noise.
        let mixed = acc
            .epsilon(0.02, &[seg(1.5, 200), seg(3.0, 300)], 1e-5)
            .unwrap();
        assert!(mixed < whole, "{mixed} >= {whole}");
        assert_eq!(acc.epsilon(0.02, &[], 1e-5).unwrap(), 0.0);
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_value() {
        let acc = RdpEpsilon::new();
        let e = acc.epsilon(1.5, &[seg(1.0, 10)], 1e-5).unwrap_err();
        assert!(e.to_string().contains("1.5"), "{e}");
        let e = acc.epsilon(0.1, &[seg(1.0, 10)], 2.0).unwrap_err();
        assert!(e.to_string().contains('2'), "{e}");
    }
}
