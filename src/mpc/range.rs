//! The range a model's logits can take: what the client checks reconstructed logits against,
//! so that a wrong private prediction is never shown silently (defence in depth: the protocol
//! itself is exact on its range, see [`super::protocol::trunc`]).
//!
//! Owns the bound and the check; imports only the model's plain description.

use crate::model::{Layer, NetworkSpec};

/// A bound on `|logit|` for every input in `[0, 1]`: interval propagation of one magnitude
/// through the layers (a dense or convolution layer maps `M` to
/// `max_o (sum_k |W_ok| M + |b_o|)`), capped at [`LogitBound::CEILING`]. Deep models get loose
/// bounds (products of norms) and end at the ceiling; shallow ones get tight ones. Either way a
/// logit outside the bound cannot come from the model, only from a fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitBound {
    max_abs: f64,
}

impl LogitBound {
    /// `2^20`: far above the logits of the four models on inputs in `[0, 1]` (the fixed-point
    /// analysis in [`super::fixed`] keeps every value below `2^8`), far below what a wrap of
    /// the ring produces (about `2^63 / 2^14 = 2^49`).
    pub const CEILING: f64 = (1u64 << 20) as f64;

    /// The bound when the model is not at hand (a client of remote parties).
    pub fn ceiling() -> Self {
        LogitBound {
            max_abs: Self::CEILING,
        }
    }

    /// The bound for `spec` on inputs in `[0, 1]`, at most the ceiling.
    pub fn of(spec: &NetworkSpec) -> Self {
        let mut m = 1.0f64;
        for layer in &spec.layers {
            m = match layer {
                Layer::Conv2d {
                    out_channels,
                    weight,
                    bias,
                    ..
                } => affine_bound(m, weight, bias, *out_channels),
                Layer::Dense {
                    out_features,
                    weight,
                    bias,
                    ..
                } => affine_bound(m, weight, bias, *out_features),
                Layer::BatchNorm2d { .. } => (layer.batch_norm_channels().unwrap_or_default())
                    .iter()
                    .map(|c| c.scale.abs() * (m + c.mean.abs()) + c.beta.abs())
                    .fold(0.0, f64::max),
                // Max and average pooling, ReLU, flatten and dropout (identity at inference)
                // never increase the largest magnitude.
                Layer::Relu
                | Layer::MaxPool2d { .. }
                | Layer::AvgPool2d { .. }
                | Layer::Flatten
                | Layer::Dropout { .. } => m,
            };
            if !m.is_finite() || m > Self::CEILING {
                return Self::ceiling();
            }
        }
        LogitBound { max_abs: m }
    }

    pub fn max_abs(&self) -> f64 {
        self.max_abs
    }

    /// Runs `predict` (fresh randomness on every call) and checks its logits; out of range, runs
    /// it once more and says so in [`Checked::retried`]; out of range twice, an error. A wrong
    /// private prediction is thus never returned silently.
    pub fn checked<E>(
        &self,
        mut predict: impl FnMut() -> Result<Vec<f32>, E>,
    ) -> Result<Checked, CheckError<E>> {
        let first = predict().map_err(CheckError::Predict)?;
        if self.holds(&first) {
            return Ok(Checked {
                logits: first,
                retried: false,
            });
        }
        let second = predict().map_err(CheckError::Predict)?;
        if self.holds(&second) {
            return Ok(Checked {
                logits: second,
                retried: true,
            });
        }
        Err(CheckError::OutOfRange {
            bound: self.max_abs,
            first,
            second,
        })
    }

    /// Whether every logit is finite and within the bound.
    pub fn holds(&self, logits: &[f32]) -> bool {
        logits
            .iter()
            .all(|v| v.is_finite() && (*v as f64).abs() <= self.max_abs)
    }
}

/// Logits that passed the range check.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub logits: Vec<f32>,
    /// The first run's logits were out of range and this is the second run's.
    pub retried: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError<E> {
    #[error(transparent)]
    Predict(E),
    #[error(
        "the private prediction's logits were out of the model's range (|logit| <= {bound}) twice, \
         first {first:?}, then {second:?}: not shown, as they cannot be right"
    )]
    OutOfRange {
        bound: f64,
        first: Vec<f32>,
        second: Vec<f32>,
    },
}

