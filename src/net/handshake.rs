//! Connection set-up: the hello, the prologue and the Noise handshakes.
//!
//! An initiator first sends a fixed 39-byte hello in the clear ([`super::hello`]).
//!
//! The hello lets the responder pick the pattern and the pinned key before the handshake (KK
//! needs the initiator's key up front) and give a precise refusal reason for a wrong file or a
//! wrong address. It is not trusted: the prologue of the handshake is a fixed label followed by
//! the hello bytes, so a hello altered in transit, or two sides holding different files, make
//! the handshake fail authentication.
//!
//! Patterns (all `_25519_AESGCM_BLAKE2s`; the cipher implementation is chosen per CPU by
//! [`super::cipher`]):
//! - party to party: `KK`, both static keys pinned from the file; the higher id initiates;
//! - client to party: `NK`, the client is anonymous and pins the party's key;
//! - model owner to party: `IK`, the party checks the owner's key against `owner_public_key`.
//!
//! Confirmation. In all three patterns the responder could compute transport keys after
//! its reply, but a recorded first message can be replayed, and the replayer cannot use the
//! keys (it lacks the initiator's ephemeral key). So the initiator's first transport message
//! is a fixed confirmation ([`CONFIRM`]), and the responder counts a connection only once that
//! message has decrypted: a replayed handshake never becomes a channel.
//!
//! Deadlines. The responder allows `timeouts.handshake` for the whole exchange, from the first
//! byte of the hello to the confirmation, and the initiator the same from its hello to the
//! reply; each read waits only for the time left, so trickling bytes cannot stretch it.
//!
//! Builds on the record layer, the hello, the peer role, the local identity and the channel;
//! the channel never imports this module (a handshake makes channels, not the other way).

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use snow::{Builder, HandshakeState};

use super::channel::SecureChannel;
use super::cipher;
use super::config::{PartiesConfig, PartyAddress, PartyId};
use super::error::NetError;
use super::hello::{Hello, HELLO_LEN};
use super::keys::{PublicKey, StaticKeypair};
use super::local::{resolve, LocalParty};
use super::peer::PeerRole;
use super::record::{read_record, write_record, Within, MAX_RECORD};

/// The initiator's first transport message: proof that it holds the handshake's keys.
pub const CONFIRM: &[u8] = b"privxray handshake confirmation v3";

const PATTERN_KK: &str = "Noise_KK_25519_AESGCM_BLAKE2s";
const PATTERN_NK: &str = "Noise_NK_25519_AESGCM_BLAKE2s";
const PATTERN_IK: &str = "Noise_IK_25519_AESGCM_BLAKE2s";

/// The Noise pattern an initiator of `role` uses.
fn pattern(role: PeerRole) -> &'static str {
    match role {
        PeerRole::Party(_) => PATTERN_KK,
        PeerRole::Client => PATTERN_NK,
        PeerRole::Owner => PATTERN_IK,
    }
}

/// An authenticated inbound connection, by the role the peer proved.
#[derive(Debug)]
pub enum Inbound {
    Party { id: PartyId, channel: SecureChannel },
    Client(SecureChannel),
    Owner(SecureChannel),
}

impl Inbound {
    pub fn role(&self) -> PeerRole {
        match self {
            Inbound::Party { id, .. } => PeerRole::Party(*id),
            Inbound::Client(_) => PeerRole::Client,
            Inbound::Owner(_) => PeerRole::Owner,
        }
    }
}

/// How far an inbound handshake has come, reported to the caller of [`accept_stream_observed`]
/// so that it can give handshakes in progress different priorities.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Progress {
    /// The hello arrived: the initiator claims this role (nothing is proven yet).
    Claimed(PeerRole),
    /// The first handshake message authenticated: a party or the owner holds its static key,
    /// or replayed a recorded message (the confirmation tells these apart). For a client this
    /// proves nothing.
    Keyed(PeerRole),
}

