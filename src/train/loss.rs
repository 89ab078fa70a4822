//! Softmax cross-entropy over the classes, optionally class-weighted (the Kermany data are ~3:1
//! pneumonia:normal).
//!
//! Imports `super::error` and candle only; nothing outside `train`.

use super::error::{Result, TrainError};
use candle_core::{DType, Tensor};

/// Per-class loss weights in label order (`[normal, pneumonia]` for two classes), each finite
/// and positive, at least two.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassWeights(Vec<f32>);

impl ClassWeights {
    /// Two-class weights.
    pub fn new(normal: f32, pneumonia: f32) -> Result<Self> {
        Self::of(vec![normal, pneumonia])
    }
    /// One weight per class, in label order.
    pub fn of(weights: Vec<f32>) -> Result<Self> {
        if weights.len() < 2 {
            return Err(TrainError::Config(format!(
                "{} class weight(s): expected one per class, at least two",
                weights.len()
            )));
        }
        for (i, &w) in weights.iter().enumerate() {
            if !(w.is_finite() && w > 0.0) {
                let name = match (weights.len(), i) {
                    (2, 0) => "normal".to_string(),
                    (2, _) => "pneumonia".to_string(),
                    _ => format!("class {i}"),
                };
                return Err(TrainError::Config(format!(
                    "class weight for {name} is {w}: expected a positive finite number"
                )));
            }
        }
        Ok(Self(weights))
    }
    /// Inverse-frequency weights `n / (k n_c)` from the counts of `k` classes (scikit-learn's
    /// "balanced"); a missing class gets weight 1.
    pub fn balanced(counts: &[usize]) -> Self {
        let n = counts.iter().sum::<usize>() as f32;
        let k = counts.len() as f32;
        Self(
            counts
                .iter()
                .map(|&c| if c == 0 { 1.0 } else { n / (k * c as f32) })
                .collect(),
        )
    }
    pub fn get(&self) -> &[f32] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Never true: there are at least two weights.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where a run's class weights come from. Exact training class counts are never used under
/// DP: every example's weight would depend on the whole dataset, and the counts would leave
/// the run un-noised.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeighting {
    /// Weights given by the user: a public prior, no privacy cost (`--class-weights 1:3`).
    Prior(ClassWeights),
    /// Inverse frequency ([`ClassWeights::balanced`]) of the training class counts (`auto`).
    /// Under DP-SGD the counts are first released with Gaussian noise of standard deviation
    /// `noise_std` (L2 sensitivity 1 under add/remove), a release the run's ledger records;
    /// in a plain run they are exact.
    Counts { noise_std: f64 },
}

/// Default standard deviation of the noise on class counts under DP: small against the
/// thousands of a real split, and cheap in epsilon (one Gaussian release at sigma 20).
pub const CLASS_COUNT_NOISE: f64 = 20.0;

impl ClassWeighting {
    /// Parses `auto`, or one weight per class in label order separated by colons: `1:3`
    /// (NORMAL:PNEUMONIA), `2:1:3` for three classes.
    pub fn parse(s: &str) -> Result<Self> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Self::Counts {
                noise_std: CLASS_COUNT_NOISE,
            });
        }
        let bad = || {
            TrainError::Config(format!(
                "class weights {s:?}: expected one weight per class in label order, such as 1:3 \
                 (NORMAL:PNEUMONIA), or auto"
            ))
        };
        let weights = s
            .split(':')
            .map(|w| w.trim().parse::<f32>().map_err(|_| bad()))
            .collect::<Result<Vec<f32>>>()?;
        if weights.len() < 2 {
            return Err(bad());
        }
        Ok(Self::Prior(ClassWeights::of(weights)?))
    }
}

/// Per-example negative log-likelihood `(N,)` of `logits (N, K)` for u32 `labels (N,)`.
pub fn per_example_nll(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    Ok(logp
        .gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?)
}

