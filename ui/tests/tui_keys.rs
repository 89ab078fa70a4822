//! Key handling: tab switching, help, quitting, and the DP sliders driving the epsilon shown
//! and a running training.

#[allow(dead_code)]
mod tui_common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use privxray::privacy::{Delta, NoiseMultiplier, RdpAccountant, SampleRate};
use privxray_ui::tui;
use privxray_ui::tui::app::TabId;
use privxray_ui::tui::backend::{DpStep, Labelling, TrainUpdate};
use privxray_ui::tui::event::{AppEvent, Event};
use privxray_ui::tui::projection::{LedgerSegment, Projection};
use privxray_ui::tui::train::{Epsilon, Field};
use tui_common::{harness, Harness};

fn press(h: &mut Harness, code: KeyCode) {
    h.app
        .handle_event(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

#[test]
fn tab_cycles_and_numbers_jump() {
    let mut h = harness();
    assert_eq!(h.app.tab, TabId::Data);
    let mut seen = vec![];
    for _ in 0..4 {
        press(&mut h, KeyCode::Tab);
        seen.push(h.app.tab);
    }
    assert_eq!(
        seen,
        [TabId::Train, TabId::Privacy, TabId::Predict, TabId::Data]
    );
    press(&mut h, KeyCode::BackTab);
    assert_eq!(h.app.tab, TabId::Predict);
    press(&mut h, KeyCode::Char('3'));
    assert_eq!(h.app.tab, TabId::Privacy);
}

#[test]
fn question_mark_toggles_help_and_esc_closes_it() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('?'));
    assert!(h.app.help);
    assert!(h.screen().contains(" Help "));
    press(&mut h, KeyCode::Char('?'));
    assert!(!h.app.help);
    press(&mut h, KeyCode::Char('?'));
    // Keys other than ?/Esc/q do not leak through the help overlay.
    press(&mut h, KeyCode::Tab);
    assert_eq!(h.app.tab, TabId::Data);
    press(&mut h, KeyCode::Esc);
    assert!(!h.app.help);
    assert!(!h.screen().contains(" Help "));
}

#[test]
fn q_quits_and_stops_children() {
    let mut h = harness();
    assert!(!h.app.quit);
    press(&mut h, KeyCode::Char('q'));
    assert!(h.app.quit);
    h.app.shutdown();
    h.app.shutdown();
    // Parties are shut down exactly once.
    let calls = h.calls.lock().unwrap();
    assert_eq!(calls.iter().filter(|c| *c == "shutdown").count(), 1);
}

#[test]
fn ctrl_c_quits() {
    let mut h = harness();
    h.app.handle_event(Event::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )));
    assert!(h.app.quit);
}

#[test]
fn typing_a_folder_does_not_trigger_shortcuts() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('e'));
    for c in "q2?".chars() {
        press(&mut h, KeyCode::Char(c));
    }
    assert!(!h.app.quit && !h.app.help);
    assert_eq!(h.app.tab, TabId::Data);
    assert_eq!(h.app.data.custom, "q2?");
    press(&mut h, KeyCode::Enter);
    assert!(!h.app.data.editing);
}

fn to_field(h: &mut Harness, f: Field) {
    while h.app.train.field() != f {
        press(h, KeyCode::Char('j'));
    }
}

/// The epsilon the screen shows as "at end" before a run: every step at `sigma`.
fn projected(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    Projection::new()
        .epsilon(
            q,
            &[LedgerSegment {
                noise: sigma,
                steps,
            }],
            delta,
        )
        .unwrap()
}

#[test]
fn noise_slider_changes_value_and_epsilon_within_the_frame() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    // 6400 training images, batch 64: q = 0.01, 100 steps per epoch, 10 epochs.
    h.app.train.train_images = Some(6400);
    h.app.train.batch = 64;
    h.app.train.epochs = 10;
    h.app.recompute_epsilon();
    to_field(&mut h, Field::Noise);
    let before = h.app.train.noise.get();
    let eps_before = projected(0.01, before, 1000, 1e-5);
    assert!(h.screen().contains(&format!("at end {eps_before:.2}")));

    press(&mut h, KeyCode::Char('+'));
    press(&mut h, KeyCode::Right);
    press(&mut h, KeyCode::Char('l'));
    let after = h.app.train.noise.get();
    assert!(
        (after - (before + 0.15)).abs() < 1e-9,
        "{before} -> {after}"
    );
    let eps_after = projected(0.01, after, 1000, 1e-5);
    assert!(eps_after < eps_before);
    let screen = h.screen();
    assert!(screen.contains(&format!("{after:.2}")), "{screen}");
    assert!(
        screen.contains(&format!("at end {eps_after:.2}")),
        "{screen}"
    );

    press(&mut h, KeyCode::Char('-'));
    assert!((h.app.train.noise.get() - (after - 0.05)).abs() < 1e-9);
}

