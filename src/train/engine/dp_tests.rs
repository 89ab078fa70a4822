//! The training loop under DP-SGD: without noise and clip it is plain SGD, Poisson sampling
//! and live setting changes, the privacy ledger (per step, across resume, with adaptive
//! clipping and noisy class counts), refused settings, and the clip's step statistics.

use super::TrainingEvent;
use crate::model::ModelKind;
use crate::train::dpsgd::{self, DpConfig, NoiseSeed, Sampling};
use crate::train::engine;
use crate::train::loss;
use crate::train::optim::OptimizerConfig;
use crate::train::test_support::{quick_config, rel_close, synthetic};
use crate::train::TrainControl;
use std::sync::mpsc;

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
