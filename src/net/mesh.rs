//! The three-party mesh: every pair of parties shares one KK channel. This is the one place
//! that forms it: the party server, the benchmarks and the tests all go through
//! [`MeshBuilder`].
//!
//! Deterministic roles avoid duplicate connections: a party dials every party with a lower id
//! and takes the channels of the parties with a higher id from its [`PeerInbox`], which the
//! code that accepts connections fills with confirmed handshakes only (a replayed handshake
//! never becomes a channel, so it cannot displace a live one; a newer channel from the same
//! peer replaces an older one, which that peer gave up). Dialling retries until the attempt's
//! deadline, because parties start in any order and a peer busy with a flood of connections
//! turns callers away for a while; each refusal is logged with its reason. Every failure of an
//! attempt is reported at once, so an operator fixing one does not discover the next only on
//! the following start.
//!
//! The party server accepts with its admission slots and keeps re-forming the mesh;
//! [`Mesh::establish`] (benchmarks and tests on loopback) accepts on a thread of its own while
//! the mesh forms, and keeps client and owner connections that arrive meanwhile in
//! [`Mesh::take_pending`].
//!
//! Imports the handshake, the channel and the local identity; never the party layer above.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::channel::SecureChannel;
use super::config::PartyId;
use super::error::NetError;
use super::handshake::{accept_stream, connect_to_party, Inbound};
use super::local::LocalParty;

