//! Helpers shared by the training tests (`engine::tests`, `engine::dp_tests`, `dpsgd::tests`,
//! `model::tests`, ...): small model widths, random and separable synthetic X-rays, a quick
//! training configuration and tensor comparisons.
//!
//! Imports `crate::model` and `super::{engine, optim, TrainData}`; never `mpc`, `net`, `party`
//! or `pipeline`.

use super::engine::{Seed, TrainConfig};
use super::optim::OptimizerConfig;
use super::TrainData;
use crate::model::ModelKind;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

pub(crate) const VGG_TEST_WIDTH: f32 = 1.0 / 32.0;

pub(crate) fn width_for(kind: ModelKind) -> f32 {
    match kind {
        ModelKind::Vgg16_1 | ModelKind::Vgg16_2 => VGG_TEST_WIDTH,
        _ => 1.0,
    }
}

/// Separable synthetic X-rays: class 1 has a bright band in the left half, class 0 in the
/// right half, plus noise.
pub(crate) fn synthetic(kind: ModelKind, n: usize, seed: u64) -> TrainData {
    let shape = kind.technique().input_shape();
    let [c, h, w] = shape;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * c * h * w);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = u8::from(i % 4 != 0); // 3:1 like the real data
        for _ in 0..c {
            for _y in 0..h {
                for x in 0..w {
                    let left = x < w / 2;
                    let band = if (label == 1) == left { 0.6 } else { 0.2 };
                    images.push(band + rng.random_range(0.0f32..0.2));
                }
            }
        }
        labels.push(label);
    }
    TrainData::new(shape, images, labels).unwrap()
}

pub(crate) fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub(crate) fn rel_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    let d = max_abs(&(a - b).unwrap());
    let s = max_abs(b);
    assert!(
        d <= tol * s.max(1e-6),
        "{what}: max difference {d}, scale {s}"
    );
}

pub(crate) fn random_input(kind: ModelKind, n: usize, seed: u64) -> Tensor {
    let [c, h, w] = kind.technique().input_shape();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * c * h * w)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    Tensor::from_vec(v, (n, c, h, w), &Device::Cpu).unwrap()
}

pub(crate) fn quick_config(kind: ModelKind, epochs: usize) -> TrainConfig {
    let mut c = TrainConfig::new(kind);
    c.width = width_for(kind);
    c.epochs = epochs;
    c.batch_size = 8;
    c.eval_batch_size = 16;
    c.seed = Seed::Fixed(11);
    c.patience = None;
    c.optimizer = OptimizerConfig::adam(1e-3);
    c
}