/// Opens a TCP connection to `address`, trying each resolved address in turn.
fn connect_tcp(
    address: &PartyAddress,
    label: &str,
    timeout: Duration,
) -> Result<TcpStream, NetError> {
    let mut last = None;
    for addr in resolve(address)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                // MPC rounds are latency-bound: do not let Nagle hold back small messages.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(NetError::Connect {
        peer: label.to_owned(),
        source: last.unwrap_or_else(|| std::io::Error::other("the address resolved to nothing")),
    })
}

fn label_for(role: PeerRole, address: impl fmt::Display) -> String {
    format!("{role} ({address})")
}

fn snow_detail(e: snow::Error) -> String {
    e.to_string()
}

/// Parameters shared by the initiator paths.
struct Initiation<'a> {
    hello: Hello,
    prologue: Vec<u8>,
    local_private: Option<&'a StaticKeypair>,
    remote: PublicKey,
    peer: PeerRole,
    label: String,
}

/// Runs the initiator side on a connected stream.
fn initiate(
    stream: TcpStream,
    init: Initiation<'_>,
    config: &PartiesConfig,
) -> Result<SecureChannel, NetError> {
    let t = config.timeouts();
    let label = init.label;
    // A responder that refuses us closes the socket, which surfaces as end-of-stream, a reset
    // or a broken pipe depending on timing; all mean "refused".
    let io = |during, e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => NetError::RefusedByPeer {
            peer: label.clone(),
        },
        _ => NetError::from_io(&label, during, t.handshake, e),
    };
    let started = Instant::now();
    stream
        .set_read_timeout(Some(t.handshake))
        .map_err(|e| io("setting timeouts", e))?;
    stream
        .set_write_timeout(Some(t.handshake))
        .map_err(|e| io("setting timeouts", e))?;
    let handshake_err = |detail: String| NetError::Handshake {
        peer: label.clone(),
        detail,
    };

    let params = pattern(init.hello.from)
        .parse()
        .map_err(|e| handshake_err(snow_detail(e)))?;
    let mut builder = Builder::with_resolver(params, cipher::resolver())
        .prologue(&init.prologue)
        .and_then(|b| b.remote_public_key(init.remote.as_bytes()))
        .map_err(|e| handshake_err(snow_detail(e)))?;
    if let Some(pair) = init.local_private {
        builder = builder
            .local_private_key(pair.private_bytes())
            .map_err(|e| handshake_err(snow_detail(e)))?;
    }
    let mut hs = builder
        .build_initiator()
        .map_err(|e| handshake_err(snow_detail(e)))?;

    let mut s = &stream;
    let mut buf = vec![0u8; MAX_RECORD];
    s.write_all(&init.hello.encode())
        .map_err(|e| io("sending the hello", e))?;
    let n = hs
        .write_message(&[], &mut buf)
        .map_err(|e| handshake_err(snow_detail(e)))?;
    write_record(&mut s, &buf[..n]).map_err(|e| io("sending the handshake", e))?;

    let mut reply = Vec::new();
    read_record(&mut Within(&stream, started + t.handshake), &mut reply)
        .map_err(|e| io("waiting for the handshake reply", e))?;
    hs.read_message(&reply, &mut buf).map_err(|e| match e {
        snow::Error::Decrypt => handshake_err(
            "the reply failed authentication: the peer does not hold the pinned key, or its \
             parties.toml differs"
                .into(),
        ),
        other => handshake_err(snow_detail(other)),
    })?;
    let transport = hs
        .into_stateless_transport_mode()
        .map_err(|e| handshake_err(snow_detail(e)))?;
    super::log(format_args!(
        "connected to {label}: {} handshake in {:.2} ms",
        &pattern(init.hello.from)[6..8],
        started.elapsed().as_secs_f64() * 1e3
    ));
    let mut channel = SecureChannel::new(
        stream,
        transport,
        init.peer,
        label,
        config.max_message_bytes(),
        t.io,
    )?;
    // Queued, not awaited: the responder counts the connection once this arrives.
    channel.send(CONFIRM)?;
    channel.reset_traffic();
    Ok(channel)
}