/// Each example's class weight `(N,)` (ones without weights).
pub fn example_weights(labels: &Tensor, weights: Option<&ClassWeights>) -> Result<Tensor> {
    Ok(match weights.map(|w| w.get()) {
        None => labels.to_dtype(DType::F32)?.ones_like()?,
        // w0 + (w1 - w0) * y, y in {0, 1}: the two-class arithmetic, kept so binary runs are
        // bit for bit what they were.
        Some(&[w0, w1]) => labels
            .to_dtype(DType::F32)?
            .affine(f64::from(w1 - w0), f64::from(w0))?,
        Some(w) => {
            let table = Tensor::new(w, labels.device())?;
            table.index_select(&labels.to_dtype(DType::U32)?, 0)?
        }
    })
}

/// Mean cross-entropy; with class weights, the weighted mean `sum w_i l_i / sum w_i`
/// (PyTorch's `CrossEntropyLoss(weight=..)`).
pub fn cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    weights: Option<&ClassWeights>,
) -> Result<Tensor> {
    let nll = per_example_nll(logits, labels)?;
    match weights {
        None => Ok(nll.mean_all()?),
        Some(_) => {
            let w = example_weights(labels, weights)?;
            Ok((nll.mul(&w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_hand_computation() {
        let d = Device::Cpu;
        let logits = Tensor::new(&[[1.0f32, 2.0], [0.5, -0.5], [0.0, 0.0]], &d).unwrap();
        let labels = Tensor::new(&[1u32, 1, 0], &d).unwrap();
        let nll = |a: f32, b: f32, y: usize| {
            let l = [a, b];
            -(l[y] - (a.exp() + b.exp()).ln())
        };
        let e = [nll(1.0, 2.0, 1), nll(0.5, -0.5, 1), nll(0.0, 0.0, 0)];
        let got = cross_entropy(&logits, &labels, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got - (e[0] + e[1] + e[2]) / 3.0).abs() < 1e-6);
        let w = ClassWeights::new(3.0, 1.0).unwrap();
        let got = cross_entropy(&logits, &labels, Some(&w))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = (e[0] + e[1] + 3.0 * e[2]) / 5.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn balanced_weights_and_validation() {
        let w = ClassWeights::balanced(&[25, 75]).get().to_vec();
        assert!((w[0] - 2.0).abs() < 1e-6 && (w[1] - 2.0 / 3.0).abs() < 1e-6);
        assert!(ClassWeights::new(0.0, 1.0).is_err());
        assert!(ClassWeights::new(1.0, f32::NAN).is_err());
    }

    #[test]
    fn class_weights_parse_a_prior_or_auto_and_refuse_the_rest() {
        assert_eq!(
            ClassWeighting::parse("1:3").unwrap(),
            ClassWeighting::Prior(ClassWeights::new(1.0, 3.0).unwrap())
        );
        assert!(matches!(
            ClassWeighting::parse("auto").unwrap(),
            ClassWeighting::Counts { .. }
        ));
        for bad in ["", "3", "1:0", "a:b", "1:-2"] {
            let e = ClassWeighting::parse(bad).unwrap_err().to_string();
            assert!(e.contains("class weight"), "{bad}: {e}");
        }
    }
}

#[cfg(test)]
mod n_class_tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn three_class_weights_pick_each_example_s_own() {
        let d = Device::Cpu;
        let logits =
            Tensor::new(&[[1.0f32, 2.0, 0.5], [0.5, -0.5, 3.0], [0.0, 0.0, 0.0]], &d).unwrap();
        let labels = Tensor::new(&[1u32, 2, 0], &d).unwrap();
        let nll = |l: [f32; 3], y: usize| -(l[y] - l.iter().map(|v| v.exp()).sum::<f32>().ln());
        let e = [
            nll([1.0, 2.0, 0.5], 1),
            nll([0.5, -0.5, 3.0], 2),
            nll([0.0, 0.0, 0.0], 0),
        ];
        let w = ClassWeighting::parse("2:1:4").unwrap();
        let ClassWeighting::Prior(w) = w else {
            panic!("a prior")
        };
        let got = cross_entropy(&logits, &labels, Some(&w))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = (e[0] + 4.0 * e[1] + 2.0 * e[2]) / 7.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let b = ClassWeights::balanced(&[10, 20, 30]).get().to_vec();
        let want = [60.0 / 30.0, 60.0 / 60.0, 60.0 / 90.0];
        for (g, w) in b.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{b:?}");
        }
    }
}
