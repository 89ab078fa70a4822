//! SIMULATED backends: stand-ins that produce plausible events on timers so the interface can
//! be exercised before the engine's training, accountant, audit and parties are wired in.
//! Nothing here trains, accounts or computes securely; every label they produce says SIMULATED.
//! The real binary uses them only where no real backend has been provided.

use super::backend::{
    Accountant, AuditBackend, AuditUpdate, BackendError, ClassProb, ClipNorm, DpSegment,
    EpochPoint, NoiseMultiplier, PartyBackend, PartyId, PartyState, PartyStatus, PartyUpdate,
    PredictRequest, TrainConfig, TrainOutcome, TrainUpdate, TrainingBackend,
};
use super::event::{AppEvent, AppSender};
use privxray::model::ModelKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A rough epsilon from the small-q approximation of the subsampled Gaussian's Rényi DP,
/// `RDP(α) ≈ 2 q² α / σ²` (exact `α / (2σ²)` when q = 1), converted with
/// `ε = min_α RDP_total(α) + ln(1/δ) / (α - 1)`. APPROXIMATE: for display only until the engine's
/// accountant is wired in.
pub struct ApproxAccountant;

impl Accountant for ApproxAccountant {
    fn epsilon(&self, q: f64, segments: &[DpSegment], delta: f64) -> Result<f64, BackendError> {
        if !(0.0..=1.0).contains(&q) || !(delta > 0.0 && delta < 1.0) {
            return Err(BackendError::Failed(format!(
                "sample rate {q} and delta {delta} must lie in (0, 1]"
            )));
        }
        if segments.iter().all(|s| s.steps == 0) {
            return Ok(0.0);
        }
        let coeff: f64 = segments
            .iter()
            .map(|s| {
                let s2 = s.noise.get() * s.noise.get();
                let per = if q >= 1.0 { 0.5 / s2 } else { (2.0 * q * q / s2).min(0.5 / s2) };
                per * s.steps as f64
            })
            .sum();
        let best = (2..=256)
            .map(|a| {
                let a = a as f64;
                coeff * a + (1.0 / delta).ln() / (a - 1.0)
            })
            .fold(f64::INFINITY, f64::min);
        Ok(best)
    }
}

struct Control {
    paused: AtomicBool,
    stopped: AtomicBool,
    dp: Mutex<Option<(f64, f64)>>,
}

/// SIMULATED training: 20 steps per epoch every 30 ms, losses from a decaying curve.
pub struct SimulatedTraining {
    control: Option<Arc<Control>>,
}

impl SimulatedTraining {
    pub fn new() -> Self {
        SimulatedTraining { control: None }
    }
}

impl Default for SimulatedTraining {
    fn default() -> Self {
        Self::new()
    }
}

impl TrainingBackend for SimulatedTraining {
    fn device(&self) -> String {
        "SIMULATED (no training engine)".into()
    }

    fn start(&mut self, config: TrainConfig, events: AppSender) -> Result<(), BackendError> {
        let control = Arc::new(Control {
            paused: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            dp: Mutex::new(None),
        });
        self.control = Some(control.clone());
        std::thread::spawn(move || simulate(config, events, control));
        Ok(())
    }
    fn pause(&mut self) {
        if let Some(c) = &self.control {
            c.paused.store(true, Ordering::SeqCst);
        }
    }
    fn resume(&mut self) {
        if let Some(c) = &self.control {
            c.paused.store(false, Ordering::SeqCst);
        }
    }
    fn stop(&mut self) {
        if let Some(c) = &self.control {
            c.stopped.store(true, Ordering::SeqCst);
        }
    }
    fn set_dp(&mut self, noise: NoiseMultiplier, clip: ClipNorm) {
        if let Some(c) = &self.control {
            if let Ok(mut dp) = c.dp.lock() {
                *dp = Some((noise.get(), clip.get()));
            }
        }
    }
}

