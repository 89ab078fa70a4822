//! Pairwise pseudo-random generators.
//!
//! Key `k_j` is known to parties `j - 1` and `j`; party `i` therefore holds `k_i` (shared with
//! its previous neighbour) and `k_{i+1}` (shared with its next neighbour). Each key drives one
//! ChaCha12 stream that its two holders consume in lockstep: every protocol step draws the same
//! number of words from a key in both holders, so the streams never desynchronise and no output
//! block (counter) is ever used twice.
//!
//! Why 12 rounds, not 20: these streams produce every zero-sharing of a private inference and
//! were its largest single cost (15-22% of CPU time at 20 rounds, `perf record` on
//! `privxray bench mpc`). The best known attacks on ChaCha reach 7 rounds; 12 is what `rand`'s
//! `StdRng` uses for cryptographic randomness. Shares dealt from the OS (inputs, model) still
//! use ChaCha20, see [`os_rng`].
//!
//! Imports `super::error` and the RNG crates only; no other engine module.

use super::error::{MpcError, Result};
use rand::{Rng, SeedableRng, TryRngCore};
use rand_chacha::{ChaCha12Rng, ChaCha20Rng};
use rayon::prelude::*;

/// The cipher of the pairwise streams.
type Stream = ChaCha12Rng;

/// A 256-bit ChaCha key.
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
    with_prev: Stream,
    with_next: Stream,
}

impl PairwisePrg {
    /// `own` is `k_i` (shared with the previous party), `next` is `k_{i+1}`.
    pub fn new(own: &PrgSeed, next: &PrgSeed) -> Self {
        PairwisePrg {
            with_prev: Stream::from_seed(own.0),
            with_next: Stream::from_seed(next.0),
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
        self.zero_with(n, u64::wrapping_sub)
    }

    /// This party's part of a boolean zero-sharing: `F(k_i) ^ F(k_{i+1})`.
    pub fn zero_bool(&mut self, n: usize) -> Vec<u64> {
        self.zero_with(n, |x, y| x ^ y)
    }

    /// `combine(F(k_i), F(k_{i+1}))` word by word. The second stream is drawn chunk by chunk
    /// into a small buffer and folded in place: no second `n`-word vector is allocated.
    fn zero_with(&mut self, n: usize, combine: impl Fn(u64, u64) -> u64 + Sync) -> Vec<u64> {
        let mut a = draw(&mut self.with_prev, n);
        for_each_chunk(&mut self.with_next, &mut a, |chunk, r| {
            let mut b = [0u64; 256];
            for part in chunk.chunks_mut(b.len()) {
                let b = &mut b[..part.len()];
                r.fill(b);
                for (x, y) in part.iter_mut().zip(b.iter()) {
                    *x = combine(*x, *y);
                }
            }
        });
        a
    }
}

/// A ChaCha20 generator seeded from the OS CSPRNG, for dealing shares (inputs and models: far
/// fewer words than the protocol's zero-sharings, so the extra rounds cost little).
pub fn os_rng() -> Result<ChaCha20Rng> {
    Ok(ChaCha20Rng::from_seed(PrgSeed::from_os()?.0))
}

/// Words per parallel PRG task.
const DRAW_CHUNK: usize = 1 << 14;

/// The next `n` words of the stream. Long draws are generated in parallel: each task seeks a
/// clone of the generator to its own position, so the output (and the position afterwards) is
/// exactly that of one sequential draw, and the two holders of a key stay in lockstep however
/// either of them splits the work.
fn draw(rng: &mut Stream, n: usize) -> Vec<u64> {
    let mut v = vec![0u64; n];
    for_each_chunk(rng, &mut v, |chunk, r| r.fill(chunk));
    v
}

/// Hands `f` each `DRAW_CHUNK`-word chunk of `out` with a clone of `rng` positioned where a
/// sequential draw of `out.len()` words would be at that chunk, in parallel, then advances
/// `rng` past all of them. `f` must consume exactly its chunk's length in words.
fn for_each_chunk(rng: &mut Stream, out: &mut [u64], f: impl Fn(&mut [u64], &mut Stream) + Sync) {
    if out.len() <= DRAW_CHUNK {
        f(out, rng);
        return;
    }
    // Word positions count 32-bit words; every draw consumes whole 64-bit words, so the
    // position is always even here.
    let start = rng.get_word_pos();
    let base = rng.clone();
    out.par_chunks_mut(DRAW_CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut r = base.clone();
            r.set_word_pos(start + 2 * (i * DRAW_CHUNK) as u128);
            f(chunk, &mut r);
        });
    rng.set_word_pos(start + 2 * out.len() as u128);
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
        let mut seq = Stream::from_seed(key.0);
        for n in [3, DRAW_CHUNK + 5, 5 * DRAW_CHUNK, 7] {
            let mut want = vec![0u64; n];
            seq.fill(&mut want[..]);
            assert_eq!(a.common_with_prev(n), want, "draw of {n}");
        }
    }

    #[test]
    fn long_zero_sharings_cancel_and_keep_the_streams_in_lockstep() {
        // Long enough to be split into parallel chunks, with a ragged end.
        let n = 3 * DRAW_CHUNK + 300;
        let mut p = ring();
        let arith: Vec<Vec<u64>> = p.iter_mut().map(|g| g.zero_arith(n)).collect();
        let boolean: Vec<Vec<u64>> = p.iter_mut().map(|g| g.zero_bool(n)).collect();
        for i in 0..n {
            let s = arith[0][i]
                .wrapping_add(arith[1][i])
                .wrapping_add(arith[2][i]);
            assert_eq!(s, 0, "arithmetic word {i}");
            assert_eq!(
                boolean[0][i] ^ boolean[1][i] ^ boolean[2][i],
                0,
                "boolean word {i}"
            );
        }
        // Every stream advanced by exactly 2n words: neighbours still agree afterwards.
        assert_eq!(p[0].common_with_next(5), p[1].common_with_prev(5));
        assert_eq!(p[1].common_with_next(5), p[2].common_with_prev(5));
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