/// Party `local` connects to party `peer` (KK). One attempt; see [`super::mesh`] for retries.
pub fn connect_to_party(local: &LocalParty, peer: PartyId) -> Result<SecureChannel, NetError> {
    connect_as(
        local.config(),
        PeerRole::Party(local.id()),
        Some(local.keypair()),
        peer,
    )
}

/// The initiator's side of every pattern: TCP to party `target`, then the handshake as `from`,
/// pinning the target's configured key (with `local_private` as our static key, if any).
fn connect_as(
    config: &PartiesConfig,
    from: PeerRole,
    local_private: Option<&StaticKeypair>,
    target: PartyId,
) -> Result<SecureChannel, NetError> {
    let entry = config.party(target);
    let role = PeerRole::Party(target);
    let label = label_for(role, &entry.address);
    let stream = connect_tcp(&entry.address, &label, config.timeouts().connect)?;
    let hello = Hello {
        from,
        to: target,
        config: config.hash(),
    };
    let init = Initiation {
        hello,
        prologue: hello.prologue(),
        local_private,
        remote: entry.public_key,
        peer: role,
        label,
    };
    initiate(stream, init, config)
}

/// A client connects to party `target` (NK): it stays anonymous and pins the party's key.
pub fn connect_client(config: &PartiesConfig, target: PartyId) -> Result<SecureChannel, NetError> {
    connect_as(config, PeerRole::Client, None, target)
}

/// The model owner connects to party `target` (IK), proving it holds `owner`, the key that
/// `owner_public_key` in the file names.
pub fn connect_owner(
    config: &PartiesConfig,
    owner: &StaticKeypair,
    target: PartyId,
) -> Result<SecureChannel, NetError> {
    match config.owner_public_key() {
        Some(k) if *k == owner.public_key() => {}
        other => {
            return Err(NetError::OwnerKeyMismatch {
                ours: owner.public_key(),
                configured: other.map_or_else(|| "none".into(), PublicKey::to_hex),
            })
        }
    }
    connect_as(config, PeerRole::Owner, Some(owner), target)
}

/// Connects a client to all three parties, in id order.
pub fn connect_client_to_all(config: &PartiesConfig) -> Result<[SecureChannel; 3], NetError> {
    let [a, b, c] = PartyId::ALL;
    Ok([
        connect_client(config, a)?,
        connect_client(config, b)?,
        connect_client(config, c)?,
    ])
}

/// Connects the model owner to all three parties, in id order.
pub fn connect_owner_to_all(
    config: &PartiesConfig,
    owner: &StaticKeypair,
) -> Result<[SecureChannel; 3], NetError> {
    let [a, b, c] = PartyId::ALL;
    Ok([
        connect_owner(config, owner, a)?,
        connect_owner(config, owner, b)?,
        connect_owner(config, owner, c)?,
    ])
}

/// Accepts one connection from `listener` and runs the responder handshake on it.
pub fn accept(listener: &TcpListener, local: &LocalParty) -> Result<Inbound, NetError> {
    let (stream, addr) = listener.accept().map_err(|source| NetError::Io {
        peer: "listener".into(),
        during: "accepting a connection",
        source,
    })?;
    accept_stream(stream, addr, local)
}

/// Runs the responder side on an accepted stream. On success the peer's role is proven: a
/// party by its pinned static key, the owner by `owner_public_key`; a client is anonymous.
/// Every refusal is logged with its reason and returned.
pub fn accept_stream(
    stream: TcpStream,
    addr: SocketAddr,
    local: &LocalParty,
) -> Result<Inbound, NetError> {
    let result = respond(stream, addr, local, &mut |_| {});
    if let Err(e) = &result {
        super::log(format_args!("party {}: {e}", local.id()));
    }
    result
}

/// Like [`accept_stream`], telling `observe` how far the handshake has come (see
/// [`Progress`]), and leaving the logging of refusals to the caller (a server under a flood
/// logs them within a budget).
pub fn accept_stream_observed(
    stream: TcpStream,
    addr: SocketAddr,
    local: &LocalParty,
    observe: &mut dyn FnMut(Progress),
) -> Result<Inbound, NetError> {
    respond(stream, addr, local, observe)
}

