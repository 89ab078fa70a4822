//! One computing party as a server.
//!
//! Threads: an acceptor hands every inbound TCP connection to its own thread, which runs the
//! Noise handshake and then either files a party channel for the mesh, or serves a client
//! (requests go into the [`RequestQueue`]) or the model owner (the share is installed and
//! persisted). The serving loop owns the mesh ([`NoiseTransport`]) and runs one step at a time:
//!
//! 1. party 0 asks parties 1 and 2 which of the requests it holds they hold too (`Poll`, a
//!    round like a `Heartbeat`'s, answered with `Holding`), then sends `Schedule` for the oldest
//!    one that every party holds or has rejected; a request sent to party 0 alone waits there
//!    (until it expires) without holding up the requests behind it. When idle, party 0 sends a
//!    `Heartbeat`, which keeps every link of the mesh checked;
//! 2. every party takes its share of that request, compares digests of the input components it
//!    shares with each neighbour ([`consistency`]), and sends `Ready { accept }` and its model's
//!    dealing id to both others; a request is computed only if all three accept and hold
//!    shares of one dealing, otherwise every party drops it and tells its client why;
//! 3. the three parties run the secure forward pass and each answers its own client
//!    connection with its output share (parties never open values).
//!
//! Any mesh failure (a peer died, a timeout, a frame out of place) drops the request in
//! progress with an error to the client and re-forms the mesh; a peer that reconnects while the
//! mesh is up (it restarted) also triggers a re-formation, but only once its connection has
//! confirmed the handshake, so a replayed handshake cannot displace a working channel. A party
//! with a lower id is dialled, a higher one accepted, exactly as in [`crate::net::mesh`]; a
//! party that is turned away (or not answered) keeps trying, since a flood of connections at
//! its peer looks the same as a peer that is not up yet. Which connections are taken, and how
//! much each may send, is [`super::admission`]'s.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use super::admission::{Admission, ClientCap, Handshaking, LogBudget};
use super::queue::{Outcome, RequestQueue, ServeStats, Served, Taken};
use super::store::ShareFile;
use super::{log, PartyError};
use crate::mpc::consistency;
use crate::mpc::{infer, DealingId, InputShare, Party, PartyId as MpcPartyId, PartyModel};
use crate::net::config::Timeouts;
use crate::net::handshake::{accept_stream_observed, connect_to_party, Inbound};
use crate::net::message::{Shape, MAX_IDS};
use crate::net::{LocalParty, Message, NetError, NoiseTransport, PartyId, SecureChannel};

/// Poll interval of the non-blocking acceptor and of waits that watch the stop flag.
const POLL: Duration = Duration::from_millis(10);
/// Pause between dial attempts to a peer that is not listening (yet).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pause after a peer turned this party away (it may be flooded, or misconfigured: each
/// attempt is logged with the reason).
const REFUSED_PAUSE: Duration = Duration::from_millis(500);
/// Shortest pause between two polls while party 0 holds requests the others do not (yet).
const MIN_POLL_PAUSE: Duration = Duration::from_millis(2);

/// What party 0 does in one step.
enum LeadChoice {
    /// Serve this request, which every party holds (or rejected).
    Schedule(u64),
    /// Nothing to schedule: check the mesh.
    Heartbeat,
    /// Nothing more this step: a request just arrived (the next step polls), or a poll found
    /// none that every party holds and party 0 has waited a little before the next.
    Done,
}

/// The serving loop's waits, derived from the configuration's timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTimings {
    /// Idle time after which party 0 checks the mesh with a heartbeat round.
    pub heartbeat: Duration,
    /// Extra time a client's connection waits for its request's outcome beyond
    /// `request_ttl` (the request is scheduled only once every party holds it, so no party
    /// waits for a share at scheduling time).
    pub share_wait: Duration,
    /// How long a request may wait in the queue before it is dropped with an error.
    pub request_ttl: Duration,
    /// How long one attempt to form the mesh may take before it starts over.
    pub mesh_attempt: Duration,
}

impl ServerTimings {
    /// Heartbeats well inside the I/O timeout (so an idle follower never times out), a share
    /// wait of half of it, and requests kept for one I/O timeout.
    pub fn from_timeouts(t: &Timeouts) -> Self {
        Self {
            heartbeat: (t.io / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)),
            share_wait: (t.io / 2).min(Duration::from_secs(10)),
            request_ttl: t.io,
            mesh_attempt: t.startup,
        }
    }
}

