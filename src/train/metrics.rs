//! Classification metrics. Two classes: the binary figures with PNEUMONIA (label 1) the
//! positive class, as always. Any number: the confusion matrix, macro F1 and one-vs-rest
//! figures per class.
//!
//! Imports `serde` only; no sibling and no other engine module.

use serde::{Deserialize, Serialize};

/// One class's one-vs-rest figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub specificity: f64,
    pub f1: f64,
    /// `None` when the class is absent or alone.
    pub roc_auc: Option<f64>,
}

/// Evaluation metrics. Ratios with a zero denominator are 0 (scikit-learn's `zero_division=0`);
/// `roc_auc` is `None` when only one class is present. With two classes the flat figures are
/// PNEUMONIA's (label 1); with more, the macro averages of `per_class` (`roc_auc` over the
/// classes that have one).
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
    /// Rows true class, columns predicted, in label order: `[[tn, fp], [fn, tp]]` for two.
    pub confusion: Vec<Vec<u64>>,
    pub images: u64,
    /// Class names in label order.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Mean F1 over the classes (each one-vs-rest).
    #[serde(default)]
    pub macro_f1: f64,
    #[serde(default)]
    pub per_class: Vec<ClassMetrics>,
}

fn f1_of(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// One-vs-rest figures of class `k` from a confusion matrix (rows true, columns predicted).
fn one_vs_rest(confusion: &[Vec<u64>], k: usize) -> (f64, f64, f64, f64) {
    let total: u64 = confusion.iter().flatten().sum();
    let tp = confusion[k][k];
    let row: u64 = confusion[k].iter().sum();
    let col: u64 = confusion.iter().map(|r| r[k]).sum();
    let (fn_, fp) = (row - tp, col - tp);
    let tn = total - tp - fn_ - fp;
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    (
        precision,
        recall,
        ratio(tn, tn + fp),
        f1_of(precision, recall),
    )
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Metrics {
    /// Metrics from a binary confusion matrix `[[tn, fp], [fn, tp]]`, a mean loss and an AUC
    /// (classes NORMAL, PNEUMONIA; no per-class AUC).
    pub fn from_confusion(confusion: [[u64; 2]; 2], loss: f64, roc_auc: Option<f64>) -> Self {
        let [[tn, fp], [fn_, tp]] = confusion;
        let images = tn + fp + fn_ + tp;
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let mut m = Self {
            accuracy: ratio(tn + tp, images),
            loss,
            precision,
            recall,
            specificity: ratio(tn, tn + fp),
            f1: f1_of(precision, recall),
            roc_auc,
            confusion: confusion.iter().map(|r| r.to_vec()).collect(),
            images,
            classes: vec![],
            macro_f1: 0.0,
            per_class: vec![],
        };
        m.set_per_class(
            vec!["NORMAL".into(), "PNEUMONIA".into()],
            vec![roc_auc, roc_auc],
        );
        m
    }

    /// Fills `classes`, `per_class` and `macro_f1` from the confusion matrix and the per-class
    /// AUCs.
    fn set_per_class(&mut self, classes: Vec<String>, aucs: Vec<Option<f64>>) {
        self.per_class = classes
            .iter()
            .zip(aucs)
            .enumerate()
            .map(|(k, (class, roc_auc))| {
                let (precision, recall, specificity, f1) = one_vs_rest(&self.confusion, k);
                ClassMetrics {
                    class: class.clone(),
                    precision,
                    recall,
                    specificity,
                    f1,
                    roc_auc,
                }
            })
            .collect();
        self.macro_f1 =
            self.per_class.iter().map(|c| c.f1).sum::<f64>() / self.per_class.len().max(1) as f64;
        self.classes = classes;
    }

    /// Metrics from class probabilities (one row per image, in label order) and labels for
    /// `classes`. Two classes: exactly [`Metrics::from_scores`] on the PNEUMONIA column `p1`
    /// (`scores`), with the per-class fields added. More: the prediction is the most probable
    /// class (the first on a tie), the flat figures macro averages.
    pub fn from_probabilities(
        probabilities: &[Vec<f32>],
        scores: &[f32],
        labels: &[u8],
        loss: f64,
        classes: &[String],
    ) -> Self {
        let k = classes.len();
        let aucs: Vec<Option<f64>> = (0..k)
            .map(|c| {
                let col: Vec<f32> = probabilities.iter().map(|p| p[c]).collect();
                let is: Vec<u8> = labels
                    .iter()
                    .map(|&l| u8::from(usize::from(l) == c))
                    .collect();
                roc_auc(&col, &is)
            })
            .collect();
        if k == 2 {
            let mut m = Self::from_scores(scores, labels, loss);
            // Class 0's AUC from its own column: the same ranking reversed.
            m.set_per_class(classes.to_vec(), vec![aucs[0], m.roc_auc]);
            return m;
        }
        let mut confusion = vec![vec![0u64; k]; k];
        for (p, &l) in probabilities.iter().zip(labels) {
            let pred = (0..k).fold(0, |best, c| if p[c] > p[best] { c } else { best });
            confusion[usize::from(l)][pred] += 1;
        }
        let images: u64 = confusion.iter().flatten().sum();
        let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
        let mut m = Self {
            accuracy: ratio(correct, images),
            loss,
            precision: 0.0,
            recall: 0.0,
            specificity: 0.0,
            f1: 0.0,
            roc_auc: None,
            confusion,
            images,
            classes: vec![],
            macro_f1: 0.0,
            per_class: vec![],
        };
        m.set_per_class(classes.to_vec(), aucs);
        let n = k as f64;
        m.precision = m.per_class.iter().map(|c| c.precision).sum::<f64>() / n;
        m.recall = m.per_class.iter().map(|c| c.recall).sum::<f64>() / n;
        m.specificity = m.per_class.iter().map(|c| c.specificity).sum::<f64>() / n;
        m.f1 = m.macro_f1;
        let defined: Vec<f64> = m.per_class.iter().filter_map(|c| c.roc_auc).collect();
        m.roc_auc =
            (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
        m
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
        assert_eq!(m.classes, ["NORMAL", "PNEUMONIA"]);
        assert_eq!(m.per_class[1].f1, m.f1);
        assert_eq!(m.per_class[0].recall, m.specificity);
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
                "classes",
                "confusion",
                "f1",
                "images",
                "loss",
                "macro_f1",
                "per_class",
                "precision",
                "recall",
                "roc_auc",
                "specificity"
            ]
        );
        assert_eq!(v["confusion"], serde_json::json!([[1, 0], [0, 1]]));
    }
}

#[cfg(test)]
mod n_class_tests {
    use super::*;

    #[test]
    fn three_classes_by_hand() {
        let classes: Vec<String> = ["cat", "dog", "fox"].map(String::from).to_vec();
        // Predictions (argmax): cat, cat, dog, fox, fox, dog; truths: cat, dog, dog, fox, cat, fox.
        let p = |a: f32, b: f32, c: f32| vec![a, b, c];
        let probs = [
            p(0.8, 0.1, 0.1),
            p(0.5, 0.4, 0.1),
            p(0.2, 0.7, 0.1),
            p(0.1, 0.2, 0.7),
            p(0.3, 0.1, 0.6),
            p(0.1, 0.5, 0.4),
        ];
        let labels = [0u8, 1, 1, 2, 0, 2];
        let m = Metrics::from_probabilities(&probs, &[], &labels, 0.5, &classes);
        assert_eq!(m.confusion, [[1, 0, 1], [1, 1, 0], [0, 1, 1]]);
        assert_eq!(m.images, 6);
        assert!((m.accuracy - 0.5).abs() < 1e-12);
        // Every class: tp 1, fp 1, fn 1 -> precision = recall = f1 = 1/2, specificity 3/4.
        for c in &m.per_class {
            assert!((c.precision - 0.5).abs() < 1e-12, "{c:?}");
            assert!((c.specificity - 0.75).abs() < 1e-12, "{c:?}");
        }
        assert!((m.macro_f1 - 0.5).abs() < 1e-12);
        // cat's column: positives 0.8, 0.3; negatives 0.5, 0.2, 0.1, 0.1 -> 7 of 8 pairs.
        assert!((m.per_class[0].roc_auc.unwrap() - 7.0 / 8.0).abs() < 1e-12);
        assert_eq!(m.classes, classes);
    }
}
