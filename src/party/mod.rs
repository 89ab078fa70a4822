//! The party server and its clients: three `privxray party` processes serve private
//! predictions over Noise channels ([`crate::net`]) with the secure-computation engine
//! ([`crate::mpc`]).
//!
//! - [`server`]: one party: accepts the model owner (IK) and clients (NK), keeps the mesh with
//!   the other two parties (KK), serves queued requests in the order party 0 decides, and
//!   re-forms the mesh after a peer fails.
//! - [`admission`]: which connections a party takes, by role (slots for handshakes, clients
//!   and the owner; a client's message cap), so outsiders cannot crowd out the mesh.
//! - [`queue`]: the requests a party holds shares of, waiting to be scheduled.
//! - [`store`]: the party's model share on disk, so a restarted party resumes serving.
//! - [`client`]: the client (shares an image, reconstructs the logits) and the model owner
//!   (shares a network).
//! - [`bench`]: secure inference over real Noise TCP on loopback beside the in-process
//!   simulation.
//!
//! Logs (stderr) name sizes, timings and party ids only: never share values, request contents
//! or file names.
//!
//! Imports its children, `mpc` and `net`; `party` may import `model`, `mpc`, `net` and `atomic`,
//! never `pipeline` or any terminal code.

pub mod admission;
pub mod bench;
pub mod client;
pub mod queue;
pub mod server;
pub mod store;

#[cfg(test)]
mod limits_tests;

pub use client::{share_model_remote, RemoteClient, RemoteModel, RemotePrediction};
pub use server::{serve, PartyServer, ServerTimings};
pub use store::ShareFile;

use crate::mpc::MpcError;
use crate::net::{NetError, PartyId};

/// Errors of the party server, the client and the model owner.
#[derive(Debug, thiserror::Error)]
pub enum PartyError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Mpc(#[from] MpcError),
    #[error("model share file {path}: {reason}")]
    Store {
        path: std::path::PathBuf,
        reason: String,
    },
    /// `text` is the party's own message, which names the party.
    #[error("{text}")]
    Refused { party: PartyId, text: String },
    #[error("party {party} sent {got} where {expected} was expected")]
    Protocol {
        party: PartyId,
        expected: &'static str,
        got: String,
    },
    /// The owner's share would exceed the parties' message cap; nothing was sent.
    #[error(
        "the model share for party {party} is {needed} bytes, over limits.max_message_bytes = \
         {max} in the parties configuration; set max_message_bytes to at least {needed} under \
         [limits] in every party's configuration, restart the parties, and share again"
    )]
    ShareTooLarge {
        party: PartyId,
        needed: u64,
        max: u64,
    },
    #[error("the parties disagree about the shared model: {0}")]
    ModelMismatch(String),
    #[error("private prediction failed: {0}")]
    Prediction(String),
}

/// One line of party log on stderr (metadata only, see the module documentation).
pub(crate) fn log(me: PartyId, args: std::fmt::Arguments<'_>) {
    eprintln!("privxray party {me}: {args}");
}