fn respond(
    stream: TcpStream,
    addr: SocketAddr,
    local: &LocalParty,
    observe: &mut dyn FnMut(Progress),
) -> Result<Inbound, NetError> {
    let t = local.config().timeouts();
    let started = Instant::now();
    // One deadline for the whole handshake, confirmation included.
    let deadline = started + t.handshake;
    let _ = stream.set_nodelay(true);
    let anon = format!("connection from {addr}");
    let io = |label: &str, during, e| NetError::from_io(label, during, t.handshake, e);
    stream
        .set_write_timeout(Some(t.handshake))
        .map_err(|e| io(&anon, "setting timeouts", e))?;

    let mut s = Within(&stream, deadline);
    let mut raw = [0u8; HELLO_LEN];
    s.read_exact(&mut raw)
        .map_err(|e| io(&anon, "reading the hello", e))?;
    let hello = Hello::decode(&raw).map_err(|reason| NetError::BadHello {
        peer: anon.clone(),
        reason,
    })?;
    let label = label_for(hello.from, addr);
    if hello.to != local.id() {
        return Err(NetError::WrongParty {
            peer: label,
            wanted: hello.to,
            me: local.id(),
        });
    }
    let ours = local.config().hash();
    if hello.config != ours {
        return Err(NetError::ConfigMismatch {
            peer: label,
            ours,
            theirs: hello.config,
        });
    }
    // The key the initiator must prove it holds, where the pattern pins one up front.
    let pinned = match hello.from {
        PeerRole::Party(id) if id == local.id() => {
            return Err(NetError::BadHello {
                peer: label,
                reason: "claims to be this party".into(),
            })
        }
        PeerRole::Party(id) => Some(local.config().party(id).public_key),
        PeerRole::Client => None,
        PeerRole::Owner => {
            if local.config().owner_public_key().is_none() {
                return Err(NetError::NotAllowed {
                    peer: label,
                    reason: "parties.toml has no owner_public_key, so no model owner is accepted"
                        .into(),
                });
            }
            None
        }
    };

    let handshake_err = |detail: String| NetError::Handshake {
        peer: label.clone(),
        detail,
    };
    let params = pattern(hello.from)
        .parse()
        .map_err(|e| handshake_err(snow_detail(e)))?;
    let prologue = hello.prologue();
    let mut builder = Builder::with_resolver(params, cipher::resolver())
        .prologue(&prologue)
        .and_then(|b| b.local_private_key(local.keypair().private_bytes()))
        .map_err(|e| handshake_err(snow_detail(e)))?;
    if let Some(key) = &pinned {
        builder = builder
            .remote_public_key(key.as_bytes())
            .map_err(|e| handshake_err(snow_detail(e)))?;
    }
    let mut hs: HandshakeState = builder
        .build_responder()
        .map_err(|e| handshake_err(snow_detail(e)))?;
    observe(Progress::Claimed(hello.from));

    let mut msg = Vec::new();
    read_record(&mut s, &mut msg).map_err(|e| io(&label, "reading the handshake", e))?;
    let mut buf = vec![0u8; MAX_RECORD];
    hs.read_message(&msg, &mut buf).map_err(|e| match e {
        snow::Error::Decrypt => handshake_err(match hello.from {
            PeerRole::Party(id) => format!(
                "first message failed authentication: the peer does not hold party {id}'s pinned \
                 key, or its prologue differs"
            ),
            _ => "first message failed authentication: the peer does not have this party's \
                  pinned key, or its prologue differs"
                .into(),
        }),
        other => handshake_err(snow_detail(other)),
    })?;
    if hello.from == PeerRole::Owner {
        // IK reveals the initiator's static key in the first message; check it before replying.
        let remote = hs
            .get_remote_static()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| handshake_err("no static key from the owner".into()))?;
        if local.config().owner_public_key().map(PublicKey::as_bytes) != Some(&remote) {
            return Err(match PublicKey::from_bytes(remote) {
                Ok(key) => NetError::UnknownKey { peer: label, key },
                Err(e) => handshake_err(format!("the owner's static key is invalid: {e}")),
            });
        }
    }
    observe(Progress::Keyed(hello.from));
    let n = hs
        .write_message(&[], &mut buf)
        .map_err(|e| handshake_err(snow_detail(e)))?;
    write_record(&mut &stream, &buf[..n])
        .map_err(|e| io(&label, "sending the handshake reply", e))?;
    let transport = hs
        .into_stateless_transport_mode()
        .map_err(|e| handshake_err(snow_detail(e)))?;
    let mut channel = SecureChannel::new(
        stream,
        transport,
        hello.from,
        label.clone(),
        local.config().max_message_bytes(),
        t.io,
    )?;
    confirm(&mut channel, &label, deadline)?;
    super::log(format_args!(
        "party {}: accepted {label}: {} handshake in {:.2} ms",
        local.id(),
        &pattern(hello.from)[6..8],
        started.elapsed().as_secs_f64() * 1e3
    ));
    Ok(match hello.from {
        PeerRole::Party(id) => Inbound::Party { id, channel },
        PeerRole::Client => Inbound::Client(channel),
        PeerRole::Owner => Inbound::Owner(channel),
    })
}

