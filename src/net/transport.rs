//! [`NoiseTransport`]: the secure-computation engine's [`Transport`] over a party's two Noise
//! channels (the mesh).
//!
//! Each engine message travels as one [`Message::Mpc`] frame, so a party that is out of step
//! (or a peer that reports an error) is detected as a typed protocol error rather than garbage
//! words. Byte counts follow the engine: payload bytes, as `Party` counts them; the encrypted
//! bytes on the wire are available from [`NoiseTransport::wire_traffic`].
//!
//! Imports `crate::mpc` (the `Transport` it implements) and `super::{channel, config, error, mesh,
//! message, peer}`; never `party` or `pipeline`.

use crate::mpc::error::{MpcError, Result as MpcResult};
use crate::mpc::Transport;

use super::channel::SecureChannel;
use super::config::PartyId;
use super::error::NetError;
use super::mesh::Mesh;
use super::message::{Message, MPC_HEAD};

/// One party's end of the three-party mesh, usable by the engine and for control messages.
#[derive(Debug)]
pub struct NoiseTransport {
    me: PartyId,
    /// The two peers' channels, in increasing peer id order.
    peers: [(PartyId, SecureChannel); 2],
    payload_sent: u64,
    payload_received: u64,
}

impl NoiseTransport {
    /// Wraps the two channels of party `me`. They must lead to the two other parties, one each.
    pub fn new(me: PartyId, peers: [(PartyId, SecureChannel); 2]) -> Result<Self, NetError> {
        let mut peers = peers;
        peers.sort_by_key(|(id, _)| *id);
        let ids = [peers[0].0, peers[1].0];
        if ids != me.others() {
            return Err(NetError::Mesh(format!(
                "party {me}: channels lead to parties {} and {}, expected {} and {}",
                ids[0],
                ids[1],
                me.others()[0],
                me.others()[1]
            )));
        }
        for (id, ch) in &peers {
            if ch.peer() != super::peer::PeerRole::Party(*id) {
                return Err(NetError::Mesh(format!(
                    "party {me}: the channel filed under party {id} leads to {}",
                    ch.peer()
                )));
            }
        }
        Ok(Self {
            me,
            peers,
            payload_sent: 0,
            payload_received: 0,
        })
    }

    /// The transport of a formed [`Mesh`].
    pub fn from_mesh(mesh: Mesh) -> Result<Self, NetError> {
        let me = mesh.me();
        Self::new(me, mesh.into_channels())
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

    /// Sends a control message to `peer`.
    pub fn send_message(&mut self, peer: PartyId, message: &Message) -> Result<(), NetError> {
        self.channel_or_err(peer)?.send_message(message)
    }

    /// Receives a control message from `peer`.
    pub fn recv_message(&mut self, peer: PartyId) -> Result<Message, NetError> {
        self.channel_or_err(peer)?.recv_message()
    }

    fn channel_or_err(&mut self, peer: PartyId) -> Result<&mut SecureChannel, NetError> {
        let me = self.me;
        self.channel(peer)
            .ok_or_else(|| NetError::Mesh(format!("party {me} has no channel to party {peer}")))
    }

    /// Engine payload bytes sent and received (what `Party` counts).
    pub fn payload_traffic(&self) -> (u64, u64) {
        (self.payload_sent, self.payload_received)
    }

    /// Application bytes sent and received on both channels, framing included (the Noise
    /// records add 16 bytes of tag per 64 KiB and 2 bytes of length on top of this).
    pub fn wire_traffic(&self) -> (u64, u64) {
        self.peers.iter().fold((0, 0), |(s, r), (_, c)| {
            let (cs, cr) = c.traffic();
            (s + cs, r + cr)
        })
    }

    /// Returns the two channels, in increasing peer id order.
    pub fn into_channels(self) -> [(PartyId, SecureChannel); 2] {
        self.peers
    }

    fn peer_for(&mut self, peer: PartyId) -> MpcResult<&mut SecureChannel> {
        let me = self.me;
        self.channel(peer).ok_or_else(|| MpcError::Transport {
            peer,
            reason: format!("party {me} has no channel to party {peer}"),
        })
    }
}

impl Transport for NoiseTransport {
    fn send(&mut self, to: PartyId, data: Vec<u8>) -> MpcResult<()> {
        let len = data.len() as u64;
        // The payload goes out as it is, behind its small header: no re-encoding copy.
        self.peer_for(to)?
            .send_parts(Message::mpc_head(data.len()), data)
            .map_err(|e| MpcError::Transport {
                peer: to,
                reason: e.to_string(),
            })?;
        self.payload_sent += len;
        Ok(())
    }

