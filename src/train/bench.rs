//! Training and inference throughput of DNN-Max (for `privxray bench train`).
//!
//! Imports `crate::model` and `super::{device, dpsgd, engine, error, loss, model, optim}`; never
//! `mpc`, `net`, `party`, `pipeline` or terminal code.

use super::dpsgd::{self, ClipNorm, DpConfig, NoiseMultiplier, NoiseSeed};
use super::error::Result;
use super::loss;
use super::model::Model;
use super::optim::{Optimizer, OptimizerConfig};
use crate::model::ModelKind;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

/// Measured figures. Each figure is the median over `steps` timed steps (after one warm-up
/// step), which shrugs off interference from other processes better than the mean.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    /// Threads of the rayon pool that runs our kernels (set with `RAYON_NUM_THREADS`); the
    /// PyTorch equivalent is `torch.set_num_threads(threads)`.
    pub threads: usize,
    /// Logical CPUs the OS reports.
    pub available_cpus: usize,
    pub steps: usize,
    pub plain_images_per_sec_b32: f64,
    pub plain_images_per_sec_b64: f64,
    pub dp_images_per_sec_b32: f64,
    pub dp_images_per_sec_b64: f64,
    /// DP-SGD throughput over plain throughput at batch 32.
    pub dp_ratio_b32: f64,
    /// DP-SGD throughput over plain throughput at batch 64.
    pub dp_ratio_b64: f64,
    /// Forward pass of one image, logits on the host: the median of `inference_calls` calls
    /// of the path plaintext prediction takes ([`Model::infer_one`]).
    pub inference_ms_b1: f64,
    /// 10th percentile of the same calls.
    pub inference_ms_b1_p10: f64,
    /// 90th percentile of the same calls.
    pub inference_ms_b1_p90: f64,
    /// Timed batch-1 calls (after warm-up calls).
    pub inference_calls: usize,
    /// Median of as many calls of the training forward (`forward_with`, tensors per layer, a
    /// batch spread over the threads) on the same image, for comparison.
    pub inference_ms_b1_tensor_forward: f64,
    /// What each figure measures, for comparison with PyTorch/Opacus runs.
    pub protocol: String,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} on {} ({} rayon threads, {} CPUs available), median of {} timed steps",
            self.model, self.device, self.threads, self.available_cpus, self.steps
        )?;
        writeln!(f, "                  batch 32      batch 64")?;
        writeln!(
            f,
            "plain training  {:8.1} img/s {:8.1} img/s",
            self.plain_images_per_sec_b32, self.plain_images_per_sec_b64
        )?;
        writeln!(
            f,
            "DP-SGD training {:8.1} img/s {:8.1} img/s",
            self.dp_images_per_sec_b32, self.dp_images_per_sec_b64
        )?;
        writeln!(
            f,
            "DP / plain      {:8.2}x       {:8.2}x",
            self.dp_ratio_b32, self.dp_ratio_b64
        )?;
        writeln!(
            f,
            "inference b1    {:8.2} ms median, p10-p90 {:.2}-{:.2} ms, {} calls \
             (training forward: {:.2} ms median)",
            self.inference_ms_b1,
            self.inference_ms_b1_p10,
            self.inference_ms_b1_p90,
            self.inference_calls,
            self.inference_ms_b1_tensor_forward
        )?;
        write!(f, "{}", self.protocol)
    }
}

fn random_batch(n: usize, device: &Device, rng: &mut impl Rng) -> Result<(Tensor, Tensor)> {
    let [c, h, w] = ModelKind::DnnMax.technique().input_shape();
    let x: Vec<f32> = (0..n * c * h * w)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..2)).collect();
    Ok((
        Tensor::from_vec(x, (n, c, h, w), device)?,
        Tensor::from_vec(y, n, device)?,
    ))
}

