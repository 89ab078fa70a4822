//! A lower bound on epsilon from one training run (Steinke, Nasr and Jagielski 2023, "Privacy
//! auditing with one (1) training run", arXiv:2305.08846).
//!
//! m canaries are each included in the training set independently with probability 1/2. After
//! training, an auditor that sees only the model (and the canaries' definitions) guesses "in" for
//! some canaries, "out" for others, and abstains on the rest. If training is (eps, delta)-DP,
//! the number W of correct guesses among r guesses satisfies (their Theorem 3)
//!
//! ```text
//! P[W >= v] <= f(v) + 2 m delta max_{i = 1..v} (f(v - i) - f(v)) / i,
//! f(v) = P[Binomial(r, e^eps / (1 + e^eps)) >= v],
//! ```
//!
//! so observing v correct guesses rejects "the run is eps-DP" at level alpha when that bound is
//! below alpha. The lower bound is the largest eps rejected at level alpha (found by
//! bisection): with probability at least 1 - alpha over the canaries' inclusion coins, a run
//! that is truly (eps, delta)-DP gives a bound below eps. With delta = 0 this is the pure-DP
//! statement (W is stochastically dominated by the binomial); the delta term is the paper's,
//! as in their Algorithm 2 (`p_value_DP_audit`), and it is included, not ignored.
//!
//! How the guesses are chosen matters for honesty: the count must be fixed before looking at
//! the inclusion choices, or the multiple choice must be paid for. [`audit_canaries`] ranks
//! canaries by a score, guesses "in" for the k highest and "out" for the k lowest, for each k
//! in a small plan fixed in advance ([`GUESS_FRACTIONS`] of m), tests each at alpha / (number
//! of plan entries) (Bonferroni) and reports the largest bound: the union bound keeps the
//! overall confidence at 1 - alpha.
//!
//! Imports `super::{error, special}` only; nothing outside `privacy`.

use super::error::{PrivacyError, Result};
use super::special::{ln_gamma, log_add};
use serde::{Deserialize, Serialize};

/// Confidence of the reported lower bound.
pub const CONFIDENCE: f64 = 0.95;

/// The guess counts [`audit_canaries`] tries, as fractions r / m of the canaries guessed on
/// (half "in", half "out"); fixed in advance, each tested at (1 - [`CONFIDENCE`]) / 4.
pub const GUESS_FRACTIONS: [f64; 4] = [0.1, 0.2, 0.5, 1.0];

/// ln P[Binomial(r, p) >= v] with ln p = `ln_p` and ln(1 - p) = `ln_1mp`, summed in log space
/// (no underflow for large r or extreme p). -inf when v > r.
pub fn ln_binomial_tail(r: u64, v: u64, ln_p: f64, ln_1mp: f64) -> f64 {
    if v == 0 {
        return 0.0;
    }
    let mut acc = f64::NEG_INFINITY;
    for j in v..=r {
        acc = log_add(acc, ln_binomial_pmf(r, j, ln_p, ln_1mp));
    }
    acc
}

/// ln P[Binomial(r, p) = j].
fn ln_binomial_pmf(r: u64, j: u64, ln_p: f64, ln_1mp: f64) -> f64 {
    let (rf, jf) = (r as f64, j as f64);
    let ln_choose = ln_gamma(rf + 1.0) - ln_gamma(jf + 1.0) - ln_gamma(rf - jf + 1.0);
    // 0 * ln 0 is 0: P = 1 exactly at j = r when p = 1, and so on.
    let a = if j == 0 { 0.0 } else { jf * ln_p };
    let b = if j == r { 0.0 } else { (rf - jf) * ln_1mp };
    ln_choose + a + b
}

/// ln p and ln(1 - p) for p = e^eps / (1 + e^eps), the accuracy of eps-DP randomised response.
fn ln_guess_accuracy(eps: f64) -> (f64, f64) {
    let s = (-eps).exp().ln_1p(); // ln(1 + e^-eps)
    (-s, -eps - s)
}

