//! The Gaussian noise of DP-SGD, its generator (ChaCha20 from the OS, or an insecure fixed
//! seed for reproducible experiments) and the setting that chooses between them
//! ([`NoiseSeed`]). The bottom of `dpsgd`: it imports only the error type, never the other
//! DP-SGD files (`settings` imports it).

use crate::train::error::{Result, TrainError};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// Where the Gaussian noise's randomness comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSeed {
    /// ChaCha20 seeded from the OS CSPRNG: the only setting that gives the privacy guarantee.
    #[default]
    Os,
    /// A fixed seed for reproducible experiments. NOT SECURE: anyone who knows the seed can
    /// subtract the noise.
    InsecureFixed(u64),
}

/// The RNG of the Gaussian noise: ChaCha20 from the OS CSPRNG, or from an explicit (insecure)
/// seed.
pub fn noise_rng(seed: NoiseSeed) -> ChaCha20Rng {
    match seed {
        NoiseSeed::Os => {
            // rand's thread RNG is itself a CSPRNG seeded (and reseeded) from the OS.
            ChaCha20Rng::try_from_os_rng()
                .unwrap_or_else(|_| ChaCha20Rng::from_rng(&mut rand::rng()))
        }
        NoiseSeed::InsecureFixed(s) => ChaCha20Rng::seed_from_u64(s),
    }
}

/// `n` independent N(0, std^2) draws.
pub fn gaussian_noise(n: usize, std: f64, rng: &mut impl RngCore) -> Result<Vec<f32>> {
    if std == 0.0 {
        return Ok(vec![0.0; n]);
    }
    let normal = Normal::new(0.0, std)
        .map_err(|e| TrainError::Config(format!("noise standard deviation {std}: {e}")))?;
    Ok((0..n).map(|_| normal.sample(rng) as f32).collect())
}
