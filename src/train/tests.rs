//! Cross-module tests: models against `NetworkSpec`, checkpoints, the training loop, DP-SGD.

use super::checkpoint;
use super::dpsgd::{self, ClipNorm, DpConfig, NoiseSeed, Sampling};
use super::engine::{self, model_vars, Seed, TrainConfig, TrainingEvent};
use super::loss;
use super::model::Model;
use super::optim::OptimizerConfig;
use super::{TrainControl, TrainData};
use crate::model::ModelKind;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use std::sync::mpsc;

const VGG_TEST_WIDTH: f32 = 1.0 / 32.0;

fn width_for(kind: ModelKind) -> f32 {
    match kind {
        ModelKind::Vgg16_1 | ModelKind::Vgg16_2 => VGG_TEST_WIDTH,
        _ => 1.0,
    }
}

/// Separable synthetic X-rays: class 1 has a bright band in the left half, class 0 in the
/// right half, plus noise.
fn synthetic(kind: ModelKind, n: usize, seed: u64) -> TrainData {
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

fn random_input(kind: ModelKind, n: usize, seed: u64) -> Tensor {
    let [c, h, w] = kind.technique().input_shape();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * c * h * w)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    Tensor::from_vec(v, (n, c, h, w), &Device::Cpu).unwrap()
}

#[test]
fn candle_forward_equals_network_spec_forward_for_every_model() {
    for kind in ModelKind::ALL {
        let (model, _vm) = Model::init(kind, width_for(kind), 5, &Device::Cpu).unwrap();
        let spec = model.to_spec().unwrap();
        assert_eq!(spec.input, kind.technique().input_shape());
        let x = random_input(kind, 2, 6);
        let ours = model
            .forward_with(&x, None)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (i, row) in ours.iter().enumerate() {
            let img = x
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let reference = spec.forward(&img).unwrap();
            for (a, b) in row.iter().zip(&reference) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{kind}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn wrong_input_shape_is_an_error() {
    let (model, _vm) = Model::init(ModelKind::DnnMax, 1.0, 1, &Device::Cpu).unwrap();
    let x = Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = model.forward_with(&x, None).unwrap_err();
    assert!(e.to_string().contains("[1, 150, 125]"), "{e}");
}

#[test]
fn checkpoint_round_trips_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (model, vm) = Model::init(ModelKind::DnnAv, 1.0, 9, &Device::Cpu).unwrap();
    let vars = model_vars(&model, &vm).unwrap();
    let meta = checkpoint::CheckpointMeta {
        format: checkpoint::FORMAT,
        model: ModelKind::DnnAv,
        technique: 1,
        width: 1.0,
        epoch: 3,
        optimizer: OptimizerConfig::adam(1e-3),
        optimizer_step: 42,
        best_val_acc: 0.75,
        epochs_without_improvement: 1,
        seed: 7,
        dp: Some(DpConfig::new(1.1, 1.0).unwrap()),
        epsilon: Some(2.5),
        neighbouring: Some(dpsgd::NEIGHBOURING.into()),
        privacy_ledger: vec![super::accounting::DpSegment {
            sample_rate: crate::privacy::SampleRate::new(0.01).unwrap(),
            noise_multiplier: dpsgd::NoiseMultiplier::new(1.1).unwrap(),
            steps: 30,
        }],
        history: vec![],
        frozen: vec!["fc1".into()],
        ema: None,
        dropout: None,
    };
    let tensors: Vec<_> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let path = dir.path().join("ck.safetensors");
    checkpoint::save(&path, &meta, &tensors).unwrap();
    assert_eq!(checkpoint::read_meta(&path).unwrap(), meta);
    let (loaded, _vm2, meta2) = engine::model_from_checkpoint(&path, &Device::Cpu).unwrap();
    assert_eq!(meta2, meta);
    for ((n1, a), (n2, b)) in model
        .named_parameters()
        .iter()
        .zip(loaded.named_parameters())
    {
        assert_eq!(n1, &n2);
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n1}"
        );
    }
    // A file that is not a checkpoint is reported, not a panic.
    std::fs::write(dir.path().join("bad"), b"garbage").unwrap();
    assert!(checkpoint::read_meta(&dir.path().join("bad")).is_err());
    assert!(checkpoint::load(&dir.path().join("bad"), &Device::Cpu).is_err());
}