/// The paper's p-value: an upper bound on P[W >= v] for an (eps, delta)-DP run with m canaries
/// and r guesses (their Algorithm 2, `p_value_DP_audit`). At most 1.
pub fn p_value(m: u64, r: u64, v: u64, eps: f64, delta: f64) -> Result<f64> {
    check_counts(m, r, v)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(PrivacyError::AuditEpsilon(eps));
    }
    if !(0.0..1.0).contains(&delta) {
        return Err(PrivacyError::Delta(delta));
    }
    let (ln_p, ln_1mp) = ln_guess_accuracy(eps);
    let beta = ln_binomial_tail(r, v, ln_p, ln_1mp).exp();
    let mut alpha: f64 = 0.0;
    if delta > 0.0 {
        // sum = P[v > Binomial(r, p) >= v - i]; alpha = max_i sum / i.
        let mut sum = 0.0;
        for i in 1..=v {
            sum += ln_binomial_pmf(r, v - i, ln_p, ln_1mp).exp();
            alpha = alpha.max(sum / i as f64);
        }
    }
    Ok((beta + alpha * delta * 2.0 * m as f64).min(1.0))
}

fn check_counts(m: u64, r: u64, v: u64) -> Result<()> {
    if v <= r && r <= m {
        Ok(())
    } else {
        Err(PrivacyError::CanaryCounts {
            canaries: m,
            guesses: r,
            correct: v,
        })
    }
}

/// The largest eps that v correct guesses out of r (m canaries) reject at level `alpha`
/// (p-value below alpha): a lower bound on the epsilon of an (eps, delta)-DP run, holding with
/// probability 1 - alpha. 0 when nothing is rejected (v at or below what chance gives).
pub fn epsilon_lower_bound(m: u64, r: u64, v: u64, delta: f64, alpha: f64) -> Result<f64> {
    check_counts(m, r, v)?;
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(PrivacyError::AuditLevel(alpha));
    }
    // Invariant: p_value(lo) < alpha <= p_value(hi).
    let mut lo = 0.0;
    if p_value(m, r, v, lo, delta)? >= alpha {
        return Ok(0.0);
    }
    let mut hi = 1.0;
    while p_value(m, r, v, hi, delta)? < alpha {
        lo = hi;
        hi *= 2.0;
        // v = r correct guesses reject eps up to about ln(r / ln(1/alpha)); a finite r never
        // rejects an eps this large, but stay finite whatever happens.
        if hi > 1e4 {
            return Ok(lo);
        }
    }
    while hi - lo > 1e-12 * hi.max(1.0) {
        let mid = 0.5 * (lo + hi);
        if p_value(m, r, v, mid, delta)? < alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The result of [`audit_canaries`]: the best of the planned guess counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryAuditReport {
    /// Lower bound on epsilon at [`CONFIDENCE`] (Bonferroni over the plan included).
    pub epsilon_lower_bound: f64,
    /// Canaries scored (m).
    pub canaries: usize,
    /// Guesses made for the reported bound (r): half "in", half "out".
    pub guesses: usize,
    /// Correct guesses among them (v).
    pub correct: usize,
    /// The delta the bound assumes the run has.
    pub delta: f64,
    /// Confidence of the bound.
    pub confidence: f64,
    /// Every guess count tried, in plan order.
    pub tried: Vec<GuessOutcome>,
}

/// One planned guess count and what it gave.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuessOutcome {
    pub guesses: usize,
    pub correct: usize,
    /// Its bound at level (1 - confidence) / (plan entries).
    pub epsilon_lower_bound: f64,
}

/// The guess counts (r, even) tried for m canaries: [`GUESS_FRACTIONS`] of m, rounded down to
/// an even number, at least 2, without repeats.
pub fn guess_plan(m: usize) -> Vec<usize> {
    let mut plan: Vec<usize> = Vec::new();
    for f in GUESS_FRACTIONS {
        let k = ((f * m as f64 / 2.0).floor() as usize).max(1);
        if 2 * k <= m && !plan.contains(&(2 * k)) {
            plan.push(2 * k);
        }
    }
    plan
}

