//! Snapshot tests of every tab in its main states (empty, running, finished, error), drawn on
//! ratatui's TestBackend at 100x30, plus the help overlay, demo caption and the too-small
//! message. Data comes from really preprocessing the bundled samples; the other tabs are driven
//! by the same events their backends send.

#[allow(dead_code)]
mod tui_common;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use privxray::model::ModelKind;
use privxray_ui::tui;
use privxray_ui::tui::app::TabId;
use privxray_ui::tui::backend::{
    AuditUpdate, ClassNames, ClassProbs, DpStep, EpochPoint, Metrics, PartyId, PartyState,
    PartyStatus, PartyUpdate, TrainOutcome, TrainUpdate,
};
use privxray_ui::tui::data::PreprocessUpdate;
use privxray_ui::tui::event::{AppEvent, Event};
use privxray_ui::tui::privacy::{AuditState, RunRecord};
use std::path::PathBuf;
use tui_common::{harness, three_class_kermany, Harness};

fn press(h: &mut Harness, code: KeyCode) {
    h.app
        .handle_event(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn with_data() -> Harness {
    let mut h = harness();
    press(&mut h, KeyCode::Enter);
    h.finish_preprocessing();
    assert!(h.app.data.ready().is_some(), "{:?}", h.app.data.job);
    h
}

#[test]
fn data_empty() {
    insta::assert_snapshot!("data_empty", harness().screen());
}

#[test]
fn data_running() {
    let mut h = harness();
    h.app_event(AppEvent::Preprocess(PreprocessUpdate::Progress {
        part: 0,
        parts: 2,
        progress: privxray::preprocess::Progress {
            done: 120,
            total: 480,
            cached: 20,
        },
        elapsed: 2.0,
    }));
    let s = h.screen();
    // 120 images in 2 s: 60 images/s, 360 left: 6 s.
    assert!(
        s.contains("60.0 images/s · ETA 0:06 · 20 from cache"),
        "{s}"
    );
    insta::assert_snapshot!("data_running", s);
}

#[test]
fn data_finished_with_real_samples() {
    let h = with_data();
    let ready = h.app.data.ready().unwrap();
    // The bundled samples: 4 NORMAL and 4 PNEUMONIA radiographs in one folder.
    let counts = ready.data.counts();
    assert_eq!(counts.values().sum::<usize>(), 8);
    assert_eq!(h.app.data.previews.len(), 4);
    insta::assert_snapshot!("data_finished", h.screen());
}

#[test]
fn data_error_for_missing_folder() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('j'));
    press(&mut h, KeyCode::Enter);
    h.finish_preprocessing();
    let s = h.screen();
    assert!(s.contains("no/such/folder does not"), "{s}");
    insta::assert_snapshot!("data_error", s);
}

/// The bundled samples by pneumonia subtype (see `three_class_kermany`), preprocessed through
/// the Data tab: a source added, chosen, `c` for the subtype labels, Enter.
fn with_three_classes() -> (tempfile::TempDir, Harness) {
    let (tmp, root) = three_class_kermany();
    let mut h = harness();
    h.app.data.sources.push(tui::data::DataSource::folder(
        root,
        "bundled samples by subtype",
    ));
    press(&mut h, KeyCode::Char('j'));
    press(&mut h, KeyCode::Char('j'));
    press(&mut h, KeyCode::Char('c'));
    press(&mut h, KeyCode::Enter);
    h.finish_preprocessing();
    assert!(h.app.data.ready().is_some(), "{:?}", h.app.data.job);
    (tmp, h)
}

/// The words after `first` on the first screen line where `first` is followed by words that
/// `fits` accepts (panels side by side: the rest of the line, borders dropped).
fn cells_after(screen: &str, first: &str, fits: impl Fn(&[String]) -> bool) -> Vec<String> {
    for line in screen.lines() {
        let words: Vec<String> = line
            .trim_matches('"')
            .split(['│', ' '])
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect();
        for (i, w) in words.iter().enumerate() {
            if w == first && fits(&words[i + 1..]) {
                return words[i + 1..].to_vec();
            }
        }
    }
    panic!("no line with {first} followed as wanted:\n{screen}")
}

