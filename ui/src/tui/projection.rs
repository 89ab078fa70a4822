//! The Train tab's projected epsilon: the engine's ledger of the run so far, as its step events
//! reported it (the noise multiplier the ledger recorded for each step), plus the steps still to
//! come at the slider's settings, composed with the engine's Rényi-DP accountant. Epsilon
//! *spent* is never computed here: it is the engine's figure from the last step event. One-step
//! curves are cached, so a slider move costs microseconds once a (q, sigma) pair has been seen.
//! Imports the engine's accountant and DP settings only; nothing of the interface.

use privxray::privacy::{Delta, NoiseMultiplier, RdpAccountant, SampleRate};
use privxray::train::dpsgd::DpConfig;

/// Consecutive steps the engine's ledger recorded at one noise multiplier, at the run's
/// sampling rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LedgerSegment {
    /// The accounted noise multiplier (not always the one the step used: see
    /// [`super::backend::DpStep::accounted_noise`]).
    pub noise: f64,
    pub steps: u64,
}

/// Appends one step the ledger recorded at `noise`, extending the last segment when it is at
/// the same noise.
pub fn record(ledger: &mut Vec<LedgerSegment>, noise: f64) {
    match ledger.last_mut() {
        Some(s) if s.noise == noise => s.steps += 1,
        _ => ledger.push(LedgerSegment { noise, steps: 1 }),
    }
}

pub fn steps(ledger: &[LedgerSegment]) -> u64 {
    ledger.iter().map(|s| s.steps).sum()
}

/// The noise multiplier the engine's ledger records for one step of a run with these settings:
/// the engine's own rule ([`DpConfig::accounted_noise_multiplier`]), not a copy of it, for the
/// engine's default DP settings (per-example clipping: the tab offers no microbatches, which
/// the engine refuses under DP). Settings the engine refuses to train with are its error.
pub fn accounted_noise(noise: f64, clip: f64, expected_batch: f64) -> Result<f64, String> {
    let dp = DpConfig::new(noise, clip).map_err(|e| e.to_string())?;
    dp.validate_for_training().map_err(|e| e.to_string())?;
    dp.accounted_noise_multiplier(expected_batch)
        .map(NoiseMultiplier::get)
        .map_err(|e| e.to_string())
}

/// Epsilon of a sequence of ledger segments, all at one sampling rate.
#[derive(Debug, Default)]
pub struct Projection {
    // Keeps its curve cache across calls (`reset` forgets the composed steps only).
    rdp: RdpAccountant,
}

impl Projection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Epsilon at `delta` of `segments` at sampling rate `sample_rate` (0 for no steps).
    pub fn epsilon(
        &mut self,
        sample_rate: f64,
        segments: &[LedgerSegment],
        delta: f64,
    ) -> Result<f64, String> {
        let q = SampleRate::new(sample_rate).map_err(|e| e.to_string())?;
        let delta = Delta::new(delta).map_err(|e| e.to_string())?;
        self.rdp.reset();
        for s in segments.iter().filter(|s| s.steps > 0) {
            let sigma = NoiseMultiplier::new(s.noise).map_err(|e| e.to_string())?;
            self.rdp.step(q, sigma, s.steps);
        }
        if self.rdp.steps() == 0 {
            return Ok(0.0);
        }
        Ok(self.rdp.epsilon(delta).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privxray::privacy::{self, AccountantKind};

    fn seg(noise: f64, steps: u64) -> LedgerSegment {
        LedgerSegment { noise, steps }
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
        let got = Projection::new()
            .epsilon(q, &[seg(sigma, steps)], delta)
            .unwrap();
        assert!((got - reference).abs() < 1e-9, "{got} vs {reference}");
    }

    #[test]
    fn segments_compose_and_calls_do_not_accumulate() {
        let mut p = Projection::new();
        let whole = p.epsilon(0.02, &[seg(1.5, 500)], 1e-5).unwrap();
        let split = p
            .epsilon(0.02, &[seg(1.5, 200), seg(1.5, 0), seg(1.5, 300)], 1e-5)
            .unwrap();
        assert!((whole - split).abs() < 1e-9, "{whole} vs {split}");
        // More noise for part of the run spends less than the whole run at the lower noise.
        let mixed = p
            .epsilon(0.02, &[seg(1.5, 200), seg(3.0, 300)], 1e-5)
            .unwrap();
        assert!(mixed < whole, "{mixed} >= {whole}");
        assert_eq!(p.epsilon(0.02, &[], 1e-5).unwrap(), 0.0);
    }

    #[test]
    fn recorded_steps_merge_while_the_noise_stays() {
        let mut ledger = Vec::new();
        for noise in [1.1, 1.1, 1.3, 1.3, 1.3, 1.1] {
            record(&mut ledger, noise);
        }
        assert_eq!(ledger, [seg(1.1, 2), seg(1.3, 3), seg(1.1, 1)]);
        assert_eq!(steps(&ledger), 6);
    }

    #[test]
    fn the_slider_is_accounted_by_the_engines_rule() {
        assert_eq!(accounted_noise(1.3, 0.7, 64.0), Ok(1.3));
        // Settings the engine refuses are its error, not a figure.
        assert!(accounted_noise(-1.0, 0.7, 64.0).is_err());
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_value() {
        let mut p = Projection::new();
        let e = p.epsilon(1.5, &[seg(1.0, 10)], 1e-5).unwrap_err();
        assert!(e.contains("1.5"), "{e}");
        let e = p.epsilon(0.1, &[seg(1.0, 10)], 2.0).unwrap_err();
        assert!(e.contains('2'), "{e}");
    }
}