/// `max_o (sum_k |W_ok| m + |b_o|)` for a row-major `outputs x k` weight matrix.
fn affine_bound(m: f64, weight: &[f32], bias: &[f32], outputs: usize) -> f64 {
    if outputs == 0 {
        return 0.0;
    }
    let k = weight.len() / outputs;
    weight
        .chunks(k.max(1))
        .zip(bias)
        .map(|(row, b)| row.iter().map(|w| (*w as f64).abs()).sum::<f64>() * m + (*b as f64).abs())
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::random_spec;
    use crate::model::ModelKind;

    /// Random inputs in [0, 1] (and the corners 0 and 1) never produce a logit beyond the bound
    /// of a small convolutional model, whose bound is below the ceiling (not vacuous).
    #[test]
    fn logits_of_random_inputs_stay_within_the_bound() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut w =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.5..0.5)).collect() };
        let spec = NetworkSpec {
            name: "small".into(),
            input: [1, 8, 8],
            layers: vec![
                Layer::Conv2d {
                    in_channels: 1,
                    out_channels: 4,
                    kernel: 3,
                    padding: 1,
                    weight: w(36),
                    bias: w(4),
                },
                Layer::Relu,
                Layer::MaxPool2d { size: 2 },
                Layer::AvgPool2d { size: 2 },
                Layer::Flatten,
                Layer::Dense {
                    in_features: 16,
                    out_features: 2,
                    weight: w(32),
                    bias: w(2),
                },
            ],
        };
        let bound = LogitBound::of(&spec);
        assert!(bound.max_abs() < 100.0, "{bound:?}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut inputs: Vec<Vec<f32>> = (0..200)
            .map(|_| (0..64).map(|_| rng.random()).collect())
            .collect();
        inputs.push(vec![0.0; 64]);
        inputs.push(vec![1.0; 64]);
        for x in inputs {
            let logits = spec.forward(&x).unwrap();
            assert!(bound.holds(&logits), "{logits:?} beyond {bound:?}");
        }
        // A deep random model's bound is the ceiling: sound, if loose.
        let deep = LogitBound::of(&random_spec(ModelKind::Vgg16_1, 1.0 / 16.0, 3));
        assert!(deep.max_abs() <= LogitBound::CEILING);
    }

    #[test]
    fn a_wrapped_or_non_finite_logit_is_out_of_range() {
        let bound = LogitBound::ceiling();
        // What a ring wrap looks like after decoding with 14 fractional bits.
        let wrapped = (u64::MAX / 2) as f64 / (1u64 << 14) as f64;
        assert!(!bound.holds(&[1.0, wrapped as f32]));
        assert!(!bound.holds(&[f32::NAN, 0.0]));
        assert!(!bound.holds(&[f32::INFINITY, 0.0]));
        assert!(bound.holds(&[-300.0, 512.0]));
    }

    #[test]
    fn an_out_of_range_prediction_is_rerun_once_then_refused() {
        let bound = LogitBound::ceiling();
        let mut runs = vec![vec![1e12f32, 0.0], vec![1.0, 2.0]].into_iter();
        let ok = bound
            .checked(|| Ok::<_, String>(runs.next().unwrap()))
            .unwrap();
        assert_eq!(
            ok,
            Checked {
                logits: vec![1.0, 2.0],
                retried: true
            }
        );
        let mut calls = 0;
        let first_time = bound
            .checked(|| {
                calls += 1;
                Ok::<_, String>(vec![0.5, -0.5])
            })
            .unwrap();
        assert!(!first_time.retried);
        assert_eq!(calls, 1);
        let err = bound
            .checked(|| Ok::<_, String>(vec![f32::NAN, 0.0]))
            .unwrap_err();
        assert!(
            err.to_string().contains("out of the model's range"),
            "{err}"
        );
        let err = bound.checked(|| Err::<Vec<f32>, _>("party 1 stopped".to_string()));
        assert!(matches!(err, Err(CheckError::Predict(_))));
    }

    #[test]
    fn a_tight_bound_for_a_one_layer_model() {
        // One dense layer 2 -> 2: |y_0| <= |1| + |-2| + |0.5| = 3.5, |y_1| <= 0.25 + 0.25 + 1.
        let spec = NetworkSpec {
            name: "one dense layer".into(),
            input: [1, 1, 2],
            layers: vec![
                Layer::Flatten,
                Layer::Dense {
                    in_features: 2,
                    out_features: 2,
                    weight: vec![1.0, -2.0, 0.25, 0.25],
                    bias: vec![0.5, -1.0],
                },
            ],
        };
        assert_eq!(LogitBound::of(&spec).max_abs(), 3.5);
        assert!(!LogitBound::of(&spec).holds(&[3.6, 0.0]));
    }
}
