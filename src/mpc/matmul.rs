//! Wrapping u64 matrix products, the hot loop of every linear layer.
//!
//! One kernel: `C = A * B^T` with A (m x k) and B (n x k) both row-major, so every output is a
//! dot product of two contiguous rows. Convolutions feed im2col patches as A and the weights as
//! B; dense layers feed the weights as A. The kernel is register-blocked (4 x 4 outputs, 8 lanes
//! along k), parallel over blocks of A rows with rayon, and compiled twice: portable, and with
//! AVX-512 (`vpmullq`) selected at run time where the CPU has it.
//!
//! Imports `super::error` and `rayon` only; no other engine module.

use super::error::{MpcError, Result};
use rayon::prelude::*;

const LANES: usize = 8;
const RB: usize = 4;

/// `C = A * B^T` over Z_2^64. `a` is `m x k`, `b` is `n x k`; returns `m x n`.
pub fn gemm_nt(a: &[u64], b: &[u64], m: usize, n: usize, k: usize) -> Result<Vec<u64>> {
    if a.len() != m * k {
        return Err(MpcError::mismatch("left matrix length", m * k, a.len()));
    }
    if b.len() != n * k {
        return Err(MpcError::mismatch("right matrix length", n * k, b.len()));
    }
    let mut c = vec![0u64; m * n];
    if m == 0 || n == 0 {
        return Ok(c);
    }
    // Enough row blocks to feed every thread; each block reuses B from cache.
    let rows_per_task = RB * ((m / RB) / (4 * rayon::current_num_threads()).max(1)).clamp(1, 16);
    c.par_chunks_mut(rows_per_task * n)
        .zip(a.par_chunks(rows_per_task * k))
        .for_each(|(c_blk, a_blk)| rows_dispatch(c_blk, a_blk, b, n, k));
    Ok(c)
}

/// Transposes a row-major `rows x cols` matrix.
pub fn transpose(x: &[u64], rows: usize, cols: usize) -> Vec<u64> {
    debug_assert_eq!(x.len(), rows * cols);
    let mut out = vec![0u64; x.len()];
    const T: usize = 32;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    out[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
    out
}

fn rows_dispatch(c: &mut [u64], a: &[u64], b: &[u64], n: usize, k: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU supports the features the function was compiled for.
            unsafe { rows_avx512(c, a, b, n, k) };
            return;
        }
    }
    rows_kernel(c, a, b, n, k);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn rows_avx512(c: &mut [u64], a: &[u64], b: &[u64], n: usize, k: usize) {
    rows_kernel(c, a, b, n, k);
}

/// Rows of `a` (as many as `c` has rows of `n`) times all rows of `b`.
#[inline(always)]
fn rows_kernel(c: &mut [u64], a: &[u64], b: &[u64], n: usize, k: usize) {
    let m = c.len() / n;
    let mut i = 0;
    while i < m {
        let ri = (m - i).min(RB);
        let mut j = 0;
        while j < n {
            let rj = (n - j).min(RB);
            if ri == RB && rj == RB {
                let out = block4x4(&a[i * k..(i + RB) * k], &b[j * k..(j + RB) * k], k);
                for r in 0..RB {
                    c[(i + r) * n + j..(i + r) * n + j + RB].copy_from_slice(&out[r]);
                }
            } else {
                for r in 0..ri {
                    for s in 0..rj {
                        c[(i + r) * n + j + s] = dot(
                            &a[(i + r) * k..(i + r + 1) * k],
                            &b[(j + s) * k..(j + s + 1) * k],
                        );
                    }
                }
            }
            j += rj;
        }
        i += ri;
    }
}

#[inline(always)]
fn block4x4(a: &[u64], b: &[u64], k: usize) -> [[u64; RB]; RB] {
    let mut acc = [[[0u64; LANES]; RB]; RB];
    let full = k / LANES * LANES;
    let mut kc = 0;
    while kc < full {
        let av: [[u64; LANES]; RB] =
            std::array::from_fn(|r| lanes(&a[r * k + kc..r * k + kc + LANES]));
        let bv: [[u64; LANES]; RB] =
            std::array::from_fn(|s| lanes(&b[s * k + kc..s * k + kc + LANES]));
        for r in 0..RB {
            for s in 0..RB {
                for l in 0..LANES {
                    acc[r][s][l] = acc[r][s][l].wrapping_add(av[r][l].wrapping_mul(bv[s][l]));
                }
            }
        }
        kc += LANES;
    }
    let mut out = [[0u64; RB]; RB];
    for r in 0..RB {
        for s in 0..RB {
            let mut t = acc[r][s].iter().fold(0u64, |x, y| x.wrapping_add(*y));
            for q in full..k {
                t = t.wrapping_add(a[r * k + q].wrapping_mul(b[s * k + q]));
            }
            out[r][s] = t;
        }
    }
    out
}

#[inline(always)]
fn lanes(x: &[u64]) -> [u64; LANES] {
    let mut v = [0u64; LANES];
    v.copy_from_slice(x);
    v
}

#[inline(always)]
fn dot(a: &[u64], b: &[u64]) -> u64 {
    a.iter()
        .zip(b)
        .fold(0u64, |t, (x, y)| t.wrapping_add(x.wrapping_mul(*y)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn naive(a: &[u64], b: &[u64], m: usize, n: usize, k: usize) -> Vec<u64> {
        let mut c = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                for q in 0..k {
                    c[i * n + j] =
                        c[i * n + j].wrapping_add(a[i * k + q].wrapping_mul(b[j * k + q]));
                }
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_on_ragged_shapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for &(m, n, k) in &[
            (1, 1, 1),
            (4, 4, 8),
            (5, 7, 13),
            (33, 9, 70),
            (64, 3, 129),
            (2, 65, 17),
        ] {
            let a: Vec<u64> = (0..m * k).map(|_| rng.random()).collect();
            let b: Vec<u64> = (0..n * k).map(|_| rng.random()).collect();
            assert_eq!(
                gemm_nt(&a, &b, m, n, k).unwrap(),
                naive(&a, &b, m, n, k),
                "{m}x{n}x{k}"
            );
        }
    }

    #[test]
    fn rejects_wrong_lengths() {
        assert!(gemm_nt(&[1, 2, 3], &[1, 2], 2, 1, 2).is_err());
    }

    #[test]
    fn transpose_round_trips() {
        let x: Vec<u64> = (0..35).collect();
        let t = transpose(&x, 5, 7);
        assert_eq!(t[5 + 4], 29); // element (4, 1) of x lands at (1, 4)
        assert_eq!(transpose(&t, 7, 5), x);
    }
}
