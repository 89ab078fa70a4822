//! Contract: raising sigma mid-run, the Train tab's spent epsilon equals `privxray epsilon`
//! recomputed over the engine's ledger.
//!
//! A real, short DP-SGD run on a few tiny synthetic images, through the interface's own
//! training backend (`backends::training::EngineTraining`, in process). The noise slider is
//! raised after the first step, before that step's event reaches the tab, with the keys a user
//! would press (key -> `SetDp` -> the engine's `TrainControl`); the run finishes, and the tab's
//! figure is compared with the binary's `epsilon --checkpoint <the run's -last checkpoint>
//! --json`. A tab that credited steps to the slider's sigma would count that first step at the
//! raised noise and under-report.

#[allow(dead_code)]
mod tui_common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use privxray::synth::{self, SynthOptions};
use privxray::train::checkpoint;
use privxray_ui::backends::data::EngineData;
use privxray_ui::backends::training::EngineTraining;
use privxray_ui::backends::TrainedOn;
use privxray_ui::tui::app::App;
use privxray_ui::tui::backend::{Backends, TrainUpdate};
use privxray_ui::tui::data::DataSource;
use privxray_ui::tui::event::{AppEvent, Event, EventQueue};
use privxray_ui::tui::theme::Theme;
use privxray_ui::tui::train::{Epsilon, Field, RunState};
use std::process::Command;
use std::time::{Duration, Instant};
use tui_common::Harness;

const BIN: &str = env!("CARGO_BIN_EXE_privxray");

fn press(h: &mut Harness, code: KeyCode) {
    h.app
        .handle_event(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn to_field(h: &mut Harness, f: Field) {
    while h.app.train.field() != f {
        press(h, KeyCode::Char('j'));
    }
}

/// The interface on the real training engine, its Data tab offering `data`.
fn engine_harness(data: &std::path::Path, checkpoints: &std::path::Path) -> Harness {
    let queue = EventQueue::new();
    let backends = Backends {
        data: Some(Box::new(EngineData)),
        training: Some(Box::new(EngineTraining::new(
            checkpoints.to_path_buf(),
            TrainedOn::default(),
        ))),
        ..Backends::none()
    };
    let app = App::new(
        vec![DataSource::folder(data, "synthetic")],
        None,
        backends,
        queue.sender(),
        Theme::PLAIN,
    );
    Harness {
        app,
        queue,
        calls: Default::default(),
    }
}

/// The epsilon the binary recomputes from a checkpoint's recorded privacy ledger.
fn cli_epsilon(checkpoint: &std::path::Path, delta: f64) -> f64 {
    let out = Command::new(BIN)
        .args([
            "epsilon",
            "--json",
            "--delta",
            &delta.to_string(),
            "--checkpoint",
        ])
        .arg(checkpoint)
        .output()
        .expect("running privxray epsilon");
    assert!(out.status.success(), "privxray epsilon: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("epsilon JSON");
    v["epsilon"]
        .as_f64()
        .unwrap_or_else(|| panic!("no epsilon in {v}"))
}

#[test]
fn raising_sigma_mid_run_the_spent_epsilon_is_the_engine_ledgers() {
    let dir = tempfile::tempdir().unwrap();
    let (data, checkpoints) = (dir.path().join("synthetic"), dir.path().join("checkpoints"));
    let mut opts = SynthOptions::new(40, 7);
    opts.width_range = (64, 96);
    synth::generate(&data, &opts).unwrap();
    let mut h = engine_harness(&data, &checkpoints);
    press(&mut h, KeyCode::Enter);
    h.finish_preprocessing();
    assert!(h.app.data.ready().is_some(), "{:?}", h.app.data.job);

    // DP on (the default), 3 epochs of batches of 8.
    press(&mut h, KeyCode::Char('2'));
    assert!(h.app.train.dp_enabled);
    to_field(&mut h, Field::Epochs);
    while h.app.train.epochs > 3 {
        press(&mut h, KeyCode::Char('-'));
    }
    to_field(&mut h, Field::Batch);
    while h.app.train.batch > 8 {
        press(&mut h, KeyCode::Char('-'));
    }
    let sigma0 = h.app.train.noise.get();
    press(&mut h, KeyCode::Char('s'));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut raised = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "the run did not finish: {:?}",
            h.app.train.state
        );
        let next = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(1), h.queue.next()).await });
        let Ok(Some(event)) = next else { continue };
        if raised.is_none()
            && matches!(event, Event::App(AppEvent::Train(TrainUpdate::Step { .. })))
        {
            // The first step has run at the old noise; its event is still on its way, as
            // events are when a user moves the slider. The engine applies the raise from a
            // later step.
            to_field(&mut h, Field::Noise);
            for _ in 0..6 {
                press(&mut h, KeyCode::Char('+'));
            }
            raised = Some(h.app.train.noise.get());
        }
        h.app.handle_event(event);
        if matches!(
            h.app.train.state,
            RunState::Finished(_) | RunState::Failed(_)
        ) {
            break;
        }
    }
    let outcome = match &h.app.train.state {
        RunState::Finished(o) => o.clone(),
        other => panic!("the run failed: {other:?}"),
    };
    let sigma1 = raised.expect("the run took a step");
    assert!(sigma1 > sigma0 + 0.2, "{sigma0} -> {sigma1}");
    assert_eq!(h.app.train.in_use.map(|u| u.0), Some(sigma1));

    // The engine's ledger shows the raise took effect mid-run.
    let best = outcome.checkpoint.expect("a best checkpoint");
    let last = best.with_file_name(format!("{}-last.safetensors", h.app.train.model.name()));
    let ledger = checkpoint::read_meta(&last).unwrap().privacy_ledger;
    let sigmas: Vec<f64> = ledger.iter().map(|s| s.noise_multiplier.get()).collect();
    assert!(
        sigmas.len() >= 2 && sigmas[0] < *sigmas.last().unwrap(),
        "ledger {ledger:?}"
    );

    let reference = cli_epsilon(&last, h.app.train.delta);
    let spent = match h.app.train.epsilon {
        Epsilon::Value { spent, .. } => spent,
        ref other => panic!("expected a value, got {other:?}"),
    };
    assert!(
        (spent - reference).abs() <= 1e-9 * reference.max(1.0),
        "Train tab ε {spent} vs privxray epsilon {reference}"
    );
    let s = h.screen();
    assert!(s.contains(&format!("ε spent {reference:.2}")), "{s}");
    // The tab's copy of the ledger (from the step events) is the engine's (the checkpoint may
    // round the last bits of a noise multiplier).
    let copied = &h.app.train.ledger;
    assert_eq!(copied.len(), ledger.len(), "{copied:?} vs {ledger:?}");
    for (c, r) in copied.iter().zip(&ledger) {
        assert!(
            c.steps == r.steps && (c.noise - r.noise_multiplier.get()).abs() < 1e-12,
            "{copied:?} vs {ledger:?}"
        );
    }
}
