//! One computing party as a server.
//!
//! Threads: an acceptor ([`accept`]) hands every inbound TCP connection to its own thread, which
//! runs the Noise handshake and then either files a party channel for the mesh, or serves a
//! client (requests go into the request queue) or the model owner ([`handlers`]). The serving
//! loop here owns the mesh ([`NoiseTransport`], formed by [`MeshBuilder`]) and runs one step at
//! a time ([`schedule`]):
//!
//! 1. party 0 asks parties 1 and 2 which of the requests it holds they hold too (`Poll`, a
//!    round like a `Heartbeat`'s, answered with `Holding`), then sends `Schedule` for the oldest
//!    one that every party holds or has rejected; a request sent to party 0 alone waits there
//!    (until it expires) without holding up the requests behind it. When idle, party 0 sends a
//!    `Heartbeat`, which keeps every link of the mesh checked;
//! 2. every party takes its share of that request, compares digests of the input components it
//!    shares with each neighbour ([`rounds`]), and sends `Ready { accept }` and its model's
//!    dealing id to both others; a request is computed only if all three accept and hold
//!    shares of one dealing, otherwise every party drops it and tells its client why;
//! 3. the three parties run the secure forward pass and each answers its own client
//!    connection with its output share (parties never open values) ([`request`]).
//!
//! Any mesh failure (a peer died, a timeout, a frame out of place) drops the request in
//! progress with an error to the client and re-forms the mesh; a peer that reconnects while the
//! mesh is up (it restarted) also triggers a re-formation, but only once its connection has
//! confirmed the handshake, so a replayed handshake cannot displace a working channel. A party
//! with a lower id is dialled, a higher one accepted, by the one mesh builder
//! ([`crate::net::mesh`]); a party that is turned away (or not answered) keeps trying, since a
//! flood of connections at its peer looks the same as a peer that is not up yet. Which
//! connections are taken, and how much each may send, is [`super::admission`]'s.
//!
//! Shared state lives in [`state`], a leaf every part imports; this file imports the parts
//! and no part imports it.

mod accept;
mod handlers;
mod request;
mod rounds;
mod schedule;
mod state;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use self::accept::accept_loop;
use self::schedule::step;
pub use self::state::ServerTimings;
use self::state::State;
use super::admission::{Admission, ClientCap, LogBudget};
use super::queue::RequestQueue;
use super::store::ShareFile;
use super::{log, PartyError};
use crate::net::{LocalParty, MeshBuilder, NetError, NoiseTransport, PeerInbox};

/// Stops a running [`PartyServer`] (within one I/O timeout).
#[derive(Clone)]
pub struct StopHandle(Arc<State>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }

    /// Requests this party holds, waiting to be scheduled (tests use it to order events).
    #[cfg(test)]
    pub(crate) fn held_requests(&self) -> usize {
        self.0.queue.len()
    }
}

/// One party, ready to serve.
pub struct PartyServer {
    local: Arc<LocalParty>,
    listener: TcpListener,
    state: Arc<State>,
}

/// Binds the party's configured address and serves until the process ends.
pub fn serve(local: LocalParty, store: ShareFile) -> Result<(), PartyError> {
    let listener = local.bind()?;
    let timings = ServerTimings::from_timeouts(local.config().timeouts());
    PartyServer::new(local, listener, store, timings)?.run()
}

impl PartyServer {
    /// Loads the stored model share (if any) and prepares to serve on `listener`.
    pub fn new(
        local: LocalParty,
        listener: TcpListener,
        store: ShareFile,
        timings: ServerTimings,
    ) -> Result<Self, PartyError> {
        let me = local.id();
        let model = store.load(me)?.map(Arc::new);
        match &model {
            Some(m) => log(
                me,
                format_args!(
                    "resuming with the stored model share: input {:?}, {} operations",
                    m.input_shape(),
                    m.ops().len()
                ),
            ),
            None => log(
                me,
                format_args!("no model share yet; waiting for the owner"),
            ),
        }
        Ok(Self {
            local: Arc::new(local),
            listener,
            state: Arc::new(State {
                me,
                model: RwLock::new(model),
                store,
                queue: RequestQueue::new(),
                inbox: PeerInbox::default(),
                stop: AtomicBool::new(false),
                admission: Arc::new(Admission::new()),
                client_cap: ClientCap::default(),
                refusals: LogBudget::default(),
                timings,
            }),
        })
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.state))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until stopped. A mesh that does not form is retried, each failure logged with
    /// its reason (a peer that refuses this party may be flooded, or hold another
    /// parties.toml: the log says which). Returns an error only if the acceptor cannot start.
    pub fn run(self) -> Result<(), PartyError> {
        let me = self.state.me;
        let acceptor = {
            let listener = self.listener.try_clone().map_err(|source| NetError::Io {
                peer: "listener".into(),
                during: "starting the acceptor",
                source,
            })?;
            let local = Arc::clone(&self.local);
            let state = Arc::clone(&self.state);
            std::thread::Builder::new()
                .name(format!("privxray-accept-{me}"))
                .spawn(move || accept_loop(&listener, &local, &state))
                .map_err(|source| NetError::Io {
                    peer: "listener".into(),
                    during: "starting the acceptor",
                    source,
                })?
        };
        log(
            me,
            format_args!(
                "listening on {}",
                self.local_addr()
                    .map_or_else(|| "?".into(), |a| a.to_string())
            ),
        );
        let result = self.serve_loop();
        self.state.stop.store(true, Ordering::Relaxed);
        let _ = acceptor.join();
        result
    }

    fn serve_loop(&self) -> Result<(), PartyError> {
        let me = self.state.me;
        let mut mesh: Option<NoiseTransport> = None;
        while !self.state.stopped() {
            self.state.expire();
            let transport = match mesh.take() {
                Some(t) if !self.state.inbox.any() => t,
                Some(t) => {
                    log(
                        me,
                        format_args!("a peer reconnected (it restarted); re-forming the mesh"),
                    );
                    drop(t);
                    self.state.drop_queued("a party restarted");
                    continue;
                }
                None => match self.form_mesh() {
                    Ok(t) => t,
                    Err(e) => {
                        if !self.state.stopped() {
                            log(me, format_args!("mesh not formed, retrying: {e}"));
                        }
                        continue;
                    }
                },
            };
            mesh = match step(&self.state, transport) {
                Ok(t) => Some(t),
                Err(e) => {
                    log(me, format_args!("mesh failed: {e}; re-forming it"));
                    self.state
                        .drop_queued("the mesh with the other parties failed");
                    None
                }
            };
        }
        Ok(())
    }

    /// One attempt to form the mesh (see [`MeshBuilder`]), expiring queued requests while it
    /// waits for the peers.
    fn form_mesh(&self) -> Result<NoiseTransport, PartyError> {
        let started = Instant::now();
        let state = &self.state;
        let stopped = || state.stopped();
        let mesh = MeshBuilder::new(&self.local, &state.inbox)
            .stop_when(&stopped)
            .form(state.timings.mesh_attempt, &mut || state.expire())?;
        let t = NoiseTransport::from_mesh(mesh)?;
        log(
            state.me,
            format_args!(
                "mesh ready in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            ),
        );
        Ok(t)
    }
}

#[cfg(test)]
mod tests;
