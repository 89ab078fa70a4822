//! Shared helpers of the interface tests: an app with recording backends, event feeding,
//! real preprocessing of the bundled samples, and rendering to a TestBackend.

use privxray::model::ModelKind;
use privxray_ui::backends::data::EngineData;
use privxray_ui::tui::app::App;
use privxray_ui::tui::backend::{
    BackendError, Backends, ClipNorm, NoiseMultiplier, PartyBackend, PartyId, PredictRequest,
    TrainConfig, TrainingBackend,
};
use privxray_ui::tui::data::{DataSource, PreprocessUpdate};
use privxray_ui::tui::event::{AppEvent, AppSender, Event, EventQueue};
use privxray_ui::tui::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Calls the app made on its backends, in order.
pub type Calls = Arc<Mutex<Vec<String>>>;

pub struct RecordingTraining(pub Calls);

impl TrainingBackend for RecordingTraining {
    fn device(&self) -> String {
        "CPU (test)".into()
    }
    fn start(&mut self, c: TrainConfig, _e: AppSender) -> Result<(), BackendError> {
        self.0.lock().unwrap().push(format!(
            "start {} {} {}",
            c.model.name(),
            c.epochs,
            c.dp.map_or("no DP".into(), |d| format!("σ{}", d.noise.get()))
        ));
        Ok(())
    }
    fn pause(&mut self) {
        self.0.lock().unwrap().push("pause".into());
    }
    fn resume(&mut self) {
        self.0.lock().unwrap().push("resume".into());
    }
    fn stop(&mut self) {
        self.0.lock().unwrap().push("stop".into());
    }
    fn set_dp(&mut self, n: NoiseMultiplier, c: ClipNorm) {
        self.0
            .lock()
            .unwrap()
            .push(format!("set_dp {:.2} {:.2}", n.get(), c.get()));
    }
}

pub struct RecordingParties(pub Calls);

impl PartyBackend for RecordingParties {
    fn launch(&mut self, _e: AppSender) -> Result<(), BackendError> {
        self.0.lock().unwrap().push("launch".into());
        Ok(())
    }
    fn share_model(&mut self, m: ModelKind, p: &Path) -> Result<(), BackendError> {
        self.0
            .lock()
            .unwrap()
            .push(format!("share {} {}", m.name(), p.display()));
        Ok(())
    }
    fn predict(&mut self, r: PredictRequest) -> Result<(), BackendError> {
        self.0.lock().unwrap().push(format!("predict {}", r.id));
        Ok(())
    }
    fn stop(&mut self, p: PartyId) {
        self.0.lock().unwrap().push(format!("stop {p}"));
    }
    fn kill(&mut self, p: PartyId) {
        self.0.lock().unwrap().push(format!("kill {p}"));
    }
    fn shutdown(&mut self) {
        self.0.lock().unwrap().push("shutdown".into());
    }
}

/// The bundled real samples (PRIVXRAY_SAMPLES overrides, for out-of-tree builds).
pub fn samples() -> PathBuf {
    std::env::var_os("PRIVXRAY_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/samples"))
}

/// A Kermany-layout folder made of the bundled samples, two pneumonia files renamed as viral:
/// by subtype, train holds 1 BACTERIA, 3 NORMAL, 1 VIRUS and test 1 of each. Returns the
/// temporary directory (keep it alive) and the dataset root, `<tmp>/three`.
pub fn three_class_kermany() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("three");
    let s = samples();
    let files = [
        (
            "NORMAL/NORMAL2-IM-1427-0001.jpeg",
            "train/NORMAL/NORMAL2-IM-1427-0001.jpeg",
        ),
        (
            "NORMAL/NORMAL2-IM-1430-0001.jpeg",
            "train/NORMAL/NORMAL2-IM-1430-0001.jpeg",
        ),
        (
            "NORMAL/NORMAL2-IM-1431-0001.jpeg",
            "train/NORMAL/NORMAL2-IM-1431-0001.jpeg",
        ),
        (
            "NORMAL/NORMAL2-IM-1436-0001.jpeg",
            "test/NORMAL/NORMAL2-IM-1436-0001.jpeg",
        ),
        (
            "PNEUMONIA/person1946_bacteria_4875.jpeg",
            "train/PNEUMONIA/person1946_bacteria_4875.jpeg",
        ),
        (
            "PNEUMONIA/person1947_bacteria_4876.jpeg",
            "train/PNEUMONIA/person1947_virus_4876.jpeg",
        ),
        (
            "PNEUMONIA/person1946_bacteria_4874.jpeg",
            "test/PNEUMONIA/person1946_bacteria_4874.jpeg",
        ),
        (
            "PNEUMONIA/person1949_bacteria_4880.jpeg",
            "test/PNEUMONIA/person1949_virus_4880.jpeg",
        ),
    ];
    for (from, to) in files {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(s.join(from), &to).unwrap();
    }
    (tmp, root)
}

