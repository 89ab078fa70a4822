//! A framework-free description of a trained network: layer kinds, shapes and f32 weights.
//!
//! This is the hand-off format between training (candle) and everything that must run a model
//! without candle: the secure-computation parties and the plaintext reference forward pass.
//! Layouts follow candle/PyTorch: activations are CHW, convolution weights are
//! `[out_channels, in_channels, kernel, kernel]`, dense weights are `[out_features, in_features]`,
//! and `Flatten` reads CHW in row-major order.
//!
//! Imports `super::shape` only; no other engine module.

pub use super::shape::Shape;
use super::shape::{conv_out, pool_out};
use serde::{Deserialize, Serialize};

/// Errors from building or running a [`NetworkSpec`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("layer {index} ({kind}): expected input shape {expected}, got {got:?}")]
    Shape {
        index: usize,
        kind: &'static str,
        expected: String,
        got: Vec<usize>,
    },
    #[error("layer {index} ({kind}): weight has {got} values, expected {expected}")]
    WeightLen {
        index: usize,
        kind: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("input has {got} values, the network expects {expected} ({shape:?})")]
    InputLen {
        expected: usize,
        got: usize,
        shape: [usize; 3],
    },
}

/// One layer. Strides: convolutions are stride 1; pooling windows are `size` x `size` with
/// stride `size`, dropping a trailing odd row/column (floor), as Keras and candle do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Layer {
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        padding: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    /// Inference-time batch normalisation over channels (running statistics).
    BatchNorm2d {
        gamma: Vec<f32>,
        beta: Vec<f32>,
        mean: Vec<f32>,
        var: Vec<f32>,
        eps: f32,
    },
    Relu,
    MaxPool2d {
        size: usize,
    },
    AvgPool2d {
        size: usize,
    },
    Flatten,
    Dense {
        in_features: usize,
        out_features: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    /// Identity at inference.
    Dropout {
        p: f32,
    },
}

impl Layer {
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv2d { .. } => "conv2d",
            Layer::BatchNorm2d { .. } => "batchnorm2d",
            Layer::Relu => "relu",
            Layer::MaxPool2d { .. } => "maxpool2d",
            Layer::AvgPool2d { .. } => "avgpool2d",
            Layer::Flatten => "flatten",
            Layer::Dense { .. } => "dense",
            Layer::Dropout { .. } => "dropout",
        }
    }
}

/// One channel of an inference-time batch normalisation as the map `x * scale + shift`, in
/// f64: the secure engine folds it into the convolution before it, the logit bound propagates
/// a magnitude through it; both read it here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormChannel {
    pub scale: f64,
    pub mean: f64,
    pub beta: f64,
}

impl BatchNormChannel {
    /// `beta - mean * scale`.
    pub fn shift(&self) -> f64 {
        self.beta - self.mean * self.scale
    }
}

impl Layer {
    /// The channels of a batch normalisation (`gamma / sqrt(var + eps)` and the rest), or
    /// `None` for any other layer.
    pub fn batch_norm_channels(&self) -> Option<Vec<BatchNormChannel>> {
        let Layer::BatchNorm2d {
            gamma,
            beta,
            mean,
            var,
            eps,
        } = self
        else {
            return None;
        };
        let channel = |c: usize| BatchNormChannel {
            scale: f64::from(gamma[c]) / (f64::from(var[c]) + f64::from(*eps)).sqrt(),
            mean: f64::from(mean[c]),
            beta: f64::from(beta[c]),
        };
        Some((0..gamma.len()).map(channel).collect())
    }
}

/// A whole network: its input shape (C, H, W) and its layers in order. The output is the logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    pub input: [usize; 3],
    pub layers: Vec<Layer>,
}