fn simulate(config: TrainConfig, events: AppSender, c: Arc<Control>) {
    let send = |u| events.send(AppEvent::Train(u));
    let steps = 20;
    send(TrainUpdate::Started {
        device: "SIMULATED".into(),
        steps_per_epoch: steps,
        epochs: config.epochs,
        train_images: steps * config.batch_size,
    });
    let mut paused = false;
    let mut best = 0.0_f64;
    for epoch in 0..config.epochs {
        for step in 0..steps {
            loop {
                if c.stopped.load(Ordering::SeqCst) || !events.is_open() {
                    send(TrainUpdate::Finished(TrainOutcome {
                        stopped: true,
                        epochs_run: epoch,
                        best_val_acc: best,
                        test_acc: None,
                        epsilon: None,
                        checkpoint: None,
                    }));
                    return;
                }
                let p = c.paused.load(Ordering::SeqCst);
                if p != paused {
                    paused = p;
                    send(if p { TrainUpdate::Paused } else { TrainUpdate::Resumed });
                }
                if !p {
                    break;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            if let Some((noise, clip)) = c.dp.lock().ok().and_then(|mut d| d.take()) {
                send(TrainUpdate::DpApplied { noise, clip });
            }
            std::thread::sleep(Duration::from_millis(30));
            let t = (epoch * steps + step) as f64;
            let wiggle = ((t * 1.7).sin() * 0.05).abs();
            send(TrainUpdate::Step {
                epoch,
                step,
                loss: 0.7 * (-t / 60.0).exp() + 0.2 + wiggle,
                images_per_sec: config.batch_size as f64 / 0.03,
                epsilon: None,
            });
        }
        let e = epoch as f64 + 1.0;
        let val_acc = 0.95 - 0.45 * (-e / 2.0).exp();
        best = best.max(val_acc);
        send(TrainUpdate::Epoch(EpochPoint {
            epoch,
            train_loss: 0.7 * (-e / 3.0).exp() + 0.15,
            train_acc: 0.97 - 0.47 * (-e / 2.0).exp(),
            val_loss: 0.7 * (-e / 3.0).exp() + 0.2,
            val_acc,
            eta_seconds: (config.epochs - epoch - 1) as f64 * steps as f64 * 0.03,
        }));
    }
    send(TrainUpdate::Finished(TrainOutcome {
        stopped: false,
        epochs_run: config.epochs,
        best_val_acc: best,
        test_acc: Some(best - 0.03),
        epsilon: None,
        checkpoint: Some(PathBuf::from("SIMULATED-model")),
    }));
}

/// SIMULATED audit: reports an attack AUC that shrinks with the model's privacy.
pub struct SimulatedAudit;

impl AuditBackend for SimulatedAudit {
    fn audit(
        &mut self,
        run: usize,
        _model: ModelKind,
        _checkpoint: &Path,
        events: AppSender,
    ) -> Result<(), BackendError> {
        std::thread::spawn(move || {
            events.send(AppEvent::Audit(AuditUpdate::Started { run }));
            std::thread::sleep(Duration::from_millis(500));
            events.send(AppEvent::Audit(AuditUpdate::Finished {
                run,
                auc: 0.53,
                advantage: 0.06,
            }));
        });
        Ok(())
    }
}

/// SIMULATED parties: status changes on timers, predictions from mean brightness.
pub struct SimulatedParties {
    events: Option<AppSender>,
    status: Arc<Mutex<[PartyStatus; 3]>>,
}

impl SimulatedParties {
    pub fn new() -> Self {
        SimulatedParties {
            events: None,
            status: Arc::new(Mutex::new(Default::default())),
        }
    }

    fn set(&self, party: PartyId, f: impl FnOnce(&mut PartyStatus)) {
        let Some(events) = &self.events else { return };
        if let Ok(mut s) = self.status.lock() {
            f(&mut s[party.index()]);
            events.send(AppEvent::Party(PartyUpdate::Status {
                party,
                status: s[party.index()].clone(),
            }));
        }
    }
}

impl Default for SimulatedParties {
    fn default() -> Self {
        Self::new()
    }
}

impl PartyBackend for SimulatedParties {
    fn launch(&mut self, events: AppSender) -> Result<(), BackendError> {
        self.events = Some(events.clone());
        let status = self.status.clone();
        std::thread::spawn(move || {
            let phases: [(PartyState, u8); 3] = [
                (PartyState::Starting, 0),
                (PartyState::Listening, 1),
                (PartyState::Ready, 2),
            ];
            for (state, peers) in phases {
                std::thread::sleep(Duration::from_millis(300));
                for p in PartyId::ALL {
                    let Ok(mut s) = status.lock() else { return };
                    let st = &mut s[p.index()];
                    st.state = state.clone();
                    st.address = Some(format!("SIMULATED:{}", 7000 + p.index()));
                    st.peers_connected = peers;
                    st.handshakes_done = peers;
                    events.send(AppEvent::Party(PartyUpdate::Status {
                        party: p,
                        status: st.clone(),
                    }));
                }
            }
        });
        Ok(())
    }

    fn share_model(&mut self, model: ModelKind, _checkpoint: &Path) -> Result<(), BackendError> {
        for p in PartyId::ALL {
            self.set(p, |s| {
                s.model_loaded = true;
                s.bytes_in += 1_200_000;
            });
        }
        if let Some(e) = &self.events {
            e.send(AppEvent::Party(PartyUpdate::ModelShared {
                model: format!("{} (SIMULATED)", model.name()),
            }));
        }
        Ok(())
    }

    fn predict(&mut self, request: PredictRequest) -> Result<(), BackendError> {
        let events = self
            .events
            .clone()
            .ok_or(BackendError::Failed("parties not launched".into()))?;
        for p in PartyId::ALL {
            self.set(p, |s| {
                s.requests_served += 1;
                s.bytes_in += 350_000;
                s.bytes_out += 350_000;
            });
        }
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            let mean = request.image.iter().map(|&v| v as f64).sum::<f64>()
                / request.image.len().max(1) as f64
                / 255.0;
            let p = ClassProb {
                class: (mean > 0.5) as u8,
                probability: 0.5 + (mean - 0.5).abs(),
            };
            events.send(AppEvent::Party(PartyUpdate::Prediction {
                id: request.id,
                private: p,
                plaintext: Some(p),
                seconds: 0.4,
                bytes: 1_050_000,
            }));
        });
        Ok(())
    }

    fn stop(&mut self, party: PartyId) {
        self.set(party, |s| {
            s.state = PartyState::Exited("stopped".into());
            s.peers_connected = 0;
        });
    }

    fn kill(&mut self, party: PartyId) {
        self.set(party, |s| {
            s.state = PartyState::Failed("killed".into());
            s.peers_connected = 0;
        });
    }

    fn shutdown(&mut self) {
        self.events = None;
    }
}
