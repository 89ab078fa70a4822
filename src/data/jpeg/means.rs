//! Block means in the DCT domain: the mean of each `sx` x `sy` cell of an 8x8 block's inverse
//! DCT is a fixed linear function of its coefficients, so a block reduced to `sx` x `sy` pixels
//! is the sum, over its nonzero coefficients, of the coefficient times a precomputed row. At
//! 1x1 that row is the DC term alone (the mean is DC/8); most AC coefficients of a smooth image
//! are zero, so the sum is short.
//!
//! Imports `std` only.

/// Zigzag position to natural (row-major) position in the 8x8 block.
pub const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// The mean over each of `s` equal cells (s in 1, 2, 4, 8) of the 1-D basis function `u` of the
/// JPEG inverse DCT, `C(u)/2 cos((2x+1)u pi/16)`.
fn cell_means(u: usize, s: usize) -> Vec<f64> {
    let c = if u == 0 { 0.5f64.sqrt() } else { 1.0 };
    let per = 8 / s;
    (0..s)
        .map(|cell| {
            (cell * per..(cell + 1) * per)
                .map(|x| {
                    0.5 * c * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
                })
                .sum::<f64>()
                / per as f64
        })
        .collect()
}

/// The rows for a block reduced to `sx` x `sy` pixels, by zigzag position, with the
/// quantisation step (`quant`, zigzag order) folded in: 64 rows of `sx * sy` values, each row
/// the pixels (row-major) one unit of that coefficient adds.
pub fn rows(sx: usize, sy: usize, quant: &[u16; 64]) -> Vec<f32> {
    let n = sx * sy;
    let mut out = vec![0f32; 64 * n];
    for (k, &natural) in ZIGZAG.iter().enumerate() {
        let (v, u) = (natural / 8, natural % 8);
        let (mx, my) = (cell_means(u, sx), cell_means(v, sy));
        for y in 0..sy {
            for x in 0..sx {
                out[k * n + y * sx + x] = (quant[k] as f64 * mx[x] * my[y]) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_pixel_row_is_the_dc_over_eight_and_nothing_else() {
        let r = rows(1, 1, &[1; 64]);
        assert!((r[0] - 0.125).abs() < 1e-7);
        assert!(r[1..].iter().all(|v| v.abs() < 1e-6), "{r:?}");
    }

    #[test]
    fn rows_at_full_size_are_the_inverse_dct() {
        // One coefficient at natural (row 1, col 2): pixel (x, y) = C(2)/2 cos .. * C(1)/2 cos ..
        let r = rows(8, 8, &[3; 64]);
        let k = ZIGZAG.iter().position(|&n| n == 8 + 2).unwrap();
        let f = |x: usize, u: usize| {
            0.5 * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
        };
        for y in 0..8 {
            for x in 0..8 {
                let want = 3.0 * f(x, 2) * f(y, 1);
                assert!((r[k * 64 + y * 8 + x] as f64 - want).abs() < 1e-5);
            }
        }
    }
}