fn quick_config(kind: ModelKind, epochs: usize) -> TrainConfig {
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

fn step_losses(rx: &mpsc::Receiver<TrainingEvent>) -> Vec<f64> {
    rx.try_iter()
        .filter_map(|e| match e {
            TrainingEvent::Step { loss, .. } => Some(loss),
            _ => None,
        })
        .collect()
}

#[test]
fn every_model_trains_and_its_loss_falls() {
    for kind in ModelKind::ALL {
        let data = synthetic(kind, 32, 1);
        let val = synthetic(kind, 8, 2);
        let (tx, rx) = mpsc::channel();
        let mut cfg = quick_config(kind, 3);
        cfg.optimizer = OptimizerConfig::adam(if kind == ModelKind::Vgg16_2 {
            3e-3
        } else {
            1e-3
        });
        let out = engine::train(cfg, &data, &val, tx, TrainControl::new()).unwrap();
        let losses = step_losses(&rx);
        assert_eq!(losses.len(), 12, "{kind}");
        let first = losses[..4].iter().sum::<f64>() / 4.0;
        let last = losses[8..].iter().sum::<f64>() / 4.0;
        assert!(
            last < first,
            "{kind}: loss went {first} -> {last} ({losses:?})"
        );
        assert_eq!(out.epochs_run, 3);
    }
}

#[test]
fn resume_continues_the_same_curve() {
    let kind = ModelKind::DnnMax;
    let data = synthetic(kind, 16, 3);
    let val = synthetic(kind, 8, 4);
    let dir = tempfile::tempdir().unwrap();
    // Straight through: 2 epochs.
    let (tx, _rx) = mpsc::channel();
    let straight =
        engine::train(quick_config(kind, 2), &data, &val, tx, TrainControl::new()).unwrap();
    // 1 epoch, then resume for the second.
    let mut c1 = quick_config(kind, 1);
    c1.checkpoint_dir = Some(dir.path().to_path_buf());
    let (tx, _rx) = mpsc::channel();
    let first = engine::train(c1, &data, &val, tx, TrainControl::new()).unwrap();
    let last = first.last_checkpoint.unwrap();
    assert!(first.best_checkpoint.is_some());
    let mut c2 = quick_config(kind, 2);
    c2.resume = Some(last);
    c2.seed = Seed::Os; // ignored on resume: the checkpoint's seed continues the data order
    let (tx, rx) = mpsc::channel();
    let resumed = engine::train(c2, &data, &val, tx, TrainControl::new()).unwrap();
    assert!(matches!(
        rx.try_iter().next(),
        Some(TrainingEvent::Started { start_epoch: 1, .. })
    ));
    assert_eq!(resumed.history.len(), 2);
    for (a, b) in straight.history.iter().zip(&resumed.history) {
        assert!(
            (a.train_loss.unwrap() - b.train_loss.unwrap()).abs() < 1e-5,
            "{a:?} vs {b:?}"
        );
        assert!((a.val_loss - b.val_loss).abs() < 1e-5, "{a:?} vs {b:?}");
    }
    for ((n, a), (_, b)) in straight
        .model
        .named_parameters()
        .iter()
        .zip(resumed.model.named_parameters())
    {
        let d = (a - &b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "{n}: max difference {d}");
    }
}

#[test]
fn stop_and_pause_are_obeyed() {
    let kind = ModelKind::DnnAv;
    let data = synthetic(kind, 16, 5);
    let val = synthetic(kind, 4, 6);
    let control = TrainControl::new();
    control.stop();
    let (tx, rx) = mpsc::channel();
    let out = engine::train(quick_config(kind, 5), &data, &val, tx, control).unwrap();
    assert!(out.stopped);
    assert_eq!(out.epochs_run, 0);
    let events: Vec<_> = rx.try_iter().collect();
    assert!(events
        .iter()
        .any(|e| matches!(e, TrainingEvent::Stopped { epoch: 0, step: 0 })));
    // Paused from the start; another thread resumes it.
    let control = TrainControl::new();
    control.pause();
    let c2 = control.clone();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        engine::train(quick_config(kind, 1), &data, &val, tx, c2).map(|o| o.epochs_run)
    });
    // Wait for the Paused event, then resume.
    let mut seen = Vec::new();
    loop {
        let e = rx.recv().unwrap();
        let paused = matches!(e, TrainingEvent::Paused);
        seen.push(e);
        if paused {
            break;
        }
    }
    control.resume();
    assert_eq!(h.join().unwrap().unwrap(), 1);
    seen.extend(rx.try_iter());
    assert!(seen.iter().any(|e| matches!(e, TrainingEvent::Resumed)));
    let line = serde_json::to_string(&seen[0]).unwrap();
    assert!(line.starts_with("{\"event\":\"started\""), "{line}");
}

/// Per-example gradients of a batch by the batch-1 reference: one ordinary backward per
/// example.
fn reference_per_example(model: &Model, x: &Tensor, y: &Tensor) -> Vec<Vec<Tensor>> {
    let params = model.named_parameters();
    (0..x.dim(0).unwrap())
        .map(|i| {
            let xi = x.narrow(0, i, 1).unwrap();
            let yi = y.narrow(0, i, 1).unwrap();
            let logits = model.forward_with(&xi, None).unwrap();
            let l = loss::per_example_nll(&logits, &yi)
                .unwrap()
                .sum_all()
                .unwrap();
            let g = l.backward().unwrap();
            params
                .iter()
                .map(|(_, p)| g.get(p).unwrap().clone())
                .collect()
        })
        .collect()
}

fn norm(ts: &[Tensor]) -> f64 {
    ts.iter()
        .map(|t| {
            f64::from(
                t.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
            )
        })
        .sum::<f64>()
        .sqrt()
}

/// [`dpsgd::clipped_gradient_sums`] without dropout.
fn clip_sums(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    class_weights: Option<loss::ClassWeights>,
    clip: f64,
    clipping: dpsgd::Clipping,
    microbatch: usize,
) -> dpsgd::ClippedSums {
    dpsgd::clipped_gradient_sums(
        model,
        x,
        y,
        class_weights,
        ClipNorm::new(clip).unwrap(),
        clipping,
        microbatch,
        None,
    )
    .unwrap()
}

/// Largest absolute entry.
/// One DP-SGD step's noisy gradients, without class weights, with a fixed dropout seed and
/// the noise generator `dp` names.
fn private_step(
    model: &Model,
    x: &Tensor,
    y: &Tensor,
    dp: &DpConfig,
    expected_batch: f64,
) -> dpsgd::PrivateStep {
    dpsgd::private_gradients(
        model,
        x,
        y,
        None,
        dp,
        expected_batch,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
        &mut dpsgd::noise_rng(dp.noise_seed),
    )
    .unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn rel_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    let d = max_abs(&(a - b).unwrap());
    let s = max_abs(b);
    assert!(
        d <= tol * s.max(1e-6),
        "{what}: max difference {d}, scale {s}"
    );
}

#[test]
fn per_example_norms_and_clipped_sums_equal_the_batch_1_reference() {
    // DNN-Av and DNN-Max cover conv (no padding), both pools with odd sides, relu, dense;
    // VGG covers padded convolutions.
    for kind in [ModelKind::DnnMax, ModelKind::DnnAv, ModelKind::Vgg16_1] {
        let (model, _vm) = Model::init(kind, width_for(kind), 21, &Device::Cpu).unwrap();
        let data = synthetic(kind, 4, 22);
        let (x, y) = data.batch(&[0, 1, 2, 3], &Device::Cpu).unwrap();
        let refs = reference_per_example(&model, &x, &y);
        let ref_norms: Vec<f64> = refs.iter().map(|g| norm(g)).collect();
        // Clip between the smallest and largest norm so both branches of min(1, C/|g|) run.
        let mut sorted = ref_norms.clone();
        sorted.sort_by(f64::total_cmp);
        let clip = (sorted[1] + sorted[2]) / 2.0;
        let r = clip_sums(&model, &x, &y, None, clip, dpsgd::Clipping::Flat, 1);
        for (a, b) in r.unit_norms.iter().zip(&ref_norms) {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-4 * b,
                "{kind}: norm {a} vs {b}"
            );
        }
        for (pi, (name, _)) in model.named_parameters().iter().enumerate() {
            let mut want: Option<Tensor> = None;
            for (g, nrm) in refs.iter().zip(&ref_norms) {
                let c = (clip / nrm).min(1.0);
                let t = (&g[pi] * c).unwrap();
                want = Some(match want {
                    None => t,
                    Some(w) => (w + t).unwrap(),
                });
            }
            rel_close(&r.sums[pi], &want.unwrap(), 1e-4, &format!("{kind} {name}"));
        }
        // Microbatches of 2: the mean gradient of each pair is clipped as a unit.
        let r2 = clip_sums(&model, &x, &y, None, clip, dpsgd::Clipping::Flat, 2);
        let pairs: Vec<Vec<Tensor>> = (0..2)
            .map(|u| {
                refs[2 * u]
                    .iter()
                    .zip(&refs[2 * u + 1])
                    .map(|(a, b)| ((a + b).unwrap() / 2.0).unwrap())
                    .collect()
            })
            .collect();
        for (u, p) in pairs.iter().enumerate() {
            let n = norm(p);
            assert!(
                (f64::from(r2.unit_norms[u]) - n).abs() <= 1e-4 * n,
                "{kind} microbatch"
            );
        }
        let pi = 0;
        let want = pairs
            .iter()
            .map(|p| (&p[pi] * (clip / norm(p)).min(1.0)).unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        rel_close(&r2.sums[pi], &want, 1e-4, &format!("{kind} microbatch sum"));
    }
}

