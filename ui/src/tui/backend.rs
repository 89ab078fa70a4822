//! The boundary between the interface and the work it drives: what goes to a backend (the
//! settings of a run, a prediction request, a data source), what comes back ([`AppEvent`] and
//! the update enums it carries, sent through an [`AppSender`]), and the backend traits. Epsilon
//! spent is the engine ledger's figure carried by the step events; the interface keeps no
//! ledger of its own (see [`super::projection`] for the projected figure).
//!
//! The event queue and every tab import this module; it imports only the leaf modules
//! `data::source` and `tabs`, never the app, the queue or the views.

use super::data::source::{DataReady, DataSource, PreprocessUpdate};
use super::tabs::TabId;
use crossterm::event::KeyEvent;
pub use privxray::data::Labelling;
pub use privxray::model::ClassNames;
use privxray::model::{ModelKind, Technique};
pub use privxray::pipeline::OptimizerChoice;
pub use privxray::train::Metrics;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A backend refused or failed an operation; shown in the tab's status line, so each message
/// holds its cause. The engine's errors are carried as they are, not as text.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0} is not available in this build")]
    Unavailable(&'static str),
    /// Something has to happen first, or the request cannot be served; the message says what.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Pipeline(#[from] privxray::pipeline::PipelineError),
    #[error(transparent)]
    Train(#[from] privxray::train::TrainError),
    #[error(transparent)]
    Plot(#[from] privxray::plot::PlotError),
    /// A file, a thread or a process the backend needed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Setting up the parties: keys, addresses, their configuration.
    #[error("{what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

macro_rules! bounded {
    ($(#[$m:meta])* $name:ident, $lo:expr, $hi:expr, $what:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
        pub struct $name(f64);
        impl $name {
            pub const MIN: f64 = $lo;
            pub const MAX: f64 = $hi;
            /// Accepts values in `[MIN, MAX]`; anything else (NaN included) is an error naming it.
            pub fn new(v: f64) -> Result<Self, RangeError> {
                if (Self::MIN..=Self::MAX).contains(&v) {
                    Ok(Self(v))
                } else {
                    Err(RangeError { what: $what, value: v, min: Self::MIN, max: Self::MAX })
                }
            }
            /// The nearest valid value, for sliders.
            pub fn clamped(v: f64) -> Self {
                if v.is_nan() { Self(Self::MIN) } else { Self(v.clamp(Self::MIN, Self::MAX)) }
            }
            pub fn get(self) -> f64 {
                self.0
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{what} must be between {min} and {max}, got {value}")]
pub struct RangeError {
    pub what: &'static str,
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

bounded!(
    /// DP-SGD noise multiplier sigma (noise std / clip norm), as the slider allows it.
    NoiseMultiplier, 0.1, 10.0, "noise multiplier"
);
bounded!(
    /// DP-SGD per-example gradient clip norm C.
    ClipNorm, 0.01, 100.0, "clip norm"
);

/// Settings of a training run chosen on the Train tab.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub model: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerChoice,
    pub learning_rate: f64,
    pub dp: Option<DpSettings>,
    /// Layers kept at their initial weights.
    pub frozen: Vec<String>,
    /// Decay of the released weight average; `None`: the last iterate.
    pub ema: Option<f64>,
    /// Training dropout rate; `None`: the model's own.
    pub dropout: Option<f32>,
    /// The preprocessed dataset root and technique the Data tab produced.
    pub data_root: PathBuf,
    /// The preprocessed images themselves (every folder of the source, merged), so the
    /// backend trains on exactly what the Data tab shows.
    pub data: Option<SharedData>,
}

/// A finished preprocessing job handed to a backend. Two are equal when they are the same job.
#[derive(Debug, Clone)]
pub struct SharedData(pub Arc<DataReady>);

impl PartialEq for SharedData {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSettings {
    pub noise: NoiseMultiplier,
    pub clip: ClipNorm,
    pub delta: f64,
}

/// Events of a training run, sent by a [`TrainingBackend`].
#[derive(Debug, Clone, PartialEq)]
pub enum TrainUpdate {
    Started {
        device: String,
        steps_per_epoch: usize,
        epochs: usize,
        train_images: usize,
        /// DP runs: the sampling rate q = B/N the engine's ledger records steps at.
        sample_rate: Option<f64>,
    },
    Step {
        epoch: usize,
        step: usize,
        loss: f64,
        images_per_sec: f64,
        /// DP runs: epsilon of the engine's ledger after this step (the privacy spent).
        epsilon: Option<f64>,
        /// DP runs: what this step used and what the ledger recorded for it.
        dp: Option<DpStep>,
        /// DP runs: (share of examples whose gradient was clipped, median gradient norm).
        clipping: Option<(f64, f64)>,
    },
    Epoch(EpochPoint),
    /// The engine wrote the best checkpoint (the release) at the epoch it last reported: its
    /// validation accuracy beat every earlier epoch's.
    BestCheckpoint {
        val_acc: f64,
    },
    DpApplied {
        noise: f64,
        clip: f64,
    },
    Paused,
    Resumed,
    Finished(TrainOutcome),
    Failed(String),
}

/// The DP settings one step ran with, as the engine reports them (a slider change applies
/// from the step after it reaches the engine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpStep {
    pub noise: f64,
    pub clip: f64,
    /// The noise multiplier the engine's ledger recorded for this step at the run's sampling
    /// rate (below `noise` when the step released more than the gradient); `None` when the run
    /// keeps no ledger.
    pub accounted_noise: Option<f64>,
}

/// Metrics of one finished epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub eta_seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    pub stopped: bool,
    pub epochs_run: usize,
    pub best_val_acc: f64,
    /// The engine's metrics of the released checkpoint on the evaluation set (test + val), when
    /// measured: accuracy, and per class the one-vs-rest figures and the confusion matrix.
    /// Boxed: the events that carry it stay small.
    pub test: Option<Box<Metrics>>,
    pub epsilon: Option<f64>,
    pub checkpoint: Option<PathBuf>,
}

impl TrainOutcome {
    /// Accuracy on the evaluation set, when measured.
    pub fn test_acc(&self) -> Option<f64> {
        self.test.as_ref().map(|m| m.accuracy)
    }
}

/// Runs training on its own thread; events come back through the sender.
pub trait TrainingBackend: Send {
    /// "CUDA" or "CPU" (with detail), shown before a run starts.
    fn device(&self) -> String;
    fn start(&mut self, config: TrainConfig, events: AppSender) -> Result<(), BackendError>;
    fn pause(&mut self);
    fn resume(&mut self);
    fn stop(&mut self);
    /// Applies to the next steps of a running training.
    fn set_dp(&mut self, noise: NoiseMultiplier, clip: ClipNorm);
}

/// Membership-inference audit of a finished model.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditUpdate {
    Started {
        run: usize,
    },
    Finished {
        run: usize,
        auc: f64,
        advantage: f64,
    },
    Failed {
        run: usize,
        reason: String,
    },
    /// The one-run canary audit (`privxray audit --canary-file`) of a run whose canary file
    /// sits beside its checkpoint: a lower bound on epsilon at 95% confidence.
    CanaryBound {
        run: usize,
        epsilon_lower_bound: f64,
        correct: usize,
        guesses: usize,
    },
}

pub trait AuditBackend: Send {
    fn audit(
        &mut self,
        run: usize,
        model: ModelKind,
        checkpoint: &Path,
        events: AppSender,
    ) -> Result<(), BackendError>;
}

/// Writes the training curves to PNG files, returning the paths written.
pub trait CurveExporter: Send {
    fn export(
        &self,
        model: ModelKind,
        epochs: &[EpochPoint],
        steps: &[(f64, f64)],
    ) -> Result<Vec<PathBuf>, BackendError>;
}

/// One of the three computing parties: the engine's type. Screens label it `P0`, `P1`, `P2`
/// (see [`party_label`]); its own `Display` is the bare number.
pub use privxray::mpc::PartyId;

/// How the screens name a party: `P0`, `P1`, `P2`.
pub fn party_label(p: PartyId) -> String {
    format!("P{p}")
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PartyState {
    #[default]
    Stopped,
    Starting,
    Listening,
    /// All peers connected and channel handshakes done.
    Ready,
    Exited(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartyStatus {
    pub state: PartyState,
    pub address: Option<String>,
    pub peers_connected: u8,
    pub handshakes_done: u8,
    pub requests_served: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub model_loaded: bool,
}

/// A prediction request: one preprocessed image.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictRequest {
    pub id: u64,
    pub image: Vec<u8>,
    pub shape: [usize; 3],
}

/// A prediction: the probability of each class, in the order of the model's outputs (the
/// order of the class names its checkpoint records).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassProbs(pub Vec<f64>);

impl ClassProbs {
    /// The predicted class: the most probable (the first on a tie), as `argmax` of the logits.
    pub fn class(&self) -> usize {
        (0..self.0.len()).fold(0, |best, c| if self.0[c] > self.0[best] { c } else { best })
    }

    /// The predicted class's probability (NaN when there are none).
    pub fn probability(&self) -> f64 {
        self.0.get(self.class()).copied().unwrap_or(f64::NAN)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PartyUpdate {
    Status {
        party: PartyId,
        status: PartyStatus,
    },
    ModelShared {
        model: String,
        /// The class names the model's checkpoint records, in the order of its outputs.
        classes: ClassNames,
    },
    Prediction {
        id: u64,
        private: ClassProbs,
        plaintext: Option<ClassProbs>,
        seconds: f64,
        bytes: u64,
    },
    Failed(String),
}

/// The three parties (child processes or tasks). `shutdown` must stop them all; it is called
/// when the interface exits.
pub trait PartyBackend: Send {
    fn launch(&mut self, events: AppSender) -> Result<(), BackendError>;
    fn share_model(&mut self, model: ModelKind, checkpoint: &Path) -> Result<(), BackendError>;
    fn predict(&mut self, request: PredictRequest) -> Result<(), BackendError>;
    fn stop(&mut self, party: PartyId);
    fn kill(&mut self, party: PartyId);
    fn shutdown(&mut self);
}

/// Preprocesses a data source on its own thread: progress and the result come back as
/// [`AppEvent::Preprocess`]. `labelling` says where the labels come from (the class folders, or
/// the pneumonia subtype by file name); `cache_dir` is the preprocessing cache (`None`: no
/// cache).
pub trait DataBackend: Send {
    fn preprocess(
        &mut self,
        source: DataSource,
        technique: Technique,
        labelling: Labelling,
        cache_dir: Option<PathBuf>,
        events: AppSender,
    ) -> Result<(), BackendError>;
}

/// Everything the interface drives. `None` shows "not available in this build" on the tab.
pub struct Backends {
    pub data: Option<Box<dyn DataBackend>>,
    pub training: Option<Box<dyn TrainingBackend>>,
    pub audit: Option<Box<dyn AuditBackend>>,
    pub exporter: Option<Box<dyn CurveExporter>>,
    pub parties: Option<Box<dyn PartyBackend>>,
}

impl Backends {
    pub fn none() -> Self {
        Backends {
            data: None,
            training: None,
            audit: None,
            exporter: None,
            parties: None,
        }
    }
}

/// Notifications from background work (and the keys the demo presses).
#[derive(Debug, Clone)]
pub enum AppEvent {
    Preprocess(PreprocessUpdate),
    Train(TrainUpdate),
    Audit(AuditUpdate),
    Party(PartyUpdate),
    /// A key the demo presses, on the tab it shows first.
    DemoKey {
        tab: TabId,
        key: KeyEvent,
    },
}

/// Where an [`AppSender`] delivers: the interface's event queue implements it, so this module
/// need not know the queue's own event type (the queue imports this module, not the reverse).
pub trait Outbox: Send + Sync {
    /// Queues `event`; dropped when the interface has gone.
    fn post(&self, event: AppEvent);
    /// Whether the interface is still listening.
    fn is_open(&self) -> bool;
}

/// A cloneable handle for jobs to send [`AppEvent`]s; usable from any thread. Sending after the
/// interface has gone is silently dropped: the job's result has no one left to show it to.
#[derive(Clone)]
pub struct AppSender(Arc<dyn Outbox>);

impl AppSender {
    pub fn new(outbox: impl Outbox + 'static) -> Self {
        AppSender(Arc::new(outbox))
    }
    pub fn send(&self, event: AppEvent) {
        self.0.post(event);
    }
    /// Whether the interface is still listening (jobs may stop early when not).
    pub fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

impl fmt::Debug for AppSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSender")
            .field("open", &self.is_open())
            .finish()
    }
}