impl NetworkSpec {
    /// Checks every layer against the shape flowing into it and returns the shape after each
    /// layer (`shapes[i]` is the output of layer `i`).
    pub fn shapes(&self) -> Result<Vec<Shape>, SpecError> {
        let [c, h, w] = self.input;
        let mut cur = Shape::Chw(c, h, w);
        let mut out = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let kind = layer.kind();
            let bad = |expected: &str| SpecError::Shape {
                index,
                kind,
                expected: expected.to_string(),
                got: cur.dims(),
            };
            let wlen = |expected: usize, got: usize| -> Result<(), SpecError> {
                if expected == got {
                    Ok(())
                } else {
                    Err(SpecError::WeightLen {
                        index,
                        kind,
                        expected,
                        got,
                    })
                }
            };
            cur = match (layer, cur) {
                (
                    Layer::Conv2d {
                        in_channels,
                        out_channels,
                        kernel,
                        padding,
                        weight,
                        bias,
                    },
                    Shape::Chw(c, h, w),
                ) => {
                    let out = conv_out(h, w, *kernel, *padding).filter(|_| c == *in_channels);
                    let Some((oh, ow)) = out else {
                        return Err(bad(&format!("[{in_channels}, >={kernel}, >={kernel}]")));
                    };
                    wlen(out_channels * in_channels * kernel * kernel, weight.len())?;
                    wlen(*out_channels, bias.len())?;
                    Shape::Chw(*out_channels, oh, ow)
                }
                (
                    Layer::BatchNorm2d {
                        gamma,
                        beta,
                        mean,
                        var,
                        ..
                    },
                    Shape::Chw(c, h, w),
                ) => {
                    for v in [gamma, beta, mean, var] {
                        wlen(c, v.len())?;
                    }
                    Shape::Chw(c, h, w)
                }
                (Layer::MaxPool2d { size } | Layer::AvgPool2d { size }, Shape::Chw(c, h, w)) => {
                    let Some((oh, ow)) = pool_out(h, w, *size) else {
                        return Err(bad(&format!("[C, >={size}, >={size}]")));
                    };
                    Shape::Chw(c, oh, ow)
                }
                (Layer::Flatten, s) => Shape::Flat(s.len()),
                (
                    Layer::Dense {
                        in_features,
                        out_features,
                        weight,
                        bias,
                    },
                    Shape::Flat(n),
                ) => {
                    if n != *in_features {
                        return Err(bad(&format!("[{in_features}]")));
                    }
                    wlen(in_features * out_features, weight.len())?;
                    wlen(*out_features, bias.len())?;
                    Shape::Flat(*out_features)
                }
                (Layer::Relu | Layer::Dropout { .. }, s) => s,
                (Layer::Dense { in_features, .. }, _) => {
                    return Err(bad(&format!("[{in_features}] (flatten first)")))
                }
                (_, Shape::Flat(_)) => return Err(bad("[C, H, W]")),
            };
            out.push(cur);
        }
        Ok(out)
    }

    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Plaintext f32 forward pass of one image (CHW), returning the logits. This is the slow,
    /// obviously-right reference the secure engine and the candle models are tested against.
    pub fn forward(&self, input: &[f32]) -> Result<Vec<f32>, SpecError> {
        let shapes = self.shapes()?;
        if input.len() != self.input_len() {
            return Err(SpecError::InputLen {
                expected: self.input_len(),
                got: input.len(),
                shape: self.input,
            });
        }
        let [c0, h0, w0] = self.input;
        let mut cur = Shape::Chw(c0, h0, w0);
        let mut x = input.to_vec();
        for (layer, next) in self.layers.iter().zip(shapes) {
            x = match (layer, cur) {
                (
                    Layer::Conv2d {
                        in_channels,
                        out_channels,
                        kernel,
                        padding,
                        weight,
                        bias,
                    },
                    Shape::Chw(_, h, w),
                ) => conv2d_ref(
                    &x,
                    (*in_channels, h, w),
                    weight,
                    bias,
                    *out_channels,
                    *kernel,
                    *padding,
                ),
                (
                    Layer::BatchNorm2d {
                        gamma,
                        beta,
                        mean,
                        var,
                        eps,
                    },
                    Shape::Chw(c, h, w),
                ) => {
                    let mut y = x;
                    for ch in 0..c {
                        let s = gamma[ch] / (var[ch] + eps).sqrt();
                        for v in &mut y[ch * h * w..(ch + 1) * h * w] {
                            *v = (*v - mean[ch]) * s + beta[ch];
                        }
                    }
                    y
                }
                (Layer::Relu, _) => x.into_iter().map(|v| v.max(0.0)).collect(),
                (Layer::MaxPool2d { size }, Shape::Chw(c, h, w)) => {
                    pool_ref(&x, (c, h, w), *size, |win| {
                        win.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    })
                }
                (Layer::AvgPool2d { size }, Shape::Chw(c, h, w)) => {
                    pool_ref(&x, (c, h, w), *size, |win| {
                        win.iter().sum::<f32>() / win.len() as f32
                    })
                }
                (Layer::Flatten | Layer::Dropout { .. }, _) => x,
                (
                    Layer::Dense {
                        in_features,
                        out_features,
                        weight,
                        bias,
                    },
                    _,
                ) => (0..*out_features)
                    .map(|o| {
                        let row = &weight[o * in_features..(o + 1) * in_features];
                        bias[o] + row.iter().zip(&x).map(|(a, b)| a * b).sum::<f32>()
                    })
                    .collect(),
                // shapes() has already rejected every other combination.
                _ => unreachable!("shape-checked"),
            };
            cur = next;
        }
        Ok(x)
    }
}

