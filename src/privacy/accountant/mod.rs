//! Privacy accounting for DP-SGD: how much (epsilon, delta)-DP a training run spends.
//!
//! Two accountants for the Poisson-subsampled Gaussian mechanism: [`rdp`] (Renyi DP, fast,
//! cached, good for live sliders) and [`pld`] (privacy loss distributions, tighter, slower).
//! [`epsilon`] is the common entry point; [`noise_multiplier_for_target`] inverts it.
//!
//! Imports its children (`rdp`, `pld`) and `super::{error, params}` only; never `train` or
//! anything above `privacy`.

pub mod pld;
pub mod rdp;

use super::error::{PrivacyError, Result};
use super::params::{Delta, NoiseMultiplier, SampleRate};
use rdp::RdpAccountant;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

/// Which accountant computes epsilon. Serialises and parses as "rdp" / "pld".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountantKind {
    Rdp,
    Pld,
}

impl AccountantKind {
    pub fn name(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::Pld => "pld",
        }
    }
}

impl fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AccountantKind {
    type Err = PrivacyError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rdp" => Ok(AccountantKind::Rdp),
            "pld" => Ok(AccountantKind::Pld),
            _ => Err(PrivacyError::UnknownAccountant(s.to_string())),
        }
    }
}

/// The privacy spent by a training run. JSON keys: epsilon, best_order, accountant, steps.
/// `best_order` is the optimal Renyi order (RDP only; null for PLD or infinite epsilon).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpsilonReport {
    pub epsilon: f64,
    pub best_order: Option<f64>,
    pub accountant: AccountantKind,
    pub steps: u64,
}

/// Number of optimizer steps: epochs * ceil(dataset_size / batch_size).
pub fn steps_for(dataset_size: u64, batch_size: u64, epochs: u64) -> Result<u64> {
    if dataset_size == 0 {
        return Err(PrivacyError::EmptyDataset);
    }
    if batch_size == 0 || batch_size > dataset_size {
        return Err(PrivacyError::BatchSize {
            batch: batch_size,
            dataset: dataset_size,
        });
    }
    let per_epoch = dataset_size.div_ceil(batch_size);
    epochs
        .checked_mul(per_epoch)
        .ok_or(PrivacyError::StepOverflow {
            epochs,
            steps_per_epoch: per_epoch,
        })
}

/// Sampling rate q = batch / n.
pub fn sample_rate(batch: u64, n: u64) -> Result<SampleRate> {
    SampleRate::from_batch(batch, n)
}

/// Process-wide RDP accountant whose curve cache makes repeated queries (sliders over epochs
/// or delta, calibration) cheap. Bounded: cleared when it holds too many curves.
fn shared_rdp() -> &'static Mutex<RdpAccountant> {
    static SHARED: OnceLock<Mutex<RdpAccountant>> = OnceLock::new();
    SHARED.get_or_init(|| Mutex::new(RdpAccountant::new()))
}

/// Curves kept by the shared accountant before it is cleared (each is ~200 f64).
const SHARED_CACHE_LIMIT: usize = 4096;

fn rdp_epsilon(
    q: SampleRate,
    sigma: NoiseMultiplier,
    steps: u64,
    delta: Delta,
) -> (f64, Option<f64>) {
    // A poisoned lock only means another thread panicked mid-update; the cache holds
    // immutable curves, so recover it and start the total afresh.
    let mut acc = shared_rdp().lock().unwrap_or_else(|e| e.into_inner());
    if acc.cached_curves() > SHARED_CACHE_LIMIT {
        *acc = RdpAccountant::new();
    }
    acc.reset();
    acc.step(q, sigma, steps);
    acc.epsilon(delta)
}

/// Epsilon spent by `steps` DP-SGD steps with sampling rate `q` and noise multiplier
/// `sigma`, at `delta`, by the chosen accountant. Zero steps spend nothing; sigma 0 spends
/// an infinite epsilon.
pub fn epsilon(
    kind: AccountantKind,
    q: SampleRate,
    sigma: NoiseMultiplier,
    steps: u64,
    delta: Delta,
) -> Result<EpsilonReport> {
    let (epsilon, best_order) = match kind {
        AccountantKind::Rdp => rdp_epsilon(q, sigma, steps, delta),
        AccountantKind::Pld => (pld::epsilon(q, sigma, steps, delta)?, None),
    };
    Ok(EpsilonReport {
        epsilon,
        best_order,
        accountant: kind,
        steps,
    })
}

/// Relative tolerance on sigma of [`noise_multiplier_for_target`].
pub const CALIBRATION_REL_TOL: f64 = 1e-4;

/// Largest noise multiplier tried before a target is declared unreachable.
const MAX_SIGMA: f64 = 1e6;

/// The smallest noise multiplier (to [`CALIBRATION_REL_TOL`] relative) whose epsilon after
/// `steps` steps at rate `q` is <= `target_eps`. The returned sigma always meets the target.
pub fn noise_multiplier_for_target(
    target_eps: f64,
    q: SampleRate,
    steps: u64,
    delta: Delta,
    accountant: AccountantKind,
) -> Result<NoiseMultiplier> {
    if !(target_eps.is_finite() && target_eps > 0.0) {
        return Err(PrivacyError::TargetEpsilon(target_eps));
    }
    let eps_at = |s: f64| -> Result<f64> {
        Ok(epsilon(accountant, q, NoiseMultiplier::new(s)?, steps, delta)?.epsilon)
    };
    if steps == 0 {
        return NoiseMultiplier::new(0.0);
    }
    // Bracket: eps(lo) > target >= eps(hi). sigma = 0 is never private.
    let (mut lo, mut hi) = (0.0, 1.0);
    loop {
        let e = eps_at(hi)?;
        if e <= target_eps {
            break;
        }
        if hi >= MAX_SIGMA {
            return Err(PrivacyError::Unreachable {
                target: target_eps,
                sigma: hi,
                epsilon: e,
            });
        }
        lo = hi;
        hi *= 2.0;
    }
    while hi - lo > CALIBRATION_REL_TOL * hi {
        let mid = 0.5 * (lo + hi);
        if eps_at(mid)? <= target_eps {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    NoiseMultiplier::new(hi)
}
