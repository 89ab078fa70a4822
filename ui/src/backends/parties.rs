//! The three real party processes: `privxray party` (this executable) on 127.0.0.1 with fresh
//! Noise keys and a parties.toml under `data/parties/`, the model shared by this process as the
//! model owner, and predictions made by this process as the client over Noise. Status comes
//! from each party's log lines on stderr and from its exit. Stop sends SIGTERM, kill SIGKILL;
//! `shutdown` kills every child.
//!
//! Imports the engine (`atomic`, `model`, `mpc`, `net`, `party`, `pipeline`, ...), the `tui`
//! traits it implements and `super::predict`; never `cli`.

use super::predict::{class_probs, plaintext};
use crate::tui::backend::{
    party_label, BackendError, PartyBackend, PartyId, PartyState, PartyStatus, PartyUpdate,
    PredictRequest,
};
use crate::tui::event::{AppEvent, AppSender};
use privxray::model::ModelKind;
use privxray::mpc::FixedPoint;
use privxray::net::config::{PartyAddress, PartyEntry};
use privxray::net::{PartiesConfig, StaticKeypair};
use privxray::party::{share_model_remote, RemoteClient};
use privxray::preprocess::to_unit;
use privxray::train::Model;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long the client waits for a party's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A step of setting up the parties that failed, with the engine's error as its cause.
fn setup_failed(
    what: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> BackendError {
    BackendError::Setup {
        what: what.into(),
        source: source.into(),
    }
}

/// A file or process the parties needed.
fn io_failed(what: impl Into<String>, source: std::io::Error) -> BackendError {
    BackendError::Io {
        what: what.into(),
        source,
    }
}

/// What one party's log line says about it.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    Listening(String),
    MeshReady,
    MeshLost,
    ModelLoaded,
    Served {
        bytes_sent: u64,
        bytes_received: u64,
    },
    Other,
}

/// Parses `privxray party N: ...` lines (see `privxray::party::log`).
pub fn parse_log(line: &str) -> LogEvent {
    let msg = line
        .strip_prefix("privxray party ")
        .and_then(|rest| rest.split_once(": "))
        .map(|(_, m)| m)
        .unwrap_or(line);
    if let Some(addr) = msg.strip_prefix("listening on ") {
        LogEvent::Listening(addr.trim().to_string())
    } else if msg.starts_with("mesh ready") {
        LogEvent::MeshReady
    } else if msg.starts_with("mesh failed")
        || msg.starts_with("a peer reconnected")
        || msg.starts_with("mesh not formed")
    {
        LogEvent::MeshLost
    } else if msg.starts_with("installed a model share")
        || msg.starts_with("resuming with the stored model share")
    {
        LogEvent::ModelLoaded
    } else if let Some(rest) = msg.strip_prefix("served a request: ") {
        // "N bytes sent to the other parties, M bytes received from them, R rounds, T ms";
        // a party from before the received count was logged gives 0 for it.
        let count = |what: &str| {
            rest.split(", ")
                .find_map(|part| part.split_once(what).map(|(n, _)| n))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        LogEvent::Served {
            bytes_sent: count(" bytes sent"),
            bytes_received: count(" bytes received"),
        }
    } else {
        LogEvent::Other
    }
}

fn apply_log(s: &mut PartyStatus, e: LogEvent) -> bool {
    match e {
        LogEvent::Listening(a) => {
            s.state = PartyState::Listening;
            s.address = Some(a);
        }
        LogEvent::MeshReady => {
            s.state = PartyState::Ready;
            s.peers_connected = 2;
            s.handshakes_done = 2;
        }
        LogEvent::MeshLost => {
            s.state = PartyState::Listening;
            s.peers_connected = 0;
            s.handshakes_done = 0;
        }
        LogEvent::ModelLoaded => s.model_loaded = true,
        LogEvent::Served {
            bytes_sent,
            bytes_received,
        } => {
            s.requests_served += 1;
            s.bytes_in += bytes_received;
            s.bytes_out += bytes_sent;
        }
        LogEvent::Other => return false,
    }
    true
}

/// Everything a launched set of parties needs, shared with the worker threads.
struct Session {
    config: PartiesConfig,
    owner: StaticKeypair,
    children: Mutex<[Option<Child>; 3]>,
    status: Mutex<[PartyStatus; 3]>,
    client: Mutex<Option<RemoteClient>>,
    model: Mutex<Option<Arc<Model>>>,
    events: AppSender,
}

impl Session {
    fn update(&self, party: PartyId, f: impl FnOnce(&mut PartyStatus) -> bool) {
        let mut all = lock(&self.status);
        let s = &mut all[party.index()];
        if f(s) {
            self.events.send(AppEvent::Party(PartyUpdate::Status {
                party,
                status: s.clone(),
            }));
        }
    }

    fn signal(&self, party: PartyId, signal: &str) {
        let pid = lock(&self.children)[party.index()].as_ref().map(Child::id);
        if let Some(pid) = pid {
            // `kill` (procps/coreutils) rather than libc: no unsafe code for one signal.
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }

    fn kill_all(&self) {
        for child in lock(&self.children).iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct PartyProcesses {
    dir: PathBuf,
    exe: Option<PathBuf>,
    session: Option<Arc<Session>>,
}

impl PartyProcesses {
    /// Keys, parties.toml and model shares go in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        PartyProcesses {
            dir,
            exe: std::env::current_exe().ok(),
            session: None,
        }
    }

    fn session(&self) -> Result<Arc<Session>, BackendError> {
        self.session
            .clone()
            .ok_or_else(|| BackendError::Refused("launch the parties first (L)".into()))
    }
}

/// A port on 127.0.0.1 free right now (the OS picks it).
fn free_port() -> Result<u16, BackendError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| io_failed("finding a port", e))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|e| io_failed("finding a port", e))
}