/// The words after `first` where `with` is among the three that follow it.
fn row_after(screen: &str, first: &str, with: &str) -> Vec<String> {
    cells_after(screen, first, |rest| rest.iter().take(3).any(|w| w == with))
}

/// A class's probabilities, private then plaintext.
fn probability_row(screen: &str, class: &str) -> Vec<String> {
    cells_after(screen, class, |rest| {
        rest.len() >= 2 && rest[..2].iter().all(|w| w.ends_with('%'))
    })
}

/// A confusion matrix row: the counts after the class name.
fn confusion_row(screen: &str, class: &str) -> Vec<String> {
    cells_after(screen, class, |rest| {
        rest.first().is_some_and(|w| w.parse::<u64>().is_ok())
    })
}

#[test]
fn data_finished_with_three_classes() {
    let (_tmp, h) = with_three_classes();
    let ready = h.app.data.ready().unwrap();
    assert_eq!(
        ready.data.classes.names(),
        ["BACTERIA", "NORMAL", "VIRUS"],
        "the subtype labels reached the engine"
    );
    let s = h.screen();
    // One column per class, one row per split, the counts the engine's summary gives.
    let header = cells_after(&s, "folder", |r| r.get(4).is_some_and(|w| w == "VIRUS"));
    assert_eq!(
        header[..5],
        ["origin", "split", "BACTERIA", "NORMAL", "VIRUS"]
    );
    assert_eq!(
        row_after(&s, "three", "train")[..5],
        ["real", "train", "1", "3", "1"],
        "{s}"
    );
    assert_eq!(
        row_after(&s, "three", "test")[..5],
        ["real", "test", "1", "1", "1"],
        "{s}"
    );
    assert!(
        s.contains("labels: pneumonia subtype (c: class folders)"),
        "{s}"
    );
    insta::assert_snapshot!("data_finished_three_classes", s);

    // Switching the labels back asks for another run of the job before the counts follow.
    let mut h = h;
    press(&mut h, KeyCode::Char('c'));
    let s = h.screen();
    assert!(s.contains("labels: class folders · Enter applies"), "{s}");
}

/// The engine's metrics of `correct` right answers among 100 binary images (50 of each class).
fn binary_metrics(correct: u64) -> Metrics {
    let tn = correct / 2;
    let tp = correct - tn;
    Metrics::from_confusion([[tn, 50 - tn], [50 - tp, tp]], 0.4, Some(0.9))
}

fn epoch(e: usize, val_acc: f64) -> EpochPoint {
    EpochPoint {
        epoch: e,
        train_loss: 0.7 / (e as f64 + 1.0),
        train_acc: val_acc + 0.02,
        val_loss: 0.8 / (e as f64 + 1.0),
        val_acc,
        eta_seconds: 30.0,
    }
}

/// Three epochs of a DP run as the engine reports them: each step's epsilon is its ledger's
/// (every step recorded at sigma 1.1, q = 0.25).
fn running(h: &mut Harness) {
    press(h, KeyCode::Char('2'));
    press(h, KeyCode::Char('s'));
    h.app_event(AppEvent::Train(TrainUpdate::Started {
        device: "CPU (test)".into(),
        steps_per_epoch: 4,
        epochs: 10,
        train_images: 8,
        sample_rate: Some(0.25),
    }));
    let mut ledger = Vec::new();
    let mut ledger_eps = |sigma: f64| {
        tui::projection::record(&mut ledger, sigma);
        tui::projection::Projection::new()
            .epsilon(0.25, &ledger, 1e-5)
            .unwrap()
    };
    for e in 0..3 {
        for s in 0..4 {
            let sigma = 1.1;
            h.app_event(AppEvent::Train(TrainUpdate::Step {
                epoch: e,
                step: s,
                loss: 0.7 - 0.05 * (e * 4 + s) as f64,
                images_per_sec: 64.0,
                epsilon: Some(ledger_eps(sigma)),
                dp: Some(DpStep {
                    noise: sigma,
                    clip: 1.0,
                    accounted_noise: Some(sigma),
                }),
                clipping: Some((0.75, 2.5 - 0.1 * (e * 4 + s) as f64)),
            }));
        }
        h.app_event(AppEvent::Train(TrainUpdate::Epoch(epoch(
            e,
            0.6 + 0.1 * e as f64,
        ))));
    }
}