pub struct Harness {
    pub app: App,
    pub queue: EventQueue,
    pub calls: Calls,
}

/// An app in the 16 named colours, as the snapshots were taken (never from the environment).
pub fn harness() -> Harness {
    harness_with(Theme::ANSI16)
}

pub fn harness_with(theme: Theme) -> Harness {
    let queue = EventQueue::new();
    let calls: Calls = Arc::default();
    let backends = Backends {
        data: Some(Box::new(EngineData)),
        training: Some(Box::new(RecordingTraining(calls.clone()))),
        audit: None,
        exporter: None,
        parties: Some(Box::new(RecordingParties(calls.clone()))),
    };
    let sources = vec![
        DataSource::folder(samples(), "bundled real samples"),
        DataSource::folder("no/such/folder", "no/such/folder (missing)"),
    ];
    let app = App::new(sources, None, backends, queue.sender(), theme);
    Harness { app, queue, calls }
}

impl Harness {
    pub fn app_event(&mut self, e: AppEvent) {
        self.app.handle_event(Event::App(e));
    }

    /// Waits (up to 60 s) for the preprocessing job started by Enter on the Data tab, fixing
    /// the measured times so snapshots are stable, and applies every event.
    pub fn finish_preprocessing(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let next = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), self.queue.next()).await
            });
            let Ok(Some(event)) = next else {
                assert!(Instant::now() < deadline, "preprocessing did not finish");
                continue;
            };
            match event {
                Event::App(AppEvent::Preprocess(PreprocessUpdate::Finished(mut ready))) => {
                    let r = Arc::get_mut(&mut ready).expect("sole owner of the result");
                    for p in &mut r.parts {
                        p.summary.seconds = 0.5;
                    }
                    self.app_event(AppEvent::Preprocess(PreprocessUpdate::Finished(ready)));
                    return;
                }
                Event::App(AppEvent::Preprocess(PreprocessUpdate::Failed(e))) => {
                    self.app_event(AppEvent::Preprocess(PreprocessUpdate::Failed(e)));
                    return;
                }
                // Progress carries wall-clock times: not applied, keeps the state deterministic.
                _ => {}
            }
        }
    }

    pub fn render(&self, w: u16, h: u16) -> Terminal<TestBackend> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| f.render_widget(&self.app, f.area())).unwrap();
        t
    }

    pub fn screen(&self) -> String {
        self.render(100, 30).backend().to_string()
    }
}

/// The bytes a terminal would get for the app's current screen at 100x30: the frame written
/// through ratatui's CrosstermBackend into memory, escape codes and all.
pub fn captured(h: &Harness) -> String {
    use ratatui::backend::{Backend, CrosstermBackend};
    let t = h.render(100, 30);
    let buf = t.backend().buffer().clone();
    let mut out = Vec::new();
    {
        // The backend borrows `out` until it goes out of scope.
        let mut b = CrosstermBackend::new(&mut out);
        let cells = buf.content().iter().enumerate().map(|(i, c)| {
            let (x, y) = buf.pos_of(i);
            (x, y, c)
        });
        b.draw(cells).unwrap();
        Backend::flush(&mut b).unwrap();
    }
    String::from_utf8(out).unwrap()
}
