//! The three-party mesh: every pair of parties shares one KK channel.
//!
//! Deterministic roles avoid duplicate connections: a party connects to every party with a
//! lower id and accepts the parties with a higher id (party 0 only accepts, party 2 only
//! connects). Connecting retries until `timeouts.startup`, because parties start in any order;
//! a refused handshake (wrong key, different file) is not retried, since waiting cannot fix it.
//! While waiting, a party may be reached by clients or the model owner; those connections are
//! authenticated and kept in [`Mesh::take_pending`] rather than dropped.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use super::channel::SecureChannel;
use super::config::PartyId;
use super::error::NetError;
use super::handshake::{accept_stream, connect_to_party, Inbound, LocalParty};

/// Pause between connection attempts to a peer that is not listening yet.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Poll interval of the non-blocking accept loop.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// A party's two channels to the other parties.
#[derive(Debug)]
pub struct Mesh {
    me: PartyId,
    /// The two peers' channels, in increasing peer id order.
    peers: [(PartyId, SecureChannel); 2],
    pending: Vec<Inbound>,
}

impl Mesh {
    /// Connects this party to the other two. `listener` is this party's listening socket
    /// (usually from [`LocalParty::bind`]); it stays usable for clients afterwards.
    pub fn establish(local: &LocalParty, listener: &TcpListener) -> Result<Mesh, NetError> {
        let me = local.id();
        let deadline = Instant::now() + local.config().timeouts().startup;
        let started = Instant::now();
        let lower: Vec<PartyId> = me.others().into_iter().filter(|p| *p < me).collect();
        let higher: Vec<PartyId> = me.others().into_iter().filter(|p| *p > me).collect();

        let (outbound, inbound) = std::thread::scope(|s| {
            let dialers: Vec<_> = lower
                .iter()
                .map(|&peer| s.spawn(move || dial_until(local, peer, deadline)))
                .collect();
            let inbound = accept_until(local, listener, &higher, deadline);
            let outbound: Vec<Result<SecureChannel, NetError>> = dialers
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(NetError::Mesh("a connecting thread panicked".into()))
                    })
                })
                .collect();
            (outbound, inbound)
        });

        // Report every failure at once: an operator fixing one should not discover the next
        // only on the following start.
        let mut failures: Vec<String> = outbound
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        if let Err(e) = &inbound {
            failures.push(e.to_string());
        }
        if !failures.is_empty() {
            return Err(NetError::Mesh(failures.join("; ")));
        }
        let (accepted, pending) = inbound?;
        let mut peers: Vec<(PartyId, SecureChannel)> = accepted;
        for (peer, channel) in lower.iter().zip(outbound) {
            peers.push((*peer, channel?));
        }
        peers.sort_by_key(|(id, _)| *id);
        let peers: [(PartyId, SecureChannel); 2] = peers.try_into().map_err(|p: Vec<_>| {
            NetError::Mesh(format!(
                "party {me}: expected 2 peer channels, formed {}",
                p.len()
            ))
        })?;
        super::log(format_args!(
            "party {me}: mesh ready in {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        ));
        Ok(Mesh { me, peers, pending })
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

fn dial_until(
    local: &LocalParty,
    peer: PartyId,
    deadline: Instant,
) -> Result<SecureChannel, NetError> {
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match connect_to_party(local, peer) {
            Ok(c) => return Ok(c),
            // Not listening yet (or unreachable for now): retry until the deadline.
            Err(e @ (NetError::Connect { .. } | NetError::Resolve { .. })) => {
                if Instant::now() + RETRY_PAUSE >= deadline {
                    return Err(NetError::Mesh(format!(
                        "party {}: gave up reaching party {peer} after {attempts} attempts: {e}",
                        local.id()
                    )));
                }
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(e) => {
                super::log(format_args!("party {}: {e}", local.id()));
                return Err(e);
            }
        }
    }
}

type Accepted = (Vec<(PartyId, SecureChannel)>, Vec<Inbound>);

fn accept_until(
    local: &LocalParty,
    listener: &TcpListener,
    expected: &[PartyId],
    deadline: Instant,
) -> Result<Accepted, NetError> {
    let me = local.id();
    let mut accepted: Vec<(PartyId, SecureChannel)> = Vec::new();
    let mut pending = Vec::new();
    let mut refusals: Vec<String> = Vec::new();
    if expected.is_empty() {
        return Ok((accepted, pending));
    }
    let io_err = |source| NetError::Io {
        peer: "listener".into(),
        during: "accepting",
        source,
    };
    listener.set_nonblocking(true).map_err(io_err)?;
    let result = loop {
        if accepted.len() == expected.len() {
            break Ok(());
        }
        if Instant::now() >= deadline {
            let missing: Vec<String> = expected
                .iter()
                .filter(|p| !accepted.iter().any(|(q, _)| q == *p))
                .map(|p| format!("party {p}"))
                .collect();
            let mut msg = format!(
                "party {me}: no connection from {} in time",
                missing.join(", ")
            );
            if !refusals.is_empty() {
                msg.push_str(&format!("; refused: {}", refusals.join("; ")));
            }
            break Err(NetError::Mesh(msg));
        }
        let (stream, addr) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(io_err(e)),
        };
        // The accepted socket may inherit non-blocking mode on some platforms.
        if let Err(e) = stream.set_nonblocking(false) {
            break Err(io_err(e));
        }
        match accept_stream(stream, addr, local) {
            Ok(Inbound::Party { id, channel }) => {
                if !expected.contains(&id) || accepted.iter().any(|(q, _)| *q == id) {
                    let why = format!(
                        "party {id} connected from {addr} but is not expected to (lower ids are dialled, each pair once)"
                    );
                    super::log(format_args!("party {me}: {why}"));
                    refusals.push(why);
                } else {
                    accepted.push((id, channel));
                }
            }
            Ok(other) => pending.push(other),
            // Already logged by accept_stream; remembered for the timeout message.
            Err(e) => refusals.push(e.to_string()),
        }
    };
    let restore = listener.set_nonblocking(false).map_err(io_err);
    result?;
    restore?;
    Ok((accepted, pending))
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
