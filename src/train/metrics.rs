//! Binary classification metrics, PNEUMONIA (label 1) being the positive class.
//!
//! Imports `serde` only; no sibling and no other engine module.

use serde::{Deserialize, Serialize};

/// Evaluation metrics. Ratios with a zero denominator are 0 (scikit-learn's `zero_division=0`);
/// `roc_auc` is `None` when only one class is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub accuracy: f64,
    /// Mean (unweighted) cross-entropy.
    pub loss: f64,
    pub precision: f64,
    /// Sensitivity.
    pub recall: f64,
    pub specificity: f64,
    pub f1: f64,
    pub roc_auc: Option<f64>,
    /// `[[tn, fp], [fn, tp]]`
    pub confusion: [[u64; 2]; 2],
    pub images: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Metrics {
    /// Metrics from a confusion matrix `[[tn, fp], [fn, tp]]`, a mean loss and an AUC.
    pub fn from_confusion(confusion: [[u64; 2]; 2], loss: f64, roc_auc: Option<f64>) -> Self {
        let [[tn, fp], [fn_, tp]] = confusion;
        let images = tn + fp + fn_ + tp;
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Self {
            accuracy: ratio(tn + tp, images),
            loss,
            precision,
            recall,
            specificity: ratio(tn, tn + fp),
            f1,
            roc_auc,
            confusion,
            images,
        }
    }

    /// Metrics from predicted pneumonia probabilities (threshold 0.5: `p > 0.5` is PNEUMONIA,
    /// the argmax of two logits) and labels. `scores` and `labels` must have equal lengths;
    /// extra entries of the longer one are ignored.
    pub fn from_scores(scores: &[f32], labels: &[u8], loss: f64) -> Self {
        let mut c = [[0u64; 2]; 2];
        for (s, l) in scores.iter().zip(labels) {
            let pred = usize::from(*s > 0.5);
            c[usize::from(*l == 1)][pred] += 1;
        }
        Self::from_confusion(c, loss, roc_auc(scores, labels))
    }
}

/// ROC-AUC by ranks (Mann–Whitney U): the probability that a random positive scores above a
/// random negative, ties counting one half (average ranks). `None` without both classes.
pub fn roc_auc(scores: &[f32], labels: &[u8]) -> Option<f64> {
    let n = scores.len().min(labels.len());
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0f64; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // 1-based ranks i+1..=j+1 share their average.
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    let pos = labels[..n].iter().filter(|l| **l == 1).count();
    let neg = n - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let rank_sum: f64 = (0..n).filter(|&k| labels[k] == 1).map(|k| ranks[k]).sum();
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_confusion_matrix() {
        // tn=50, fp=10, fn=5, tp=135
        let m = Metrics::from_confusion([[50, 10], [5, 135]], 0.3, None);
        assert_eq!(m.images, 200);
        assert!((m.accuracy - 185.0 / 200.0).abs() < 1e-12);
        assert!((m.precision - 135.0 / 145.0).abs() < 1e-12);
        assert!((m.recall - 135.0 / 140.0).abs() < 1e-12);
        assert!((m.specificity - 50.0 / 60.0).abs() < 1e-12);
        let (p, r) = (135.0 / 145.0, 135.0 / 140.0);
        assert!((m.f1 - 2.0 * p * r / (p + r)).abs() < 1e-12);
        // F1 = 2tp / (2tp + fp + fn)
        assert!((m.f1 - 270.0 / 285.0).abs() < 1e-12);
    }

    #[test]
    fn scores_are_thresholded_into_the_confusion_matrix() {
        let scores = [0.9, 0.2, 0.6, 0.4, 0.5, 0.7];
        let labels = [1, 0, 0, 1, 0, 1];
        let m = Metrics::from_scores(&scores, &labels, 0.0);
        // preds: 1,0,1,0,0,1 -> tn=2 (idx1,4), fp=1 (idx2), fn=1 (idx3), tp=2 (idx0,5)
        assert_eq!(m.confusion, [[2, 1], [1, 2]]);
    }

    #[test]
    fn auc_counts_pairs_with_half_ties() {
        // Positives 0.8, 0.4, 0.4; negatives 0.4, 0.1.
        // Pairs (pos > neg): 0.8>0.4, 0.8>0.1, 0.4>0.1, 0.4>0.1 = 4; ties 0.4=0.4 twice = 1.
        let auc = roc_auc(&[0.8, 0.4, 0.4, 0.4, 0.1], &[1, 1, 1, 0, 0]).unwrap();
        assert!((auc - 5.0 / 6.0).abs() < 1e-12, "{auc}");
        assert_eq!(roc_auc(&[0.1, 0.2], &[1, 1]), None);
        assert_eq!(roc_auc(&[0.1, 0.9], &[0, 1]), Some(1.0));
    }

    #[test]
    fn serialises_with_the_documented_field_names() {
        let m = Metrics::from_confusion([[1, 0], [0, 1]], 0.1, Some(1.0));
        let v = serde_json::to_value(&m).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "accuracy",
                "confusion",
                "f1",
                "images",
                "loss",
                "precision",
                "recall",
                "roc_auc",
                "specificity"
            ]
        );
        assert_eq!(v["confusion"], serde_json::json!([[1, 0], [0, 1]]));
    }
}
