//! Network layer of private prediction: the three parties, the client and the model owner talk
//! over TCP connections protected by the Noise protocol framework (`snow`).
//!
//! - [`keys`]: Noise static keys (X25519), generated from the OS CSPRNG, stored as text files.
//! - [`config`]: `parties.toml` (who the parties are, where they listen, which keys they hold).
//! - [`peer`]: [`PeerRole`], who is at the other end of a connection.
//! - [`local`]: [`LocalParty`], a computing party's own identity and listening socket.
//! - [`cipher`]: the Noise cipher (AES-GCM), fast assembly where the CPU allows, portable
//!   otherwise.
//! - [`record`]: record framing (length-prefixed Noise messages) and reads under a deadline.
//! - [`hello`]: the cleartext hello before a handshake and the prologue that binds it.
//! - [`handshake`]: the three Noise patterns (KK party-to-party, NK client-to-party, IK
//!   model-owner-to-party) and the confirmation that turns a handshake into a channel.
//! - [`channel`]: [`SecureChannel`], a blocking, message-oriented encrypted channel that chunks
//!   large messages into several Noise messages.
//! - [`message`]: the typed messages of the prediction protocol and their binary encoding.
//! - [`mesh`]: the one builder of the three-party mesh (two channels per party), used by the
//!   party server, the benchmarks and the tests.
//! - [`transport`]: [`NoiseTransport`], the secure-computation engine's transport over the mesh.
//! - [`bench`]: loopback throughput and handshake-time measurement.
//!
//! Logging goes to stderr and only ever names sizes, timings, peers and reasons, never payloads.
//!
//! Imports only its children; `net` may import `mpc`, `model`, `atomic` and `bytes`, never
//! `party`, `pipeline` or any terminal code.

pub mod bench;
pub mod channel;
pub mod cipher;
pub mod config;
pub mod error;
pub mod handshake;
pub mod hello;
pub mod keys;
pub mod local;
pub mod mesh;
pub mod message;
pub mod peer;
pub mod record;
mod sender;
pub mod transport;

pub use channel::SecureChannel;
pub use config::{PartiesConfig, PartyId};
pub use error::NetError;
pub use handshake::Inbound;
pub use keys::{PublicKey, StaticKeypair};
pub use local::LocalParty;
pub use mesh::{Mesh, MeshBuilder, PeerInbox};
pub use message::Message;
pub use peer::PeerRole;
pub use transport::NoiseTransport;

/// Writes one line of network log to stderr. Callers pass only metadata (peer, sizes, timings,
/// reasons); payload bytes never reach the log.
pub(crate) fn log(args: std::fmt::Arguments<'_>) {
    eprintln!("privxray net: {args}");
}

/// Per-message logging is noisy, so it is enabled only with `PRIVXRAY_NET_DEBUG=1`.
pub(crate) fn debug_enabled() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PRIVXRAY_NET_DEBUG").is_some_and(|v| v == "1"))
}
