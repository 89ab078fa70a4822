//! A small iterative radix-2 complex FFT, enough for convolving privacy loss distributions.
//!
//! A leaf: imports `std` only; no sibling and no other engine module.

use std::f64::consts::PI;
use std::ops::{Add, Mul, Sub};

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Complex {
    pub re: f64,
    pub im: f64,
}

impl Complex {
    pub const ONE: Complex = Complex { re: 1.0, im: 0.0 };

    pub fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }

    /// z^n by binary exponentiation.
    pub fn powu(self, mut n: u64) -> Self {
        let (mut base, mut acc) = (self, Complex::ONE);
        while n > 0 {
            if n & 1 == 1 {
                acc = acc * base;
            }
            base = base * base;
            n >>= 1;
        }
        acc
    }
}

impl Add for Complex {
    type Output = Complex;
    fn add(self, o: Complex) -> Complex {
        Complex::new(self.re + o.re, self.im + o.im)
    }
}

impl Sub for Complex {
    type Output = Complex;
    fn sub(self, o: Complex) -> Complex {
        Complex::new(self.re - o.re, self.im - o.im)
    }
}

impl Mul for Complex {
    type Output = Complex;
    fn mul(self, o: Complex) -> Complex {
        Complex::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
}

/// In-place FFT of a power-of-two-length buffer; `inverse` computes the unnormalised inverse
/// transform (divide by the length afterwards). Lengths that are not powers of two are a
/// programming error in this crate-private helper.
pub fn fft_in_place(buf: &mut [Complex], inverse: bool) {
    let n = buf.len();
    debug_assert!(n.is_power_of_two(), "FFT length {n} is not a power of two");
    if n <= 1 {
        return;
    }
    // Bit-reversal permutation.
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if i < j {
            buf.swap(i, j);
        }
    }
    let sign = if inverse { 1.0 } else { -1.0 };
    let mut len = 2;
    while len <= n {
        let half = len / 2;
        // Twiddles computed directly (not by recurrence) to keep errors at ~1 ulp.
        let twiddles: Vec<Complex> = (0..half)
            .map(|k| {
                let (s, c) = (sign * 2.0 * PI * k as f64 / len as f64).sin_cos();
                Complex::new(c, s)
            })
            .collect();
        for chunk in buf.chunks_exact_mut(len) {
            let (lo, hi) = chunk.split_at_mut(half);
            for ((a, b), w) in lo.iter_mut().zip(hi.iter_mut()).zip(&twiddles) {
                let t = *b * *w;
                *b = *a - t;
                *a = *a + t;
            }
        }
        len *= 2;
    }
}

/// Linear convolution of two real sequences via FFT.
pub fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let out_len = a.len() + b.len() - 1;
    let n = out_len.next_power_of_two();
    let mut fa = padded(a, n);
    let mut fb = padded(b, n);
    fft_in_place(&mut fa, false);
    fft_in_place(&mut fb, false);
    for (x, y) in fa.iter_mut().zip(&fb) {
        *x = *x * *y;
    }
    fft_in_place(&mut fa, true);
    let scale = 1.0 / n as f64;
    fa[..out_len].iter().map(|z| z.re * scale).collect()
}

/// `values` as complex numbers, zero-padded to length `n`.
pub fn padded(values: &[f64], n: usize) -> Vec<Complex> {
    let mut out = vec![Complex::default(); n];
    for (o, &v) in out.iter_mut().zip(values) {
        o.re = v;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convolution_matches_direct_sum() {
        let a = [0.5, 0.25, 0.0, 0.125, 0.125];
        let b = [0.1, 0.2, 0.7];
        let mut direct = vec![0.0; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                direct[i + j] += x * y;
            }
        }
        let fast = convolve(&a, &b);
        assert_eq!(fast.len(), direct.len());
        for (f, d) in fast.iter().zip(&direct) {
            assert!((f - d).abs() < 1e-15, "{f} vs {d}");
        }
    }

    #[test]
    fn forward_then_inverse_is_identity_and_power_works() {
        let v: Vec<f64> = (0..16).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut z = padded(&v, 16);
        fft_in_place(&mut z, false);
        // DC term is the plain sum.
        assert!((z[0].re - v.iter().sum::<f64>()).abs() < 1e-12);
        fft_in_place(&mut z, true);
        for (a, b) in z.iter().zip(&v) {
            assert!((a.re / 16.0 - b).abs() < 1e-14);
        }
        let w = Complex::new(0.6, 0.8).powu(5);
        // (0.6 + 0.8i) = e^{i theta}, theta = atan2(0.8, 0.6).
        let theta = 0.8f64.atan2(0.6) * 5.0;
        assert!((w.re - theta.cos()).abs() < 1e-14 && (w.im - theta.sin()).abs() < 1e-14);
    }
}
