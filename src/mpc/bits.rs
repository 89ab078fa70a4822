//! Bit-slicing: boolean circuits run on "bit planes", where word `c` of plane `j` holds bit `j`
//! of elements `64c .. 64c + 63`. One AND of two plane words is then 64 gates, and a circuit
//! level that touches only some bit positions sends only those planes.
//!
//! A leaf of `mpc`: imports only `rayon`; no sibling and no other engine module.

use rayon::prelude::*;

/// Transposes a 64 x 64 bit matrix in place: bit `c` of `m[r]` swaps with bit `r` of `m[c]`.
pub fn transpose64(m: &mut [u64; 64]) {
    let mut width = 32;
    let mut mask: u64 = 0x0000_0000_FFFF_FFFF;
    while width != 0 {
        let mut r = 0;
        while r < 64 {
            for i in r..r + width {
                let t = ((m[i] >> width) ^ m[i + width]) & mask;
                m[i] ^= t << width;
                m[i + width] ^= t;
            }
            r += 2 * width;
        }
        width >>= 1;
        mask ^= mask << width;
    }
}

/// Number of 64-element chunks (words per plane) for `n` elements.
pub fn chunks(n: usize) -> usize {
    n.div_ceil(64)
}

/// The low `planes` bit planes of `x` (at most 64): returns `planes * chunks(n)` words, plane
/// `j` at `[j * ch, (j + 1) * ch)`.
pub fn to_planes(x: &[u64], planes: usize) -> Vec<u64> {
    let planes = planes.min(64);
    let ch = chunks(x.len());
    // Transpose 64-element blocks in parallel, then scatter plane by plane in parallel.
    let blocks: Vec<[u64; 64]> = x
        .par_chunks(64)
        .with_min_len(64)
        .map(|src| {
            let mut block = [0u64; 64];
            block[..src.len()].copy_from_slice(src);
            transpose64(&mut block);
            block
        })
        .collect();
    let mut out = vec![0u64; planes * ch];
    out.par_chunks_mut(ch.max(1))
        .enumerate()
        .for_each(|(j, plane)| {
            for (w, block) in plane.iter_mut().zip(&blocks) {
                *w = block[j];
            }
        });
    out
}

/// Bit `e` of a packed plane as the ring element 0 or 1, for `n` elements.
pub fn unpack(plane: &[u64], n: usize) -> Vec<u64> {
    (0..n).map(|e| (plane[e / 64] >> (e % 64)) & 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn transpose_moves_every_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let orig: [u64; 64] = std::array::from_fn(|_| rng.random());
        let mut m = orig;
        transpose64(&mut m);
        for (r, row) in m.iter().enumerate() {
            for (c, col) in orig.iter().enumerate() {
                assert_eq!((row >> c) & 1, (col >> r) & 1);
            }
        }
        transpose64(&mut m);
        assert_eq!(m, orig);
    }

    #[test]
    fn planes_hold_bit_j_of_each_element() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let x: Vec<u64> = (0..150).map(|_| rng.random()).collect();
        let p = to_planes(&x, 64);
        let ch = chunks(x.len());
        for j in [0usize, 1, 31, 63] {
            let bits = unpack(&p[j * ch..(j + 1) * ch], x.len());
            for (e, b) in bits.iter().enumerate() {
                assert_eq!(*b, (x[e] >> j) & 1);
            }
        }
        // The low planes alone are the first planes of the whole.
        let low = to_planes(&x, 24);
        assert_eq!(low.len(), 24 * ch);
        assert_eq!(low[..], p[..24 * ch]);
    }
}