/// Pause between dial attempts to a peer that is not listening (yet).
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pause after a peer turned this party away (it may be flooded, or misconfigured: each
/// attempt is logged with the reason).
const REFUSED_PAUSE: Duration = Duration::from_millis(500);
/// Longest wait on the inbox before the caller's `while_waiting` runs again.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Poll interval of [`Mesh::establish`]'s non-blocking acceptor.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// Mesh channels that higher-id peers opened to this party, newest per peer.
#[derive(Default)]
pub struct PeerInbox {
    slots: Mutex<[Option<SecureChannel>; 3]>,
    arrived: Condvar,
}

impl PeerInbox {
    fn lock(&self) -> MutexGuard<'_, [Option<SecureChannel>; 3]> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Files `channel`, a confirmed handshake from `peer`.
    pub fn put(&self, peer: PartyId, channel: SecureChannel) {
        // A newer connection from the same peer replaces an older one: the peer gave up on it.
        // Only confirmed handshakes get here (a replayed one never completes), so the newer
        // one is the live peer's.
        self.lock()[peer.index()] = Some(channel);
        self.arrived.notify_all();
    }

    /// Whether any channel is waiting (a peer reconnected).
    pub fn any(&self) -> bool {
        self.lock().iter().any(Option::is_some)
    }

    /// Waits up to `wait` for a channel from `peer`.
    pub fn take(&self, peer: PartyId, wait: Duration) -> Option<SecureChannel> {
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

impl std::fmt::Debug for PeerInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerInbox").finish_non_exhaustive()
    }
}

/// Forms the mesh of one party: dials the lower ids, takes the higher ids from the inbox.
pub struct MeshBuilder<'a> {
    local: &'a LocalParty,
    inbox: &'a PeerInbox,
    stopped: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl<'a> MeshBuilder<'a> {
    /// A builder for `local`, taking inbound peer channels from `inbox`.
    pub fn new(local: &'a LocalParty, inbox: &'a PeerInbox) -> Self {
        Self {
            local,
            inbox,
            stopped: None,
        }
    }

    /// Gives up early once `stopped` says so (checked between dial attempts and waits).
    pub fn stop_when(mut self, stopped: &'a (dyn Fn() -> bool + Sync)) -> Self {
        self.stopped = Some(stopped);
        self
    }

    fn stopped(&self) -> bool {
        self.stopped.is_some_and(|f| f())
    }

    /// One attempt to form the mesh within `attempt`. `while_waiting` runs between slices of
    /// the wait for inbound peers (the party server expires queued requests there).
    pub fn form(
        &self,
        attempt: Duration,
        while_waiting: &mut dyn FnMut(),
    ) -> Result<Mesh, NetError> {
        let me = self.local.id();
        let deadline = Instant::now() + attempt;
        let (lower, higher): (Vec<PartyId>, Vec<PartyId>) =
            me.others().into_iter().partition(|p| *p < me);
        let mut peers: Vec<(PartyId, SecureChannel)> = Vec::with_capacity(2);
        let mut failures: Vec<String> = Vec::new();
        std::thread::scope(|s| {
            let dialers: Vec<_> = lower
                .iter()
                .map(|&peer| (peer, s.spawn(move || self.dial_until(peer, deadline))))
                .collect();
            for &peer in &higher {
                match self.wait_inbox(peer, deadline, while_waiting) {
                    Some(c) => peers.push((peer, c)),
                    None => failures.push(format!(
                        "party {me}: no connection from party {peer} within {attempt:?}"
                    )),
                }
            }
            for (peer, h) in dialers {
                match h.join() {
                    Ok(Ok(c)) => peers.push((peer, c)),
                    Ok(Err(why)) => failures.insert(0, why),
                    Err(_) => failures.push(format!("party {me}: a dialling thread panicked")),
                }
            }
        });
        if !failures.is_empty() {
            return Err(NetError::Mesh(failures.join("; ")));
        }
        peers.sort_by_key(|(id, _)| *id);
        let peers: [(PartyId, SecureChannel); 2] = peers.try_into().map_err(|p: Vec<_>| {
            NetError::Mesh(format!(
                "party {me}: expected 2 peer channels, formed {}",
                p.len()
            ))
        })?;
        Ok(Mesh {
            me,
            peers,
            pending: Vec::new(),
        })
    }

    /// Dials `peer` until `deadline`, retrying while it is not listening or turns this party
    /// away (a misconfiguration, or a peer busy with a flood: waiting fixes the second).
    fn dial_until(&self, peer: PartyId, deadline: Instant) -> Result<SecureChannel, String> {
        let me = self.local.id();
        let mut attempts = 0u32;
        let mut last = None;
        while Instant::now() < deadline && !self.stopped() {
            attempts += 1;
            match connect_to_party(self.local, peer) {
                Ok(c) => return Ok(c),
                Err(e @ (NetError::RefusedByPeer { .. } | NetError::Handshake { .. })) => {
                    super::log(format_args!("party {me}: {e}; trying again"));
                    last = Some(e);
                    std::thread::sleep(REFUSED_PAUSE);
                }
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
        Err(match last {
            Some(e) => {
                format!("party {me}: gave up reaching party {peer} after {attempts} attempts: {e}")
            }
            None => format!("party {me}: stopped before reaching party {peer}"),
        })
    }

    fn wait_inbox(
        &self,
        peer: PartyId,
        deadline: Instant,
        while_waiting: &mut dyn FnMut(),
    ) -> Option<SecureChannel> {
        loop {
            let now = Instant::now();
            if now >= deadline || self.stopped() {
                return None;
            }
            if let Some(c) = self.inbox.take(peer, (deadline - now).min(WAIT_SLICE)) {
                return Some(c);
            }
            while_waiting();
        }
    }
}

/// A party's two channels to the other parties.
#[derive(Debug)]
pub struct Mesh {
    me: PartyId,
    /// The two peers' channels, in increasing peer id order.
    peers: [(PartyId, SecureChannel); 2],
    pending: Vec<Inbound>,
}

impl Mesh {
    /// Connects this party to the other two within `timeouts.startup`, accepting on
    /// `listener` (usually from [`LocalParty::bind`]) while the mesh forms; the listener stays
    /// usable for clients afterwards.
    pub fn establish(local: &LocalParty, listener: &TcpListener) -> Result<Mesh, NetError> {
        let started = Instant::now();
        let inbox = PeerInbox::default();
        let formed = AtomicBool::new(false);
        let io_err = |source| NetError::Io {
            peer: "listener".into(),
            during: "accepting",
            source,
        };
        listener.set_nonblocking(true).map_err(io_err)?;
        let (mesh, accepted) = std::thread::scope(|s| {
            let acceptor = s.spawn(|| accept_while(local, listener, &inbox, &formed));
            let mesh =
                MeshBuilder::new(local, &inbox).form(local.config().timeouts().startup, &mut || {});
            formed.store(true, Ordering::Relaxed);
            let accepted = acceptor
                .join()
                .unwrap_or_else(|_| Err(NetError::Mesh("the accepting thread panicked".into())));
            (mesh, accepted)
        });
        let restore = listener.set_nonblocking(false).map_err(io_err);
        let mut mesh = mesh?;
        mesh.pending = accepted?;
        restore?;
        super::log(format_args!(
            "party {}: mesh ready in {:.1} ms",
            mesh.me,
            started.elapsed().as_secs_f64() * 1e3
        ));
        Ok(mesh)
    }

    pub fn me(&self) -> PartyId {
        self.me
    }

    /// The channel to `peer`, or `None` when `peer` is this party.
    pub fn channel(&mut self, peer: PartyId) -> Option<&mut SecureChannel> {
        self.peers
            .iter_mut()
            .find(|(id, _)| *id == peer)
            .map(|(_, c)| c)
    }

    /// Both channels at once (for sending to one peer while receiving from the other), in
    /// increasing peer id order, as `PartyId::others` lists them.
    pub fn channels_mut(&mut self) -> [&mut SecureChannel; 2] {
        let [(_, a), (_, b)] = &mut self.peers;
        [a, b]
    }

    /// Consumes the mesh, returning `(peer, channel)` for both peers in increasing id order.
    pub fn into_channels(self) -> [(PartyId, SecureChannel); 2] {
        self.peers
    }

    /// Client and owner connections that arrived while the mesh was forming.
    pub fn take_pending(&mut self) -> Vec<Inbound> {
        std::mem::take(&mut self.pending)
    }
}

/// [`Mesh::establish`]'s acceptor: runs the (confirmed) responder handshake on each connection
/// until the mesh is formed, filing higher-id parties' channels in `inbox` and returning the
/// clients and owners that came meanwhile.
fn accept_while(
    local: &LocalParty,
    listener: &TcpListener,
    inbox: &PeerInbox,
    formed: &AtomicBool,
) -> Result<Vec<Inbound>, NetError> {
    let me = local.id();
    let io_err = |source| NetError::Io {
        peer: "listener".into(),
        during: "accepting",
        source,
    };
    let mut pending = Vec::new();
    while !formed.load(Ordering::Relaxed) {
        let (stream, addr) = match listener.accept() {
            Ok(conn) => conn,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) => return Err(io_err(e)),
        };
        // The accepted socket may inherit non-blocking mode on some platforms.
        stream.set_nonblocking(false).map_err(io_err)?;
        match accept_stream(stream, addr, local) {
            Ok(Inbound::Party { id, channel }) if id > me => inbox.put(id, channel),
            Ok(Inbound::Party { id, .. }) => super::log(format_args!(
                "party {me}: closed a connection from party {id}: parties with lower ids are \
                 dialled by this party"
            )),
            Ok(other) => pending.push(other),
            // Already logged by accept_stream.
            Err(_) => {}
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::handshake::tests::fixture;

    #[test]
    fn three_parties_form_a_mesh_and_exchange_on_all_six_directions() {
        let f = fixture();
        let results: Vec<Vec<(PartyId, Vec<u8>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = f
                .parties
                .iter()
                .zip(&f.listeners)
                .map(|(local, listener)| {
                    s.spawn(move || {
                        let mut mesh = Mesh::establish(local, listener).unwrap();
                        let me = mesh.me();
                        for peer in me.others() {
                            let msg = format!("from {me} to {peer}").into_bytes();
                            mesh.channel(peer).unwrap().send(&msg).unwrap();
                        }
                        assert!(mesh.channel(me).is_none());
                        me.others()
                            .into_iter()
                            .map(|peer| (peer, mesh.channel(peer).unwrap().recv().unwrap()))
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (me, got) in PartyId::ALL.iter().zip(results) {
            for (peer, bytes) in got {
                assert_eq!(bytes, format!("from {peer} to {me}").into_bytes());
            }
        }
    }

    /// The whole prediction flow over real sockets with the typed messages: the owner sends
    /// additive model shares, the client additive input shares, the parties re-randomise their
    /// output shares with a zero-sum mask exchanged as MPC payloads, and the client adds the
    /// three responses. The result must equal input + model, computed here independently.
    #[test]
    fn prediction_flow_with_typed_messages() {
        use crate::net::handshake::{connect_client_to_all, connect_owner_to_all};
        use crate::net::message::{Message, Shape};

        let f = fixture();
        let n = 100_000usize;
        let model: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let input: Vec<u8> = (0..n).map(|i| (i * 13 % 241) as u8).collect();
        let split = |secret: &[u8], seed: u8| -> [Vec<u8>; 3] {
            let a: Vec<u8> = (0..n)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect();
            let b: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(17) ^ seed).collect();
            let c = (0..n)
                .map(|i| secret[i].wrapping_sub(a[i]).wrapping_sub(b[i]))
                .collect();
            [a, b, c]
        };
        let add = |x: &[u8], y: &[u8]| -> Vec<u8> {
            x.iter().zip(y).map(|(a, b)| a.wrapping_add(*b)).collect()
        };
        let sub = |x: &[u8], y: &[u8]| -> Vec<u8> {
            x.iter().zip(y).map(|(a, b)| a.wrapping_sub(*b)).collect()
        };

        let output = std::thread::scope(|s| {
            for (local, listener) in f.parties.iter().zip(&f.listeners) {
                s.spawn(move || {
                    let mut mesh = Mesh::establish(local, listener).unwrap();
                    let mut inbound = mesh.take_pending();
                    while inbound.len() < 2 {
                        inbound.push(crate::net::handshake::accept(listener, local).unwrap());
                    }
                    let (mut owner, mut client) = (None, None);
                    for i in inbound {
                        match i {
                            Inbound::Owner(c) => owner = Some(c),
                            Inbound::Client(c) => client = Some(c),
                            Inbound::Party { id, .. } => panic!("unexpected party {id}"),
                        }
                    }
                    let (mut owner, mut client) = (owner.unwrap(), client.unwrap());
                    let Message::ShareModel { share: model_share } = owner.recv_message().unwrap()
                    else {
                        panic!("expected ShareModel")
                    };
                    let Message::PredictRequest {
                        request_id,
                        shape,
                        input_share,
                    } = client.recv_message().unwrap()
                    else {
                        panic!("expected PredictRequest")
                    };
                    assert_eq!(shape.element_count(), Some(n as u64));
                    // Zero-sum re-randomisation: add own mask, subtract the previous party's.
                    let me = mesh.me();
                    let mask: Vec<u8> = (0..n).map(|i| (i as u8) ^ (me.get() * 85 + 1)).collect();
                    mesh.channel(me.next())
                        .unwrap()
                        .send_message(&Message::Mpc {
                            payload: mask.clone(),
                        })
                        .unwrap();
                    let Message::Mpc { payload: prev_mask } =
                        mesh.channel(me.prev()).unwrap().recv_message().unwrap()
                    else {
                        panic!("expected Mpc")
                    };
                    let out = sub(&add(&add(&input_share, &model_share), &mask), &prev_mask);
                    client
                        .send_message(&Message::PredictResponse {
                            request_id,
                            output_share: out,
                        })
                        .unwrap();
                    client.flush().unwrap();
                });
            }
            let config = f.parties[0].config();
            let owner_shares = split(&model, 3);
            for (ch, share) in connect_owner_to_all(config, &f.owner)
                .unwrap()
                .iter_mut()
                .zip(owner_shares)
            {
                ch.send_message(&Message::ShareModel { share }).unwrap();
            }
            let mut channels = connect_client_to_all(config).unwrap();
            for (ch, input_share) in channels.iter_mut().zip(split(&input, 9)) {
                let shape = Shape::new(vec![1, n as u32]).unwrap();
                ch.send_message(&Message::PredictRequest {
                    request_id: 42,
                    shape,
                    input_share,
                })
                .unwrap();
            }
            let mut total = vec![0u8; n];
            for ch in channels.iter_mut() {
                let Message::PredictResponse {
                    request_id: 42,
                    output_share,
                } = ch.recv_message().unwrap()
                else {
                    panic!("expected PredictResponse 42")
                };
                total = add(&total, &output_share);
            }
            total
        });
        assert_eq!(output, add(&input, &model));
    }

    #[test]
    fn parties_may_start_in_any_order() {
        let f = fixture();
        std::thread::scope(|s| {
            // Party 2 dials first, long before 0 and 1 exist: it must retry, not fail.
            let late = |i: usize, delay_ms: u64| {
                let (local, listener) = (&f.parties[i], &f.listeners[i]);
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(delay_ms));
                    Mesh::establish(local, listener).map(|m| m.into_channels().map(|(p, _)| p))
                })
            };
            let h2 = late(2, 0);
            let h1 = late(1, 300);
            let h0 = late(0, 600);
            let [r0, r1, r2] = [h0, h1, h2].map(|h| h.join().unwrap().unwrap());
            assert_eq!(r0, [PartyId::ALL[1], PartyId::ALL[2]]);
            assert_eq!(r1, [PartyId::ALL[0], PartyId::ALL[2]]);
            assert_eq!(r2, [PartyId::ALL[0], PartyId::ALL[1]]);
        });
    }

    #[test]
    fn missing_peer_times_out_with_a_reason() {
        let f = fixture();
        let short = crate::net::config::Timeouts {
            startup: Duration::from_millis(400),
            ..*f.parties[0].config().timeouts()
        };
        // Party 1 alone: party 0's port is closed and party 2 never calls.
        let mut f = f;
        let local = f.parties.remove(1).with_timeouts(short);
        drop(f.listeners.remove(0));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = Mesh::establish(&local, &listener).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, NetError::Mesh(_)), "{text}");
        assert!(text.contains("gave up reaching party 0"), "{text}");
        assert!(text.contains("no connection from party 2"), "{text}");
    }
}