#[test]
fn train_empty() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    insta::assert_snapshot!("train_empty", h.screen());
}

#[test]
fn train_running() {
    let mut h = with_data();
    running(&mut h);
    assert_eq!(h.calls.lock().unwrap()[0], "start dnn-max 2 σ0.7");
    insta::assert_snapshot!("train_running", h.screen());
}

#[test]
fn train_finished() {
    let mut h = with_data();
    running(&mut h);
    h.app_event(AppEvent::Train(TrainUpdate::Finished(TrainOutcome {
        stopped: false,
        epochs_run: 3,
        best_val_acc: 0.8,
        test: Some(Box::new(binary_metrics(78))),
        // The engine's figure for the run: its ledger's after the last step.
        epsilon: h.app.train.spent,
        checkpoint: Some(PathBuf::from("runs/dnn-av/best.safetensors")),
    })));
    assert_eq!(h.app.privacy.runs.len(), 1);
    let s = h.screen();
    // The binary confusion [[39, 11], [11, 39]] under the class names, rows true.
    assert_eq!(confusion_row(&s, "NORMAL")[..2], ["39", "11"], "{s}");
    assert_eq!(confusion_row(&s, "PNEUMONIA")[..2], ["11", "39"], "{s}");
    insta::assert_snapshot!("train_finished", s);
}

/// Three classes: 30 test images, 10 of each; the model mistakes 3 BACTERIA for VIRUS, 4 VIRUS
/// for BACTERIA and 1 NORMAL for VIRUS, as the engine's metrics from probabilities count them.
fn three_class_metrics() -> Metrics {
    let classes: Vec<String> = ["BACTERIA", "NORMAL", "VIRUS"].map(String::from).into();
    let mut labels = Vec::new();
    let mut probabilities = Vec::new();
    let predicted = [
        (0u8, 7, 0),
        (0, 3, 2),
        (1, 9, 1),
        (1, 1, 2),
        (2, 6, 2),
        (2, 4, 0),
    ];
    for (truth, n, pred) in predicted {
        for i in 0..n {
            labels.push(truth);
            // Confidence varies so the ROC-AUCs are not all ties.
            let top = 0.5 + 0.04 * i as f32;
            probabilities.push(
                (0..3)
                    .map(|c| if c == pred { top } else { (1.0 - top) / 2.0 })
                    .collect(),
            );
        }
    }
    Metrics::from_probabilities(&probabilities, &[0.0; 30], &labels, 0.7, &classes)
}

#[test]
fn train_finished_with_three_classes() {
    let (_tmp, mut h) = with_three_classes();
    running(&mut h);
    h.app_event(AppEvent::Train(TrainUpdate::Finished(TrainOutcome {
        stopped: false,
        epochs_run: 3,
        best_val_acc: 0.8,
        test: Some(Box::new(three_class_metrics())),
        epsilon: h.app.train.spent,
        checkpoint: Some(PathBuf::from("runs/dnn-max/best.safetensors")),
    })));
    let s = h.screen();
    // Rows true, columns predicted, in the classes' order; the diagonal is what was right.
    assert_eq!(confusion_row(&s, "BACTERIA")[..3], ["7", "0", "3"], "{s}");
    assert_eq!(confusion_row(&s, "NORMAL")[..3], ["0", "9", "1"], "{s}");
    assert_eq!(confusion_row(&s, "VIRUS")[..3], ["4", "0", "6"], "{s}");
    // 22 of 30 right.
    assert!(s.contains("test + val: 30 images · accuracy 73.3%"), "{s}");
    assert!(s.contains("test 73.3%"), "{s}");
    // NORMAL one-vs-rest: precision 9/9, recall 9/10, specificity 20/20.
    assert_eq!(
        row_after(&s, "NORMAL", "0.90")[..3],
        ["1.00", "0.90", "1.00"],
        "{s}"
    );
    insta::assert_snapshot!("train_finished_three_classes", s);
}