/// Scores every canary's membership (higher: more likely included, e.g. minus its loss), then
/// for each planned count r guesses "in" for the r/2 highest scores and "out" for the r/2 lowest
/// (ties broken by canary order, which is independent of inclusion), and returns the best bound,
/// each tested at level (1 - [`CONFIDENCE`]) / plan length.
///
/// `included[i]` is canary i's inclusion choice; `delta` the run's delta (0 for a pure-DP
/// question; use the delta its epsilon was stated at).
pub fn audit_canaries(scores: &[f64], included: &[bool], delta: f64) -> Result<CanaryAuditReport> {
    let m = scores.len();
    if m < 2 || included.len() != m {
        return Err(PrivacyError::CanaryScores {
            scores: m,
            choices: included.len(),
        });
    }
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(PrivacyError::NonFiniteScore { index, value });
    }
    let mut order: Vec<usize> = (0..m).collect();
    // Highest score first; a stable sort keeps canary order among ties.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let plan = guess_plan(m);
    let alpha = (1.0 - CONFIDENCE) / plan.len() as f64;
    let mut tried = Vec::with_capacity(plan.len());
    for &r in &plan {
        let k = r / 2;
        let hits_in = order[..k].iter().filter(|&&i| included[i]).count();
        let hits_out = order[m - k..].iter().filter(|&&i| !included[i]).count();
        let correct = hits_in + hits_out;
        let bound = epsilon_lower_bound(m as u64, r as u64, correct as u64, delta, alpha)?;
        tried.push(GuessOutcome {
            guesses: r,
            correct,
            epsilon_lower_bound: bound,
        });
    }
    // The largest bound; on equal bounds the first (fewest guesses) in plan order.
    let best = tried
        .iter()
        .copied()
        .fold(None::<GuessOutcome>, |acc, t| match acc {
            Some(a) if a.epsilon_lower_bound >= t.epsilon_lower_bound => Some(a),
            _ => Some(t),
        })
        .ok_or(PrivacyError::CanaryScores {
            scores: m,
            choices: included.len(),
        })?;
    Ok(CanaryAuditReport {
        epsilon_lower_bound: best.epsilon_lower_bound,
        canaries: m,
        guesses: best.guesses,
        correct: best.correct,
        delta,
        confidence: CONFIDENCE,
        tried,
    })
}

#[cfg(test)]
mod tests {
    //! Reference numbers come from SciPy 1.17 with the paper's own p-value (their Algorithm 2)
    //! and a root finder to full precision; produced once by this script (`pip install scipy`,
    //! then `python3 script.py`), so the tests never need Python:
    //!
    //! ```text
    //! import math, scipy.stats as st, scipy.optimize as so
    //! def p_value(m, r, v, eps, delta):
    //!     q = 1 / (1 + math.exp(-eps))
    //!     beta = st.binom.sf(v - 1, r, q)
    //!     alpha = s = 0.0
    //!     for i in range(1, v + 1):
    //!         s += st.binom.pmf(v - i, r, q)
    //!         alpha = max(alpha, s / i)
    //!     return min(beta + alpha * delta * 2 * m, 1.0)
    //! def bound(m, r, v, delta, a):
    //!     if p_value(m, r, v, 0.0, delta) >= a: return 0.0
    //!     hi = 1.0
    //!     while p_value(m, r, v, hi, delta) < a: hi *= 2
    //!     return so.brentq(lambda e: p_value(m, r, v, e, delta) - a, 0.0, hi, xtol=1e-14, rtol=1e-14)
    //! print(repr(st.binom.logsf(59, 100, 0.5)), repr(st.binom.logsf(900, 1000, 0.7)))
    //! for args in [(1000, 100, 80, 0.5, 0), (1000, 100, 80, 0.5, 1e-5), (200, 20, 20, 1.0, 0),
    //!              (200, 100, 95, 2.0, 1e-5), (10000, 10000, 5500, 0.3, 1e-6)]:
    //!     print(args, repr(p_value(*args)))
    //! for args in [(1000, 100, 80, 0, 0.05), (1000, 100, 80, 1e-5, 0.05), (200, 20, 20, 0, 0.05),
    //!              (200, 100, 95, 1e-5, 0.0125), (10000, 10000, 5500, 1e-6, 0.05),
    //!              (100, 100, 100, 1e-5, 0.0125), (1000, 1000, 1000, 0.0, 0.05)]:
    //!     print(args, repr(bound(*args)))
    //! ```
    use super::*;

