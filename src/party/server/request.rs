//! Serving one scheduled request: take this party's share from the queue, run the agreement
//! rounds, then the secure forward pass, and answer the client's connection.
//!
//! Imports the shared state and the agreement rounds; the scheduler imports it.

use std::time::{Duration, Instant};

use super::rounds::{compare_copies, exchange_ready, Readiness};
use super::state::State;
use crate::mpc::{infer, InputShare, Party, PartyModel};
use crate::net::NoiseTransport;
use crate::party::queue::{Outcome, ServeStats, Served, Taken};
use crate::party::{log, PartyError};

pub(super) fn serve_request(
    state: &State,
    mut t: NoiseTransport,
    id: u64,
) -> Result<NoiseTransport, PartyError> {
    let me = state.me;
    // Party 0 schedules only requests every party said it holds (or rejected): nothing to
    // wait for. One withdrawn since is refused like a missing one.
    let wait = Duration::ZERO;
    let (held, why_not) = match state.queue.take(id, wait) {
        Taken::Held(share, reply) => match state.model() {
            Some(m) if m.input_shape() == share.shape() && m.fixed() == share.fixed() => {
                (Some((share, reply, m)), None)
            }
            _ => {
                let text = format!(
                    "party {me}: the shared model changed or is missing since the request \
                     arrived; the request was dropped"
                );
                let _ = reply.send(Err(text.clone()));
                (None, Some(text))
            }
        },
        Taken::Refused => (None, Some("rejected on arrival".into())),
        Taken::Missing => (
            None,
            Some("its share was withdrawn or expired here".to_owned()),
        ),
    };
    let (held, why_not) = compare_copies(state, &mut t, held, why_not)?;
    let dealing = held.as_ref().map(|(_, _, m)| m.dealing());
    let Readiness {
        refused,
        mixed_dealings,
    } = match exchange_ready(state, &mut t, id, held.is_some(), dealing) {
        Ok(r) => r,
        Err(e) => {
            if let Some((_, reply, _)) = held {
                let _ = reply.send(Err(format!(
                    "party {me}: the mesh failed before the computation ({e}); the \
                     request was dropped"
                )));
            }
            return Err(e);
        }
    };
    let Some((share, reply, model)) = held else {
        log(
            me,
            format_args!(
                "skipped a scheduled request: {}",
                why_not.unwrap_or_default()
            ),
        );
        return Ok(t);
    };
    if let Some(text) = mixed_dealings {
        let _ = reply.send(Err(format!("party {me}: {text}")));
        log(me, format_args!("refused a request: {text}"));
        return Ok(t);
    }
    if !refused.is_empty() {
        let names: Vec<String> = refused.iter().map(|p| format!("party {p}")).collect();
        let _ = reply.send(Err(format!(
            "{} did not hold a usable share of this request (it was rejected, withdrawn or \
             expired there, or its copies at two parties differed); the request was dropped",
            names.join(" and ")
        )));
        log(
            me,
            format_args!("dropped a request that {} refused", names.join(" and ")),
        );
        return Ok(t);
    }
    compute(state, t, *share, &reply, &model)
}

pub(super) fn compute(
    state: &State,
    t: NoiseTransport,
    share: InputShare,
    reply: &std::sync::mpsc::Sender<Outcome>,
    model: &PartyModel,
) -> Result<NoiseTransport, PartyError> {
    let me = state.me;
    let started = Instant::now();
    let fail = |e: &dyn std::fmt::Display| {
        let _ = reply.send(Err(format!(
            "party {me}: the secure computation failed: {e}; the request was dropped"
        )));
    };
    let me = t.me();
    let mut party = match Party::setup(me, t) {
        Ok(p) => p,
        Err(e) => {
            fail(&e);
            return Err(e.into());
        }
    };
    let before = party.stats();
    let outs = match infer(&mut party, model, std::slice::from_ref(&share)) {
        Ok(o) => o,
        Err(e) => {
            fail(&e);
            return Err(e.into());
        }
    };
    let spent = party.stats().since(&before);
    let stats = ServeStats {
        bytes_sent: spent.bytes_sent,
        rounds: spent.rounds,
        micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    };
    let Some(out) = outs.into_iter().next() else {
        let e = "the engine returned no output share";
        fail(&e);
        return Err(PartyError::Prediction(e.into()));
    };
    let _ = reply.send(Ok(Served {
        output_share: out.to_bytes(),
        stats,
    }));
    log(
        me,
        format_args!(
            "served a request: {} bytes sent to the other parties, {} bytes received from them, \
             {} rounds, {:.1} ms",
            stats.bytes_sent,
            spent.bytes_received,
            stats.rounds,
            stats.micros as f64 / 1e3
        ),
    );
    Ok(party.into_transport())
}