/// Waits for the initiator's confirmation (see the module documentation) until `deadline`.
fn confirm(channel: &mut SecureChannel, label: &str, deadline: Instant) -> Result<(), NetError> {
    let limit = channel.recv_limit();
    // Nothing longer than the confirmation is read before it.
    channel.set_recv_limit(CONFIRM.len() as u64);
    let got = channel
        .recv_until(deadline)
        .map_err(|e| NetError::Handshake {
            peer: label.to_owned(),
            detail: format!(
            "no confirmation from the initiator ({e}): a replayed or abandoned handshake is not \
             a connection"
        ),
        })?;
    if got != CONFIRM {
        return Err(NetError::Handshake {
            peer: label.to_owned(),
            detail: "the first transport message is not the handshake confirmation".into(),
        });
    }
    channel.set_recv_limit(limit);
    channel.reset_traffic();
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::net::config::PartyEntry;
    use std::thread;

    /// Three parties on loopback port-0 listeners, plus an owner key.
    pub(crate) struct Fixture {
        pub parties: Vec<LocalParty>,
        pub listeners: Vec<TcpListener>,
        pub owner: StaticKeypair,
    }

    pub(crate) fn fixture() -> Fixture {
        fixture_with(|c| c)
    }

    /// Like [`fixture`], letting the test adjust the parties' configuration (limits,
    /// timeouts) before the parties are built.
    pub(crate) fn fixture_with(adjust: impl Fn(PartiesConfig) -> PartiesConfig) -> Fixture {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let keys: Vec<StaticKeypair> = (0..3).map(|_| StaticKeypair::generate().unwrap()).collect();
        let owner = StaticKeypair::generate().unwrap();
        let entries = PartyId::ALL
            .iter()
            .map(|&id| PartyEntry {
                id,
                address: PartyAddress::parse(
                    &listeners[id.index()].local_addr().unwrap().to_string(),
                )
                .unwrap(),
                public_key: keys[id.index()].public_key(),
            })
            .collect();
        let config = adjust(PartiesConfig::new(entries, Some(owner.public_key())).unwrap());
        let parties = keys
            .into_iter()
            .zip(PartyId::ALL)
            .map(|(k, id)| LocalParty::new(config.clone(), id, k).unwrap())
            .collect();
        Fixture {
            parties,
            listeners,
            owner,
        }
    }

    #[test]
    fn party_client_and_owner_handshakes_exchange_data() {
        let f = fixture();
        let [l0, ..] = &f.listeners[..] else {
            unreachable!()
        };
        let p0 = &f.parties[0];
        thread::scope(|s| {
            let server = s.spawn(|| {
                let mut roles = Vec::new();
                for _ in 0..3 {
                    let inbound = accept(l0, p0).unwrap();
                    roles.push(inbound.role());
                    let mut ch = match inbound {
                        Inbound::Party { channel, .. }
                        | Inbound::Client(channel)
                        | Inbound::Owner(channel) => channel,
                    };
                    let got = ch.recv().unwrap();
                    ch.send(&[got.as_slice(), b"-ack"].concat()).unwrap();
                    ch.close().unwrap();
                }
                roles
            });
            let config = p0.config();
            let mut a = connect_to_party(&f.parties[2], PartyId::ALL[0]).unwrap();
            a.send(b"party").unwrap();
            assert_eq!(a.recv().unwrap(), b"party-ack");
            let mut b = connect_client(config, PartyId::ALL[0]).unwrap();
            b.send(b"client").unwrap();
            assert_eq!(b.recv().unwrap(), b"client-ack");
            let mut c = connect_owner(config, &f.owner, PartyId::ALL[0]).unwrap();
            c.send(b"owner").unwrap();
            assert_eq!(c.recv().unwrap(), b"owner-ack");
            assert_eq!(
                server.join().unwrap(),
                vec![
                    PeerRole::Party(PartyId::ALL[2]),
                    PeerRole::Client,
                    PeerRole::Owner
                ]
            );
        });
    }

    /// Runs one server-side accept in a thread and one client-side closure; returns both.
    fn face_off<T: Send>(
        listener: &TcpListener,
        local: &LocalParty,
        client: impl FnOnce() -> T + Send,
    ) -> (Result<Inbound, NetError>, T) {
        thread::scope(|s| {
            let server = s.spawn(|| accept(listener, local));
            let c = client();
            (server.join().unwrap(), c)
        })
    }

    #[test]
    fn impostor_party_with_unknown_key_is_refused() {
        let f = fixture();
        // Party 2's id with a fresh key that parties.toml does not pin.
        let impostor_key = StaticKeypair::generate().unwrap();
        let mut entries: Vec<PartyEntry> = f.parties[0].config().parties().to_vec();
        entries[2].public_key = impostor_key.public_key();
        let forged = PartiesConfig::new(entries, Some(f.owner.public_key())).unwrap();
        let impostor = LocalParty::new(forged, PartyId::ALL[2], impostor_key).unwrap();
        // Send the genuine config hash so the refusal comes from the handshake itself.
        let (server, client) = face_off(&f.listeners[0], &f.parties[0], || {
            let stream = TcpStream::connect(f.listeners[0].local_addr().unwrap()).unwrap();
            let hello = Hello {
                from: PeerRole::Party(PartyId::ALL[2]),
                to: PartyId::ALL[0],
                config: f.parties[0].config().hash(),
            };
            let init = Initiation {
                hello,
                prologue: hello.prologue(),
                local_private: Some(impostor.keypair()),
                remote: f.parties[0].config().party(PartyId::ALL[0]).public_key,
                peer: PeerRole::Party(PartyId::ALL[0]),
                label: "party 0".into(),
            };
            initiate(stream, init, f.parties[0].config())
        });
        let err = server.unwrap_err();
        assert!(
            matches!(&err, NetError::Handshake { detail, .. } if detail.contains("party 2's pinned key")),
            "{err}"
        );
        assert!(matches!(
            client.unwrap_err(),
            NetError::RefusedByPeer { .. }
        ));
    }

    #[test]
    fn unknown_owner_key_is_refused() {
        let f = fixture();
        let stranger = StaticKeypair::generate().unwrap();
        let (server, client) = face_off(&f.listeners[1], &f.parties[1], || {
            let stream = TcpStream::connect(f.listeners[1].local_addr().unwrap()).unwrap();
            let hello = Hello {
                from: PeerRole::Owner,
                to: PartyId::ALL[1],
                config: f.parties[1].config().hash(),
            };
            let init = Initiation {
                hello,
                prologue: hello.prologue(),
                local_private: Some(&stranger),
                remote: f.parties[1].config().party(PartyId::ALL[1]).public_key,
                peer: PeerRole::Party(PartyId::ALL[1]),
                label: "party 1".into(),
            };
            initiate(stream, init, f.parties[1].config())
        });
        let err = server.unwrap_err();
        assert!(
            matches!(&err, NetError::UnknownKey { key, .. } if *key == stranger.public_key()),
            "{err}"
        );
        assert!(client.is_err());
        // The public helper refuses locally before connecting.
        let local = connect_owner(f.parties[1].config(), &stranger, PartyId::ALL[1]).unwrap_err();
        assert!(matches!(local, NetError::OwnerKeyMismatch { .. }));
    }

    #[test]
    fn wrong_prologue_is_refused() {
        let f = fixture();
        for role in [
            PeerRole::Party(PartyId::ALL[2]),
            PeerRole::Client,
            PeerRole::Owner,
        ] {
            let (server, client) = face_off(&f.listeners[0], &f.parties[0], || {
                let stream = TcpStream::connect(f.listeners[0].local_addr().unwrap()).unwrap();
                let hello = Hello {
                    from: role,
                    to: PartyId::ALL[0],
                    config: f.parties[0].config().hash(),
                };
                // Same hello on the wire, but this side binds a different prologue, as a peer
                // with a different notion of the session would.
                let mut prologue = hello.prologue();
                prologue[0] ^= 1;
                let init = Initiation {
                    hello,
                    prologue,
                    local_private: match role {
                        PeerRole::Party(_) => Some(f.parties[2].keypair()),
                        PeerRole::Owner => Some(&f.owner),
                        PeerRole::Client => None,
                    },
                    remote: f.parties[0].config().party(PartyId::ALL[0]).public_key,
                    peer: PeerRole::Party(PartyId::ALL[0]),
                    label: "party 0".into(),
                };
                initiate(stream, init, f.parties[0].config())
            });
            let err = server.unwrap_err();
            assert!(
                matches!(&err, NetError::Handshake { detail, .. } if detail.contains("prologue")),
                "{role}: {err}"
            );
            assert!(client.is_err());
        }
    }

    #[test]
    fn different_config_is_refused_with_reason() {
        let f = fixture();
        // Same parties, but this client's file names another owner key.
        let entries: Vec<PartyEntry> = f.parties[0].config().parties().to_vec();
        let other_owner = StaticKeypair::generate().unwrap();
        let theirs = PartiesConfig::new(entries, Some(other_owner.public_key())).unwrap();
        let (server, client) = face_off(&f.listeners[0], &f.parties[0], || {
            connect_client(&theirs, PartyId::ALL[0])
        });
        assert!(matches!(
            server.unwrap_err(),
            NetError::ConfigMismatch { .. }
        ));
        assert!(matches!(
            client.unwrap_err(),
            NetError::RefusedByPeer { .. }
        ));
    }

    #[test]
    fn wrong_address_and_garbage_are_refused() {
        let f = fixture();
        // A client that believes it is talking to party 1 but reached party 0's port.
        let mut entries: Vec<PartyEntry> = f.parties[0].config().parties().to_vec();
        let addr0 = entries[0].address.clone();
        entries[0].address = entries[1].address.clone();
        entries[1].address = addr0;
        let swapped = PartiesConfig::new(entries, Some(f.owner.public_key())).unwrap();
        let (server, _) = face_off(&f.listeners[0], &f.parties[0], || {
            connect_client(&swapped, PartyId::ALL[1])
        });
        assert!(matches!(server.unwrap_err(), NetError::WrongParty { .. }));

        let (server, _) = face_off(&f.listeners[0], &f.parties[0], || {
            let mut s = TcpStream::connect(f.listeners[0].local_addr().unwrap()).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n")
                .unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        });
        assert!(matches!(server.unwrap_err(), NetError::BadHello { .. }));
    }

    fn with_handshake(ms: u64) -> Fixture {
        fixture_with(|c| {
            let t = crate::net::config::Timeouts {
                handshake: Duration::from_millis(ms),
                ..*c.timeouts()
            };
            c.with_timeouts(t)
        })
    }

    #[test]
    fn a_trickled_handshake_is_cut_at_the_whole_handshake_deadline() {
        let f = with_handshake(1000);
        let addr = f.listeners[0].local_addr().unwrap();
        let hello = Hello {
            from: PeerRole::Client,
            to: PartyId::ALL[0],
            config: f.parties[0].config().hash(),
        };
        let started = Instant::now();
        let (server, ()) = face_off(&f.listeners[0], &f.parties[0], || {
            // A valid hello, then zeros, one byte every 100 ms: every read is quick, the
            // handshake never ends.
            let mut s = TcpStream::connect(addr).unwrap();
            for b in hello.encode().into_iter().chain([0u8; 400]) {
                if s.write_all(&[b]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        let err = server.unwrap_err();
        assert!(
            matches!(
                err,
                NetError::Timeout {
                    during: "reading the hello",
                    ..
                }
            ),
            "{err}"
        );
        // Generous: the trickle alone would take 44 s.
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    /// Party 2's hello and first KK message to party 0, and its handshake state after them.
    fn party_2_opening(f: &Fixture) -> (Vec<u8>, HandshakeState) {
        let hello = Hello {
            from: PeerRole::Party(PartyId::ALL[2]),
            to: PartyId::ALL[0],
            config: f.parties[0].config().hash(),
        };
        let mut hs = Builder::with_resolver(PATTERN_KK.parse().unwrap(), cipher::resolver())
            .prologue(&hello.prologue())
            .unwrap()
            .local_private_key(f.parties[2].keypair().private_bytes())
            .unwrap()
            .remote_public_key(
                f.parties[0]
                    .config()
                    .party(PartyId::ALL[0])
                    .public_key
                    .as_bytes(),
            )
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut buf = vec![0u8; MAX_RECORD];
        let n = hs.write_message(&[], &mut buf).unwrap();
        let mut wire = hello.encode().to_vec();
        write_record(&mut wire, &buf[..n]).unwrap();
        (wire, hs)
    }

    #[test]
    fn a_replayed_party_handshake_never_becomes_a_channel() {
        let f = with_handshake(1000);
        let addr = f.listeners[0].local_addr().unwrap();
        // A genuine handshake, recorded: hello, first message and the confirmation.
        let (opening, mut hs) = party_2_opening(&f);
        let (server, recorded) = face_off(&f.listeners[0], &f.parties[0], || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&opening).unwrap();
            let mut reply = Vec::new();
            read_record(&mut s, &mut reply).unwrap();
            let mut buf = vec![0u8; MAX_RECORD];
            hs.read_message(&reply, &mut buf).unwrap();
            let transport = hs.into_stateless_transport_mode().unwrap();
            let mut plain = (CONFIRM.len() as u64).to_le_bytes().to_vec();
            plain.extend_from_slice(CONFIRM);
            let n = transport.write_message(0, &plain, &mut buf).unwrap();
            let mut confirmation = Vec::new();
            write_record(&mut confirmation, &buf[..n]).unwrap();
            s.write_all(&confirmation).unwrap();
            [opening.clone(), confirmation].concat()
        });
        assert_eq!(server.unwrap().role(), PeerRole::Party(PartyId::ALL[2]));

        // Replayed: the first message still authenticates, so party 0 replies, but neither
        // silence nor the recorded confirmation (made for another session) gets further.
        for replay in [opening.clone(), recorded] {
            let (server, ()) = face_off(&f.listeners[0], &f.parties[0], || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(&replay).unwrap();
                let mut reply = Vec::new();
                read_record(&mut s, &mut reply).unwrap();
                // Hold the connection until party 0 gives up on it.
                let _ = s.read(&mut [0u8; 1]);
            });
            let err = server.unwrap_err();
            assert!(
                matches!(&err, NetError::Handshake { detail, .. } if detail.contains("no confirmation")),
                "{err}"
            );
        }
    }

    #[test]
    fn local_party_rejects_a_key_that_is_not_pinned() {
        let f = fixture();
        let err = LocalParty::new(
            f.parties[0].config().clone(),
            PartyId::ALL[1],
            StaticKeypair::generate().unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, NetError::KeyNotInConfig { .. }));
    }
}