#[test]
fn train_error() {
    let mut h = with_data();
    running(&mut h);
    h.app_event(AppEvent::Train(TrainUpdate::Failed(
        "CUDA out of memory at batch 64".into(),
    )));
    insta::assert_snapshot!("train_error", h.screen());
}

#[test]
fn train_refuses_technique_mismatch() {
    let mut h = with_data();
    press(&mut h, KeyCode::Char('2'));
    // Step the model field until vgg16-2 (the order is dnn-av, dnn-max, vgg16-1, vgg16-2).
    for _ in 0..4 {
        if h.app.train.model == ModelKind::Vgg16_2 {
            break;
        }
        press(&mut h, KeyCode::Char('l'));
    }
    assert_eq!(h.app.train.model, ModelKind::Vgg16_2);
    press(&mut h, KeyCode::Char('s'));
    assert!(h.calls.lock().unwrap().is_empty());
    let s = h.screen();
    assert!(s.contains("vgg16-2 needs technique 2"), "{s}");
}

fn run(model: ModelKind, eps: Option<f64>, acc: f64) -> RunRecord {
    RunRecord {
        model,
        epsilon: eps,
        delta: eps.map(|_| 1e-5),
        accuracy: acc,
        accuracy_is_test: true,
        checkpoint: Some(PathBuf::from("runs/x.safetensors")),
        audit: AuditState::NotRun,
        sweep_sigma: None,
    }
}

fn privacy_runs(h: &mut Harness) {
    press(h, KeyCode::Char('3'));
    h.app.privacy.add(run(ModelKind::DnnAv, None, 0.91));
    h.app.privacy.add(run(ModelKind::DnnAv, Some(8.0), 0.86));
    h.app.privacy.add(run(ModelKind::DnnMax, Some(1.0), 0.74));
}

#[test]
fn privacy_empty() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('3'));
    insta::assert_snapshot!("privacy_empty", h.screen());
}

#[test]
fn privacy_running_audit() {
    let mut h = harness();
    privacy_runs(&mut h);
    h.app_event(AppEvent::Audit(AuditUpdate::Started { run: 2 }));
    insta::assert_snapshot!("privacy_running", h.screen());
}

#[test]
fn privacy_finished_audit() {
    let mut h = harness();
    privacy_runs(&mut h);
    h.app_event(AppEvent::Audit(AuditUpdate::Finished {
        run: 2,
        auc: 0.512,
        advantage: 0.031,
    }));
    let s = h.screen();
    // Bound (e^1 - 1 + 1e-5) / (e^1 + 1) = 0.462.
    assert!(s.contains("ε-DP bound on advantage 0.462"), "{s}");
    insta::assert_snapshot!("privacy_finished", s);
}

#[test]
fn privacy_error() {
    let mut h = harness();
    privacy_runs(&mut h);
    // No audit backend in the harness: pressing a reports it.
    press(&mut h, KeyCode::Char('a'));
    insta::assert_snapshot!("privacy_error", h.screen());
}

/// One sweep run as the engine reports it: started, an epoch, finished at `acc` and `eps`.
fn sweep_run(h: &mut Harness, eps: Option<f64>, acc: f64) {
    h.app_event(AppEvent::Train(TrainUpdate::Started {
        device: "CPU (test)".into(),
        steps_per_epoch: 4,
        epochs: 10,
        train_images: 8,
        sample_rate: eps.map(|_| 0.25),
    }));
    h.app_event(AppEvent::Train(TrainUpdate::Epoch(epoch(0, acc))));
    h.app_event(AppEvent::Train(TrainUpdate::Finished(TrainOutcome {
        stopped: false,
        epochs_run: 10,
        best_val_acc: acc,
        test: Some(Box::new(binary_metrics((acc * 100.0).round() as u64))),
        epsilon: eps,
        checkpoint: Some(PathBuf::from("runs/sweep/best.safetensors")),
    })));
}

