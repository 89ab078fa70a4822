//! The agreement rounds before a request is computed: the ready exchange (each party says
//! whether it holds a usable share and which model dealing it holds) and the comparison of
//! the input copies two parties hold in common.
//!
//! Imports the shared state; the scheduler and the request path import it.

use std::sync::Arc;

use super::state::State;
use crate::mpc::consistency;
use crate::mpc::{DealingId, InputShare, PartyModel};
use crate::net::{Message, NoiseTransport, PartyId};
use crate::party::queue::Outcome;
use crate::party::PartyError;

/// A request's share as a party holds it: the share, where to answer, and the model it was
/// checked against.
pub(super) type Held = (
    Box<InputShare>,
    std::sync::mpsc::Sender<Outcome>,
    Arc<PartyModel>,
);

/// What the ready exchange found.
pub(super) struct Readiness {
    /// Peers without a usable share of the request.
    pub(super) refused: Vec<PartyId>,
    /// Set when the parties' model shares come from different dealings.
    pub(super) mixed_dealings: Option<String>,
}

/// Sends this party's readiness and the dealing id of its model share to both peers, and
/// returns the peers that refused and, when the three model shares come from different
/// dealings, the message saying so (every party sees all three ids, so all agree on it).
pub(super) fn exchange_ready(
    state: &State,
    t: &mut NoiseTransport,
    request_id: u64,
    accept: bool,
    dealing: Option<DealingId>,
) -> Result<Readiness, PartyError> {
    let others = state.me.others();
    for peer in others {
        t.send_message(peer, &Message::Ready { request_id, accept })?;
    }
    let me = state.me;
    consistency::send_dealing(t, me, dealing)?;
    let mut refused = Vec::new();
    let mut dealings = [None; 3];
    dealings[me.index()] = dealing;
    for peer in others {
        match t.recv_message(peer)? {
            Message::Ready {
                request_id: got,
                accept,
            } if got == request_id => {
                if !accept {
                    refused.push(peer);
                }
            }
            other => {
                return Err(PartyError::Protocol {
                    party: peer,
                    expected: "Ready for the scheduled request",
                    got: format!("{other:?}"),
                })
            }
        }
        dealings[peer.index()] = consistency::recv_dealing(t, peer)?;
    }
    Ok(Readiness {
        refused,
        mixed_dealings: consistency::mixed_dealings(dealings),
    })
}

/// The parties compare digests of the input components they hold in common (one round),
/// so a client that sent two holders different copies is refused before anything is
/// computed. A party that finds a difference answers its client and drops the share; the
/// third party, which cannot see the difference, learns of it in the ready exchange.
pub(super) fn compare_copies(
    state: &State,
    t: &mut NoiseTransport,
    held: Option<Held>,
    why_not: Option<String>,
) -> Result<(Option<Held>, Option<String>), PartyError> {
    let me = state.me;
    let share = held.as_ref().map(|(s, _, _)| std::slice::from_ref(&**s));
    let found = match consistency::compare_input_copies(t, me, share) {
        Ok(f) => f,
        Err(e) => {
            if let Some((_, reply, _)) = held {
                let _ = reply.send(Err(format!(
                    "party {me}: the mesh failed before the computation ({e}); the \
                     request was dropped"
                )));
            }
            return Err(e.into());
        }
    };
    match held {
        Some((_, reply, _)) if !found.is_empty() => {
            let text = format!("party {me}: {}", consistency::inconsistent_input(&found));
            let _ = reply.send(Err(text.clone()));
            Ok((None, Some(text)))
        }
        held => Ok((held, why_not)),
    }
}
