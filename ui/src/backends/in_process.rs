//! Private prediction with the three parties as threads of this process, connected by the
//! engine's in-memory transport (`privxray::mpc::simulate`): the same secret-sharing protocol
//! as the party processes, without sockets. Every label it produces says "in-process
//! simulation". Used when the binary has no party processes to launch.
//!
//! Imports the engine (`model`, `mpc`, `pipeline`, `preprocess`, `train`), the `tui` traits it
//! implements and `super::predict`; never `cli`.

use super::predict::{class_probs, plaintext};
use crate::tui::backend::{
    BackendError, PartyBackend, PartyId, PartyState, PartyStatus, PartyUpdate, PredictRequest,
};
use crate::tui::event::{AppEvent, AppSender};
use privxray::model::{ModelKind, NetworkSpec};
use privxray::preprocess::to_unit;
use privxray::train::Model;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const LABEL: &str = "in-process simulation";

struct Shared {
    model: Model,
    spec: NetworkSpec,
}

/// The three parties' status, updated from the prediction threads too.
#[derive(Clone, Default)]
struct Statuses(Arc<Mutex<[PartyStatus; 3]>>);

impl Statuses {
    /// Changes one party's status and shows it.
    fn update(&self, events: &AppSender, party: PartyId, f: impl FnOnce(&mut PartyStatus)) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let status = &mut all[party.index()];
        f(status);
        events.send(AppEvent::Party(PartyUpdate::Status {
            party,
            status: status.clone(),
        }));
    }

    fn all_ready(&self) -> bool {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().all(|s| s.state == PartyState::Ready)
    }
}

#[derive(Default)]
pub struct InProcessParties {
    events: Option<AppSender>,
    status: Statuses,
    shared: Arc<Mutex<Option<Arc<Shared>>>>,
}

impl InProcessParties {
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&self, party: PartyId, f: impl FnOnce(&mut PartyStatus)) {
        if let Some(e) = &self.events {
            self.status.update(e, party, f);
        }
    }

    fn set_all(&self, f: impl Fn(&mut PartyStatus)) {
        for p in PartyId::ALL {
            self.set(p, &f);
        }
    }
}

impl PartyBackend for InProcessParties {
    fn launch(&mut self, events: AppSender) -> Result<(), BackendError> {
        self.events = Some(events);
        self.set_all(|s| {
            s.state = PartyState::Ready;
            s.address = Some("in-process".into());
            s.peers_connected = 2;
            s.handshakes_done = 0;
        });
        Ok(())
    }

    fn share_model(&mut self, model: ModelKind, checkpoint: &Path) -> Result<(), BackendError> {
        let events = self
            .events
            .clone()
            .ok_or_else(|| BackendError::Refused("launch the parties first (L)".into()))?;
        let slot = self.shared.clone();
        let checkpoint = checkpoint.to_path_buf();
        // Loading and converting a VGG takes a moment: off the interface thread.
        std::thread::spawn(move || {
            let loaded = privxray::pipeline::load_checkpoint(&checkpoint)
                .map_err(|e| e.to_string())
                .and_then(|(m, meta)| {
                    let spec = m.to_spec().map_err(|e| e.to_string())?;
                    Ok((Shared { model: m, spec }, meta.classes))
                });
            let update = match loaded {
                Ok((s, classes)) => {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(s));
                    PartyUpdate::ModelShared {
                        model: format!("{} ({LABEL})", model.name()),
                        classes,
                    }
                }
                Err(e) => PartyUpdate::Failed(e),
            };
            events.send(AppEvent::Party(update));
        });
        self.set_all(|s| s.model_loaded = true);
        Ok(())
    }

    fn predict(&mut self, request: PredictRequest) -> Result<(), BackendError> {
        let events = self
            .events
            .clone()
            .ok_or_else(|| BackendError::Refused("launch the parties first (L)".into()))?;
        let shared = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| BackendError::Refused("share a trained model first (m)".into()))?;
        if !self.status.all_ready() {
            return Err(BackendError::Refused(
                "a party is not running: launch them again (L)".into(),
            ));
        }
        let status = self.status.clone();
        std::thread::spawn(move || {
            let x = to_unit(&request.image);
            let update = match privxray::mpc::simulate(&shared.spec, std::slice::from_ref(&x), 1) {
                Ok(r) => {
                    for (party, stats) in PartyId::ALL.into_iter().zip(&r.per_party) {
                        status.update(&events, party, |s| {
                            s.requests_served += 1;
                            s.bytes_in += stats.bytes_received;
                            s.bytes_out += stats.bytes_sent;
                        });
                    }
                    let private = class_probs(r.logits.first().map_or(&[][..], |l| &l[..]));
                    PartyUpdate::Prediction {
                        id: request.id,
                        private,
                        plaintext: plaintext(&shared.model, request.shape, x).ok(),
                        seconds: r.seconds,
                        bytes: r.bytes_between_parties,
                    }
                }
                Err(e) => PartyUpdate::Failed(format!("{LABEL}: {e}")),
            };
            events.send(AppEvent::Party(update));
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
            s.state = PartyState::Exited("killed".into());
            s.peers_connected = 0;
        });
    }

    fn shutdown(&mut self) {
        self.events = None;
    }
}
