//! [`LocalParty`]: a computing party's own identity (the shared configuration, its id and its
//! static key) and its listening socket.
//!
//! Imports the configuration, the keys and the error type; nothing that runs a handshake.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use super::config::{PartiesConfig, PartyAddress, PartyId};
use super::error::NetError;
use super::keys::StaticKeypair;

/// A computing party's own identity: the shared configuration, its id and its static key.
#[derive(Debug)]
pub struct LocalParty {
    config: PartiesConfig,
    id: PartyId,
    keypair: StaticKeypair,
}

impl LocalParty {
    /// Checks that `keypair` is the key pinned for `id` in `config`.
    pub fn new(
        config: PartiesConfig,
        id: PartyId,
        keypair: StaticKeypair,
    ) -> Result<Self, NetError> {
        let configured = config.party(id).public_key;
        if keypair.public_key() != configured {
            return Err(NetError::KeyNotInConfig {
                id,
                ours: keypair.public_key(),
                configured,
            });
        }
        Ok(Self {
            config,
            id,
            keypair,
        })
    }

    pub fn config(&self) -> &PartiesConfig {
        &self.config
    }

    /// Overrides the timeouts (for example from a command-line flag). Timeouts are not part
    /// of the configuration hash, so this does not affect the handshake binding.
    pub fn with_timeouts(mut self, timeouts: super::config::Timeouts) -> Self {
        self.config = self.config.with_timeouts(timeouts);
        self
    }

    pub fn id(&self) -> PartyId {
        self.id
    }

    /// The static key, for the handshakes this party runs.
    pub(crate) fn keypair(&self) -> &StaticKeypair {
        &self.keypair
    }

    /// Binds this party's configured address. A host whose configured address is not local
    /// (NAT, a load balancer) should bind its own listener and pass it to the accept functions.
    pub fn bind(&self) -> Result<TcpListener, NetError> {
        let address = &self.config.party(self.id).address;
        let addrs = resolve(address)?;
        let mut last = None;
        for addr in addrs {
            match TcpListener::bind(addr) {
                Ok(l) => return Ok(l),
                Err(e) => last = Some(e),
            }
        }
        Err(NetError::Bind {
            address: address.to_string(),
            source: last.unwrap_or_else(|| std::io::Error::other("no address")),
        })
    }
}

pub(super) fn resolve(address: &PartyAddress) -> Result<Vec<SocketAddr>, NetError> {
    address
        .as_str()
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|source| NetError::Resolve {
            address: address.to_string(),
            source,
        })
}