fn type_text(h: &mut Harness, text: &str) {
    for c in text.chars() {
        press(h, KeyCode::Char(c));
    }
}

#[test]
fn privacy_sweep() {
    let mut h = with_data();
    // A run from the Train tab beforehand stays on the chart.
    h.app.privacy.add(run(ModelKind::DnnAv, Some(2.0), 0.70));
    press(&mut h, KeyCode::Char('3'));
    press(&mut h, KeyCode::Char('e'));
    // The editor starts from the default list; typed keys are text, not shortcuts.
    for _ in 0.."0, 0.5, 1, 2, 4".len() {
        press(&mut h, KeyCode::Backspace);
    }
    type_text(&mut h, "0, 0.5, 2, 3");
    press(&mut h, KeyCode::Enter);
    assert_eq!(h.app.tab, TabId::Privacy);
    assert_eq!(h.app.privacy.sweep.sigmas, [0.0, 0.5, 2.0, 3.0]);
    press(&mut h, KeyCode::Char('s'));
    sweep_run(&mut h, None, 0.91);
    sweep_run(&mut h, Some(7.5), 0.86);
    sweep_run(&mut h, Some(1.2), 0.78);
    // The last run, mid-way: its third epoch.
    h.app_event(AppEvent::Train(TrainUpdate::Started {
        device: "CPU (test)".into(),
        steps_per_epoch: 4,
        epochs: 10,
        train_images: 8,
        sample_rate: Some(0.25),
    }));
    h.app_event(AppEvent::Train(TrainUpdate::Step {
        epoch: 2,
        step: 1,
        loss: 0.5,
        images_per_sec: 64.0,
        epsilon: Some(0.4),
        dp: Some(DpStep {
            noise: 3.0,
            clip: 1.0,
            accounted_noise: Some(3.0),
        }),
        clipping: None,
    }));
    // One run per sigma through the training backend, DP off for sigma 0.
    assert_eq!(
        *h.calls.lock().unwrap(),
        [
            "start dnn-max 2 no DP",
            "start dnn-max 2 σ0.5",
            "start dnn-max 2 σ2",
            "start dnn-max 2 σ3"
        ]
    );
    let sigmas: Vec<_> = h.app.privacy.runs.iter().map(|r| r.sweep_sigma).collect();
    assert_eq!(sigmas, [None, Some(0.0), Some(0.5), Some(2.0)]);
    let s = h.screen();
    assert!(s.contains("sweep 4/4: σ 3, epoch 3/10"), "{s}");
    for label in ["σ0.5", "σ2"] {
        assert!(
            s.contains(&format!("•{label}")) || s.contains(&format!("{label}•")),
            "{s}"
        );
    }
    assert!(s.contains("no DP 91.0%"), "{s}");
    insta::assert_snapshot!("privacy_sweep", s);

    // x stops the run and cancels the rest; the finished points stay.
    press(&mut h, KeyCode::Char('x'));
    assert_eq!(h.calls.lock().unwrap().last().unwrap(), "stop");
    h.app_event(AppEvent::Train(TrainUpdate::Finished(TrainOutcome {
        stopped: true,
        epochs_run: 3,
        best_val_acc: 0.6,
        test: Some(Box::new(binary_metrics(60))),
        epsilon: Some(0.4),
        checkpoint: None,
    })));
    assert_eq!(h.calls.lock().unwrap().len(), 5, "nothing more started");
    assert!(h.app.privacy.sweep.running.is_none());
    let s = h.screen();
    assert!(s.contains("sweep stopped: 3 of 4 runs finished"), "{s}");
    assert!(s.contains("σ0.5") && s.contains("no DP 91.0%"), "{s}");
    // A sweep run is selectable and auditable like any other.
    for _ in 0..3 {
        press(&mut h, KeyCode::Char('k'));
    }
    assert!(h.screen().contains("run 2 · dnn-max · sweep σ 0 · ε ∞"));
    press(&mut h, KeyCode::Char('a'));
    assert!(matches!(
        h.app.privacy.runs[1].audit,
        AuditState::Failed(ref m) if m.contains("not available")
    ));
}

