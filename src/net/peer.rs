//! [`PeerRole`]: who is at the other end of a connection. The handshake proves it and the
//! channel carries it; both import it from here.
//!
//! May import only the configuration's [`PartyId`]; nothing that builds connections.

use std::fmt;

use super::config::PartyId;

/// Who is at the other end of a channel.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PeerRole {
    Party(PartyId),
    Client,
    Owner,
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRole::Party(id) => write!(f, "party {id}"),
            PeerRole::Client => f.write_str("client"),
            PeerRole::Owner => f.write_str("model owner"),
        }
    }
}
