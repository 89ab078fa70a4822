//! Three-party secure inference (semi-honest, honest majority) over the ring Z_2^64.
//!
//! The model owner secret-shares a [`NetworkSpec`](crate::model::NetworkSpec) with
//! [`share_model`]; a client secret-shares an image with [`share_input`]; the three parties run
//! [`infer`] over any [`Transport`] and send re-randomised output shares to the client, who alone
//! learns the logits through [`reconstruct`]. No party ever sees the whole model, the image or
//! any intermediate value; what is public is the architecture and, per comparison layer, the
//! width of the ring its comparisons run in (a bit length of a bound on its inputs, see
//! [`bounds`]).
//!
//! - [`fixed`]: fixed-point encoding (14 fractional bits, 18 for weights; see [`FixedPoint`]).
//! - [`party`]: party identities and ring neighbours.
//! - [`share`]: 2-out-of-3 replicated shares (arithmetic and boolean) and a dealer for tests.
//! - [`prg`]: pairwise ChaCha12 streams for zero-sharings and common randomness.
//! - [`transport`]: the byte-message [`Transport`] trait and an in-memory implementation.
//! - [`context`]: a party's protocol context ([`Party`]): transport, PRGs, byte and round counts.
//! - [`matmul`]: multithreaded wrapping u64 matrix products, the hot loop.
//! - [`bits`]: 64x64 bit-matrix transposition for bit-sliced boolean circuits.
//! - [`protocol`]: multiplication, exact truncation, sign bit, ReLU and max.
//! - [`range`]: the range of a model's logits, checked by the client (re-run once, then refuse).
//! - [`layers`]: convolution, dense and pooling layers over shares.
//! - [`model`]: one party's share of a model ([`PartyModel`]) and its validation, tagged with
//!   the random [`DealingId`] of its dealing.
//! - [`bounds`]: the owner's bound on every compared value, and from it each comparison's
//!   width (narrower rings, fewer bits sent).
//! - [`compile`]: a spec compiled into plaintext secure operations (batch norms folded).
//! - [`dealing`]: the owner's dealing of the compiled parameters into three shares.
//! - [`consistency`]: before computing, neighbours compare digests of the input components they
//!   hold in common, and the parties compare dealing ids.
//! - [`client`]: input and output shares, [`share_input`] and [`reconstruct`].
//! - [`codec`]: the little-endian byte format of everything that crosses the network.
//! - [`network`]: [`infer`], one party's secure forward pass of a batch.
//! - [`simulate`]: all three parties on threads in one process, and the benchmark.
//!
//! Imports only its children; `mpc` may import `model` and `bytes`, never `train`, `net`, `party`,
//! `pipeline` or any terminal code.

pub mod bits;
pub mod bounds;
pub mod client;
pub mod codec;
pub mod compile;
pub mod consistency;
pub mod context;
pub mod dealing;
pub mod error;
pub mod fixed;
pub mod layers;
pub mod matmul;
pub mod model;
pub mod network;
pub mod party;
pub mod prg;
pub mod protocol;
pub mod range;
pub mod share;
pub mod simulate;
pub mod transport;

#[cfg(test)]
mod tests;

pub use client::{reconstruct, share_input, share_input_os, InputShare, OutputShare};
pub use context::{CommStats, Party};
pub use dealing::{share_model, share_model_os, ModelDealing};
pub use error::MpcError;
pub use fixed::FixedPoint;
pub use model::{DealingId, PartyModel};
pub use network::infer;
pub use party::PartyId;
pub use share::{ArithShare, BitShare};
pub use simulate::{
    bench_report, simulate, simulate_with, BenchReport, Simulation, SimulationReport,
};
pub use transport::{InMemoryTransport, Transport};
