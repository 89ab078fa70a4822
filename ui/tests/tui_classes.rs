//! Three classes through the interface on the real engine: the Data tab's subtype labels reach
//! preprocessing, the Train tab's run trains a three-output model on them, the evaluation it
//! shows is the engine's over the three classes, and a private prediction (the in-process
//! parties) gives every class's probability, as the plaintext model does.

#[allow(dead_code)]
mod tui_common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use privxray_ui::backends::data::EngineData;
use privxray_ui::backends::in_process::InProcessParties;
use privxray_ui::backends::training::EngineTraining;
use privxray_ui::backends::TrainedOn;
use privxray_ui::tui::app::App;
use privxray_ui::tui::backend::Backends;
use privxray_ui::tui::data::DataSource;
use privxray_ui::tui::event::{Event, EventQueue};
use privxray_ui::tui::theme::Theme;
use privxray_ui::tui::train::RunState;
use std::time::{Duration, Instant};
use tui_common::{three_class_kermany, Harness};

fn press(h: &mut Harness, code: KeyCode) {
    h.app
        .handle_event(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

/// Applies queued events until `done` holds (at most 300 s).
fn run_until(h: &mut Harness, what: &str, done: impl Fn(&App) -> bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done(&h.app) {
        assert!(Instant::now() < deadline, "{what}: not within 300 s");
        let next = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(1), h.queue.next()).await });
        if let Ok(Some(e)) = next {
            h.app.handle_event(e);
        }
    }
}

/// The bundled samples by subtype (with a val split and more NORMAL images, below), labelled
/// with `c` and preprocessed on the Data tab, then one epoch of the Train tab's run on them.
fn trained_on_three_classes() -> (tempfile::TempDir, Harness) {
    let (tmp, root) = three_class_kermany();
    // A val split of one image per class, and four more NORMAL training images (copies under
    // other names): the engine holds out a tenth of each class's training images, rounded, for
    // validation, and needs some.
    let more_normal: Vec<(String, String)> = (0..4)
        .map(|i| {
            (
                "train/NORMAL/NORMAL2-IM-1430-0001.jpeg".to_string(),
                format!("train/NORMAL/NORMAL2-IM-800{i}-0001.jpeg"),
            )
        })
        .collect();
    let copies = [
        (
            "train/NORMAL/NORMAL2-IM-1427-0001.jpeg",
            "val/NORMAL/NORMAL2-IM-9001-0001.jpeg",
        ),
        (
            "train/PNEUMONIA/person1946_bacteria_4875.jpeg",
            "val/PNEUMONIA/person9001_bacteria_9001.jpeg",
        ),
        (
            "train/PNEUMONIA/person1947_virus_4876.jpeg",
            "val/PNEUMONIA/person9002_virus_9002.jpeg",
        ),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    for (from, to) in more_normal.into_iter().chain(copies) {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(from), to).unwrap();
    }
    let queue = EventQueue::new();
    let backends = Backends {
        data: Some(Box::new(EngineData)),
        training: Some(Box::new(EngineTraining::new(
            tmp.path().join("runs"),
            TrainedOn::default(),
        ))),
        audit: None,
        exporter: None,
        parties: Some(Box::new(InProcessParties::new())),
    };
    let sources = vec![DataSource::folder(root, "bundled samples by subtype")];
    let app = App::new(sources, None, backends, queue.sender(), Theme::ANSI16);
    let mut h = Harness {
        app,
        queue,
        calls: Default::default(),
    };
    press(&mut h, KeyCode::Char('c'));
    press(&mut h, KeyCode::Enter);
    h.finish_preprocessing();
    assert!(h.app.data.ready().is_some(), "{:?}", h.app.data.job);

    // One epoch without DP (eight images are too few for its sampling to mean anything).
    press(&mut h, KeyCode::Char('2'));
    press(&mut h, KeyCode::Char('j'));
    for _ in 0..12 {
        press(&mut h, KeyCode::Char('-'));
    }
    assert_eq!(h.app.train.epochs, 1);
    press(&mut h, KeyCode::Char(' '));
    assert!(!h.app.train.dp_enabled);
    press(&mut h, KeyCode::Char('s'));
    run_until(&mut h, "training", |a| {
        matches!(a.train.state, RunState::Finished(_) | RunState::Failed(_))
    });
    (tmp, h)
}

#[test]
fn a_run_on_subtype_labels_trains_and_evaluates_three_classes() {
    let (_tmp, h) = trained_on_three_classes();

    let RunState::Finished(outcome) = &h.app.train.state else {
        panic!("{:?}", h.app.train.state);
    };
    let m = outcome.test.as_deref().expect("the engine's test metrics");
    assert_eq!(m.classes, ["BACTERIA", "NORMAL", "VIRUS"]);
    // Test and val: two images of each class, each class a row of the 3 x 3 matrix.
    assert_eq!(m.confusion.len(), 3);
    let rows: Vec<u64> = m.confusion.iter().map(|r| r.iter().sum()).collect();
    assert_eq!(rows, [2, 2, 2]);
    assert_eq!(m.per_class.len(), 3);
    let s = h.screen();
    assert!(s.contains("test + val: 6 images"), "{s}");
    assert!(s.contains("confusion: rows true, columns predicted"), "{s}");
}

#[test]
fn a_three_class_model_predicts_privately_with_every_class_probability() {
    let (_tmp, mut h) = trained_on_three_classes();
    press(&mut h, KeyCode::Char('4'));
    press(&mut h, KeyCode::Char('L'));
    run_until(&mut h, "parties ready", |a| a.predict.all_ready());
    press(&mut h, KeyCode::Char('m'));
    run_until(&mut h, "model shared", |a| a.predict.model.is_some());
    assert_eq!(
        h.app.predict.classes.as_ref().map(|c| c.names().to_vec()),
        Some(vec!["BACTERIA".into(), "NORMAL".into(), "VIRUS".into()]),
        "the checkpoint's class names"
    );
    press(&mut h, KeyCode::Enter);
    run_until(&mut h, "prediction", |a| {
        !a.predict.results.is_empty() || a.predict.pending.is_empty()
    });
    let r = h.app.predict.results.last().expect("a prediction");
    let plain = r.plaintext.as_ref().expect("the plaintext prediction");
    assert_eq!(r.private.0.len(), 3);
    assert!(
        (r.private.0.iter().sum::<f64>() - 1.0).abs() < 1e-3,
        "{r:?}"
    );
    assert_eq!(r.private.class(), plain.class());
    for (p, q) in r.private.0.iter().zip(&plain.0) {
        assert!((p - q).abs() < 1e-2, "private {p} vs plaintext {q}");
    }
    let s = h.screen();
    for class in ["BACTERIA", "NORMAL", "VIRUS"] {
        let shown = format!(
            "{:.1}%",
            r.private.0[h
                .app
                .predict
                .classes
                .as_ref()
                .unwrap()
                .label_of(class)
                .unwrap()
                .index()]
                * 100.0
        );
        assert!(
            s.lines().any(|l| l.contains(class) && l.contains(&shown)),
            "{class} {shown}:\n{s}"
        );
    }
}
