//! Special functions the accountants need and Rust's std lacks on stable: log-gamma,
//! the complementary error function and its logarithm, the log of the standard normal CDF.
//! All accurate to a few ulps (tests compare with CPython's `math` and SciPy values).
//!
//! Imports `std` only; no sibling and no other engine module.

use std::f64::consts::{LN_2, PI};

/// ln(sqrt(pi)).
const LN_SQRT_PI: f64 = 0.572_364_942_924_700_1;
/// ln(sqrt(2 pi)).
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// ln(e^a + e^b) without overflow; -inf is the log of zero.
pub fn log_add(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// sin(pi x), reducing x exactly to [-1/2, 1/2] first so the result keeps full relative
/// precision near the zeros (integers) and for large |x|.
fn sin_pi(x: f64) -> f64 {
    let r = x - 2.0 * (x / 2.0).round(); // exact, in [-1, 1]
    if r > 0.5 {
        (PI * (1.0 - r)).sin()
    } else if r < -0.5 {
        -(PI * (1.0 + r)).sin()
    } else {
        (PI * r).sin()
    }
}

/// ln |Gamma(x)|; +inf at the poles 0, -1, -2, ...
///
/// Stirling's series for x >= 10, the recurrence Gamma(x) = Gamma(x + n) / (x (x+1) ... )
/// below that, and the reflection formula for x < 0.5. Absolute error ~1e-15 near the zeros
/// at 1 and 2, relative ~1e-15 elsewhere.
pub fn ln_gamma(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return f64::INFINITY;
    }
    if x < 0.5 {
        let s = sin_pi(x);
        if s == 0.0 {
            return f64::INFINITY;
        }
        return (PI / s.abs()).ln() - ln_gamma(1.0 - x);
    }
    if x >= 10.0 {
        return stirling(x);
    }
    let mut shifted = x;
    let mut prod = 1.0;
    while shifted < 10.0 {
        prod *= shifted;
        shifted += 1.0;
    }
    stirling(shifted) - prod.ln()
}

/// Stirling's series for ln Gamma(x), x >= 10 (truncation error < 1e-18).
fn stirling(x: f64) -> f64 {
    // B_{2k} / (2k (2k - 1)) for k = 1..8.
    const C: [f64; 8] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360_360.0,
        1.0 / 156.0,
        -3617.0 / 122_400.0,
    ];
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let mut series = 0.0;
    for c in C.iter().rev() {
        series = series * inv2 + c;
    }
    (x - 0.5) * x.ln() - x + LN_SQRT_2PI + series * inv
}

/// Below this the power series of erf is used, above it the continued fraction of erfc.
const ERFC_CF_THRESHOLD: f64 = 1.5;

/// erf(x) for 0 <= x < ERFC_CF_THRESHOLD by the all-positive series
/// erf(x) = 2x/sqrt(pi) e^{-x^2} sum_n (2x^2)^n / (1*3*...*(2n+1)), free of cancellation.
fn erf_series(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut n = 0.0;
    while term > sum * 1e-17 {
        n += 1.0;
        term *= two_x2 / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 * x / PI.sqrt() * (-x * x).exp() * sum
}

/// ln of the continued fraction K(x) with erfc(x) = e^{-x^2}/sqrt(pi) K(x), x >= 1.5:
/// K = 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))), evaluated by the modified Lentz method.
fn ln_erfc_cf(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for k in 1..500 {
        let a = k as f64 / 2.0;
        d = x + a * d;
        if d == 0.0 {
            d = TINY;
        }
        d = 1.0 / d;
        c = x + a / c;
        if c == 0.0 {
            c = TINY;
        }
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    -f.ln()
}

/// erfc(x) = 1 - erf(x), accurate in relative terms also in the far right tail (until it
/// underflows; use [`log_erfc`] there).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < ERFC_CF_THRESHOLD {
        return 1.0 - erf_series(x);
    }
    exp_minus_square(x) * (ln_erfc_cf(x) - LN_SQRT_PI).exp()
}

/// e^{-x^2} without the ~x^2 ulp error of exp(-(x*x)): split x = hi + lo with hi holding
/// few bits, so hi^2 is exact and the rest is small.
fn exp_minus_square(x: f64) -> f64 {
    let hi = (x * 16.0).trunc() / 16.0;
    let lo = x - hi;
    (-hi * hi).exp() * (-lo * (x + hi)).exp()
}

/// ln erfc(x) for all x, without underflow for large x.
pub fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    if x < 0.0 {
        // erfc(x) = 2 - erfc(-x) lies in (1, 2].
        return LN_2 + (-0.5 * erfc(-x)).ln_1p();
    }
    if x < ERFC_CF_THRESHOLD {
        return (1.0 - erf_series(x)).ln();
    }
    -x * x - LN_SQRT_PI + ln_erfc_cf(x)
}

/// ln Phi(z), the log of the standard normal CDF.
pub fn log_ndtr(z: f64) -> f64 {
    -LN_2 + log_erfc(-z / std::f64::consts::SQRT_2)
}

/// The z with ln Phi(z) = `log_p` (log_p < 0), by bisection to ~1e-13. Used only to place the
/// truncation points of the Gaussian tails.
pub fn norm_ppf_from_log(log_p: f64) -> f64 {
    let (mut lo, mut hi) = (-40.0_f64, 10.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if log_ndtr(mid) < log_p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-13 {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
#[allow(clippy::approx_constant)] // reference literals, e.g. lgamma(3) = ln 2
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) {
        let err = (got - want).abs() / want.abs().max(1e-300);
        assert!(
            err <= rel,
            "got {got:e}, want {want:e}, rel err {err:e} > {rel:e}"
        );
    }

    // Reference values: CPython 3.11 `math.lgamma`, `math.erfc`, and SciPy 1.x
    // `np.log(2) + special.log_ndtr(-x * 2**0.5)` for log erfc, printed with repr().
    #[test]
    fn ln_gamma_matches_reference() {
        for &(x, want) in LGAMMA_REF {
            let got = ln_gamma(x);
            let err = (got - want).abs();
            assert!(
                err <= 1e-14 * want.abs().max(1.0),
                "ln_gamma({x}) = {got}, want {want}"
            );
        }
        assert_eq!(ln_gamma(0.0), f64::INFINITY);
        assert_eq!(ln_gamma(-3.0), f64::INFINITY);
        // Zeros of ln Gamma: only absolute accuracy is meaningful there.
        assert!(ln_gamma(1.0).abs() < 1e-14);
        assert!(ln_gamma(2.0).abs() < 1e-14);
    }

    #[test]
    fn erfc_matches_reference() {
        for &(x, want) in ERFC_REF {
            close(erfc(x), want, 1e-14);
        }
    }

    #[test]
    fn log_erfc_matches_reference() {
        for &(x, want) in LOG_ERFC_REF {
            let got = log_erfc(x);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1e-2),
                "log_erfc({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn log_add_and_ppf() {
        close(log_add(2f64.ln(), 3f64.ln()), 5f64.ln(), 1e-15);
        assert_eq!(log_add(f64::NEG_INFINITY, 1.5), 1.5);
        close(log_add(1000.0, 1000.0), 1000.0 + LN_2, 1e-15);
        // Phi^{-1}(0.025) = -1.959963984540054 (scipy.stats.norm.ppf).
        close(norm_ppf_from_log(0.025f64.ln()), -1.959963984540054, 1e-12);
    }

    include!("special_ref.rs");
}