    /// `st.binom.logsf(59, 100, 0.5)` and `st.binom.logsf(900, 1000, 0.7)`.
    const REF_LOGSF_100_60: f64 = -3.559819203446905;
    const REF_LOGSF_1000_901: f64 = -120.54794610577628;
    /// (m, r, v, eps, delta, p_value).
    const REF_P_VALUES: &[(u64, u64, u64, f64, f64, f64)] = &[
        (1000, 100, 80, 0.5, 0.0, 0.00010313521027892553),
        (1000, 100, 80, 0.5, 1e-5, 0.0008695565413869828),
        (200, 20, 20, 1.0, 0.0, 0.001901268944199412),
        (200, 100, 95, 2.0, 1e-5, 0.016446381931155937),
        (10000, 10000, 5500, 0.3, 1e-6, 0.9999996159777435),
    ];
    /// (m, r, v, delta, alpha, lower bound).
    const REF_BOUNDS: &[(u64, u64, u64, f64, f64, f64)] = &[
        (1000, 100, 80, 0.0, 0.05, 0.9583920452920994),
        (1000, 100, 80, 1e-5, 0.05, 0.9553185349552525),
        (200, 20, 20, 0.0, 0.05, 1.822715606502898),
        (200, 100, 95, 1e-5, 0.0125, 1.9630387016474713),
        (10000, 10000, 5500, 1e-6, 0.05, 0.1673941406589308),
        (100, 100, 100, 1e-5, 0.0125, 3.100205037316048),
        (1000, 1000, 1000, 0.0, 0.05, 5.8090683385465995),
    ];

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn binomial_tail_matches_scipy() {
        let half = 0.5f64.ln();
        let t = ln_binomial_tail(100, 60, half, half);
        assert!(close(t, REF_LOGSF_100_60, 1e-12), "{t}");
        let t = ln_binomial_tail(1000, 901, 0.7f64.ln(), 0.3f64.ln());
        assert!(close(t, REF_LOGSF_1000_901, 1e-10), "{t}");
        assert_eq!(ln_binomial_tail(10, 0, half, half), 0.0);
        assert_eq!(ln_binomial_tail(10, 11, half, half), f64::NEG_INFINITY);
    }

