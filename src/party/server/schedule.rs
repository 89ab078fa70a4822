//! One scheduling step over a working mesh: party 0 polls the others for the requests they
//! hold and schedules the oldest that every party holds (or sends a heartbeat when idle); the
//! others follow its lead.
//!
//! Imports the shared state, the agreement rounds and the request path.

use std::time::Duration;

use super::request::serve_request;
use super::rounds::exchange_ready;
use super::state::State;
use crate::net::message::MAX_IDS;
use crate::net::{Message, NoiseTransport, PartyId};
use crate::party::PartyError;

/// Shortest pause between two polls while party 0 holds requests the others do not (yet).
const MIN_POLL_PAUSE: Duration = Duration::from_millis(2);

/// What party 0 does in one step.
enum LeadChoice {
    /// Serve this request, which every party holds (or rejected).
    Schedule(u64),
    /// Nothing to schedule: check the mesh.
    Heartbeat,
    /// Nothing more this step: a request just arrived (the next step polls), or a poll found
    /// none that every party holds and party 0 has waited a little before the next.
    Done,
}

/// One scheduling step over a working mesh; an error means the mesh must be re-formed.
pub(super) fn step(state: &State, mut t: NoiseTransport) -> Result<NoiseTransport, PartyError> {
    let me = state.me;
    let lead = PartyId::ALL[0];
    let scheduled = if me == lead {
        match lead_choice(state, &mut t)? {
            LeadChoice::Schedule(request_id) => {
                for peer in me.others() {
                    t.send_message(peer, &Message::Schedule { request_id })?;
                }
                Some(request_id)
            }
            LeadChoice::Heartbeat => {
                for peer in me.others() {
                    t.send_message(peer, &Message::Heartbeat)?;
                }
                None
            }
            LeadChoice::Done => return Ok(t),
        }
    } else {
        match t.recv_message(lead)? {
            Message::Schedule { request_id } => Some(request_id),
            Message::Heartbeat => None,
            Message::Poll { request_ids } => {
                let dealing = state.model().map(|m| m.dealing());
                exchange_ready(state, &mut t, 0, true, dealing)?;
                let (held, refused) = state.queue.status(&request_ids);
                t.send_message(lead, &Message::Holding { held, refused })?;
                return Ok(t);
            }
            other => {
                return Err(PartyError::Protocol {
                    party: lead,
                    expected: "Schedule, Poll or Heartbeat",
                    got: other.kind().into(),
                })
            }
        }
    };
    match scheduled {
        None => {
            let dealing = state.model().map(|m| m.dealing());
            exchange_ready(state, &mut t, 0, true, dealing)?;
            Ok(t)
        }
        Some(id) => serve_request(state, t, id),
    }
}

/// Party 0's choice for this step (it may poll the others first).
fn lead_choice(state: &State, t: &mut NoiseTransport) -> Result<LeadChoice, PartyError> {
    let queue = &state.queue;
    let timings = &state.timings;
    let seen = queue.arrivals();
    let held = queue.held(MAX_IDS);
    if held.is_empty() {
        return Ok(match queue.next(timings.heartbeat) {
            // Poll at the next step.
            Some(_) => LeadChoice::Done,
            None => LeadChoice::Heartbeat,
        });
    }
    let request_ids: Vec<u64> = held.iter().map(|(id, _)| *id).collect();
    for peer in state.me.others() {
        t.send_message(
            peer,
            &Message::Poll {
                request_ids: request_ids.clone(),
            },
        )?;
    }
    let dealing = state.model().map(|m| m.dealing());
    exchange_ready(state, t, 0, true, dealing)?;
    let mut answered: Vec<Vec<u64>> = Vec::with_capacity(2);
    for peer in state.me.others() {
        match t.recv_message(peer)? {
            Message::Holding { held, refused } => {
                answered.push(held.into_iter().chain(refused).collect());
            }
            other => {
                return Err(PartyError::Protocol {
                    party: peer,
                    expected: "Holding after a Poll",
                    got: other.kind().into(),
                })
            }
        }
    }
    if let Some(id) = request_ids
        .iter()
        .find(|id| answered.iter().all(|a| a.contains(id)))
    {
        return Ok(LeadChoice::Schedule(*id));
    }
    // Nobody else holds these (yet): poll again soon for a fresh request (its shares may
    // still be on their way to the others), rarely for stale ones, and at once when a new
    // request arrives here.
    let youngest = held
        .iter()
        .map(|(_, arrived)| arrived.elapsed())
        .min()
        .unwrap_or_default();
    let pause = (youngest / 4).clamp(MIN_POLL_PAUSE, timings.heartbeat.max(MIN_POLL_PAUSE));
    queue.wait_arrival(seen, pause);
    Ok(LeadChoice::Done)
}
