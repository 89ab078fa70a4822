//! Message transport between the three parties.
//!
//! The engine only ever sends whole byte messages and receives them in order per peer, so any
//! reliable, ordered, authenticated channel can implement [`Transport`]: the in-memory one here
//! (tests, simulation) or an encrypted network mesh.
//!
//! Imports `super::{error, party}` and `std` only; the Noise transport lives in `net`, which
//! imports this, never the other way.

use super::error::{MpcError, Result};
use super::party::PartyId;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

/// Reliable, ordered, per-peer message delivery.
///
/// `send` must not wait for the peer to call `recv`: in a protocol round every party sends to
/// one neighbour before receiving from the other, so a send that blocks until received would
/// deadlock the ring. Network implementations buffer or write from a background thread.
pub trait Transport: Send {
    fn send(&mut self, to: PartyId, data: Vec<u8>) -> Result<()>;
    fn recv(&mut self, from: PartyId) -> Result<Vec<u8>>;
}

type Packet = (Instant, Vec<u8>);

/// Three parties in one process, connected by std channels (unbounded, so sends never block).
/// An optional one-way latency delays delivery, to model a network when measuring rounds.
pub struct InMemoryTransport {
    me: PartyId,
    to: [Option<Sender<Packet>>; 3],
    from: [Option<Receiver<Packet>>; 3],
    latency: Duration,
}

impl InMemoryTransport {
    /// Connected endpoints for parties 0, 1 and 2, delivering immediately.
    pub fn triple() -> [InMemoryTransport; 3] {
        Self::triple_with_latency(Duration::ZERO)
    }

    /// Connected endpoints where every message arrives `latency` after it was sent.
    pub fn triple_with_latency(latency: Duration) -> [InMemoryTransport; 3] {
        let mut ends: [InMemoryTransport; 3] = std::array::from_fn(|i| InMemoryTransport {
            me: PartyId::ALL[i],
            to: [None, None, None],
            from: [None, None, None],
            latency,
        });
        for a in 0..3 {
            for b in 0..3 {
                if a != b {
                    let (tx, rx) = channel();
                    ends[a].to[b] = Some(tx);
                    ends[b].from[a] = Some(rx);
                }
            }
        }
        ends
    }

    pub fn party(&self) -> PartyId {
        self.me
    }

    fn closed(&self, peer: PartyId, what: &str) -> MpcError {
        MpcError::Transport {
            peer,
            reason: format!("{what}: party {} has no open channel to it", self.me),
        }
    }
}

impl Transport for InMemoryTransport {
    fn send(&mut self, to: PartyId, data: Vec<u8>) -> Result<()> {
        let tx = self.to[to.index()]
            .as_ref()
            .ok_or_else(|| self.closed(to, "send"))?;
        tx.send((Instant::now(), data))
            .map_err(|_| MpcError::Transport {
                peer: to,
                reason: "send: the peer has hung up".into(),
            })
    }

    fn recv(&mut self, from: PartyId) -> Result<Vec<u8>> {
        let rx = self.from[from.index()]
            .as_ref()
            .ok_or_else(|| self.closed(from, "recv"))?;
        let (sent, data) = rx.recv().map_err(|_| MpcError::Transport {
            peer: from,
            reason: "recv: the peer has hung up".into(),
        })?;
        let due = sent + self.latency;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_in_order_per_peer() {
        let [mut a, mut b, mut c] = InMemoryTransport::triple();
        a.send(PartyId::ALL[1], vec![1]).unwrap();
        a.send(PartyId::ALL[1], vec![2, 3]).unwrap();
        c.send(PartyId::ALL[1], vec![9]).unwrap();
        assert_eq!(b.recv(PartyId::ALL[2]).unwrap(), vec![9]);
        assert_eq!(b.recv(PartyId::ALL[0]).unwrap(), vec![1]);
        assert_eq!(b.recv(PartyId::ALL[0]).unwrap(), vec![2, 3]);
        assert!(
            a.send(PartyId::ALL[0], vec![]).is_err(),
            "no channel to self"
        );
    }

    #[test]
    fn a_vanished_peer_is_an_error_not_a_hang() {
        let [mut a, b, _c] = InMemoryTransport::triple();
        drop(b);
        assert!(matches!(
            a.recv(PartyId::ALL[1]),
            Err(MpcError::Transport { .. })
        ));
    }
}
