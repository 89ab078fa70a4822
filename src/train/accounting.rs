//! Privacy accounting of a training run: every DP release is recorded with its own sampling
//! rate and noise multiplier (so a noise multiplier changed mid-run is composed honestly), kept
//! in checkpoints as a ledger, and turned into epsilon by an accountant. The ledger is the only
//! one: events carry its epsilon and interfaces show that.
//!
//! Every figure is for the add/remove neighbouring relation ([`super::dpsgd::NEIGHBOURING`]).
//! A DP-SGD step is a Poisson-subsampled Gaussian mechanism at q = B/N, recorded at the noise
//! multiplier [`super::dpsgd::DpConfig::accounted_noise_multiplier`] gives. Other releases of
//! the training data (noisy class counts) are recorded at q = 1. Shuffled batches and
//! microbatches are refused under DP ([`super::dpsgd::DpConfig::validate_for_training`]), so
//! no other mode is needed.
//!
//! Imports `crate::privacy` and `super::{dpsgd, error}` only; never `mpc`, `net`, `party`,
//! `pipeline` or terminal code.

use super::dpsgd::{Delta, NoiseMultiplier};
use super::error::Result;
use crate::privacy::{RdpAccountant, SampleRate};
use serde::{Deserialize, Serialize};

/// Computes the privacy spent by a sequence of (possibly different) Gaussian releases, as
/// Opacus's accountants do from per-step events.
pub trait PrivacyAccountant: Send {
    /// Records `count` releases, each with sampling rate `q` and noise multiplier `sigma`.
    fn record(&mut self, q: SampleRate, sigma: NoiseMultiplier, count: u64);
    /// Epsilon at `delta` of everything recorded (infinite when some sigma was 0).
    fn epsilon(&self, delta: Delta) -> f64;
    /// A copy with the same records (to ask "what if" without committing).
    fn boxed_clone(&self) -> Box<dyn PrivacyAccountant>;
    /// Forgets every record.
    fn reset(&mut self);
}

impl PrivacyAccountant for RdpAccountant {
    fn record(&mut self, q: SampleRate, sigma: NoiseMultiplier, count: u64) {
        self.step(q, sigma, count);
    }
    fn epsilon(&self, delta: Delta) -> f64 {
        RdpAccountant::epsilon(self, delta).0
    }
    fn boxed_clone(&self) -> Box<dyn PrivacyAccountant> {
        Box::new(self.clone())
    }
    fn reset(&mut self) {
        RdpAccountant::reset(self);
    }
}

/// `steps` consecutive releases with the same parameters (a ledger entry of checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpSegment {
    pub sample_rate: SampleRate,
    pub noise_multiplier: NoiseMultiplier,
    pub steps: u64,
}

/// The ledger of a run and the accountant fed from it.
pub struct Ledger {
    /// q of the DP-SGD steps.
    sample_rate: SampleRate,
    delta: Delta,
    segments: Vec<DpSegment>,
    accountant: Box<dyn PrivacyAccountant>,
}

impl Ledger {
    /// A ledger continuing `previous` (from a checkpoint; replayed into `accountant`).
    pub fn new(
        sample_rate: SampleRate,
        delta: Delta,
        previous: &[DpSegment],
        mut accountant: Box<dyn PrivacyAccountant>,
    ) -> Self {
        accountant.reset();
        for s in previous {
            accountant.record(s.sample_rate, s.noise_multiplier, s.steps);
        }
        Self {
            sample_rate,
            delta,
            segments: previous.to_vec(),
            accountant,
        }
    }

    fn commit(&mut self, q: SampleRate, sigma: NoiseMultiplier) {
        self.accountant.record(q, sigma, 1);
        match self.segments.last_mut() {
            Some(last) if last.sample_rate == q && last.noise_multiplier == sigma => {
                last.steps += 1
            }
            _ => self.segments.push(DpSegment {
                sample_rate: q,
                noise_multiplier: sigma,
                steps: 1,
            }),
        }
    }

    /// Records one DP-SGD step at the accounted noise multiplier `sigma`.
    pub fn step(&mut self, sigma: NoiseMultiplier) {
        self.commit(self.sample_rate, sigma);
    }

    /// Records one Gaussian release of the whole training set (q = 1) with L2 sensitivity 1
    /// and noise standard deviation `sigma`, such as noisy class counts.
    pub fn release(&mut self, sigma: NoiseMultiplier) -> Result<()> {
        self.commit(SampleRate::new(1.0)?, sigma);
        Ok(())
    }

    /// Epsilon of everything recorded (0 before the first release).
    pub fn epsilon(&self) -> f64 {
        if self.segments.iter().all(|s| s.steps == 0) {
            return 0.0;
        }
        self.accountant.epsilon(self.delta)
    }

    pub fn sample_rate(&self) -> SampleRate {
        self.sample_rate
    }

    /// Committed segments (for checkpoints).
    pub fn segments(&self) -> &[DpSegment] {
        &self.segments
    }
}

/// Epsilon at `delta` of all `segments` composed (RDP): the privacy of releasing everything
/// they record, e.g. a whole checkpoint's ledger or several runs of a sweep together.
pub fn epsilon_of(segments: &[DpSegment], delta: Delta) -> f64 {
    if segments.iter().all(|s| s.steps == 0) {
        return 0.0;
    }
    let mut a = RdpAccountant::new();
    for s in segments {
        a.step(s.sample_rate, s.noise_multiplier, s.steps);
    }
    a.epsilon(delta).0
}