/// Fresh keys for the three parties and the owner, and a parties.toml on free local ports.
fn write_setup(dir: &Path) -> Result<(PartiesConfig, StaticKeypair, PathBuf), BackendError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| io_failed(format!("creating {}", dir.display()), e))?;
    let mut entries = Vec::with_capacity(3);
    for p in privxray::net::PartyId::ALL {
        let key = dir.join(format!("party{p}.key"));
        // A new key means the old model share (kept beside it) no longer applies.
        let _ = std::fs::remove_file(dir.join(format!("party{p}.key.model-share")));
        let public = privxray::net::keys::keygen(&key, true)
            .map_err(|e| setup_failed(format!("writing {}", key.display()), e))?;
        let address = PartyAddress::parse(&format!("127.0.0.1:{}", free_port()?))
            .map_err(|e| setup_failed("party address", e))?;
        entries.push(PartyEntry {
            id: p,
            address,
            public_key: public,
        });
    }
    let owner_path = dir.join("owner.key");
    privxray::net::keys::keygen(&owner_path, true)
        .map_err(|e| setup_failed(format!("writing {}", owner_path.display()), e))?;
    let owner = StaticKeypair::load(&owner_path)
        .map_err(|e| setup_failed(format!("loading {}", owner_path.display()), e))?;
    let config = PartiesConfig::new(entries, Some(owner.public_key()))
        .map_err(|e| setup_failed("parties.toml", e))?;
    let path = dir.join("parties.toml");
    privxray::atomic::write_atomic(&path, config.to_toml().as_bytes())
        .map_err(|e| io_failed(format!("writing {}", path.display()), e))?;
    Ok((config, owner, path))
}

impl PartyBackend for PartyProcesses {
    fn launch(&mut self, events: AppSender) -> Result<(), BackendError> {
        if let Some(old) = self.session.take() {
            old.kill_all();
        }
        let exe = self
            .exe
            .clone()
            .ok_or_else(|| BackendError::Refused("cannot find this executable".into()))?;
        let (config, owner, config_path) = write_setup(&self.dir)?;
        let session = Arc::new(Session {
            config,
            owner,
            children: Mutex::new([None, None, None]),
            status: Mutex::new(Default::default()),
            client: Mutex::new(None),
            model: Mutex::new(None),
            events,
        });
        for p in PartyId::ALL {
            let key = self.dir.join(format!("party{}.key", p.index()));
            let spawned = Command::new(&exe)
                .arg("party")
                .arg("--id")
                .arg(p.index().to_string())
                .arg("--config")
                .arg(&config_path)
                .arg("--key")
                .arg(&key)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(c) => c,
                Err(e) => {
                    session.kill_all();
                    return Err(io_failed(format!("starting party {}", party_label(p)), e));
                }
            };
            let stderr = child.stderr.take();
            lock(&session.children)[p.index()] = Some(child);
            session.update(p, |s| {
                *s = PartyStatus {
                    state: PartyState::Starting,
                    ..Default::default()
                };
                true
            });
            let s = session.clone();
            std::thread::spawn(move || watch(s, p, stderr));
        }
        self.session = Some(session);
        Ok(())
    }

    fn share_model(&mut self, model: ModelKind, checkpoint: &Path) -> Result<(), BackendError> {
        let session = self.session()?;
        let checkpoint = checkpoint.to_path_buf();
        std::thread::spawn(move || {
            let result = privxray::pipeline::load_checkpoint(&checkpoint)
                .map_err(|e| e.to_string())
                .and_then(|(m, meta)| {
                    let spec = m.to_spec().map_err(|e| e.to_string())?;
                    share_model_remote(
                        &session.config,
                        &session.owner,
                        &spec,
                        meta.classes.names(),
                        FixedPoint::default(),
                    )
                    .map_err(|e| format!("sharing the model: {e}"))?;
                    Ok((m, meta.classes))
                });
            let update = match result {
                Ok((m, classes)) => {
                    *lock(&session.model) = Some(Arc::new(m));
                    // The old connection knows the old model: reconnect on the next request.
                    *lock(&session.client) = None;
                    PartyUpdate::ModelShared {
                        model: model.name().to_string(),
                        classes,
                    }
                }
                Err(e) => PartyUpdate::Failed(e),
            };
            session.events.send(AppEvent::Party(update));
        });
        Ok(())
    }

    fn predict(&mut self, request: PredictRequest) -> Result<(), BackendError> {
        let session = self.session()?;
        std::thread::spawn(move || {
            let update = match predict(&session, &request) {
                Ok(u) => u,
                Err(e) => {
                    // The connections may be out of step after a failure: start afresh.
                    *lock(&session.client) = None;
                    PartyUpdate::Failed(format!("private prediction: {e}"))
                }
            };
            session.events.send(AppEvent::Party(update));
        });
        Ok(())
    }

    fn stop(&mut self, party: PartyId) {
        if let Some(s) = &self.session {
            s.signal(party, "-TERM");
        }
    }

    fn kill(&mut self, party: PartyId) {
        if let Some(s) = &self.session {
            s.signal(party, "-KILL");
        }
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.session.take() {
            s.kill_all();
        }
    }
}

