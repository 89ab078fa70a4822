//! Validated DP-SGD parameters. Each newtype can only hold a value in its valid range, so the
//! accountants never see a negative noise multiplier or a sample rate above one.
//!
//! Imports `super::error` only; nothing outside `privacy`.

use super::error::{PrivacyError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! param {
    ($(#[$doc:meta])* $name:ident, $err:ident, |$v:ident| $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
        #[serde(try_from = "f64", into = "f64")]
        pub struct $name(f64);

        impl $name {
            pub fn new($v: f64) -> Result<Self> {
                if $ok {
                    Ok(Self($v))
                } else {
                    Err(PrivacyError::$err($v))
                }
            }
            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl TryFrom<f64> for $name {
            type Error = PrivacyError;
            fn try_from(v: f64) -> Result<Self> {
                Self::new(v)
            }
        }

        impl From<$name> for f64 {
            fn from(v: $name) -> f64 {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

param!(
    /// Gaussian noise standard deviation divided by the clip norm (sigma >= 0; 0 means no
    /// privacy, epsilon is infinite).
    NoiseMultiplier,
    NoiseMultiplier,
    |v| v.is_finite() && v >= 0.0
);
param!(
    /// Per-example L2 gradient clipping bound (> 0).
    ClipNorm,
    ClipNorm,
    |v| v.is_finite() && v > 0.0
);
param!(
    /// Poisson sampling probability of one example per step, 0 < q <= 1.
    SampleRate,
    SampleRate,
    |v| v > 0.0 && v <= 1.0
);
param!(
    /// Target delta of (epsilon, delta)-DP, 0 < delta < 1.
    Delta,
    Delta,
    |v| v > 0.0 && v < 1.0
);

impl SampleRate {
    /// q = batch / n for expected batch size `batch` out of `n` examples.
    pub fn from_batch(batch: u64, n: u64) -> Result<Self> {
        if n == 0 {
            return Err(PrivacyError::EmptyDataset);
        }
        if batch == 0 || batch > n {
            return Err(PrivacyError::BatchSize { batch, dataset: n });
        }
        Self::new(batch as f64 / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_enforced() {
        assert!(NoiseMultiplier::new(0.0).is_ok());
        assert_eq!(
            NoiseMultiplier::new(-0.1),
            Err(PrivacyError::NoiseMultiplier(-0.1))
        );
        assert!(NoiseMultiplier::new(f64::INFINITY).is_err());
        assert!(NoiseMultiplier::new(f64::NAN).is_err());
        assert!(ClipNorm::new(0.0).is_err());
        assert!(ClipNorm::new(1.0).is_ok());
        assert!(SampleRate::new(0.0).is_err());
        assert!(SampleRate::new(1.0).is_ok());
        assert!(SampleRate::new(1.0 + 1e-12).is_err());
        assert!(SampleRate::new(f64::NAN).is_err());
        assert!(Delta::new(0.0).is_err());
        assert!(Delta::new(1.0).is_err());
        assert!(Delta::new(1e-5).is_ok());
    }

    #[test]
    fn errors_name_the_value() {
        let msg = SampleRate::new(1.5).unwrap_err().to_string();
        assert!(msg.contains("1.5") && msg.contains("0 < q <= 1"), "{msg}");
        let msg = Delta::new(-2.0).unwrap_err().to_string();
        assert!(msg.contains("-2"), "{msg}");
    }

    #[test]
    fn serde_round_trip_validates() {
        let q = SampleRate::new(0.25).unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "0.25");
        let back: SampleRate = serde_json::from_str("0.25").unwrap();
        assert_eq!(back, q);
        assert!(serde_json::from_str::<SampleRate>("2.0").is_err());
        assert!(serde_json::from_str::<NoiseMultiplier>("-1.0").is_err());
    }

    #[test]
    fn sample_rate_from_batch() {
        assert_eq!(
            SampleRate::from_batch(64, 5216).unwrap().get(),
            64.0 / 5216.0
        );
        assert!(matches!(
            SampleRate::from_batch(0, 10),
            Err(PrivacyError::BatchSize {
                batch: 0,
                dataset: 10
            })
        ));
        assert!(SampleRate::from_batch(11, 10).is_err());
        assert_eq!(
            SampleRate::from_batch(1, 0),
            Err(PrivacyError::EmptyDataset)
        );
    }
}
