//! Privacy accounting of a training run: every DP-SGD release is recorded with its own
//! sampling rate and noise multiplier (so a noise multiplier changed mid-run is composed
//! honestly), kept in checkpoints as a ledger, and turned into epsilon by an accountant.
//!
//! How steps are counted depends on the sampling:
//! - Poisson: each step is a subsampled Gaussian mechanism with q = B/N, the setting of the
//!   RDP/PLD analyses.
//! - Shuffled fixed-size batches: amplification by subsampling is NOT claimed (shuffling does
//!   not give Poisson's guarantee, and the usual practice of accounting it as Poisson
//!   under-reports epsilon). Each example is in exactly one batch per epoch, so an epoch costs
//!   it one Gaussian release without subsampling (q = 1) at the smallest noise multiplier used
//!   during that epoch. This is an upper bound; expect a much larger epsilon than Poisson's.

use super::dpsgd::{Delta, NoiseMultiplier, Sampling};
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

/// How a run's DP steps become accountant records (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AccountingMode {
    /// One record per step at q = B/N.
    Poisson(SampleRate),
    /// One q = 1 record per epoch at the epoch's smallest noise multiplier.
    ShuffledNoAmplification,
}

impl AccountingMode {
    pub fn new(sampling: Sampling, sample_rate: f64) -> Result<Self> {
        Ok(match sampling {
            Sampling::Poisson => Self::Poisson(SampleRate::new(sample_rate)?),
            Sampling::Shuffled => Self::ShuffledNoAmplification,
        })
    }

    /// One line for the `Started` event.
    pub fn describe(&self) -> String {
        match self {
            Self::Poisson(q) => format!(
                "poisson subsampled Gaussian, q = {:.6} per step (RDP accountant)",
                q.get()
            ),
            Self::ShuffledNoAmplification => "shuffled batches: no amplification by \
                 subsampling assumed; each epoch counts as one Gaussian release (q = 1) at \
                 its smallest noise multiplier (RDP accountant; an upper bound)"
                .into(),
        }
    }
}

/// The ledger of a run and the accountant fed from it.
pub struct Ledger {
    mode: AccountingMode,
    delta: Delta,
    segments: Vec<DpSegment>,
    /// Shuffled mode: smallest sigma of the epoch in progress, not yet committed.
    pending: Option<NoiseMultiplier>,
    accountant: Box<dyn PrivacyAccountant>,
    /// q = 1, the rate of a shuffled epoch's release.
    full_batch: SampleRate,
}

impl Ledger {
    /// A ledger continuing `previous` (from a checkpoint; replayed into `accountant`).
    pub fn new(
        mode: AccountingMode,
        delta: Delta,
        previous: &[DpSegment],
        mut accountant: Box<dyn PrivacyAccountant>,
    ) -> Result<Self> {
        accountant.reset();
        for s in previous {
            accountant.record(s.sample_rate, s.noise_multiplier, s.steps);
        }
        Ok(Self {
            mode,
            delta,
            segments: previous.to_vec(),
            pending: None,
            accountant,
            full_batch: SampleRate::new(1.0)?,
        })
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

    /// Records one DP-SGD step run with noise multiplier `sigma`.
    pub fn step(&mut self, sigma: NoiseMultiplier) {
        match self.mode {
            AccountingMode::Poisson(q) => self.commit(q, sigma),
            AccountingMode::ShuffledNoAmplification => {
                self.pending = Some(match self.pending {
                    Some(p) if p.get() <= sigma.get() => p,
                    _ => sigma,
                });
            }
        }
    }

    /// Closes an epoch (or a run stopped mid-epoch): commits the shuffled epoch's release.
    pub fn end_epoch(&mut self) {
        if let Some(sigma) = self.pending.take() {
            self.commit(self.full_batch, sigma);
        }
    }

    /// Epsilon so far, counting an epoch in progress as if it ended now.
    pub fn epsilon(&self) -> f64 {
        match self.pending {
            None => self.accountant.epsilon(self.delta),
            Some(sigma) => {
                let mut a = self.accountant.boxed_clone();
                a.record(self.full_batch, sigma, 1);
                a.epsilon(self.delta)
            }
        }
    }

    pub fn mode(&self) -> AccountingMode {
        self.mode
    }

    /// Committed segments (for checkpoints).
    pub fn segments(&self) -> &[DpSegment] {
        &self.segments
    }
}