/// Median seconds of `steps` timed calls of `step`, after one warm-up call.
fn time_steps(steps: usize, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
    step()?; // warm-up: allocations, thread pool, scratch buffers
    let mut times = Vec::with_capacity(steps.max(1));
    for _ in 0..steps.max(1) {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Timed batch-1 inference calls: at least this many, whatever `steps` says.
pub const INFERENCE_CALLS: usize = 200;
/// Untimed calls first: buffers sized, caches and the thread pool warm.
const INFERENCE_WARMUP: usize = 10;

/// Seconds of each of `calls` timed calls of `call`, after the warm-up calls, sorted.
fn time_calls(calls: usize, mut call: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..INFERENCE_WARMUP {
        call()?;
    }
    let mut times = Vec::with_capacity(calls.max(1));
    for _ in 0..calls.max(1) {
        let t = Instant::now();
        call()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// The `q` quantile (0..=1) of sorted `times`, nearest rank.
fn quantile(times: &[f64], q: f64) -> f64 {
    let i = ((times.len() - 1) as f64 * q).round() as usize;
    times[i.min(times.len() - 1)]
}

/// Runs the DNN-Max benchmark with `steps` timed steps per figure.
pub fn run(steps: usize, prefer_gpu: bool) -> Result<BenchReport> {
    let (device, device_name) = super::device::select(prefer_gpu);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (model, vm) = Model::init(ModelKind::DnnMax, 1.0, 1, &device)?;
    let vars = super::engine::model_vars(&model, &vm)?;
    let mut opt = Optimizer::new(OptimizerConfig::sgd(1e-3, 0.9), vars.clone())?;
    let mut plain = |b: usize, rng: &mut rand_chacha::ChaCha8Rng| -> Result<f64> {
        let (x, y) = random_batch(b, &device, rng)?;
        let mut drop_rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let secs = time_steps(steps, || {
            let logits = model.forward_with(&x, Some(&mut drop_rng))?;
            let l = loss::cross_entropy(&logits, &y, None)?;
            let g = l.backward()?;
            let grads = vars
                .iter()
                .map(|(_, v)| {
                    g.get(v.as_tensor())
                        .cloned()
                        .map_or_else(|| v.as_tensor().zeros_like(), Ok)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            opt.step(&grads)
        })?;
        Ok(b as f64 / secs)
    };
    let p32 = plain(32, &mut rng)?;
    let p64 = plain(64, &mut rng)?;
    let mut opt = Optimizer::new(OptimizerConfig::sgd(1e-3, 0.9), vars.clone())?;
    let dp = DpConfig {
        noise_multiplier: NoiseMultiplier::new(1.0)?,
        clip_norm: ClipNorm::new(1.0)?,
        ..DpConfig::new(1.0, 1.0)?
    };
    let mut noise = dpsgd::noise_rng(NoiseSeed::Os);
    let mut private = |b: usize, rng: &mut rand_chacha::ChaCha8Rng| -> Result<f64> {
        let (x, y) = random_batch(b, &device, rng)?;
        let mut drop_rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let secs = time_steps(steps, || {
            let r = dpsgd::private_gradients(
                &model,
                &x,
                &y,
                None,
                &dp,
                b as f64,
                &mut drop_rng,
                &mut noise,
            )?;
            opt.step(&r.gradients)
        })?;
        Ok(b as f64 / secs)
    };
    let d32 = private(32, &mut rng)?;
    let d64 = private(64, &mut rng)?;
    let (x1, _) = random_batch(1, &device, &mut rng)?;
    let pixels = x1.flatten_all()?.to_vec1::<f32>()?;
    let calls = steps.max(INFERENCE_CALLS);
    let infer = time_calls(calls, || {
        std::hint::black_box(model.infer_one(&pixels)?);
        Ok(())
    })?;
    let tensor_forward = time_calls(calls, || {
        model.forward_with(&x1, None)?.to_vec2::<f32>()?;
        Ok(())
    })?;
    let threads = rayon::current_num_threads();
    Ok(BenchReport {
        model: ModelKind::DnnMax.name().into(),
        device: device_name,
        threads,
        available_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        steps,
        plain_images_per_sec_b32: p32,
        plain_images_per_sec_b64: p64,
        dp_images_per_sec_b32: d32,
        dp_images_per_sec_b64: d64,
        dp_ratio_b32: d32 / p32,
        dp_ratio_b64: d64 / p64,
        inference_ms_b1: quantile(&infer, 0.5) * 1e3,
        inference_ms_b1_p10: quantile(&infer, 0.1) * 1e3,
        inference_ms_b1_p90: quantile(&infer, 0.9) * 1e3,
        inference_calls: calls,
        inference_ms_b1_tensor_forward: quantile(&tensor_forward, 0.5) * 1e3,
        protocol: format!(
            "protocol: f32, 1x150x125 random images, one step = forward + backward + SGD \
             momentum update (DP-SGD: per-example clipping at C = 1, noise multiplier 1, \
             Poisson-style expected batch); inference: one image, evaluation mode, logits \
             on the host, {calls} timed calls after {INFERENCE_WARMUP} warm-up calls; \
             PyTorch equivalent: torch.set_num_threads({threads}), \
             same model, Opacus for DP"
        ),
    })
}