#[test]
fn privacy_sweep_ends_on_a_failed_run_and_keeps_its_sigmas() {
    let mut h = with_data();
    press(&mut h, KeyCode::Char('3'));
    press(&mut h, KeyCode::Char('s'));
    sweep_run(&mut h, None, 0.91);
    // The noise slider cannot move a sweep's run off its sigma.
    press(&mut h, KeyCode::Char('2'));
    for _ in 0..5 {
        press(&mut h, KeyCode::Char('j'));
    }
    press(&mut h, KeyCode::Char('+'));
    assert!(!h
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.starts_with("set_dp")));
    assert!(h.screen().contains("a sweep runs at fixed σ"));
    h.app_event(AppEvent::Train(TrainUpdate::Failed("out of memory".into())));
    assert_eq!(
        h.calls.lock().unwrap().len(),
        2,
        "no third run after a failure"
    );
    press(&mut h, KeyCode::Char('3'));
    let s = h.screen();
    assert!(
        s.contains("sweep ended: run 2 of 5 (σ 0.5) failed: out of memory"),
        "{s}"
    );
    assert_eq!(h.app.privacy.runs.len(), 1);
    assert_eq!(h.app.privacy.runs[0].sweep_sigma, Some(0.0));
}

#[test]
fn privacy_sweep_refusals() {
    // No data: a message, nothing starts.
    let mut h = harness();
    press(&mut h, KeyCode::Char('3'));
    press(&mut h, KeyCode::Char('s'));
    assert!(h.calls.lock().unwrap().is_empty());
    assert!(h
        .screen()
        .contains("no data yet: preprocess on the Data tab first"));

    // A run already going: a message, nothing starts.
    let mut h = with_data();
    press(&mut h, KeyCode::Char('2'));
    press(&mut h, KeyCode::Char('s'));
    press(&mut h, KeyCode::Char('3'));
    press(&mut h, KeyCode::Char('s'));
    assert_eq!(h.calls.lock().unwrap().len(), 1);
    assert!(h.app.privacy.sweep.running.is_none());
    assert!(h.screen().contains("a training run is going"));

    // A bad list names the value and the range; the old list stays.
    press(&mut h, KeyCode::Char('e'));
    type_text(&mut h, ", 12");
    press(&mut h, KeyCode::Enter);
    let s = h.screen();
    assert!(
        s.contains("σ 12 is out of range: use 0 (no DP) or 0.1 to 5"),
        "{s}"
    );
    press(&mut h, KeyCode::Esc);
    assert_eq!(h.app.privacy.sweep.sigmas, [0.0, 0.5, 1.0, 2.0, 4.0]);
    assert!(h.screen().contains("σ list: 0, 0.5, 1, 2, 4"));
}

fn status(state: PartyState, peers: u8, served: u64) -> PartyStatus {
    PartyStatus {
        state,
        address: Some("127.0.0.1:7100".into()),
        peers_connected: peers,
        handshakes_done: peers,
        requests_served: served,
        bytes_in: 1_500_000 * served,
        bytes_out: 1_400_000 * served,
        model_loaded: served > 0,
    }
}

#[test]
fn predict_empty() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('4'));
    insta::assert_snapshot!("predict_empty", h.screen());
}

fn ready_parties(h: &mut Harness, served: u64) {
    for p in PartyId::ALL {
        h.app_event(AppEvent::Party(PartyUpdate::Status {
            party: p,
            status: status(PartyState::Ready, 2, served),
        }));
    }
    h.app_event(AppEvent::Party(PartyUpdate::ModelShared {
        model: "dnn-av".into(),
        classes: ClassNames::binary(),
    }));
}

#[test]
fn predict_running() {
    let mut h = with_data();
    press(&mut h, KeyCode::Char('4'));
    press(&mut h, KeyCode::Char('L'));
    ready_parties(&mut h, 0);
    press(&mut h, KeyCode::Char('j'));
    press(&mut h, KeyCode::Enter);
    assert_eq!(*h.calls.lock().unwrap(), ["launch", "predict 0"]);
    insta::assert_snapshot!("predict_running", h.screen());
}