#[test]
fn noise_slider_stops_at_its_range() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    to_field(&mut h, Field::Noise);
    for _ in 0..200 {
        press(&mut h, KeyCode::Char('-'));
    }
    assert_eq!(h.app.train.noise.get(), tui::train::NOISE_RANGE[0]);
}

/// A step event as the engine sends it: the noise and clip the step used, the noise its
/// ledger recorded, and the ledger's epsilon after it.
fn engine_step(h: &mut Harness, i: usize, used: f64, recorded: f64, epsilon: f64) {
    h.app
        .handle_event(Event::App(AppEvent::Train(TrainUpdate::Step {
            epoch: i / 100,
            step: i % 100,
            loss: 0.5,
            images_per_sec: 100.0,
            epsilon: Some(epsilon),
            dp: Some(DpStep {
                noise: used,
                clip: 1.0,
                accounted_noise: Some(recorded),
            }),
            clipping: None,
        })));
}

fn shown(h: &Harness) -> (f64, f64) {
    match &h.app.train.epsilon {
        Epsilon::Value { spent, projected } => (*spent, *projected),
        other => panic!("expected a value, got {other:?}"),
    }
}

#[test]
fn raising_sigma_mid_run_shows_the_engines_epsilon_and_projects_from_its_ledger() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    h.app.train.train_images = Some(6400);
    h.app.train.begin_run();
    // 6400 training images, batch 64: q = 0.01, 100 steps per epoch, 10 epochs.
    h.app
        .handle_event(Event::App(AppEvent::Train(TrainUpdate::Started {
            device: "CPU".into(),
            steps_per_epoch: 100,
            epochs: 10,
            train_images: 6400,
            sample_rate: Some(0.01),
        })));
    assert_eq!(shown(&h).0, 0.0, "nothing spent before the first step");
    let sigma0 = h.app.train.noise.get();
    // The ledger records less than the noise used (as when a step also releases a noisy clip
    // count) and its epsilons are the engine's: the tab must show these, not its own.
    let recorded = |sigma: f64| sigma * 0.9;
    let engine_eps = |i: usize| 0.05 + 0.01 * i as f64;
    for i in 0..30 {
        engine_step(&mut h, i, sigma0, recorded(sigma0), engine_eps(i));
    }
    to_field(&mut h, Field::Noise);
    press(&mut h, KeyCode::Char('+'));
    let sigma1 = h.app.train.noise.get();
    assert!(sigma1 > sigma0);
    assert_eq!(
        h.calls.lock().unwrap().last().unwrap(),
        &format!("set_dp {sigma1:.2} 1.00")
    );
    // The engine applies the change from its next step: one more step at the old noise.
    engine_step(&mut h, 30, sigma0, recorded(sigma0), engine_eps(30));
    let s = h.screen();
    assert!(
        s.contains(&format!("in use  σ {sigma0:.2} · C 1.00 · slider pending")),
        "{s}"
    );
    for i in 31..50 {
        engine_step(&mut h, i, sigma1, recorded(sigma1), engine_eps(i));
    }
    let s = h.screen();
    assert!(
        s.contains(&format!("in use  σ {sigma1:.2} · C 1.00")),
        "{s}"
    );
    assert!(!s.contains("pending"), "{s}");

    let (spent, projected) = shown(&h);
    assert_eq!(
        spent,
        engine_eps(49),
        "spent is the last step event's epsilon"
    );
    assert!(s.contains(&format!("ε spent {spent:.2}")), "{s}");
    // Projected: the engine's ledger as recorded (31 steps, then 19), then the 950 remaining
    // steps at the slider's noise, composed with the engine's accountant.
    let q = SampleRate::new(0.01).unwrap();
    let mut reference = RdpAccountant::new();
    for (sigma, steps) in [
        (recorded(sigma0), 31),
        (recorded(sigma1), 19),
        (sigma1, 950),
    ] {
        reference.step(q, NoiseMultiplier::new(sigma).unwrap(), steps);
    }
    let expected = reference.epsilon(Delta::new(1e-5).unwrap()).0;
    assert!(
        (projected - expected).abs() < 1e-9,
        "projected {projected} vs {expected}"
    );
    assert!(s.contains(&format!("at end {expected:.2}")), "{s}");

    // Fields other than noise and clip are locked while running.
    to_field(&mut h, Field::Epochs);
    press(&mut h, KeyCode::Char('+'));
    assert_eq!(h.app.train.epochs, 10);
}

