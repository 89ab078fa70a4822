//! The cleartext hello an initiator sends before the Noise handshake, and the prologue that
//! binds it:
//!
//! ```text
//! "PXN4" | role (1 party, 2 client, 3 model owner) | initiator party id (0xFF if none)
//!        | responder party id | BLAKE2s hash of the parties.toml identity part (32 bytes)
//! ```
//!
//! Owns the hello's encoding only (see [`super::handshake`] for why it exists and how it is
//! checked); imports the configuration's types and [`PeerRole`], nothing that connects.

use super::config::{ConfigHash, PartyId};
use super::peer::PeerRole;

/// The last byte is the wire-protocol version: it changes whenever parties of two builds would
/// compute differently (version 2: ChaCha12 pairwise streams) or speak differently (version 3:
/// the initiator confirms the handshake; version 4: AES-GCM instead of ChaChaPoly, and fewer
/// words in select, msb and trunc). Mixed versions would connect and then produce wrong
/// predictions silently, since nothing checks that zero-sharings cancel.
const MAGIC: &[u8; 4] = b"PXN4";
pub(super) const HELLO_LEN: usize = 4 + 1 + 1 + 1 + 32;
const NO_PARTY: u8 = 0xFF;
const PROLOGUE_LABEL: &[u8] = b"privxray noise prologue v2\0";

/// A role's code in the hello.
fn role_code(role: PeerRole) -> u8 {
    match role {
        PeerRole::Party(_) => 1,
        PeerRole::Client => 2,
        PeerRole::Owner => 3,
    }
}

/// The cleartext hello an initiator sends before the handshake.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Hello {
    /// The initiator's role (with its party id when it is a party).
    pub(super) from: PeerRole,
    pub(super) to: PartyId,
    pub(super) config: ConfigHash,
}

impl Hello {
    pub(super) fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..4].copy_from_slice(MAGIC);
        out[4] = role_code(self.from);
        out[5] = match self.from {
            PeerRole::Party(id) => id.get(),
            _ => NO_PARTY,
        };
        out[6] = self.to.get();
        out[7..].copy_from_slice(&self.config.0);
        out
    }

    pub(super) fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Self, String> {
        if bytes[..3] == MAGIC[..3] && bytes[3] != MAGIC[3] {
            return Err(format!(
                "privxray wire protocol version {} at the other end, this build speaks {}: run the \
                 same privxray build on every party",
                char::from(bytes[3]),
                char::from(MAGIC[3])
            ));
        }
        if &bytes[..4] != MAGIC {
            return Err("not a privxray connection (bad magic)".into());
        }
        let from = match (bytes[4], bytes[5]) {
            (1, id) => PeerRole::Party(
                PartyId::new(id)
                    .ok_or_else(|| format!("initiator party id {id} is not 0, 1 or 2"))?,
            ),
            (2, NO_PARTY) => PeerRole::Client,
            (3, NO_PARTY) => PeerRole::Owner,
            (role, id) => return Err(format!("unknown role {role} with party id {id}")),
        };
        let to = PartyId::new(bytes[6])
            .ok_or_else(|| format!("responder party id {} is not 0, 1 or 2", bytes[6]))?;
        let mut config = [0u8; 32];
        config.copy_from_slice(&bytes[7..]);
        Ok(Self {
            from,
            to,
            config: ConfigHash(config),
        })
    }

    pub(super) fn prologue(&self) -> Vec<u8> {
        let mut p = PROLOGUE_LABEL.to_vec();
        p.extend_from_slice(&self.encode());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        let h = Hello {
            from: PeerRole::Party(PartyId::ALL[2]),
            to: PartyId::ALL[0],
            config: ConfigHash([7; 32]),
        };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        let c = Hello {
            from: PeerRole::Client,
            ..h
        };
        assert_eq!(Hello::decode(&c.encode()).unwrap(), c);
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(Hello::decode(&bad).unwrap_err().contains("magic"));
        // A build of another wire-protocol version is named as such.
        let mut old = h.encode();
        old[3] = b'1';
        let e = Hello::decode(&old).unwrap_err();
        assert!(e.contains("version 1") && e.contains("speaks 4"), "{e}");
        let mut bad = h.encode();
        bad[5] = 3;
        assert!(Hello::decode(&bad).is_err());
        let mut bad = c.encode();
        bad[5] = 0;
        assert!(Hello::decode(&bad).is_err());
    }
}
