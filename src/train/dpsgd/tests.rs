//! Tests of DP-SGD's parts against slow references: per-example gradients and their clipping
//! (flat, per layer, with class weights, frozen layers, microbatches, augmented copies and
//! physical chunks), the noise, the clip's statistics and the settings read from older files.
//! Runs of the training loop under DP-SGD are tested in `train::engine::dp_tests`.

use crate::model::ModelKind;
use crate::train::dpsgd::{self, ClipNorm, DpConfig, NoiseSeed};
use crate::train::loss;
use crate::train::model::Model;
use crate::train::test_support::{max_abs, rel_close, synthetic, width_for};
use candle_core::{Device, Tensor};
use rand::SeedableRng;

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
        class_weights.as_ref(),
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
            Some(cw.clone()),
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
fn dp_plan_check_accepts_every_model() {
    for kind in ModelKind::ALL {
        dpsgd::check_plan_for_dp(&kind.plan(width_for(kind))).unwrap();
    }
}

#[test]
fn clip_stats_count_clipped_units_and_take_the_median() {
    use super::ClipStats;
    assert_eq!(ClipStats::of(&[], 1.0), None);
    let s = ClipStats::of(&[3.0, 0.5, 2.0], 1.0).unwrap();
    assert_eq!(s.median_norm, 2.0);
    assert!((s.clipped_fraction - 2.0 / 3.0).abs() < 1e-12);
    // Even count: the mean of the middle two; a norm equal to C is not clipped.
    let s = ClipStats::of(&[4.0, 1.0, 0.25, 1.0], 1.0).unwrap();
    assert_eq!(s.median_norm, 1.0);
    assert_eq!(s.clipped_fraction, 0.25);
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

/// Augmentation multiplicity: a unit is the mean over an example's copies, clipped once.
#[test]
fn augmented_copies_form_one_unit_that_the_clip_bounds() {
    use crate::train::augment::Augmentation;
    use crate::train::model::DropoutRate;
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
