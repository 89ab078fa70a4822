//! Pairwise pseudo-random generators.
//!
//! Key `k_j` is known to parties `j - 1` and `j`; party `i` therefore holds `k_i` (shared with
//! its previous neighbour) and `k_{i+1}` (shared with its next neighbour). Each key drives one
//! ChaCha20 stream that its two holders consume in lockstep: every protocol step draws the same
//! number of words from a key in both holders, so the streams never desynchronise and no output
//! block (counter) is ever used twice.

use super::error::{MpcError, Result};
use rand::{Rng, SeedableRng, TryRngCore};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

/// A 256-bit ChaCha20 key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrgSeed(pub(crate) [u8; 32]);

impl PrgSeed {
    /// A fresh key from the OS CSPRNG.
    pub fn from_os() -> Result<Self> {
        let mut k = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut k)
            .map_err(|e| MpcError::Randomness(e.to_string()))?;
        Ok(PrgSeed(k))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

// Keys never appear in logs.
impl std::fmt::Debug for PrgSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrgSeed(..)")
    }
}

/// One party's two pairwise streams.
pub struct PairwisePrg {
    with_prev: ChaCha20Rng,
    with_next: ChaCha20Rng,
}

impl PairwisePrg {
    /// `own` is `k_i` (shared with the previous party), `next` is `k_{i+1}`.
    pub fn new(own: &PrgSeed, next: &PrgSeed) -> Self {
        PairwisePrg {
            with_prev: ChaCha20Rng::from_seed(own.0),
            with_next: ChaCha20Rng::from_seed(next.0),
        }
    }

    /// `n` words the previous party draws identically (from its `common_with_next`).
    pub fn common_with_prev(&mut self, n: usize) -> Vec<u64> {
        draw(&mut self.with_prev, n)
    }

    /// `n` words the next party draws identically (from its `common_with_prev`).
    pub fn common_with_next(&mut self, n: usize) -> Vec<u64> {
        draw(&mut self.with_next, n)
    }

    /// This party's part of an arithmetic zero-sharing: `F(k_i) - F(k_{i+1})`; the three
    /// parties' parts sum to zero and each is uniformly random to the other two.
    pub fn zero_arith(&mut self, n: usize) -> Vec<u64> {
        let mut a = draw(&mut self.with_prev, n);
        let b = draw(&mut self.with_next, n);
        for (x, y) in a.iter_mut().zip(&b) {
            *x = x.wrapping_sub(*y);
        }
        a
    }

    /// This party's part of a boolean zero-sharing: `F(k_i) ^ F(k_{i+1})`.
    pub fn zero_bool(&mut self, n: usize) -> Vec<u64> {
        let mut a = draw(&mut self.with_prev, n);
        let b = draw(&mut self.with_next, n);
        for (x, y) in a.iter_mut().zip(&b) {
            *x ^= *y;
        }
        a
    }
}

/// A ChaCha20 generator seeded from the OS CSPRNG, for dealing shares.
pub fn os_rng() -> Result<ChaCha20Rng> {
    Ok(ChaCha20Rng::from_seed(PrgSeed::from_os()?.0))
}

/// Words per parallel PRG task.
const DRAW_CHUNK: usize = 1 << 14;

/// The next `n` words of the stream. Long draws are generated in parallel: each task seeks a
/// clone of the generator to its own position, so the output (and the position afterwards) is
/// exactly that of one sequential draw, and the two holders of a key stay in lockstep however
/// either of them splits the work.
fn draw(rng: &mut ChaCha20Rng, n: usize) -> Vec<u64> {
    let mut v = vec![0u64; n];
    if n <= DRAW_CHUNK {
        rng.fill(&mut v[..]);
        return v;
    }
    // Word positions count 32-bit words; every draw consumes whole 64-bit words, so the
    // position is always even here.
    let start = rng.get_word_pos();
    let base = rng.clone();
    v.par_chunks_mut(DRAW_CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut r = base.clone();
            r.set_word_pos(start + 2 * (i * DRAW_CHUNK) as u128);
            r.fill(chunk);
        });
    rng.set_word_pos(start + 2 * n as u128);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> [PairwisePrg; 3] {
        let keys: [PrgSeed; 3] = std::array::from_fn(|_| PrgSeed::from_os().unwrap());
        std::array::from_fn(|i| PairwisePrg::new(&keys[i], &keys[(i + 1) % 3]))
    }

    #[test]
    fn zero_sharings_sum_to_zero_and_are_random() {
        let mut p = ring();
        let parts: Vec<Vec<u64>> = p.iter_mut().map(|g| g.zero_arith(50)).collect();
        for ((a, b), c) in parts[0].iter().zip(&parts[1]).zip(&parts[2]) {
            assert_eq!(a.wrapping_add(*b).wrapping_add(*c), 0);
        }
        assert_ne!(parts[0], parts[1]);
        let bparts: Vec<Vec<u64>> = p.iter_mut().map(|g| g.zero_bool(50)).collect();
        for ((a, b), c) in bparts[0].iter().zip(&bparts[1]).zip(&bparts[2]) {
            assert_eq!(a ^ b ^ c, 0);
        }
        // Streams advance: the next zero-sharing differs from the previous one.
        let again = p[0].zero_arith(50);
        assert_ne!(again, parts[0]);
    }

    #[test]
    fn parallel_draws_equal_the_sequential_stream() {
        let key = PrgSeed::from_os().unwrap();
        let mut a = PairwisePrg::new(&key, &key);
        let mut seq = ChaCha20Rng::from_seed(key.0);
        for n in [3, DRAW_CHUNK + 5, 5 * DRAW_CHUNK, 7] {
            let mut want = vec![0u64; n];
            seq.fill(&mut want[..]);
            assert_eq!(a.common_with_prev(n), want, "draw of {n}");
        }
    }

    #[test]
    fn neighbours_agree_on_common_words() {
        let mut p = ring();
        let a = p[0].common_with_next(10);
        let b = p[1].common_with_prev(10);
        assert_eq!(a, b);
        assert_ne!(p[2].common_with_next(10), a);
    }
}