impl Drop for PartyProcesses {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn predict(session: &Session, request: &PredictRequest) -> Result<PartyUpdate, String> {
    let x = to_unit(&request.image);
    let mut client = lock(&session.client);
    if client.is_none() {
        *client = Some(
            RemoteClient::connect(&session.config, CLIENT_TIMEOUT)
                .map_err(|e| format!("connecting to the parties: {e}"))?,
        );
    }
    let c = client.as_mut().ok_or("no client")?;
    if c.model().input_shape != request.shape {
        return Err(format!(
            "the shared model takes {:?} images, this one is {:?}: share a model trained on \
             this technique",
            c.model().input_shape,
            request.shape
        ));
    }
    let r = c.predict(&x).map_err(|e| e.to_string())?;
    let model = lock(&session.model).clone();
    Ok(PartyUpdate::Prediction {
        id: request.id,
        private: class_probs(&r.logits),
        plaintext: model.and_then(|m| plaintext(&m, request.shape, x).ok()),
        seconds: r.seconds,
        bytes: r.bytes_between_parties,
    })
}

/// Follows one party's stderr until it closes, then reports how the process ended.
fn watch(session: Arc<Session>, party: PartyId, stderr: Option<std::process::ChildStderr>) {
    if let Some(err) = stderr {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let e = parse_log(&line);
            session.update(party, |s| apply_log(s, e));
        }
    }
    let status = lock(&session.children)[party.index()]
        .as_mut()
        .map(|c| c.wait());
    let state = match status {
        Some(Ok(s)) if s.success() => PartyState::Exited("exited".into()),
        Some(Ok(s)) => match std::os::unix::process::ExitStatusExt::signal(&s) {
            Some(15) => PartyState::Exited("stopped (SIGTERM)".into()),
            Some(9) => PartyState::Exited("killed (SIGKILL)".into()),
            _ => PartyState::Failed(s.to_string()),
        },
        Some(Err(e)) => PartyState::Failed(e.to_string()),
        None => PartyState::Exited("exited".into()),
    };
    session.update(party, |s| {
        s.state = state;
        s.peers_connected = 0;
        s.handshakes_done = 0;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn party_log_lines_become_status() {
        assert_eq!(
            parse_log("privxray party 1: listening on 127.0.0.1:7101"),
            LogEvent::Listening("127.0.0.1:7101".into())
        );
        assert_eq!(
            parse_log("privxray party 0: mesh ready in 3.2 ms"),
            LogEvent::MeshReady
        );
        assert_eq!(
            parse_log("privxray party 2: served a request: 12345 bytes sent to the other parties, 40 rounds, 80.0 ms"),
            LogEvent::Served { bytes_sent: 12345, bytes_received: 0 },
            "a line from before the received count"
        );
        assert_eq!(
            parse_log("privxray party 2: served a request: 12345 bytes sent to the other parties, 23456789 bytes received from them, 40 rounds, 80.0 ms"),
            LogEvent::Served { bytes_sent: 12345, bytes_received: 23456789 }
        );
        assert_eq!(
            parse_log("privxray party 2: installed a model share of 9 bytes: input [1, 150, 125], 7 operations, 2 outputs"),
            LogEvent::ModelLoaded
        );
        assert_eq!(parse_log("something else"), LogEvent::Other);
        let mut s = PartyStatus::default();
        assert!(apply_log(&mut s, LogEvent::MeshReady));
        for (sent, received) in [(10, 7), (5, 3)] {
            let e = LogEvent::Served {
                bytes_sent: sent,
                bytes_received: received,
            };
            assert!(apply_log(&mut s, e));
        }
        assert_eq!(
            (s.state, s.requests_served, s.bytes_in, s.bytes_out),
            (PartyState::Ready, 2, 10, 15)
        );
    }
}