#[test]
fn pause_resume_stop_keys() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    h.app.train.begin_run();
    h.app
        .handle_event(Event::App(AppEvent::Train(TrainUpdate::Started {
            device: "CPU".into(),
            steps_per_epoch: 10,
            epochs: 2,
            train_images: 100,
            sample_rate: Some(0.64),
        })));
    press(&mut h, KeyCode::Char('p'));
    h.app
        .handle_event(Event::App(AppEvent::Train(TrainUpdate::Paused)));
    press(&mut h, KeyCode::Char('p'));
    press(&mut h, KeyCode::Char('x'));
    assert_eq!(*h.calls.lock().unwrap(), ["pause", "resume", "stop"]);
}

#[test]
fn freeze_and_weight_average_cycle_through_their_choices() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    // From "none" everywhere (the first run freezes fc1, averages and turns dropout off).
    h.app.train.freeze = None;
    h.app.train.ema = None;
    h.app.train.dropout = None;
    to_field(&mut h, Field::Freeze);
    assert_eq!(h.app.train.freeze, None);
    let names = h.app.train.model.layer_names();
    let mut seen = Vec::new();
    for _ in 0..names.len() {
        press(&mut h, KeyCode::Char('+'));
        seen.push(h.app.train.freeze.clone().unwrap());
    }
    assert_eq!(seen, names, "each of the model's layers in order");
    press(&mut h, KeyCode::Char('+'));
    assert_eq!(h.app.train.freeze, None, "wraps to none");
    press(&mut h, KeyCode::Char('-'));
    assert_eq!(
        h.app.train.freeze.as_deref(),
        names.last().map(|s| s.as_str())
    );

    to_field(&mut h, Field::Ema);
    assert_eq!(h.app.train.ema, None);
    press(&mut h, KeyCode::Char('+'));
    assert_eq!(h.app.train.ema, Some(0.9));
    press(&mut h, KeyCode::Char('+'));
    press(&mut h, KeyCode::Char('+'));
    press(&mut h, KeyCode::Char('+'));
    assert_eq!(h.app.train.ema, Some(0.99), "stops at the largest decay");
    press(&mut h, KeyCode::Char('-'));
    assert_eq!(h.app.train.ema, Some(0.95));

    to_field(&mut h, Field::Dropout);
    assert_eq!(h.app.train.dropout, None, "the model's own rate");
    press(&mut h, KeyCode::Char('+'));
    assert_eq!(h.app.train.dropout, Some(0.25));
    press(&mut h, KeyCode::Char('+'));
    press(&mut h, KeyCode::Char('+'));
    assert_eq!(h.app.train.dropout, Some(0.0), "stops at off");
    press(&mut h, KeyCode::Char('-'));
    press(&mut h, KeyCode::Char('-'));
    assert_eq!(h.app.train.dropout, None);

    // A layer the next model lacks is dropped when the model changes.
    h.app.train.freeze = Some("conv13".into());
    h.app.train.model = privxray::model::ModelKind::Vgg16_1;
    to_field(&mut h, Field::Model);
    press(&mut h, KeyCode::Char('-'));
    assert_eq!(h.app.train.model, privxray::model::ModelKind::DnnMax);
    assert_eq!(h.app.train.freeze, None);
}

#[test]
fn space_toggles_dp_from_every_train_field() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    for f in Field::ALL {
        to_field(&mut h, f);
        let before = h.app.train.dp_enabled;
        press(&mut h, KeyCode::Char(' '));
        assert_eq!(h.app.train.dp_enabled, !before, "space on {f:?}");
        assert_eq!(h.app.train.field(), f, "space does not move the focus");
        let shown = if before { "[ ] off" } else { "[x] on" };
        assert!(h.screen().contains(shown), "{f:?}: {}", h.screen());
    }
}

#[test]
fn the_optimizer_follows_the_dp_switch_until_the_user_picks_one() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    assert!(h.app.train.dp_enabled);
    assert!(h.screen().contains("‹ SGD 0.5, momentum 0.9 ›"));
    press(&mut h, KeyCode::Char(' '));
    assert!(!h.app.train.dp_enabled);
    assert!(h.screen().contains("‹ Adam 3e-3 ›"), "{}", h.screen());
    press(&mut h, KeyCode::Char(' '));
    assert!(h.screen().contains("‹ SGD 0.5, momentum 0.9 ›"));
    // A rate the user picked stays when DP is switched.
    to_field(&mut h, Field::LearningRate);
    press(&mut h, KeyCode::Char('-'));
    let picked = (h.app.train.optimizer, h.app.train.learning_rate);
    assert_ne!(picked.1, 0.5);
    press(&mut h, KeyCode::Char(' '));
    assert!(!h.app.train.dp_enabled);
    assert_eq!((h.app.train.optimizer, h.app.train.learning_rate), picked);
}