    #[test]
    fn p_value_matches_the_papers_algorithm() {
        for &(m, r, v, eps, delta, want) in REF_P_VALUES {
            let got = p_value(m, r, v, eps, delta).unwrap();
            assert!(
                close(got, want, 1e-10),
                "{m} {r} {v} {eps} {delta}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn lower_bound_matches_the_reference() {
        for &(m, r, v, delta, alpha, want) in REF_BOUNDS {
            let got = epsilon_lower_bound(m, r, v, delta, alpha).unwrap();
            assert!(
                (got - want).abs() < 1e-9,
                "{m} {r} {v} {delta} {alpha}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn lower_bound_grows_with_correct_guesses() {
        for delta in [0.0, 1e-5] {
            let mut last = 0.0;
            let mut grew = 0;
            for v in 0..=200 {
                let b = epsilon_lower_bound(1000, 200, v, delta, 0.05).unwrap();
                assert!(b >= last, "v {v}: {b} < {last}");
                grew += usize::from(b > last);
                last = b;
            }
            assert!(
                grew > 50,
                "the bound should rise over most counts, rose {grew} times"
            );
        }
    }

    #[test]
    fn guesses_at_chance_give_zero() {
        // Half right is exactly chance; a little above chance is not significant either.
        for (r, v) in [(100, 50), (100, 55), (1000, 500), (2, 1), (10, 0)] {
            assert_eq!(
                epsilon_lower_bound(1000, r, v, 1e-5, 0.05).unwrap(),
                0.0,
                "{r} {v}"
            );
        }
    }

    #[test]
    fn delta_only_lowers_the_bound() {
        let pure = epsilon_lower_bound(1000, 200, 170, 0.0, 0.05).unwrap();
        let approx = epsilon_lower_bound(1000, 200, 170, 1e-5, 0.05).unwrap();
        assert!(approx <= pure && approx > 0.9 * pure, "{approx} vs {pure}");
    }

    #[test]
    fn bad_counts_are_errors() {
        assert!(matches!(
            epsilon_lower_bound(10, 20, 5, 0.0, 0.05),
            Err(PrivacyError::CanaryCounts { .. })
        ));
        assert!(epsilon_lower_bound(10, 10, 11, 0.0, 0.05).is_err());
        assert!(epsilon_lower_bound(10, 10, 5, 0.0, 1.5).is_err());
        assert!(p_value(10, 10, 5, f64::NAN, 0.0).is_err());
        assert!(p_value(10, 10, 5, 1.0, 1.0).is_err());
        assert!(audit_canaries(&[1.0], &[true], 0.0).is_err());
        assert!(audit_canaries(&[1.0, 2.0], &[true], 0.0).is_err());
        assert!(matches!(
            audit_canaries(&[1.0, f64::NAN], &[true, false], 0.0),
            Err(PrivacyError::NonFiniteScore { index: 1, .. })
        ));
    }

    #[test]
    fn plan_is_fixed_fractions_of_the_canaries() {
        assert_eq!(guess_plan(1000), vec![100, 200, 500, 1000]);
        assert_eq!(guess_plan(101), vec![10, 20, 50, 100]);
        assert_eq!(guess_plan(4), vec![2, 4]);
        assert_eq!(guess_plan(2), vec![2]);
    }

    #[test]
    fn a_perfect_scorer_is_caught_and_a_blind_one_is_not() {
        // 400 canaries, every other one included.
        let included: Vec<bool> = (0..400).map(|i| i % 2 == 0).collect();
        let perfect: Vec<f64> = included.iter().map(|&b| f64::from(u8::from(b))).collect();
        let r = audit_canaries(&perfect, &included, 1e-5).unwrap();
        assert_eq!((r.guesses, r.correct), (400, 400));
        // All 400 right at level 0.05 / 4: P[Bin(400, p) = 400] = p^400 = 0.0125.
        let want = epsilon_lower_bound(400, 400, 400, 1e-5, 0.0125).unwrap();
        assert_eq!(r.epsilon_lower_bound, want);
        assert!(r.epsilon_lower_bound > 3.0, "{r:?}");
        assert_eq!(r.tried.len(), 4);
        // Scores that ignore membership (a constant) guess in canary order: half right.
        let blind = vec![0.5; 400];
        let r = audit_canaries(&blind, &included, 1e-5).unwrap();
        assert_eq!(r.epsilon_lower_bound, 0.0, "{r:?}");
        // Reversed scores are always wrong.
        let reversed: Vec<f64> = perfect.iter().map(|s| -s).collect();
        let r = audit_canaries(&reversed, &included, 1e-5).unwrap();
        assert_eq!(r.epsilon_lower_bound, 0.0);
        assert!(r.tried.iter().all(|t| t.correct == 0));
    }

    #[test]
    fn report_json_keys() {
        let r = audit_canaries(&[1.0, 0.0], &[true, false], 0.0).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "epsilon_lower_bound",
            "canaries",
            "guesses",
            "correct",
            "delta",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }
}