#[test]
fn predict_finished() {
    let mut h = with_data();
    press(&mut h, KeyCode::Char('4'));
    ready_parties(&mut h, 1);
    press(&mut h, KeyCode::Enter);
    h.app_event(AppEvent::Party(PartyUpdate::Prediction {
        id: 0,
        private: ClassProbs(vec![0.088, 0.912]),
        plaintext: Some(ClassProbs(vec![0.086, 0.914])),
        seconds: 1.25,
        bytes: 3_400_000,
    }));
    let s = h.screen();
    assert!(s.contains("PNEUMONIA 91.2%"), "{s}");
    // Both classes' probabilities, private then plaintext.
    assert_eq!(probability_row(&s, "NORMAL")[..2], ["8.8%", "8.6%"], "{s}");
    assert_eq!(
        probability_row(&s, "PNEUMONIA")[..2],
        ["91.2%", "91.4%"],
        "{s}"
    );
    insta::assert_snapshot!("predict_finished", s);
}

#[test]
fn predict_finished_with_three_classes() {
    let (_tmp, mut h) = with_three_classes();
    press(&mut h, KeyCode::Char('4'));
    for p in PartyId::ALL {
        h.app_event(AppEvent::Party(PartyUpdate::Status {
            party: p,
            status: status(PartyState::Ready, 2, 1),
        }));
    }
    h.app_event(AppEvent::Party(PartyUpdate::ModelShared {
        model: "dnn-max".into(),
        classes: privxray::data::labels::subtype_classes(),
    }));
    // The test split's images, the classes in turn.
    let truths: Vec<_> = h
        .app
        .predict
        .candidates
        .iter()
        .map(|c| c.truth.as_str())
        .collect();
    assert_eq!(truths, ["BACTERIA", "NORMAL", "VIRUS"]);
    press(&mut h, KeyCode::Char('j'));
    press(&mut h, KeyCode::Char('j'));
    press(&mut h, KeyCode::Enter);
    h.app_event(AppEvent::Party(PartyUpdate::Prediction {
        id: 0,
        private: ClassProbs(vec![0.213, 0.052, 0.735]),
        plaintext: Some(ClassProbs(vec![0.209, 0.054, 0.737])),
        seconds: 1.5,
        bytes: 3_400_000,
    }));
    let s = h.screen();
    assert!(s.contains("private    VIRUS 73.5%"), "{s}");
    assert!(s.contains("plaintext  VIRUS 73.7% (agrees)"), "{s}");
    assert!(s.contains("truth      VIRUS"), "{s}");
    // Every class's probability, not only the predicted one's.
    assert_eq!(
        probability_row(&s, "BACTERIA")[..2],
        ["21.3%", "20.9%"],
        "{s}"
    );
    assert_eq!(probability_row(&s, "NORMAL")[..2], ["5.2%", "5.4%"], "{s}");
    assert_eq!(probability_row(&s, "VIRUS")[..2], ["73.5%", "73.7%"], "{s}");
    insta::assert_snapshot!("predict_finished_three_classes", s);
}

#[test]
fn predict_error() {
    let mut h = with_data();
    press(&mut h, KeyCode::Char('4'));
    h.app_event(AppEvent::Party(PartyUpdate::Status {
        party: PartyId::ALL[1],
        status: status(
            PartyState::Failed("handshake: unknown static key".into()),
            1,
            0,
        ),
    }));
    // Predicting before the parties are ready is refused with a message.
    press(&mut h, KeyCode::Enter);
    assert!(!h
        .calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.starts_with("predict")));
    insta::assert_snapshot!("predict_error", h.screen());
}

#[test]
fn help_overlay() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    press(&mut h, KeyCode::Char('?'));
    insta::assert_snapshot!("help_train", h.screen());
}

