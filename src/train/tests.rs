//! Cross-module tests: models against `NetworkSpec`, checkpoints, the training loop (plain and
//! under DP-SGD). The DP-SGD parts themselves are tested in `train::dpsgd::tests`.

use super::checkpoint;
use super::dpsgd::{self, DpConfig, NoiseSeed, Sampling};
use super::engine::{self, model_vars, Seed, TrainConfig, TrainingEvent};
use super::loss;
use super::model::Model;
use super::optim::OptimizerConfig;
use super::test_support::{max_abs, rel_close, synthetic, width_for};
use super::TrainControl;
use crate::model::ModelKind;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use std::sync::mpsc;

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