#[test]
fn clipping_bounds_every_contribution() {
    let kind = ModelKind::DnnMax;
    let (model, _vm) = Model::init(kind, 1.0, 31, &Device::Cpu).unwrap();
    let data = synthetic(kind, 6, 32);
    let (x, y) = data.batch(&[0, 1, 2, 3, 4, 5], &Device::Cpu).unwrap();
    let clip = 1e-3;
    let refs = reference_per_example(&model, &x, &y);
    assert!(
        refs.iter().all(|g| norm(g) > clip),
        "test needs norms above the clip"
    );
    // Each example alone: its clipped gradient has norm exactly C.
    for i in 0..6 {
        let r = clip_sums(
            &model,
            &x.narrow(0, i, 1).unwrap(),
            &y.narrow(0, i, 1).unwrap(),
            None,
            clip,
            dpsgd::Clipping::Flat,
            1,
        );
        let n = norm(&r.sums);
        assert!(
            n <= clip * (1.0 + 1e-4) && n >= clip * (1.0 - 1e-3),
            "norm {n}"
        );
    }
    // The whole batch sum is bounded by B * C.
    let r = clip_sums(&model, &x, &y, None, clip, dpsgd::Clipping::Flat, 1);
    assert!(norm(&r.sums) <= 6.0 * clip * (1.0 + 1e-4));
}

/// With class weights, each clipped gradient is scaled by its weight over the largest weight:
/// the largest-weight class contributes exactly C when clipped, the other class C * w / w_max,
/// so the sensitivity stays C and the weighting survives clipping (inside the loss, clipping
/// would normalise it away).
#[test]
fn class_weights_act_after_the_clip_and_keep_the_bound() {
    let kind = ModelKind::DnnMax;
    let (model, _vm) = Model::init(kind, 1.0, 31, &Device::Cpu).unwrap();
    let data = synthetic(kind, 6, 32);
    let (x, y) = data.batch(&[0, 1, 2, 3, 4, 5], &Device::Cpu).unwrap();
    let labels = y.to_vec1::<u32>().unwrap();
    assert!(
        labels.contains(&0) && labels.contains(&1),
        "test needs both classes"
    );
    let clip = 1e-3;
    let cw = crate::train::loss::ClassWeights::new(2.0, 0.5).unwrap();
    for (i, &label) in labels.iter().enumerate() {
        let r = clip_sums(
            &model,
            &x.narrow(0, i, 1).unwrap(),
            &y.narrow(0, i, 1).unwrap(),
            Some(cw),
            clip,
            dpsgd::Clipping::Flat,
            1,
        );
        let expected = clip * if label == 0 { 1.0 } else { 0.25 };
        let n = norm(&r.sums);
        assert!(
            (n - expected).abs() <= expected * 1e-3,
            "example {i} (label {label}): norm {n}, expected {expected}"
        );
    }
}

/// Per-layer clipping: each parameterised layer of each example is clipped to C/sqrt(L) on its
/// own (so the whole is at most C), and a layer below its bound is left as it is.
#[test]
fn per_layer_clipping_bounds_each_layer() {
    let kind = ModelKind::DnnMax;
    let (model, _vm) = Model::init(kind, 1.0, 31, &Device::Cpu).unwrap();
    let data = synthetic(kind, 3, 33);
    let (x, y) = data.batch(&[0, 1, 2], &Device::Cpu).unwrap();
    let refs = reference_per_example(&model, &x, &y);
    let layers = model.named_parameters().len() / 2; // weight and bias per layer
    let layer_norm = |g: &[Tensor], l: usize| norm(&g[2 * l..2 * l + 2]);
    for (i, ref_i) in refs.iter().enumerate() {
        // A bound between the example's smallest and largest layer norms: some layers clip,
        // some do not.
        let norms: Vec<f64> = (0..layers).map(|l| layer_norm(ref_i, l)).collect();
        let lo = norms.iter().cloned().fold(f64::MAX, f64::min);
        let hi = norms.iter().cloned().fold(0.0, f64::max);
        let bound = (lo * hi).sqrt();
        let clip = bound * (layers as f64).sqrt();
        let r = clip_sums(
            &model,
            &x.narrow(0, i, 1).unwrap(),
            &y.narrow(0, i, 1).unwrap(),
            None,
            clip,
            dpsgd::Clipping::PerLayer,
            1,
        );
        assert!(norm(&r.sums) <= clip * (1.0 + 1e-4));
        let mut clipped = 0;
        for (l, &n) in norms.iter().enumerate() {
            let expected = n.min(bound);
            clipped += usize::from(n > bound);
            let g = layer_norm(&r.sums, l);
            assert!(
                (g - expected).abs() <= expected * 2e-3 + 1e-12,
                "example {i} layer {l}: norm {g}, expected {expected} (raw {n}, bound {bound})"
            );
        }
        assert!(
            clipped > 0 && clipped < layers,
            "test needs clipped and unclipped layers"
        );
    }
}

#[test]
fn dp_sgd_without_noise_and_with_a_huge_clip_is_plain_sgd() {
    let kind = ModelKind::DnnMax;
    let data = synthetic(kind, 16, 41);
    let val = synthetic(kind, 4, 42);
    let run = |dp: Option<DpConfig>| {
        let mut c = quick_config(kind, 1);
        c.optimizer = OptimizerConfig::sgd(0.05, 0.9);
        c.dp = dp;
        let (tx, _rx) = mpsc::channel();
        engine::train(c, &data, &val, tx, TrainControl::new()).unwrap()
    };
    let plain = run(None);
    let mut dp = DpConfig::new(0.0, 1e9).unwrap();
    dp.sampling = Sampling::Shuffled;
    dp.noise_seed = NoiseSeed::InsecureFixed(1);
    let private = run(Some(dp));
    for ((n, a), (_, b)) in plain
        .model
        .named_parameters()
        .iter()
        .zip(private.model.named_parameters())
    {
        rel_close(a, &b, 1e-4, n);
    }
}