#[test]
fn space_leaves_dp_alone_during_a_run_and_while_typing_a_folder() {
    let mut h = harness();
    // Typing a folder on the Data tab: space is part of the name.
    press(&mut h, KeyCode::Char('e'));
    for c in "my data".chars() {
        press(&mut h, KeyCode::Char(c));
    }
    assert_eq!(h.app.data.custom, "my data");
    assert!(h.app.train.dp_enabled);
    press(&mut h, KeyCode::Esc);

    // A running training keeps the DP setting it started with, and says why.
    press(&mut h, KeyCode::Char('2'));
    h.app.train.begin_run();
    press(&mut h, KeyCode::Char(' '));
    assert!(h.app.train.dp_enabled);
    let (msg, warning) = h.app.train.message.clone().unwrap();
    assert!(warning && msg.contains("between runs"), "{msg}");
}

#[test]
fn typing_a_sigma_list_does_not_trigger_shortcuts() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('3'));
    press(&mut h, KeyCode::Char('e'));
    assert!(h.screen().contains(" Enter done  Esc cancel"));
    for c in "q1?sx".chars() {
        press(&mut h, KeyCode::Char(c));
    }
    assert!(!h.app.quit && !h.app.help);
    assert_eq!(h.app.tab, TabId::Privacy);
    assert!(h.calls.lock().unwrap().is_empty());
    assert_eq!(
        h.app.privacy.sweep.editor.as_deref(),
        Some("0, 0.5, 1, 2, 4q1?sx")
    );
    press(&mut h, KeyCode::Backspace);
    assert!(h.screen().contains("σ list: 0, 0.5, 1, 2, 4q1?s█"));
    // Esc leaves the list as it was; the keys are shortcuts again.
    press(&mut h, KeyCode::Esc);
    assert_eq!(h.app.privacy.sweep.sigmas, [0.0, 0.5, 1.0, 2.0, 4.0]);
    press(&mut h, KeyCode::Char('1'));
    assert_eq!(h.app.tab, TabId::Data);
}

#[test]
fn privacy_keys_are_in_the_footer_and_help() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('3'));
    let footer = h.screen().lines().last().unwrap_or("").to_string();
    for k in ["e edit σ list", "s sweep σ", "x stop sweep", "a audit"] {
        assert!(footer.contains(k), "{k} not in {footer}");
    }
    press(&mut h, KeyCode::Char('?'));
    let s = h.screen();
    assert!(s.contains("e            edit σ list"), "{s}");
    assert!(s.contains("x            stop sweep"), "{s}");
    press(&mut h, KeyCode::Esc);
    // x with no sweep running says so and stops nothing.
    press(&mut h, KeyCode::Char('x'));
    assert!(h.calls.lock().unwrap().is_empty());
    assert!(h.screen().contains("no sweep is running"));
}

#[test]
fn c_switches_the_labels_and_the_next_preprocessing_uses_them() {
    let mut h = harness();
    assert_eq!(h.app.data.labelling, Labelling::Folders);
    // The bundled samples by class folder: two classes.
    press(&mut h, KeyCode::Enter);
    h.finish_preprocessing();
    let ready = h.app.data.ready().expect("preprocessed").clone();
    assert_eq!(ready.data.classes.names(), ["NORMAL", "PNEUMONIA"]);
    // c: by pneumonia subtype; the bundled pneumonia files are all bacterial.
    press(&mut h, KeyCode::Char('c'));
    assert_eq!(h.app.data.labelling, Labelling::Subtype);
    press(&mut h, KeyCode::Enter);
    h.finish_preprocessing();
    let ready = h.app.data.ready().expect("preprocessed").clone();
    assert_eq!(ready.data.classes.names(), ["BACTERIA", "NORMAL", "VIRUS"]);
    let counts: Vec<usize> = ready.parts[0].summary.counts[0].per_class.clone();
    assert_eq!(counts, [4, 4, 0]);
    // The Train tab's run takes these items (their labels) as they are.
    assert_eq!(h.app.train.train_images, Some(ready.train_images()));
    // c again: back to the folders; a running job ignores it.
    press(&mut h, KeyCode::Char('c'));
    assert_eq!(h.app.data.labelling, Labelling::Folders);
    h.app.data.begin(1, Labelling::Folders);
    press(&mut h, KeyCode::Char('c'));
    assert_eq!(h.app.data.labelling, Labelling::Folders);
}
