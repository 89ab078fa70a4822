//! Errors of connections, handshakes and channels. Each names the peer (role and address) and
//! what went wrong, so a refused connection can be diagnosed from the log line alone.
//!
//! Imports `super::{config, keys, message}` only; never `party` or `pipeline`.

use std::io;
use std::time::Duration;

use super::config::{ConfigHash, PartyId};
use super::keys::PublicKey;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot resolve address {address}: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("cannot connect to {peer}: {source}")]
    Connect { peer: String, source: io::Error },
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: io::Error },
    #[error("network error with {peer} while {during}: {source}")]
    Io {
        peer: String,
        during: &'static str,
        source: io::Error,
    },
    #[error("{peer} did not answer within {after:?} while {during}")]
    Timeout {
        peer: String,
        during: &'static str,
        after: Duration,
    },
    #[error("{peer} closed the connection while {during}")]
    Closed { peer: String, during: &'static str },
    #[error("{peer} closed the connection during the handshake: it refused us (see its log: unknown key or different parties.toml?)")]
    RefusedByPeer { peer: String },
    #[error("refused {peer}: bad hello: {reason}")]
    BadHello { peer: String, reason: String },
    #[error("refused {peer}: its parties.toml differs from ours (hash {theirs} vs ours {ours})")]
    ConfigMismatch {
        peer: String,
        ours: ConfigHash,
        theirs: ConfigHash,
    },
    #[error("refused {peer}: it wanted party {wanted} but this is party {me}")]
    WrongParty {
        peer: String,
        wanted: PartyId,
        me: PartyId,
    },
    #[error("refused {peer}: {reason}")]
    NotAllowed { peer: String, reason: String },
    #[error("refused {peer}: static key {key} is not the one pinned in parties.toml")]
    UnknownKey { peer: String, key: PublicKey },
    #[error("handshake with {peer} failed: {detail}")]
    Handshake { peer: String, detail: String },
    #[error("message from {peer} failed authentication (tampered, replayed, reordered or from a different session)")]
    Authentication { peer: String },
    #[error("{peer} announced a {len}-byte message; the limit is {max} bytes")]
    TooLarge { peer: String, len: u64, max: u64 },
    #[error("malformed record from {peer}: {reason}")]
    Malformed { peer: String, reason: String },
    #[error("channel to {peer} is unusable after an earlier error: {cause}")]
    Broken { peer: String, cause: String },
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    SendTooLarge { len: u64, max: u64 },
    #[error("undecodable message from {peer}: {source}")]
    Decode {
        peer: String,
        source: super::message::DecodeError,
    },
    #[error("this key's public key {ours} is not party {id}'s key in parties.toml ({configured})")]
    KeyNotInConfig {
        id: PartyId,
        ours: PublicKey,
        configured: PublicKey,
    },
    #[error(
        "this key's public key {ours} is not the owner_public_key in parties.toml ({configured})"
    )]
    OwnerKeyMismatch { ours: PublicKey, configured: String },
    #[error("the mesh did not form: {0}")]
    Mesh(String),
}

impl NetError {
    /// Classifies an I/O error: timeouts and end-of-stream get their own variants because
    /// they mean different things to an operator than a reset or a refused connection.
    pub(crate) fn from_io(
        peer: &str,
        during: &'static str,
        timeout: Duration,
        e: io::Error,
    ) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NetError::Timeout {
                peer: peer.to_owned(),
                during,
                after: timeout,
            },
            io::ErrorKind::UnexpectedEof => NetError::Closed {
                peer: peer.to_owned(),
                during,
            },
            _ => NetError::Io {
                peer: peer.to_owned(),
                during,
                source: e,
            },
        }
    }
}
