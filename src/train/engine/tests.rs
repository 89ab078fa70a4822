//! The training loop without DP-SGD (and the parts that hold either way): the loss falls,
//! resume continues the curve, stop and pause, frozen layers, the weight average and the
//! dropout rate. The private runs are tested in `dp_tests`.

use super::{model_vars, Seed, TrainConfig, TrainingEvent};
use crate::model::ModelKind;
use crate::train::checkpoint;
use crate::train::dpsgd::{DpConfig, NoiseSeed};
use crate::train::engine;
use crate::train::model::Model;
use crate::train::optim::OptimizerConfig;
use crate::train::test_support::{max_abs, quick_config, random_input, synthetic, width_for};
use crate::train::TrainControl;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use std::sync::mpsc;

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
    use crate::train::ema::EmaDecay;
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
fn a_training_dropout_rate_replaces_the_models_and_survives_resume() {
    use crate::train::model::DropoutRate;
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