/// Mesh channels that peers opened to this party, newest per peer.
#[derive(Default)]
struct Inbox {
    slots: Mutex<[Option<SecureChannel>; 3]>,
    arrived: Condvar,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, [Option<SecureChannel>; 3]> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, peer: PartyId, channel: SecureChannel) {
        // A newer connection from the same peer replaces an older one: the peer gave up on it.
        // Only confirmed handshakes get here (a replayed one never completes), so the newer
        // one is the live peer's.
        self.lock()[peer.index()] = Some(channel);
        self.arrived.notify_all();
    }

    fn any(&self) -> bool {
        self.lock().iter().any(Option::is_some)
    }

    /// Waits up to `wait` for a channel from `peer`.
    fn take(&self, peer: PartyId, wait: Duration) -> Option<SecureChannel> {
        let deadline = Instant::now() + wait;
        let mut slots = self.lock();
        loop {
            if let Some(c) = slots[peer.index()].take() {
                return Some(c);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            slots = self
                .arrived
                .wait_timeout(slots, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// State shared by the serving loop and the connection threads.
struct State {
    me: PartyId,
    model: RwLock<Option<Arc<PartyModel>>>,
    store: ShareFile,
    queue: RequestQueue,
    inbox: Inbox,
    stop: AtomicBool,
    admission: Arc<Admission>,
    client_cap: ClientCap,
    refusals: LogBudget,
    timings: ServerTimings,
}

impl State {
    fn model(&self) -> Option<Arc<PartyModel>> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Logs a refused connection within the log budget (a flood must not flood the log).
    fn log_refusal(&self, args: std::fmt::Arguments<'_>) {
        if let Some(skipped) = self.refusals.allow() {
            if skipped > 0 {
                log(
                    self.me,
                    format_args!("{skipped} more refused connections were not logged"),
                );
            }
            log(self.me, args);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

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
                inbox: Inbox::default(),
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
            self.expire();
            let transport = match mesh.take() {
                Some(t) if !self.state.inbox.any() => t,
                Some(t) => {
                    log(
                        me,
                        format_args!("a peer reconnected (it restarted); re-forming the mesh"),
                    );
                    drop(t);
                    self.drop_queued("a party restarted");
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
            mesh = match self.step(transport) {
                Ok(t) => Some(t),
                Err(e) => {
                    log(me, format_args!("mesh failed: {e}; re-forming it"));
                    self.drop_queued("the mesh with the other parties failed");
                    None
                }
            };
        }
        Ok(())
    }

    /// After a mesh failure a peer may have restarted without the requests it held, so no
    /// queued request can be relied on to complete: each client is told at once rather than
    /// at its timeout.
    fn drop_queued(&self, why: &str) {
        let n = self.state.queue.drop_held(&format!(
            "party {}: {why}; the request was dropped (send it again)",
            self.state.me
        ));
        if n > 0 {
            log(
                self.state.me,
                format_args!("dropped {n} queued requests: {why}"),
            );
        }
    }

    fn expire(&self) {
        let t = &self.state.timings;
        let n = self.state.queue.expire(
            t.request_ttl,
            &format!(
                "party {} could not serve the request within {:?} (its mesh with the other \
                 parties is down or busy); the request was dropped",
                self.state.me, t.request_ttl
            ),
        );
        if n > 0 {
            log(self.state.me, format_args!("dropped {n} expired requests"));
        }
    }

    /// Dials the lower-id peers (retrying while they are not listening) and takes the
    /// higher-id peers' channels from the inbox, within one attempt's time.
    fn form_mesh(&self) -> Result<NoiseTransport, PartyError> {
        let me = self.state.me;
        let started = Instant::now();
        let deadline = started + self.state.timings.mesh_attempt;
        let (lower, higher): (Vec<PartyId>, Vec<PartyId>) =
            me.others().into_iter().partition(|p| *p < me);
        let mut channels: Vec<(PartyId, SecureChannel)> = Vec::with_capacity(2);
        let dialled = std::thread::scope(|s| {
            let dialers: Vec<_> = lower
                .iter()
                .map(|&peer| (peer, s.spawn(move || self.dial_until(peer, deadline))))
                .collect();
            let mut failures = Vec::new();
            for &peer in &higher {
                match self.wait_inbox(peer, deadline) {
                    Some(c) => channels.push((peer, c)),
                    None => failures.push(PartyError::Net(NetError::Mesh(format!(
                        "no connection from party {peer} within {:?}",
                        self.state.timings.mesh_attempt
                    )))),
                }
            }
            for (peer, h) in dialers {
                match h.join() {
                    Ok(Ok(c)) => channels.push((peer, c)),
                    Ok(Err(e)) => failures.insert(0, PartyError::Net(e)),
                    Err(_) => failures.push(PartyError::Net(NetError::Mesh(
                        "a dialling thread panicked".into(),
                    ))),
                }
            }
            failures
        });
        if let Some(first) = dialled.into_iter().next() {
            return Err(first);
        }
        let pair: [(PartyId, SecureChannel); 2] = channels.try_into().map_err(|_| {
            PartyError::Net(NetError::Mesh(format!("party {me}: not two peer channels")))
        })?;
        let t = NoiseTransport::new(me, pair)?;
        log(
            me,
            format_args!(
                "mesh ready in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            ),
        );
        Ok(t)
    }

    fn wait_inbox(&self, peer: PartyId, deadline: Instant) -> Option<SecureChannel> {
        loop {
            let now = Instant::now();
            if now >= deadline || self.state.stopped() {
                return None;
            }
            // Short slices: keep expiring queued requests and watching the stop flag.
            let slice = (deadline - now).min(Duration::from_millis(100));
            if let Some(c) = self.state.inbox.take(peer, slice) {
                return Some(c);
            }
            self.expire();
        }
    }

    fn dial_until(&self, peer: PartyId, deadline: Instant) -> Result<SecureChannel, NetError> {
        let mut last = None;
        while Instant::now() < deadline && !self.state.stopped() {
            match connect_to_party(&self.local, peer) {
                Ok(c) => return Ok(c),
                // Turned away: a misconfiguration, or a peer busy with a flood of connections.
                // Waiting fixes the second, so keep trying, saying why each time.
                Err(e @ (NetError::RefusedByPeer { .. } | NetError::Handshake { .. })) => {
                    log(self.state.me, format_args!("{e}; trying again"));
                    last = Some(e);
                    std::thread::sleep(REFUSED_PAUSE);
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
        Err(NetError::Mesh(format!(
            "could not reach party {peer}: {}",
            last.map_or_else(|| "stopped".into(), |e| e.to_string())
        )))
    }

    /// One scheduling step over a working mesh; an error means the mesh must be re-formed.
    fn step(&self, mut t: NoiseTransport) -> Result<NoiseTransport, PartyError> {
        let me = self.state.me;
        let lead = PartyId::ALL[0];
        let scheduled = if me == lead {
            match self.lead_choice(&mut t)? {
                LeadChoice::Schedule(request_id) => {
                    for peer in me.others() {
                        t.send_message(peer, &Message::Schedule { request_id })?;
                    }
                    Some(request_id)
                }
                LeadChoice::Heartbeat => {
                    for peer in me.others() {
                        t.send_message(peer, &Message::Heartbeat)?;
                    }
                    None
                }
                LeadChoice::Done => return Ok(t),
            }
        } else {
            match t.recv_message(lead)? {
                Message::Schedule { request_id } => Some(request_id),
                Message::Heartbeat => None,
                Message::Poll { request_ids } => {
                    let dealing = self.state.model().map(|m| m.dealing());
                    self.exchange_ready(&mut t, 0, true, dealing)?;
                    let (held, refused) = self.state.queue.status(&request_ids);
                    t.send_message(lead, &Message::Holding { held, refused })?;
                    return Ok(t);
                }
                other => {
                    return Err(PartyError::Protocol {
                        party: lead,
                        expected: "Schedule, Poll or Heartbeat",
                        got: other.kind().into(),
                    })
                }
            }
        };
        match scheduled {
            None => {
                let dealing = self.state.model().map(|m| m.dealing());
                self.exchange_ready(&mut t, 0, true, dealing)?;
                Ok(t)
            }
            Some(id) => self.serve_request(t, id),
        }
    }

    /// Party 0's choice for this step (it may poll the others first).
    fn lead_choice(&self, t: &mut NoiseTransport) -> Result<LeadChoice, PartyError> {
        let queue = &self.state.queue;
        let timings = &self.state.timings;
        let seen = queue.arrivals();
        let held = queue.held(MAX_IDS);
        if held.is_empty() {
            return Ok(match queue.next(timings.heartbeat) {
                // Poll at the next step.
                Some(_) => LeadChoice::Done,
                None => LeadChoice::Heartbeat,
            });
        }
        let request_ids: Vec<u64> = held.iter().map(|(id, _)| *id).collect();
        for peer in self.state.me.others() {
            t.send_message(
                peer,
                &Message::Poll {
                    request_ids: request_ids.clone(),
                },
            )?;
        }
        let dealing = self.state.model().map(|m| m.dealing());
        self.exchange_ready(t, 0, true, dealing)?;
        let mut answered: Vec<Vec<u64>> = Vec::with_capacity(2);
        for peer in self.state.me.others() {
            match t.recv_message(peer)? {
                Message::Holding { held, refused } => {
                    answered.push(held.into_iter().chain(refused).collect());
                }
                other => {
                    return Err(PartyError::Protocol {
                        party: peer,
                        expected: "Holding after a Poll",
                        got: other.kind().into(),
                    })
                }
            }
        }
        if let Some(id) = request_ids
            .iter()
            .find(|id| answered.iter().all(|a| a.contains(id)))
        {
            return Ok(LeadChoice::Schedule(*id));
        }
        // Nobody else holds these (yet): poll again soon for a fresh request (its shares may
        // still be on their way to the others), rarely for stale ones, and at once when a new
        // request arrives here.
        let youngest = held
            .iter()
            .map(|(_, arrived)| arrived.elapsed())
            .min()
            .unwrap_or_default();
        let pause = (youngest / 4).clamp(MIN_POLL_PAUSE, timings.heartbeat.max(MIN_POLL_PAUSE));
        queue.wait_arrival(seen, pause);
        Ok(LeadChoice::Done)
    }

    /// Sends this party's readiness and the dealing id of its model share to both peers, and
    /// returns the peers that refused and, when the three model shares come from different
    /// dealings, the message saying so (every party sees all three ids, so all agree on it).
    fn exchange_ready(
        &self,
        t: &mut NoiseTransport,
        request_id: u64,
        accept: bool,
        dealing: Option<DealingId>,
    ) -> Result<Readiness, PartyError> {
        let others = self.state.me.others();
        for peer in others {
            t.send_message(peer, &Message::Ready { request_id, accept })?;
        }
        let mpc_me = t.mpc_id();
        consistency::send_dealing(t, mpc_me, dealing)?;
        let mut refused = Vec::new();
        let mut dealings = [None; 3];
        dealings[mpc_me.index()] = dealing;
        for peer in others {
            match t.recv_message(peer)? {
                Message::Ready {
                    request_id: got,
                    accept,
                } if got == request_id => {
                    if !accept {
                        refused.push(peer);
                    }
                }
                other => {
                    return Err(PartyError::Protocol {
                        party: peer,
                        expected: "Ready for the scheduled request",
                        got: format!("{other:?}"),
                    })
                }
            }
            let from = MpcPartyId::ALL[peer.index()];
            dealings[peer.index()] = consistency::recv_dealing(t, from)?;
        }
        Ok(Readiness {
            refused,
            mixed_dealings: consistency::mixed_dealings(dealings),
        })
    }

    /// The parties compare digests of the input components they hold in common (one round),
    /// so a client that sent two holders different copies is refused before anything is
    /// computed. A party that finds a difference answers its client and drops the share; the
    /// third party, which cannot see the difference, learns of it in the ready exchange.
    fn compare_copies(
        &self,
        t: &mut NoiseTransport,
        held: Option<Held>,
        why_not: Option<String>,
    ) -> Result<(Option<Held>, Option<String>), PartyError> {
        let me = self.state.me;
        let share = held.as_ref().map(|(s, _, _)| std::slice::from_ref(&**s));
        let mpc_me = t.mpc_id();
        let found = match consistency::compare_input_copies(t, mpc_me, share) {
            Ok(f) => f,
            Err(e) => {
                if let Some((_, reply, _)) = held {
                    let _ = reply.send(Err(format!(
                        "party {me}: the mesh failed before the computation ({e}); the \
                         request was dropped"
                    )));
                }
                return Err(e.into());
            }
        };
        match held {
            Some((_, reply, _)) if !found.is_empty() => {
                let text = format!("party {me}: {}", consistency::inconsistent_input(&found));
                let _ = reply.send(Err(text.clone()));
                Ok((None, Some(text)))
            }
            held => Ok((held, why_not)),
        }
    }

    fn serve_request(&self, mut t: NoiseTransport, id: u64) -> Result<NoiseTransport, PartyError> {
        let me = self.state.me;
        // Party 0 schedules only requests every party said it holds (or rejected): nothing to
        // wait for. One withdrawn since is refused like a missing one.
        let wait = Duration::ZERO;
        let (held, why_not) = match self.state.queue.take(id, wait) {
            Taken::Held(share, reply) => match self.state.model() {
                Some(m) if m.input_shape() == share.shape() && m.fixed() == share.fixed() => {
                    (Some((share, reply, m)), None)
                }
                _ => {
                    let text = format!(
                        "party {me}: the shared model changed or is missing since the request \
                         arrived; the request was dropped"
                    );
                    let _ = reply.send(Err(text.clone()));
                    (None, Some(text))
                }
            },
            Taken::Refused => (None, Some("rejected on arrival".into())),
            Taken::Missing => (
                None,
                Some("its share was withdrawn or expired here".to_owned()),
            ),
        };
        let (held, why_not) = self.compare_copies(&mut t, held, why_not)?;
        let dealing = held.as_ref().map(|(_, _, m)| m.dealing());
        let Readiness {
            refused,
            mixed_dealings,
        } = match self.exchange_ready(&mut t, id, held.is_some(), dealing) {
            Ok(r) => r,
            Err(e) => {
                if let Some((_, reply, _)) = held {
                    let _ = reply.send(Err(format!(
                        "party {me}: the mesh failed before the computation ({e}); the \
                         request was dropped"
                    )));
                }
                return Err(e);
            }
        };
        let Some((share, reply, model)) = held else {
            log(
                me,
                format_args!(
                    "skipped a scheduled request: {}",
                    why_not.unwrap_or_default()
                ),
            );
            return Ok(t);
        };
        if let Some(text) = mixed_dealings {
            let _ = reply.send(Err(format!("party {me}: {text}")));
            log(me, format_args!("refused a request: {text}"));
            return Ok(t);
        }
        if !refused.is_empty() {
            let names: Vec<String> = refused.iter().map(|p| format!("party {p}")).collect();
            let _ = reply.send(Err(format!(
                "{} did not hold a usable share of this request (it was rejected, withdrawn or \
                 expired there, or its copies at two parties differed); the request was dropped",
                names.join(" and ")
            )));
            log(
                me,
                format_args!("dropped a request that {} refused", names.join(" and ")),
            );
            return Ok(t);
        }
        self.compute(t, *share, &reply, &model)
    }

    fn compute(
        &self,
        t: NoiseTransport,
        share: InputShare,
        reply: &std::sync::mpsc::Sender<Outcome>,
        model: &PartyModel,
    ) -> Result<NoiseTransport, PartyError> {
        let me = self.state.me;
        let started = Instant::now();
        let fail = |e: &dyn std::fmt::Display| {
            let _ = reply.send(Err(format!(
                "party {me}: the secure computation failed: {e}; the request was dropped"
            )));
        };
        let mpc_id = t.mpc_id();
        let mut party = match Party::setup(mpc_id, t) {
            Ok(p) => p,
            Err(e) => {
                fail(&e);
                return Err(e.into());
            }
        };
        let before = party.stats();
        let outs = match infer(&mut party, model, std::slice::from_ref(&share)) {
            Ok(o) => o,
            Err(e) => {
                fail(&e);
                return Err(e.into());
            }
        };
        let spent = party.stats().since(&before);
        let stats = ServeStats {
            bytes_sent: spent.bytes_sent,
            rounds: spent.rounds,
            micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        };
        let Some(out) = outs.into_iter().next() else {
            let e = "the engine returned no output share";
            fail(&e);
            return Err(PartyError::Prediction(e.into()));
        };
        let _ = reply.send(Ok(Served {
            output_share: out.to_bytes(),
            stats,
        }));
        log(
            me,
            format_args!(
                "served a request: {} bytes sent to the other parties, {} rounds, {:.1} ms",
                stats.bytes_sent,
                stats.rounds,
                stats.micros as f64 / 1e3
            ),
        );
        Ok(party.into_transport())
    }
}

/// A request's share as a party holds it: the share, where to answer, and the model it was
/// checked against.
type Held = (
    Box<InputShare>,
    std::sync::mpsc::Sender<Outcome>,
    Arc<PartyModel>,
);

/// What the ready exchange found.
struct Readiness {
    /// Peers without a usable share of the request.
    refused: Vec<PartyId>,
    /// Set when the parties' model shares come from different dealings.
    mixed_dealings: Option<String>,
}

fn accept_loop(listener: &TcpListener, local: &Arc<LocalParty>, state: &Arc<State>) {
    let me = state.me;
    if let Err(e) = listener.set_nonblocking(true) {
        log(me, format_args!("cannot poll the listener: {e}"));
    }
    while !state.stopped() {
        let (stream, addr) = match listener.accept() {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                log(me, format_args!("accepting a connection failed: {e}"));
                std::thread::sleep(POLL);
                continue;
            }
        };
        // A second handle on the socket, so that a flood can be evicted (see `admission`).
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let slot = match state.admission.admit(handle) {
            Ok(slot) => slot,
            Err(full) => {
                state.log_refusal(format_args!("closed a connection from {addr}: {full}"));
                continue;
            }
        };
        let local = Arc::clone(local);
        let conn_state = Arc::clone(state);
        let spawned = std::thread::Builder::new()
            .name(format!("privxray-conn-{me}"))
            .spawn(move || handle_connection(stream, addr, &local, &conn_state, slot));
        if let Err(e) = spawned {
            log(me, format_args!("cannot start a connection thread: {e}"));
        }
    }
}

fn handle_connection(
    stream: TcpStream,
    addr: SocketAddr,
    local: &LocalParty,
    state: &Arc<State>,
    slot: Handshaking,
) {
    let me = state.me;
    // The listener polls without blocking; the connection itself blocks with timeouts.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let inbound = match accept_stream_observed(stream, addr, local, &mut |p| slot.progress(p)) {
        Ok(inbound) => inbound,
        Err(e) => return state.log_refusal(format_args!("{e}")),
    };
    let role = inbound.role();
    let _slot = match slot.finish(role) {
        Ok(slot) => slot,
        Err(full) => {
            state.log_refusal(format_args!("closed a connection from {role}: {full}"));
            if let Inbound::Client(mut channel) | Inbound::Owner(mut channel) = inbound {
                let text = format!("party {me}: {full}; try again later");
                let _ = channel.send_message(&Message::Error { text });
            }
            return;
        }
    };
    match inbound {
        Inbound::Party { id, channel } if id > me => state.inbox.put(id, channel),
        Inbound::Party { id, .. } => log(
            me,
            format_args!("closed a connection from party {id}: parties with lower ids are dialled by this party"),
        ),
        Inbound::Client(channel) => serve_client(state, channel),
        Inbound::Owner(channel) => serve_owner(state, channel),
    }
}

fn model_info(m: &PartyModel) -> Message {
    let dims = m.input_shape().iter().map(|&d| d as u32).collect();
    match Shape::new(dims) {
        Ok(shape) => Message::ModelInfo {
            name: m.name().to_owned(),
            shape,
            frac_bits: m.fixed().frac_bits() as u8,
            output_len: m.output_len() as u32,
        },
        Err(e) => Message::Error {
            text: format!("the shared model's input shape cannot be described: {e}"),
        },
    }
}

fn no_model(me: PartyId) -> Message {
    Message::Error {
        text: format!(
            "party {me}: no model has been shared yet: the model owner must run \
             `privxray share-model` first"
        ),
    }
}

/// Receives the next message, answering undecodable frames with an error and going on.
/// `None` when the connection is over.
fn next_message(me: PartyId, channel: &mut SecureChannel) -> Option<Message> {
    loop {
        match channel.recv_message() {
            Ok(m) => return Some(m),
            Err(NetError::Decode { source, .. }) => {
                log(
                    me,
                    format_args!("malformed frame from {}: {source}", channel.peer()),
                );
                let text = format!("party {me}: malformed frame: {source}");
                if channel.send_message(&Message::Error { text }).is_err() {
                    return None;
                }
            }
            Err(NetError::Closed { .. }) => return None,
            Err(e) => {
                log(me, format_args!("{} connection ended: {e}", channel.peer()));
                return None;
            }
        }
    }
}

fn serve_client(state: &Arc<State>, mut channel: SecureChannel) {
    let me = state.me;
    // A client sends no more than one input share of the model installed when its message
    // starts arriving (plus slack).
    let limits = Arc::clone(state);
    channel.set_recv_limit_fn(move || limits.client_cap.get(limits.model().as_ref()));
    while let Some(message) = next_message(me, &mut channel) {
        let replies = match message {
            Message::ModelInfoRequest => vec![state
                .model()
                .map_or_else(|| no_model(me), |m| model_info(&m))],
            Message::PredictRequest {
                request_id,
                shape,
                input_share,
            } => client_request(state, request_id, &shape, &input_share),
            other => vec![Message::Error {
                text: format!(
                    "party {me}: a client may send ModelInfoRequest or PredictRequest, not {}",
                    other.kind()
                ),
            }],
        };
        for reply in &replies {
            if channel.send_message(reply).is_err() {
                return;
            }
        }
    }
}

/// Validates a request, queues it and waits for its outcome: the messages to send back.
fn client_request(state: &State, id: u64, shape: &Shape, bytes: &[u8]) -> Vec<Message> {
    let me = state.me;
    let refuse = |text: String| {
        state.queue.refuse(id);
        log(me, format_args!("refused a request: {text}"));
        vec![Message::Error {
            text: format!("party {me}: {text}"),
        }]
    };
    let Some(model) = state.model() else {
        state.queue.refuse(id);
        return vec![no_model(me)];
    };
    let want = model.input_shape();
    if shape.dims().len() != 3 || shape.dims().iter().zip(want).any(|(&d, w)| d as usize != w) {
        return refuse(format!(
            "wrong tensor shape {:?}: the shared model takes {want:?}",
            shape.dims()
        ));
    }
    let share = match InputShare::from_bytes(bytes) {
        Ok(s) => s,
        Err(e) => return refuse(format!("malformed input share: {e}")),
    };
    if share.party().get() != me.get() {
        return refuse(format!(
            "the input share is party {}'s, but this is party {me}",
            share.party()
        ));
    }
    if share.shape() != want || share.fixed() != model.fixed() {
        return refuse(format!(
            "the input share has shape {:?} and {} fractional bits; the model takes {want:?} \
             with {}",
            share.shape(),
            share.fixed().frac_bits(),
            model.fixed().frac_bits()
        ));
    }
    let outcome = match state.queue.submit(id, share) {
        Ok(rx) => rx,
        Err(e) => {
            return vec![Message::Error {
                text: format!("party {me}: {e}"),
            }]
        }
    };
    let wait = state.timings.request_ttl + state.timings.share_wait;
    match outcome.recv_timeout(wait) {
        Ok(Ok(served)) => vec![
            Message::PredictResponse {
                request_id: id,
                output_share: served.output_share,
            },
            Message::RequestStats {
                request_id: id,
                bytes_sent: served.stats.bytes_sent,
                rounds: served.stats.rounds,
                micros: served.stats.micros,
            },
        ],
        Ok(Err(text)) => vec![Message::Error { text }],
        Err(_) => {
            // Withdraw it, so it is not computed for nobody later.
            let _ = state.queue.take(id, Duration::ZERO);
            vec![Message::Error {
                text: format!(
                    "party {me}: the request was not served within {wait:?}; it was dropped"
                ),
            }]
        }
    }
}

fn serve_owner(state: &State, mut channel: SecureChannel) {
    let me = state.me;
    while let Some(message) = next_message(me, &mut channel) {
        let reply = match message {
            Message::ShareModel { share } => match install(state, &share) {
                Ok(info) => info,
                Err(text) => {
                    log(me, format_args!("refused a model share: {text}"));
                    Message::Error {
                        text: format!("party {me}: {text}"),
                    }
                }
            },
            Message::ModelInfoRequest => state
                .model()
                .map_or_else(|| no_model(me), |m| model_info(&m)),
            other => Message::Error {
                text: format!(
                    "party {me}: the model owner may send ShareModel or ModelInfoRequest, not {}",
                    other.kind()
                ),
            },
        };
        if channel.send_message(&reply).is_err() {
            return;
        }
    }
}

/// Decodes, persists and installs a model share; the reply is its public description.
fn install(state: &State, bytes: &[u8]) -> Result<Message, String> {
    let me = state.me;
    let model = PartyModel::from_bytes(bytes).map_err(|e| format!("malformed model share: {e}"))?;
    if model.party().get() != me.get() {
        return Err(format!(
            "this is party {}'s model share, but this is party {me}",
            model.party()
        ));
    }
    // Persist first: a restarted party must come back with the share it last acknowledged.
    state.store.save(bytes).map_err(|e| match e {
        // The reason only: file names stay out of logs and replies.
        PartyError::Store { reason, .. } => format!("cannot store the model share: {reason}"),
        other => format!("cannot store the model share: {other}"),
    })?;
    let info = model_info(&model);
    log(
        me,
        format_args!(
            "installed a model share of {} bytes: input {:?}, {} operations, {} outputs",
            bytes.len(),
            model.input_shape(),
            model.ops().len(),
            model.output_len()
        ),
    );
    *state.model.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(model));
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::random_spec;
    use crate::model::ModelKind;
    use crate::mpc::FixedPoint;
    use crate::net::handshake::connect_client;
    use crate::net::handshake::tests::fixture_with;
    use crate::party::{share_model_remote, RemoteClient};

    fn expect_error(ch: &mut SecureChannel, needle: &str) {
        match ch.recv_message().unwrap() {
            Message::Error { text } => assert!(text.contains(needle), "{text}"),
            other => panic!("expected an error containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn bad_requests_get_clear_errors_and_the_parties_keep_serving() {
        let f = fixture_with(|c| {
            let t = Timeouts {
                io: Duration::from_secs(20),
                startup: Duration::from_secs(10),
                ..*c.timeouts()
            };
            c.with_timeouts(t)
        });
        let dir = tempfile::tempdir().unwrap();
        let config = f.parties[0].config().clone();
        let timings = ServerTimings::from_timeouts(config.timeouts());
        let servers: Vec<PartyServer> = f
            .parties
            .into_iter()
            .zip(f.listeners)
            .enumerate()
            .map(|(i, (local, listener))| {
                let store = ShareFile::at(dir.path().join(format!("p{i}.model-share")));
                PartyServer::new(local, listener, store, timings).unwrap()
            })
            .collect();
        let stops: Vec<StopHandle> = servers.iter().map(PartyServer::stop_handle).collect();
        let running: Vec<_> = servers
            .into_iter()
            .map(|s| std::thread::spawn(move || s.run()))
            .collect();

        // Before a model is shared.
        let mut raw = connect_client(&config, PartyId::ALL[0]).unwrap();
        raw.send_message(&Message::ModelInfoRequest).unwrap();
        expect_error(&mut raw, "no model has been shared");

        let spec = random_spec(ModelKind::Vgg16_1, 1.0 / 32.0, 21);
        let shared = share_model_remote(&config, &f.owner, &spec, FixedPoint::default()).unwrap();
        assert_eq!(shared.input_shape, spec.input);

        // A frame that is no message, then a wrong shape: errors, and the same connection
        // still gets answers.
        raw.send(&[0xEE, 1, 2, 3]).unwrap();
        expect_error(&mut raw, "malformed frame");
        raw.send_message(&Message::PredictRequest {
            request_id: 1,
            shape: Shape::new(vec![3, 224, 224]).unwrap(),
            input_share: vec![0; 16],
        })
        .unwrap();
        expect_error(&mut raw, "wrong tensor shape");
        raw.send_message(&Message::PredictRequest {
            request_id: 2,
            shape: Shape::new(spec.input.iter().map(|&d| d as u32).collect()).unwrap(),
            input_share: vec![1, 2, 3],
        })
        .unwrap();
        expect_error(&mut raw, "malformed input share");
        raw.send_message(&Message::ModelInfoRequest).unwrap();
        assert!(matches!(
            raw.recv_message().unwrap(),
            Message::ModelInfo { .. }
        ));
        // A client may not share a model.
        raw.send_message(&Message::ShareModel { share: vec![] })
            .unwrap();
        expect_error(&mut raw, "not ShareModel");

        // Two clients at once are both served, correctly, through the queue.
        let image: Vec<f32> = (0..spec.input_len())
            .map(|i| ((i * 31) % 97) as f32 / 97.0)
            .collect();
        let want = spec.forward(&image).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut c =
                            RemoteClient::connect(&config, Duration::from_secs(20)).unwrap();
                        c.predict(&image).unwrap()
                    })
                })
                .collect();
            for h in handles {
                let got = h.join().unwrap();
                assert!(got.bytes_between_parties > 0 && got.rounds > 0);
                for (g, w) in got.logits.iter().zip(&want) {
                    assert!((g - w).abs() < 5e-2, "private {g} vs plaintext {w}");
                }
            }
        });
        // The shares were persisted, one per party, each its own.
        for i in 0..3u8 {
            let store = ShareFile::at(dir.path().join(format!("p{i}.model-share")));
            let m = store.load(PartyId::new(i).unwrap()).unwrap().unwrap();
            assert_eq!(m.input_shape(), spec.input);
        }

        for s in &stops {
            s.stop();
        }
        for r in running {
            r.join().unwrap().unwrap();
        }
    }
}