    fn recv(&mut self, from: PartyId) -> MpcResult<Vec<u8>> {
        let channel = self.peer_for(from)?;
        let message = channel
            .recv_parts(MPC_HEAD)
            .and_then(|(head, body)| {
                Message::decode_parts(head, body).map_err(|source| NetError::Decode {
                    peer: channel.peer_label().to_string(),
                    source,
                })
            })
            .map_err(|e| MpcError::Transport {
                peer: from,
                reason: e.to_string(),
            })?;
        match message {
            Message::Mpc { payload } => {
                self.payload_received += payload.len() as u64;
                Ok(payload)
            }
            Message::Error { text } => Err(MpcError::Transport {
                peer: from,
                reason: format!("the party reported an error: {text}"),
            }),
            other => Err(MpcError::Transport {
                peer: from,
                reason: format!(
                    "expected a secure-computation message, got {}",
                    other.kind()
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::random_spec;
    use crate::model::ModelKind;
    use crate::mpc::{infer, reconstruct, share_input_os, share_model_os, FixedPoint, Party};
    use crate::net::handshake::tests::fixture;

    fn meshes() -> Vec<NoiseTransport> {
        let f = fixture();
        std::thread::scope(|s| {
            let handles: Vec<_> = f
                .parties
                .iter()
                .zip(&f.listeners)
                .map(|(local, listener)| {
                    s.spawn(move || {
                        NoiseTransport::from_mesh(Mesh::establish(local, listener).unwrap())
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn secure_inference_over_noise_matches_the_plaintext_reference() {
        // A small random network: the check is that the transport carries the engine's
        // messages intact, against the framework-free plaintext forward pass.
        let spec = random_spec(ModelKind::Vgg16_1, 1.0 / 32.0, 5);
        let image: Vec<f32> = (0..spec.input_len())
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let want = spec.forward(&image).unwrap();
        let fixed = FixedPoint::default();
        let models = share_model_os(&spec, fixed).unwrap();
        let inputs = share_input_os(&image, spec.input, fixed).unwrap();
        let transports = meshes();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = transports
                .into_iter()
                .zip(models.iter().zip(inputs))
                .map(|(t, (model, input))| {
                    s.spawn(move || {
                        let id = t.me();
                        let mut p = Party::setup(id, t).unwrap();
                        let before = p.stats();
                        let out = infer(&mut p, model, &[input]).unwrap();
                        let stats = p.stats().since(&before);
                        let t = p.into_transport();
                        (out, stats, t.payload_traffic(), t.wire_traffic())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let shares: [crate::mpc::OutputShare; 3] = std::array::from_fn(|i| results[i].0[0].clone());
        let got = reconstruct(&shares).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 5e-2, "secure {g} vs plaintext {w}");
        }
        for (_, stats, (payload_sent, _), (wire_sent, _)) in &results {
            // Setup sends 32 bytes before `before`; everything else the engine counted went
            // through this transport, each message with a 9-byte frame header.
            assert_eq!(*payload_sent, stats.bytes_sent + 32);
            assert_eq!(*wire_sent, payload_sent + 9 * (stats.messages_sent + 1));
        }
    }

    #[test]
    fn control_messages_and_a_wrong_frame_are_reported() {
        let mut t = meshes();
        let (one, two) = (PartyId::ALL[1], PartyId::ALL[2]);
        t[1].send_message(two, &Message::Heartbeat).unwrap();
        assert_eq!(t[2].recv_message(one).unwrap(), Message::Heartbeat);
        // A control frame where the engine expects a payload is an error naming the peer.
        t[1].send_message(two, &Message::Heartbeat).unwrap();
        let err = Transport::recv(&mut t[2], one).unwrap_err();
        assert!(
            matches!(&err, MpcError::Transport { peer, reason } if *peer == one && reason.contains("Heartbeat")),
            "{err}"
        );
        assert!(t[0].channel(PartyId::ALL[0]).is_none());
    }
}