#[test]
fn noise_has_the_documented_mean_and_spread() {
    let mut rng = dpsgd::noise_rng(NoiseSeed::InsecureFixed(5));
    let (sigma, clip) = (1.3, 0.7);
    let std = sigma * clip;
    let v = dpsgd::gaussian_noise(200_000, std, &mut rng).unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|x| f64::from(*x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|x| (f64::from(*x) - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    // Standard error of the mean is std/sqrt(n) ~ 0.002; of the std ~ std/sqrt(2n) ~ 0.0014.
    assert!(mean.abs() < 5.0 * std / n.sqrt(), "mean {mean}");
    assert!(
        (var.sqrt() - std).abs() < 5.0 * std / (2.0 * n).sqrt(),
        "std {}",
        var.sqrt()
    );
    // Two OS-seeded generators differ.
    let a = dpsgd::gaussian_noise(4, 1.0, &mut dpsgd::noise_rng(NoiseSeed::Os)).unwrap();
    let b = dpsgd::gaussian_noise(4, 1.0, &mut dpsgd::noise_rng(NoiseSeed::Os)).unwrap();
    assert_ne!(a, b);
}

#[test]
fn dp_training_runs_with_poisson_sampling_and_live_setting_changes() {
    let kind = ModelKind::DnnAv;
    let data = synthetic(kind, 16, 51);
    let val = synthetic(kind, 4, 52);
    let mut c = quick_config(kind, 1);
    c.dp = Some(DpConfig::new(1.0, 1.0).unwrap());
    let control = TrainControl::new();
    control.set_noise_multiplier(dpsgd::NoiseMultiplier::new(2.0).unwrap());
    let (tx, rx) = mpsc::channel();
    let out = engine::train(c, &data, &val, tx, control).unwrap();
    assert_eq!(out.epochs_run, 1);
    let events: Vec<_> = rx.try_iter().collect();
    assert!(events.iter().any(|e| matches!(
        e,
        TrainingEvent::DpSettingsChanged { noise_multiplier, .. } if *noise_multiplier == 2.0
    )));
    assert!(events
        .iter()
        .any(|e| matches!(e, TrainingEvent::Started { sampling, .. } if sampling == "poisson")));
}

/// Runs DP training on a thread and, on the first Step event, lowers the noise multiplier;
/// returns the events in order.
fn dp_run_with_a_mid_run_change(sampling: Sampling, epochs: usize) -> Vec<TrainingEvent> {
    let kind = ModelKind::DnnAv;
    let data = synthetic(kind, 16, 61);
    let val = synthetic(kind, 4, 62);
    let mut c = quick_config(kind, epochs);
    let mut dp = DpConfig::new(2.0, 1.0).unwrap();
    dp.sampling = sampling;
    dp.noise_seed = NoiseSeed::InsecureFixed(3);
    c.dp = Some(dp);
    let control = TrainControl::new();
    let (tx, rx) = mpsc::channel();
    let ctl = control.clone();
    let handle = std::thread::spawn(move || engine::train(c, &data, &val, tx, ctl));
    let mut events = Vec::new();
    for e in rx.iter() {
        if matches!(e, TrainingEvent::Step { .. }) && events.len() < 3 {
            control.set_noise_multiplier(dpsgd::NoiseMultiplier::new(0.8).unwrap());
        }
        events.push(e);
    }
    handle.join().unwrap().unwrap();
    events
}

fn final_epsilon(events: &[TrainingEvent]) -> f64 {
    events
        .iter()
        .find_map(|e| match e {
            TrainingEvent::Finished { epsilon, .. } => *epsilon,
            _ => None,
        })
        .expect("a finished event with epsilon")
}

/// Steps run at sigma 2.0 (before the change event) and at 0.8 (after).
fn steps_around_the_change(events: &[TrainingEvent]) -> (u64, u64) {
    let change = events
        .iter()
        .position(|e| matches!(e, TrainingEvent::DpSettingsChanged { .. }))
        .expect("the change was applied");
    let count = |s: &[TrainingEvent]| {
        s.iter()
            .filter(|e| matches!(e, TrainingEvent::Step { .. }))
            .count() as u64
    };
    (count(&events[..change]), count(&events[change..]))
}

#[test]
fn poisson_accounting_composes_each_step_with_its_own_noise() {
    use crate::privacy::{Delta, NoiseMultiplier, RdpAccountant, SampleRate};
    let events = dp_run_with_a_mid_run_change(Sampling::Poisson, 2);
    let (before, after) = steps_around_the_change(&events);
    assert!(before >= 1 && after >= 1, "{before} {after}");
    let q = SampleRate::new(8.0 / 16.0).unwrap();
    let delta = Delta::new(1e-5).unwrap();
    let mut want = RdpAccountant::new();
    want.step(q, NoiseMultiplier::new(2.0).unwrap(), before);
    want.step(q, NoiseMultiplier::new(0.8).unwrap(), after);
    let got = final_epsilon(&events);
    assert!((got - want.epsilon(delta).0).abs() < 1e-9, "{got}");
    // Counting every step at the first sigma would under-report.
    let mut naive = RdpAccountant::new();
    naive.step(q, NoiseMultiplier::new(2.0).unwrap(), before + after);
    assert!(got > naive.epsilon(delta).0);
    assert!(events.iter().any(|e| matches!(
        e,
        TrainingEvent::Started { accounting: Some(a), .. } if a.contains("poisson")
    )));
}

/// Settings whose epsilon the ledger could not honestly account under add/remove are refused
/// with a message saying why, before any step runs.
#[test]
fn shuffled_batches_and_microbatches_are_refused_under_dp() {
    let kind = ModelKind::DnnAv;
    let data = synthetic(kind, 16, 61);
    let val = synthetic(kind, 4, 62);
    let run = |dp: DpConfig| {
        let mut c = quick_config(kind, 1);
        c.dp = Some(dp);
        let (tx, rx) = mpsc::channel();
        let e = engine::train(c, &data, &val, tx, TrainControl::new()).unwrap_err();
        assert!(
            !rx.try_iter()
                .any(|e| matches!(e, TrainingEvent::Step { .. })),
            "a step ran"
        );
        e.to_string()
    };
    let mut shuffled = DpConfig::new(1.0, 1.0).unwrap();
    shuffled.sampling = Sampling::Shuffled;
    let e = run(shuffled);
    assert!(
        e.contains("shuffled batches") && e.contains("Poisson"),
        "{e}"
    );
    let mut micro = DpConfig::new(1.0, 1.0).unwrap();
    micro.microbatch_size = 4;
    let e = run(micro);
    assert!(
        e.contains("microbatch size 4") && e.contains("regroups"),
        "{e}"
    );
}

#[test]
fn dp_resume_continues_the_privacy_ledger() {
    let kind = ModelKind::DnnAv;
    let data = synthetic(kind, 16, 71);
    let val = synthetic(kind, 4, 72);
    let dir = tempfile::tempdir().unwrap();
    let cfg = |epochs| {
        let mut c = quick_config(kind, epochs);
        let mut dp = DpConfig::new(1.5, 1.0).unwrap();
        dp.noise_seed = NoiseSeed::InsecureFixed(4);
        c.dp = Some(dp);
        c.checkpoint_dir = Some(dir.path().to_path_buf());
        c
    };
    let (tx, _rx) = mpsc::channel();
    let straight = engine::train(cfg(2), &data, &val, tx, TrainControl::new()).unwrap();
    let (tx, _rx) = mpsc::channel();
    let first = engine::train(cfg(1), &data, &val, tx, TrainControl::new()).unwrap();
    let mut c2 = cfg(2);
    c2.resume = first.last_checkpoint.clone();
    let (tx, _rx) = mpsc::channel();
    let resumed = engine::train(c2, &data, &val, tx, TrainControl::new()).unwrap();
    let (a, b, f) = (
        straight.epsilon.unwrap(),
        resumed.epsilon.unwrap(),
        first.epsilon.unwrap(),
    );
    assert!((a - b).abs() < 1e-9 && b > f, "{a} {b} {f}");
    // A plain checkpoint cannot be continued privately.
    let mut plain = quick_config(kind, 1);
    plain.checkpoint_dir = Some(dir.path().join("plain"));
    let (tx, _rx) = mpsc::channel();
    let p = engine::train(plain, &data, &val, tx, TrainControl::new()).unwrap();
    let mut c3 = cfg(2);
    c3.resume = p.last_checkpoint;
    let (tx, _rx) = mpsc::channel();
    let e = engine::train(c3, &data, &val, tx, TrainControl::new()).unwrap_err();
    assert!(e.to_string().contains("without DP-SGD"), "{e}");
}

#[test]
fn dp_plan_check_accepts_every_model() {
    for kind in ModelKind::ALL {
        dpsgd::check_plan_for_dp(&kind.plan(width_for(kind))).unwrap();
    }
}

#[test]
fn clip_stats_count_clipped_units_and_take_the_median() {
    use super::dpsgd::ClipStats;
    assert_eq!(ClipStats::of(&[], 1.0), None);
    let s = ClipStats::of(&[3.0, 0.5, 2.0], 1.0).unwrap();
    assert_eq!(s.median_norm, 2.0);
    assert!((s.clipped_fraction - 2.0 / 3.0).abs() < 1e-12);
    // Even count: the mean of the middle two; a norm equal to C is not clipped.
    let s = ClipStats::of(&[4.0, 1.0, 0.25, 1.0], 1.0).unwrap();
    assert_eq!(s.median_norm, 1.0);
    assert_eq!(s.clipped_fraction, 0.25);
}

/// The step events of a DP run report how the clip acted: with a bound far above every
/// gradient nothing is clipped, with a tiny one everything is, and the median is the same
/// either way (it is measured before the clip).
#[test]
fn dp_step_events_report_the_clip() {
    let kind = ModelKind::DnnAv;
    let run = |clip: f64| {
        let data = synthetic(kind, 16, 71);
        let val = synthetic(kind, 4, 72);
        let mut c = quick_config(kind, 1);
        let mut dp = DpConfig::new(0.5, clip).unwrap();

        dp.noise_seed = NoiseSeed::InsecureFixed(5);
        // The same batches in both runs, so the medians can be compared.
        dp.sampling_seed = dpsgd::SamplingSeed::InsecureFixed(6);
        c.dp = Some(dp);
        let (tx, rx) = mpsc::channel();
        engine::train(c, &data, &val, tx, TrainControl::new()).unwrap();
        rx.try_iter()
            .find_map(|e| match e {
                TrainingEvent::Step {
                    clipped_fraction: Some(c),
                    median_grad_norm: Some(m),
                    ..
                } => Some((c, m)),
                _ => None,
            })
            .expect("a step event")
    };
    let (none, m1) = run(1e4);
    let (all, m2) = run(1e-6);
    assert_eq!(none, 0.0);
    assert_eq!(all, 1.0);
    assert!(m1 > 1e-6 && m1 < 1e4, "{m1}");
    assert!((m1 - m2).abs() <= 1e-4 * m1, "{m1} {m2}");
}

/// A frozen layer is outside DP-SGD: the per-example norms are those of the trained layers
/// alone (checked against the batch-1 reference with the frozen layer's gradient left out),
/// and its noisy gradient is exactly zero, so no noise and no privacy is spent on it.
#[test]
fn frozen_layers_are_neither_clipped_nor_noised() {
    for (kind, frozen) in [(ModelKind::DnnMax, "conv2"), (ModelKind::Vgg16_1, "fc1")] {
        let (mut model, _vm) = Model::init(kind, width_for(kind), 31, &Device::Cpu).unwrap();
        let data = synthetic(kind, 4, 32);
        let (x, y) = data.batch(&[0, 1, 2, 3], &Device::Cpu).unwrap();
        let refs = reference_per_example(&model, &x, &y);
        model.freeze(&[frozen.to_string()]).unwrap();
        let mask = model.trainable_mask();
        assert_eq!(mask.iter().filter(|t| !**t).count(), 2, "{kind}");
        let trained: Vec<Vec<Tensor>> = refs
            .iter()
            .map(|g| {
                g.iter()
                    .zip(&mask)
                    .filter(|(_, t)| **t)
                    .map(|(g, _)| g.clone())
                    .collect()
            })
            .collect();
        let r = clip_sums(&model, &x, &y, None, 1e6, dpsgd::Clipping::Flat, 1);
        let mut left_out = 0.0;
        for ((a, g), full) in r.unit_norms.iter().zip(&trained).zip(&refs) {
            let b = norm(g);
            assert!((f64::from(*a) - b).abs() <= 1e-4 * b, "{kind}: {a} vs {b}");
            left_out += norm(full).powi(2) - b * b;
        }
        // The frozen layer's share was real, so leaving it out changed the norms.
        assert!(left_out > 1e-6, "{kind}: {left_out}");
        let mut dp = DpConfig::new(1.0, 1.0).unwrap();
        dp.noise_seed = NoiseSeed::InsecureFixed(9);
        let step = private_step(&model, &x, &y, &dp, 4.0);
        for ((g, t), (name, _)) in step
            .gradients
            .iter()
            .zip(&mask)
            .zip(model.named_parameters())
        {
            let peak = max_abs(g);
            if *t {
                assert!(peak > 0.0, "{kind} {name}: trained layer got no noise");
            } else {
                assert_eq!(peak, 0.0, "{kind} {name}: frozen layer got a gradient");
            }
        }
    }
}

#[test]
fn freezing_names_real_layers_and_leaves_something_to_train() {
    let (mut model, _vm) = Model::init(ModelKind::DnnMax, 1.0, 1, &Device::Cpu).unwrap();
    let e = model.freeze(&["fc9".into()]).unwrap_err().to_string();
    assert!(
        e.contains("fc9") && e.contains("conv1, conv2, conv3, fc1, fc2"),
        "{e}"
    );
    let all: Vec<String> = ["conv1", "conv2", "conv3", "fc1", "fc2"]
        .map(String::from)
        .to_vec();
    assert!(model.freeze(&all).is_err());
    model.freeze(&["fc1".into(), "conv1".into()]).unwrap();
    assert_eq!(model.frozen(), ["conv1", "fc1"]);
}

/// Plain and DP training leave a frozen layer bit-for-bit at its initial weights while the
/// others move; the checkpoint records the choice and resume keeps it (and refuses to change
/// it).
#[test]
fn training_leaves_frozen_layers_untouched() {
    let kind = ModelKind::DnnAv;
    let (init, _vm) = Model::init(kind, 1.0, 11, &Device::Cpu).unwrap();
    let before = init.named_parameters();
    for dp in [None, Some(DpConfig::new(1.0, 1.0).unwrap())] {
        let dir = tempfile::tempdir().unwrap();
        let data = synthetic(kind, 16, 81);
        let val = synthetic(kind, 4, 82);
        let mut c = quick_config(kind, 1);
        c.frozen = vec!["conv2".into()];
        c.dp = dp;
        c.checkpoint_dir = Some(dir.path().to_path_buf());
        let (tx, _rx) = mpsc::channel();
        let out = engine::train(c, &data, &val, tx, TrainControl::new()).unwrap();
        for ((name, b), (_, a)) in before.iter().zip(out.model.named_parameters()) {
            let same = max_abs(&(b - &a).unwrap()) == 0.0;
            assert_eq!(
                same,
                name.starts_with("conv2."),
                "{name} (dp {})",
                dp.is_some()
            );
        }
        let last = out.last_checkpoint.unwrap();
        assert_eq!(checkpoint::read_meta(&last).unwrap().frozen, ["conv2"]);
        // Resume keeps the frozen layers; asking for others is refused.
        let mut r = quick_config(kind, 2);
        r.resume = Some(last.clone());
        r.checkpoint_dir = Some(dir.path().to_path_buf());
        let (tx, _rx) = mpsc::channel();
        let out = engine::train(r, &data, &val, tx, TrainControl::new()).unwrap();
        assert_eq!(out.model.frozen(), ["conv2"]);
        let mut r = quick_config(kind, 3);
        r.resume = Some(last);
        r.frozen = vec!["fc1".into()];
        let (tx, _rx) = mpsc::channel();
        let e = engine::train(r, &data, &val, tx, TrainControl::new()).unwrap_err();
        assert!(e.to_string().contains("frozen"), "{e}");
    }
}

/// `--ema`: the released weights are the average of the iterates by the recurrence, `-last`
/// keeps it beside the last iterate, and a run resumed twice releases what a straight run does
/// (which also shows a resumed DP run with a fixed noise seed draws fresh noise, not the first
/// steps' noise again).
#[test]
fn the_weight_average_is_released_and_survives_resume() {
    check_weight_average(true);
    check_weight_average(false);
}

fn check_weight_average(private: bool) {
    use super::ema::EmaDecay;
    let kind = ModelKind::DnnAv;
    let data = synthetic(kind, 8, 81);
    let val = synthetic(kind, 4, 82);
    let dir = tempfile::tempdir().unwrap();
    let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let cfg = |epochs: usize, sub: &str, resume: Option<std::path::PathBuf>| {
        let mut c = quick_config(kind, epochs);
        if private {
            let mut dp = DpConfig::new(1.0, 1.0).unwrap();
            dp.noise_seed = NoiseSeed::InsecureFixed(5);
            c.dp = Some(dp);
        }
        c.ema = Some(EmaDecay::new(0.5).unwrap());
        c.checkpoint_dir = Some(dir.path().join(sub));
        c.resume = resume;
        c
    };
    let run = |c: TrainConfig| {
        let (tx, _rx) = mpsc::channel();
        engine::train(c, &data, &val, tx, TrainControl::new()).unwrap()
    };
    // One step per epoch (8 images, batch 8): each epoch's `-last` holds one iterate.
    let mut iterates = Vec::new();
    let (m0, vm0) = Model::init(kind, width_for(kind), 11, &Device::Cpu).unwrap();
    let names: Vec<String> = model_vars(&m0, &vm0)
        .unwrap()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    iterates.push(
        model_vars(&m0, &vm0)
            .unwrap()
            .iter()
            .map(|(_, v)| flat(v.as_tensor()))
            .collect::<Vec<_>>(),
    );
    let mut resume = None;
    let mut last = None;
    let mut first_best = None;
    for epochs in 1..=3 {
        let out = run(cfg(epochs, &format!("chain{epochs}"), resume.take()));
        let path = out.last_checkpoint.clone().unwrap();
        let ck = checkpoint::load(&path, &Device::Cpu).unwrap();
        iterates.push(names.iter().map(|n| flat(&ck.tensors[n])).collect());
        if epochs == 1 {
            // The first epoch always improves on nothing: `-best` is written.
            first_best = Some(
                checkpoint::load(&out.best_checkpoint.clone().unwrap(), &Device::Cpu).unwrap(),
            );
        }
        resume = Some(path);
        last = Some((out, ck));
    }
    // `-best` after one step holds the average 1/2 w0 + 1/2 w1, not the iterate w1.
    let best = first_best.unwrap();
    for (i, name) in names.iter().enumerate() {
        let got = flat(&best.tensors[name]);
        for j in 0..got.len() {
            let want = 0.5 * iterates[0][i][j] + 0.5 * iterates[1][i][j];
            assert!((got[j] - want).abs() < 1e-5, "{name}[{j}] in -best");
        }
    }
    let (chained, ck) = last.unwrap();
    // d = 0.5 from the initial weights: 1/8 w0 + 1/8 w1 + 1/4 w2 + 1/2 w3.
    let coef = [0.125f32, 0.125, 0.25, 0.5];
    let params = |m: &Model| -> std::collections::HashMap<String, Vec<f32>> {
        m.named_parameters()
            .iter()
            .map(|(n, t)| (n.clone(), flat(t)))
            .collect()
    };
    let by_name = params(&chained.model);
    let released: Vec<Vec<f32>> = names.iter().map(|n| by_name[n].clone()).collect();
    let mut moved = 0f32;
    for (i, name) in names.iter().enumerate() {
        let want: Vec<f32> = (0..iterates[0][i].len())
            .map(|j| (0..4).map(|k| coef[k] * iterates[k][i][j]).sum())
            .collect();
        let stored = flat(&ck.tensors[&format!("ema.{name}")]);
        for j in 0..want.len() {
            assert!(
                (released[i][j] - want[j]).abs() < 1e-5,
                "{name}[{j}] released"
            );
            assert!((stored[j] - want[j]).abs() < 1e-5, "{name}[{j}] in -last");
            moved = moved.max((want[j] - iterates[3][i][j]).abs());
        }
    }
    assert!(
        moved > 1e-4,
        "the average equals the last iterate: nothing was averaged"
    );
    assert_eq!(ck.meta.ema.map(EmaDecay::get), Some(0.5));

    // A straight 3-epoch run releases the same weights.
    let straight = run(cfg(3, "straight", None));
    let s = params(&straight.model);
    for (i, name) in names.iter().enumerate() {
        let got = &s[name];
        for j in 0..got.len() {
            assert!(
                (got[j] - released[i][j]).abs() < 1e-5,
                "{name}[{j}] straight vs resumed"
            );
        }
    }
}

#[test]
fn the_kinds_layer_names_are_the_models() {
    for kind in ModelKind::ALL {
        let (m, _) = Model::init(kind, width_for(kind), 1, &Device::Cpu).unwrap();
        assert_eq!(kind.layer_names(), m.layer_names(), "{kind}");
    }
}

/// A logical batch processed in physical parts gives the step it gives in one piece (the
/// clipped sums add up before the single noise draw), and the automatic part size keeps the
/// activations within their budget.
#[test]
fn physical_batches_change_memory_not_the_step() {
    let kind = ModelKind::DnnMax;
    let (model, _vm) = Model::init(kind, 1.0, 41, &Device::Cpu).unwrap();
    let data = synthetic(kind, 8, 42);
    let (x, y) = data
        .batch(&(0..8).collect::<Vec<_>>(), &Device::Cpu)
        .unwrap();
    let step = |physical: Option<usize>, m: usize| {
        let mut dp = DpConfig::new(1.0, 0.5).unwrap();
        dp.noise_seed = NoiseSeed::InsecureFixed(3);
        dp.physical_batch = physical;
        dp.microbatch_size = m;
        private_step(&model, &x, &y, &dp, 8.0)
    };
    for (physical, m) in [(3, 1), (1, 1), (4, 2)] {
        let whole = step(None, m);
        let parts = step(Some(physical), m);
        assert_eq!(
            dpsgd::physical_chunk(&model, Some(physical), m),
            physical / m * m
        );
        for ((a, b), (name, _)) in whole
            .gradients
            .iter()
            .zip(&parts.gradients)
            .zip(model.named_parameters())
        {
            let d = max_abs(&(a - b).unwrap());
            assert!(
                d <= 1e-5 * max_abs(a).max(1e-3),
                "{name}: {d} (physical {physical}, m {m})"
            );
        }
        assert!((whole.loss - parts.loss).abs() < 1e-5);
    }
    let auto = dpsgd::physical_chunk(&model, None, 1);
    assert!(auto >= 1 && auto * model.activation_floats_per_example() <= dpsgd::ACTIVATION_BUDGET);
    assert!(auto < 2048, "dnn-max at batch 2048 must be split: {auto}");
    let mut bad = DpConfig::new(1.0, 1.0).unwrap();
    bad.microbatch_size = 4;
    bad.physical_batch = Some(2);
    let e = bad.validate().unwrap_err().to_string();
    assert!(
        e.contains("physical batch size 2") && e.contains("microbatch size 4"),
        "{e}"
    );
}

#[test]
fn a_training_dropout_rate_replaces_the_models_and_survives_resume() {
    use super::model::DropoutRate;
    for bad in [1.0, 1.5, -0.1, f32::NAN] {
        assert!(DropoutRate::new(bad).is_err(), "{bad} accepted");
    }
    let kind = ModelKind::DnnMax;
    let (mut model, _vm) = Model::init(kind, 1.0, 5, &Device::Cpu).unwrap();
    let x = random_input(kind, 4, 6);
    let eval = model.forward_with(&x, None).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let masked = model.forward_with(&x, Some(&mut rng)).unwrap();
    assert_eq!(model.dropout(), Some(0.5));
    assert!(
        max_abs(&(&masked - &eval).unwrap()) > 1e-4,
        "the plan's dropout did nothing"
    );
    model.set_dropout(DropoutRate::new(0.0).unwrap());
    assert_eq!(model.dropout(), Some(0.0));
    let unmasked = model.forward_with(&x, Some(&mut rng)).unwrap();
    assert_eq!(max_abs(&(&unmasked - &eval).unwrap()), 0.0);

    // A run that set a rate records it; a resume that names none keeps it.
    let data = synthetic(kind, 16, 3);
    let val = synthetic(kind, 8, 4);
    let dir = tempfile::tempdir().unwrap();
    let mut c1 = quick_config(kind, 1);
    c1.dropout = Some(DropoutRate::new(0.0).unwrap());
    c1.checkpoint_dir = Some(dir.path().to_path_buf());
    let (tx, _rx) = mpsc::channel();
    let first = engine::train(c1, &data, &val, tx, TrainControl::new()).unwrap();
    let last = first.last_checkpoint.unwrap();
    let meta = checkpoint::load(&last, &Device::Cpu).unwrap().meta;
    assert_eq!(meta.dropout.map(DropoutRate::get), Some(0.0));
    let mut c2 = quick_config(kind, 2);
    c2.resume = Some(last);
    let (tx, rx) = mpsc::channel();
    engine::train(c2, &data, &val, tx, TrainControl::new()).unwrap();
    match rx.try_iter().next() {
        Some(TrainingEvent::Started { dropout, .. }) => {
            assert_eq!(dropout.map(DropoutRate::get), Some(0.0))
        }
        other => panic!("expected a start event, got {other:?}"),
    }
}

/// Augmentation multiplicity: a unit is the mean over an example's copies, clipped once.
#[test]
fn augmented_copies_form_one_unit_that_the_clip_bounds() {
    use super::augment::Augmentation;
    use super::model::DropoutRate;
    let kind = ModelKind::DnnMax;
    let (mut model, _vm) = Model::init(kind, 1.0, 31, &Device::Cpu).unwrap();
    // No dropout, so the copies differ only by their transforms.
    model.set_dropout(DropoutRate::new(0.0).unwrap());
    let data = synthetic(kind, 4, 33);
    let (x, y) = data.batch(&[0, 1, 2, 3], &Device::Cpu).unwrap();
    let step = |aug: Augmentation, clip: f64, x: &Tensor, y: &Tensor| {
        let mut dp = DpConfig::new(0.0, clip).unwrap();
        dp.augmentation = aug;
        dp.physical_batch = Some(6); // parts of 2 examples x 3 copies
        private_step(&model, x, y, &dp, x.dim(0).unwrap() as f64).gradients
    };
    // Identical copies average to the example's own gradient: the same step as one copy.
    let same = Augmentation {
        copies: 3,
        max_shift: 0,
        flip: false,
    };
    for clip in [1e-3, 1e9] {
        let one = step(Augmentation::default(), clip, &x, &y);
        let three = step(same, clip, &x, &y);
        for (a, b) in one.iter().zip(&three) {
            rel_close(a, b, 1e-4, &format!("clip {clip}"));
        }
    }
    // Real transforms change the step, and each example's unit still contributes at most C.
    let aug = Augmentation::copies(3).unwrap();
    let one = step(Augmentation::default(), 1e9, &x, &y);
    let three = step(aug, 1e9, &x, &y);
    let diff: f32 = one
        .iter()
        .zip(&three)
        .map(|(a, b)| max_abs(&(a - b).unwrap()))
        .fold(0.0, f32::max);
    assert!(diff > 1e-6, "augmented copies left the gradient unchanged");
    let clip = 1e-3;
    for i in 0..4 {
        let g = step(
            aug,
            clip,
            &x.narrow(0, i, 1).unwrap(),
            &y.narrow(0, i, 1).unwrap(),
        );
        let n = norm(&g);
        assert!(n <= clip * (1.0 + 1e-4), "example {i}: norm {n} above C");
        assert!(
            n >= clip * (1.0 - 1e-3),
            "example {i}: norm {n}, expected clipped to C"
        );
    }
}

/// Adaptive clipping releases a noisy count beside each gradient and class weights from
/// `auto` release noisy counts: the ledger holds both, so the run's epsilon equals RDP over
/// the steps at the effective multiplier (sigma^-2 + sigma_b^-2)^-1/2 plus one q = 1 release
/// of the counts, and exceeds the epsilon of the steps alone. The clip follows the quantile:
/// from far above every gradient norm, it falls.
#[test]
fn adaptive_clip_and_noisy_class_counts_are_in_the_ledger() {
    use crate::privacy::{Delta, NoiseMultiplier, RdpAccountant, SampleRate};
    let kind = ModelKind::DnnAv;
    let data = synthetic(kind, 16, 81);
    let val = synthetic(kind, 4, 82);
    let mut c = quick_config(kind, 2);
    let mut dp = DpConfig::new(1.0, 1e3).unwrap();
    dp.adaptive_clip = Some(dpsgd::AdaptiveClip::new(0.5).unwrap());
    c.dp = Some(dp);
    c.class_weights = Some(loss::ClassWeighting::Counts { noise_std: 20.0 });
    let (tx, rx) = mpsc::channel();
    let out = engine::train(c, &data, &val, tx, TrainControl::new()).unwrap();
    let steps: Vec<(f64, f64, f64)> = rx
        .try_iter()
        .filter_map(|e| match e {
            TrainingEvent::Step {
                noise_multiplier: Some(s),
                clip_norm: Some(c),
                accounted_noise_multiplier: Some(a),
                ..
            } => Some((s, c, a)),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 4);
    // Expected batch 8: sigma_b = max(1, 8/20) = 1.
    let eff = (1.0f64 + 1.0).powf(-0.5);
    for (s, _, a) in &steps {
        assert_eq!(*s, 1.0);
        assert!((a - eff).abs() < 1e-12, "{a}");
    }
    // Each step at a clip far above the norms counts (almost) every example under it, so C
    // shrinks by about exp(-0.2 * 0.5) per step, noise permitting.
    assert!(steps[3].1 < steps[0].1, "{steps:?}");
    let delta = Delta::new(1e-5).unwrap();
    let mut want = RdpAccountant::new();
    want.step(
        SampleRate::new(1.0).unwrap(),
        NoiseMultiplier::new(20.0).unwrap(),
        1,
    );
    want.step(
        SampleRate::new(0.5).unwrap(),
        NoiseMultiplier::new(eff).unwrap(),
        4,
    );
    let got = out.epsilon.unwrap();
    assert!((got - want.epsilon(delta).0).abs() < 1e-9, "{got}");
    let mut steps_only = RdpAccountant::new();
    steps_only.step(
        SampleRate::new(0.5).unwrap(),
        NoiseMultiplier::new(1.0).unwrap(),
        4,
    );
    assert!(got > steps_only.epsilon(delta).0);
}

#[test]
fn class_weights_parse_a_prior_or_auto_and_refuse_the_rest() {
    use loss::ClassWeighting;
    assert_eq!(
        ClassWeighting::parse("1:3").unwrap(),
        ClassWeighting::Prior(loss::ClassWeights::new(1.0, 3.0).unwrap())
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

/// Files of versions that wrote the noise seed into the checkpoint also drew their batches
/// from the recorded `seed`: read back, they say their epsilon is not valid. Files written now
/// hold no seed and keep the marks the run earned.
#[test]
fn dp_settings_of_older_files_are_marked_not_private() {
    let now = DpConfig::new(1.0, 1.0).unwrap();
    let json = serde_json::to_value(now).unwrap();
    assert!(json.get("noise_seed").is_none() && json.get("sampling_seed").is_none());
    let back: DpConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.marks().epsilon_warning(), None);
    let mut old = json.clone();
    old["noise_seed"] = serde_json::json!("os");
    let old: DpConfig = serde_json::from_value(old).unwrap();
    assert_eq!(
        old.marks().epsilon_warning().as_deref(),
        Some("epsilon not valid: reproducible sampling")
    );
    let mut old = json;
    old["noise_seed"] = serde_json::json!({ "insecure_fixed": 4 });
    let old: DpConfig = serde_json::from_value(old).unwrap();
    assert_eq!(
        old.marks().epsilon_warning().as_deref(),
        Some("epsilon not valid: reproducible sampling and noise")
    );
    // Serialising again never writes a seed back.
    assert!(serde_json::to_value(old)
        .unwrap()
        .get("noise_seed")
        .is_none());
}
