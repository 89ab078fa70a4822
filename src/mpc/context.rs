//! A party's protocol context: who it is, its transport, its pairwise PRGs and its traffic
//! counters. Every protocol function takes `&mut Party<T>`.
//!
//! Imports `super::{error, party, prg, transport}` only; never `net` or the party layer.

use super::error::{MpcError, Result};
use super::party::PartyId;
use super::prg::{PairwisePrg, PrgSeed};
use super::transport::Transport;

/// Traffic of one party. A round is one communication step of the protocol: every message of a
/// round can be in flight at the same time, and rounds are counted identically by all parties
/// (also by a party that only waits in that step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub rounds: u64,
}

impl CommStats {
    /// The traffic between an earlier snapshot and this one.
    pub fn since(&self, earlier: &CommStats) -> CommStats {
        CommStats {
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            bytes_received: self.bytes_received - earlier.bytes_received,
            messages_sent: self.messages_sent - earlier.messages_sent,
            rounds: self.rounds - earlier.rounds,
        }
    }
}

/// One computing party.
pub struct Party<T: Transport> {
    id: PartyId,
    transport: T,
    prg: PairwisePrg,
    stats: CommStats,
}

impl<T: Transport> Party<T> {
    /// Sets up the pairwise PRG keys (one round): each party draws `k_i` from the OS CSPRNG and
    /// sends it to its previous neighbour, so `k_i` is known exactly to parties `i - 1` and `i`.
    /// The transport must be confidential (the network layer encrypts).
    pub fn setup(id: PartyId, mut transport: T) -> Result<Self> {
        let own = PrgSeed::from_os()?;
        transport.send(id.prev(), own.as_bytes().to_vec())?;
        let got = transport.recv(id.next())?;
        let next: [u8; 32] = got
            .as_slice()
            .try_into()
            .map_err(|_| MpcError::MessageLen {
                peer: id.next(),
                expected: 32,
                got: got.len(),
            })?;
        Ok(Party {
            id,
            transport,
            prg: PairwisePrg::new(&own, &PrgSeed(next)),
            stats: CommStats {
                bytes_sent: 32,
                bytes_received: 32,
                messages_sent: 1,
                rounds: 1,
            },
        })
    }

    pub fn id(&self) -> PartyId {
        self.id
    }

    pub fn stats(&self) -> CommStats {
        self.stats
    }

    pub fn into_transport(self) -> T {
        self.transport
    }

    pub(crate) fn prg(&mut self) -> &mut PairwisePrg {
        &mut self.prg
    }

    pub(crate) fn send_words(&mut self, to: PartyId, words: &[u64]) -> Result<()> {
        let bytes = words_to_le_bytes(words);
        self.stats.bytes_sent += bytes.len() as u64;
        self.stats.messages_sent += 1;
        self.transport.send(to, bytes)
    }

    /// Receives exactly `n` words from `from`.
    pub(crate) fn recv_words(&mut self, from: PartyId, n: usize) -> Result<Vec<u64>> {
        let bytes = self.transport.recv(from)?;
        self.stats.bytes_received += bytes.len() as u64;
        if bytes.len() != n * 8 {
            return Err(MpcError::MessageLen {
                peer: from,
                expected: n * 8,
                got: bytes.len(),
            });
        }
        Ok(le_bytes_to_words(&bytes))
    }

    /// Sends the low `8 * width` bits of each word (`width` is 1, 2, 4 or 8 bytes), little-endian:
    /// for values only needed modulo `2^(8 width)`.
    pub(crate) fn send_narrow(&mut self, to: PartyId, words: &[u64], width: usize) -> Result<()> {
        let mut bytes = Vec::with_capacity(words.len() * width);
        for w in words {
            bytes.extend_from_slice(&w.to_le_bytes()[..width]);
        }
        self.stats.bytes_sent += bytes.len() as u64;
        self.stats.messages_sent += 1;
        self.transport.send(to, bytes)
    }

    /// Receives `n` words sent by [`Party::send_narrow`] with the same `width`.
    pub(crate) fn recv_narrow(
        &mut self,
        from: PartyId,
        n: usize,
        width: usize,
    ) -> Result<Vec<u64>> {
        let bytes = self.transport.recv(from)?;
        self.stats.bytes_received += bytes.len() as u64;
        if bytes.len() != n * width {
            return Err(MpcError::MessageLen {
                peer: from,
                expected: n * width,
                got: bytes.len(),
            });
        }
        Ok(bytes
            .chunks_exact(width)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..width].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect())
    }

    pub(crate) fn end_round(&mut self) {
        self.stats.rounds += 1;
    }

    /// The ring step of resharing: send `words` (this party's component) to the previous
    /// party and receive the next party's component. One round.
    pub(crate) fn pass_to_prev(&mut self, words: &[u64]) -> Result<Vec<u64>> {
        self.send_words(self.id.prev(), words)?;
        let got = self.recv_words(self.id.next(), words.len())?;
        self.end_round();
        Ok(got)
    }
}

// The wire order is little-endian on every host; on little-endian hosts (all the ones we build
// for) that is the memory layout, so each direction is one copy.
#[cfg(target_endian = "little")]
fn words_to_le_bytes(words: &[u64]) -> Vec<u8> {
    bytemuck::cast_slice::<u64, u8>(words).to_vec()
}

#[cfg(target_endian = "little")]
fn le_bytes_to_words(bytes: &[u8]) -> Vec<u64> {
    bytemuck::pod_collect_to_vec::<u8, u64>(bytes)
}

#[cfg(target_endian = "big")]
fn words_to_le_bytes(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[cfg(target_endian = "big")]
fn le_bytes_to_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
        .collect()
}

#[cfg(test)]
mod wire_tests {
    use super::*;

    #[test]
    fn words_travel_as_little_endian_bytes() {
        let words = [0x0102_0304_0506_0708u64, u64::MAX, 0];
        let bytes = words_to_le_bytes(&words);
        assert_eq!(&bytes[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bytes.len(), 24);
        assert_eq!(le_bytes_to_words(&bytes), words);
    }
}
