//! Loss-threshold membership inference (Yeom et al. 2018): the attacker calls an example a
//! training member when the model's loss on it is low. Given losses on known members and
//! non-members this measures how well that works: ROC-AUC and the membership advantage
//! max_t (TPR - FPR). AUC 0.5 / advantage 0 means the attack learns nothing.
//!
//! Imports `super::error` only; nothing outside `privacy`.

use super::error::{PrivacyError, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// P(member loss < non-member loss) + 0.5 P(equal) (Mann-Whitney U / (m n)).
    pub auc: f64,
    /// max over thresholds t of TPR - FPR, predicting "member" when loss <= t.
    pub advantage: f64,
    pub members: usize,
    pub non_members: usize,
    /// The smallest loss threshold reaching `advantage`.
    pub threshold: f64,
}

fn checked(set: &'static str, losses: &[impl Copy + Into<f64>]) -> Result<Vec<f64>> {
    if losses.is_empty() {
        return Err(PrivacyError::EmptyLosses(set));
    }
    let mut out = Vec::with_capacity(losses.len());
    for (index, &l) in losses.iter().enumerate() {
        let value: f64 = l.into();
        if !value.is_finite() {
            return Err(PrivacyError::NonFiniteLoss { set, index, value });
        }
        out.push(value);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Audits a loss-threshold attack from per-example losses (f32 or f64) of training members
/// and of held-out non-members.
pub fn loss_threshold_audit<T: Copy + Into<f64>>(
    members: &[T],
    non_members: &[T],
) -> Result<AuditReport> {
    let m = checked("member", members)?;
    let n = checked("non-member", non_members)?;
    let (mf, nf) = (m.len() as f64, n.len() as f64);

    // AUC: for each member, non-members with a strictly larger loss count 1, equal ones 0.5.
    let mut u = 0.0;
    for &x in &m {
        let below_or_eq = n.partition_point(|&y| y <= x);
        let below = n.partition_point(|&y| y < x);
        u += (n.len() - below_or_eq) as f64 + 0.5 * (below_or_eq - below) as f64;
    }
    let auc = u / (mf * nf);

    // Advantage: sweep thresholds over all distinct losses in increasing order.
    let (mut i, mut j) = (0, 0);
    let mut best = (f64::NEG_INFINITY, f64::NAN);
    while i < m.len() || j < n.len() {
        let t = match (m.get(i), n.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        while i < m.len() && m[i] <= t {
            i += 1;
        }
        while j < n.len() && n[j] <= t {
            j += 1;
        }
        let adv = i as f64 / mf - j as f64 / nf;
        if adv > best.0 {
            best = (adv, t);
        }
    }
    Ok(AuditReport {
        auc,
        advantage: best.0,
        members: m.len(),
        non_members: n.len(),
        threshold: best.1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_separation() {
        let r = loss_threshold_audit(&[0.1f32, 0.2, 0.3], &[0.5f32, 0.9]).unwrap();
        assert_eq!(r.auc, 1.0);
        assert_eq!(r.advantage, 1.0);
        assert!((r.threshold - 0.3).abs() < 1e-7);
        assert_eq!((r.members, r.non_members), (3, 2));
    }

    #[test]
    fn reversed_separation_has_zero_advantage() {
        // Members have the higher losses: AUC 0; the best threshold attack is "nobody is a
        // member" or "everybody is", advantage 0.
        let r = loss_threshold_audit(&[5.0, 6.0], &[1.0, 2.0]).unwrap();
        assert_eq!(r.auc, 0.0);
        assert_eq!(r.advantage, 0.0);
    }

    #[test]
    fn hand_computed_with_ties() {
        // members {1, 2, 2, 4}, non-members {2, 3, 5}.
        // Pairs (member < non-member = 1, tie = 0.5):
        //   1: vs 2,3,5 -> 3;  2: vs 2 tie .5, 3, 5 -> 2.5 (twice);  4: vs 5 -> 1.
        //   U = 3 + 2.5 + 2.5 + 1 = 9, AUC = 9 / 12 = 0.75.
        // Thresholds: t=1: 1/4 - 0 = .25; t=2: 3/4 - 1/3 = .4167; t=3: 3/4 - 2/3;
        //   t=4: 1 - 2/3 = .3333; t=5: 0.  Max 5/12 at t=2.
        let r = loss_threshold_audit(&[1.0, 2.0, 2.0, 4.0], &[2.0, 3.0, 5.0]).unwrap();
        assert!((r.auc - 0.75).abs() < 1e-15);
        assert!((r.advantage - 5.0 / 12.0).abs() < 1e-15);
        assert_eq!(r.threshold, 2.0);
    }

    #[test]
    fn identical_distributions_give_half() {
        let l = [0.3, 0.7, 0.7, 1.2];
        let r = loss_threshold_audit(&l, &l).unwrap();
        assert!((r.auc - 0.5).abs() < 1e-15);
        assert_eq!(r.advantage, 0.0);
    }

    #[test]
    fn auc_matches_pairwise_definition() {
        // Deterministic pseudo-random losses with many ties; compare with the O(mn) count.
        let mk = |seed: u64, len: usize| -> Vec<f64> {
            let mut s = seed;
            (0..len)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 33) % 17) as f64 / 4.0
                })
                .collect()
        };
        let (m, n) = (mk(1, 57), mk(2, 43));
        let mut u = 0.0;
        for x in &m {
            for y in &n {
                u += if x < y {
                    1.0
                } else if x == y {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let r = loss_threshold_audit(&m, &n).unwrap();
        assert!((r.auc - u / (57.0 * 43.0)).abs() < 1e-14);
        // Advantage by brute force over every candidate threshold.
        let mut best: f64 = 0.0;
        for t in m.iter().chain(&n) {
            let tpr = m.iter().filter(|&&x| x <= *t).count() as f64 / 57.0;
            let fpr = n.iter().filter(|&&x| x <= *t).count() as f64 / 43.0;
            best = best.max(tpr - fpr);
        }
        assert!((r.advantage - best).abs() < 1e-15);
    }

    #[test]
    fn bad_input_is_rejected() {
        let empty: [f64; 0] = [];
        assert_eq!(
            loss_threshold_audit(&empty, &[1.0]),
            Err(PrivacyError::EmptyLosses("member"))
        );
        assert_eq!(
            loss_threshold_audit(&[1.0], &empty),
            Err(PrivacyError::EmptyLosses("non-member"))
        );
        let err = loss_threshold_audit(&[1.0, f64::NAN], &[1.0]).unwrap_err();
        assert!(matches!(
            err,
            PrivacyError::NonFiniteLoss {
                set: "member",
                index: 1,
                ..
            }
        ));
    }

    #[test]
    fn report_json_keys() {
        let r = loss_threshold_audit(&[0.1], &[0.2]).unwrap();
        let v: serde_json::Value = serde_json::to_value(r).unwrap();
        for k in ["auc", "advantage", "members", "non_members", "threshold"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }
}