fn conv2d_ref(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    weight: &[f32],
    bias: &[f32],
    out_c: usize,
    k: usize,
    pad: usize,
) -> Vec<f32> {
    let oh = h + 2 * pad - k + 1;
    let ow = w + 2 * pad - k + 1;
    let mut y = vec![0f32; out_c * oh * ow];
    for o in 0..out_c {
        for i in 0..oh {
            for j in 0..ow {
                let mut acc = bias[o];
                for ci in 0..c {
                    for ki in 0..k {
                        for kj in 0..k {
                            let (yi, xj) = (i + ki, j + kj);
                            if yi < pad || xj < pad || yi - pad >= h || xj - pad >= w {
                                continue;
                            }
                            acc += weight[((o * c + ci) * k + ki) * k + kj]
                                * x[(ci * h + yi - pad) * w + xj - pad];
                        }
                    }
                }
                y[(o * oh + i) * ow + j] = acc;
            }
        }
    }
    y
}

fn pool_ref(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    size: usize,
    reduce: impl Fn(&[f32]) -> f32,
) -> Vec<f32> {
    let (oh, ow) = (h / size, w / size);
    let mut y = Vec::with_capacity(c * oh * ow);
    let mut win = Vec::with_capacity(size * size);
    for ch in 0..c {
        for i in 0..oh {
            for j in 0..ow {
                win.clear();
                for di in 0..size {
                    for dj in 0..size {
                        win.push(x[(ch * h + i * size + di) * w + j * size + dj]);
                    }
                }
                y.push(reduce(&win));
            }
        }
    }
    y
}

/// Softmax probabilities of any number of logits, computed stably (the largest logit
/// subtracted first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The index of the largest value (the first on a tie): the predicted class of logits or
/// probabilities.
pub fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, c| if values[c] > values[best] { c } else { best })
}

/// Softmax probability of class 1 (PNEUMONIA) from two logits, computed stably.
pub fn pneumonia_probability(logits: &[f32]) -> f32 {
    match logits {
        [a, b] => 1.0 / (1.0 + (a - b).exp()),
        _ => f32::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> NetworkSpec {
        NetworkSpec {
            name: "tiny".into(),
            input: [1, 5, 5],
            layers: vec![
                Layer::Conv2d {
                    in_channels: 1,
                    out_channels: 2,
                    kernel: 3,
                    padding: 0,
                    weight: (0..18).map(|i| (i as f32 - 9.0) / 10.0).collect(),
                    bias: vec![0.1, -0.2],
                },
                Layer::Relu,
                Layer::MaxPool2d { size: 2 },
                Layer::Flatten,
                Layer::Dense {
                    in_features: 2,
                    out_features: 2,
                    weight: vec![1.0, -1.0, 0.5, 0.5],
                    bias: vec![0.0, 0.0],
                },
            ],
        }
    }

    #[test]
    fn shapes_follow_layers() {
        let s = tiny().shapes().unwrap();
        assert_eq!(s[0], Shape::Chw(2, 3, 3));
        assert_eq!(s[2], Shape::Chw(2, 1, 1));
        assert_eq!(s[4], Shape::Flat(2));
    }

    #[test]
    fn wrong_dense_width_is_reported() {
        let mut n = tiny();
        n.layers[4] = Layer::Dense {
            in_features: 3,
            out_features: 2,
            weight: vec![0.0; 6],
            bias: vec![0.0; 2],
        };
        let err = n.shapes().unwrap_err();
        assert!(matches!(err, SpecError::Shape { index: 4, .. }), "{err}");
    }

    #[test]
    fn forward_matches_hand_computation() {
        // Constant input 1: conv output is bias + sum of weights, the same at every position.
        let n = tiny();
        let y = n.forward(&[1.0; 25]).unwrap();
        let s0: f32 = (0..9).map(|i| (i as f32 - 9.0) / 10.0).sum::<f32>() + 0.1; // -4.5+3.6... negative
        let s1: f32 = (9..18).map(|i| (i as f32 - 9.0) / 10.0).sum::<f32>() - 0.2;
        let (a, b) = (s0.max(0.0), s1.max(0.0));
        assert!((y[0] - (a - b)).abs() < 1e-5);
        assert!((y[1] - 0.5 * (a + b)).abs() < 1e-5);
    }

    #[test]
    fn bad_input_length_is_an_error() {
        assert!(matches!(
            tiny().forward(&[0.0; 24]),
            Err(SpecError::InputLen { expected: 25, .. })
        ));
    }
}