#[test]
fn demo_caption() {
    let mut h = harness();
    h.app.demo = Some(tui::demo::Demo::new());
    h.app.handle_event(Event::Tick);
    // The demo presses its keys through the event queue, as the event loop would apply them.
    for e in h.queue.drain() {
        h.app.handle_event(e);
    }
    assert_eq!(h.app.tab, TabId::Data);
    insta::assert_snapshot!("demo_first_step", h.screen());
}

#[test]
fn too_small_terminal() {
    let h = harness();
    let t = h.render(79, 23);
    let s = t.backend().to_string();
    assert!(s.contains("79x23"), "{s}");
    insta::assert_snapshot!("too_small", s);
    // 80x24 is enough: the tab bar shows.
    let ok = h.render(80, 24).backend().to_string();
    assert!(ok.contains("1 Data") && !ok.contains("too small"), "{ok}");
}

/// Benchmark, not a check: prints the time to draw each tab at 200x50.
/// `cargo test --release --test tui_screens -- --ignored --nocapture render_time`
#[test]
#[ignore]
fn render_time_200x50() {
    let mut h = with_data();
    running(&mut h);
    privacy_runs(&mut h);
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(200, 50)).unwrap();
    for tab in TabId::ALL {
        h.app.tab = tab;
        let n = 200;
        let start = std::time::Instant::now();
        for _ in 0..n {
            t.draw(|f| f.render_widget(&h.app, f.area())).unwrap();
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
        println!("{:<20} {ms:.3} ms/frame at 200x50", tab.title());
    }
}

/// Where the engine reports its best checkpoint, as the accuracy chart draws it: the title's
/// epoch and the column of the green dot (the scatter marker) in the chart.
fn best_marker(best_after: usize) -> (String, u16) {
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    for (e, acc) in [0.6, 0.9, 0.95].into_iter().enumerate() {
        h.app_event(AppEvent::Train(TrainUpdate::Epoch(epoch(e, acc))));
        if e <= best_after {
            h.app_event(AppEvent::Train(TrainUpdate::BestCheckpoint {
                val_acc: acc,
            }));
        }
    }
    let t = h.render(100, 30);
    let buf = t.backend().buffer();
    let screen = t.backend().to_string();
    let title = screen
        .lines()
        .find_map(|l| l.split_once(" Accuracy").map(|(_, r)| r.to_string()))
        .expect("the accuracy chart");
    let dots: Vec<u16> = buf
        .content()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.symbol() == "•" && c.fg == ratatui::style::Color::Green)
        .map(|(i, _)| buf.pos_of(i).0)
        .collect();
    assert_eq!(dots.len(), 1, "one best marker:\n{screen}");
    assert!(screen.contains("best"), "the legend names it:\n{screen}");
    (title, dots[0])
}

#[test]
fn accuracy_chart_marks_the_best_checkpoint() {
    let (title1, x1) = best_marker(0);
    let (title2, x2) = best_marker(1);
    assert!(
        title1.contains("best checkpoint epoch 1 (60.0%)"),
        "{title1}"
    );
    assert!(
        title2.contains("best checkpoint epoch 2 (90.0%)"),
        "{title2}"
    );
    assert!(x2 > x1, "the marker moves with the epoch: {x1} -> {x2}");

    // No checkpoint reported yet: no marker, the old title.
    let mut h = harness();
    press(&mut h, KeyCode::Char('2'));
    h.app_event(AppEvent::Train(TrainUpdate::Epoch(epoch(0, 0.6))));
    assert!(h.screen().contains(" Accuracy per epoch "));
}

#[test]
fn parties_table_counts_bytes_received() {
    let mut h = harness();
    press(&mut h, KeyCode::Char('4'));
    let mut s = status(PartyState::Ready, 2, 1);
    s.bytes_in = 23_456_789;
    s.bytes_out = 12_345;
    h.app_event(AppEvent::Party(PartyUpdate::Status {
        party: PartyId::ALL[1],
        status: s,
    }));
    let screen = h.screen();
    let row = screen
        .lines()
        .find(|l| l.contains("23.5 MB"))
        .unwrap_or_else(|| panic!("bytes in shown:\n{screen}"));
    assert!(row.contains("12.3 kB"), "bytes out on the same row: {row}");
}
