//! The request handlers of a client's and the model owner's connections: model information,
//! prediction requests (validated, queued, answered with the outcome) and model shares
//! (persisted, then installed).
//!
//! Imports the shared state only.

use std::sync::Arc;
use std::time::Duration;

use super::state::State;
use crate::mpc::{InputShare, PartyModel};
use crate::net::message::Shape;
use crate::net::{Message, NetError, PartyId, SecureChannel};
use crate::party::{log, PartyError};

fn model_info(m: &PartyModel) -> Message {
    let dims = m.input_shape().iter().map(|&d| d as u32).collect();
    match Shape::new(dims) {
        Ok(shape) => Message::ModelInfo {
            name: m.name().to_owned(),
            shape,
            frac_bits: m.fixed().frac_bits() as u8,
            output_len: m.output_len() as u32,
            classes: m.classes().to_vec(),
        },
        Err(e) => Message::Error {
            text: format!("the shared model's input shape cannot be described: {e}"),
        },
    }
}

fn no_model(me: PartyId) -> Message {
    Message::Error {
        text: format!(
            "party {me}: no model has been shared yet: the model owner must run \
             `privxray share-model` first"
        ),
    }
}

/// Receives the next message, answering undecodable frames with an error and going on.
/// `None` when the connection is over.
fn next_message(me: PartyId, channel: &mut SecureChannel) -> Option<Message> {
    loop {
        match channel.recv_message() {
            Ok(m) => return Some(m),
            Err(NetError::Decode { source, .. }) => {
                log(
                    me,
                    format_args!("malformed frame from {}: {source}", channel.peer()),
                );
                let text = format!("party {me}: malformed frame: {source}");
                if channel.send_message(&Message::Error { text }).is_err() {
                    return None;
                }
            }
            Err(NetError::Closed { .. }) => return None,
            Err(e) => {
                log(me, format_args!("{} connection ended: {e}", channel.peer()));
                return None;
            }
        }
    }
}

pub(super) fn serve_client(state: &Arc<State>, mut channel: SecureChannel) {
    let me = state.me;
    // A client sends no more than one input share of the model installed when its message
    // starts arriving (plus slack).
    let limits = Arc::clone(state);
    channel.set_recv_limit_fn(move || limits.client_cap.get(limits.model().as_ref()));
    while let Some(message) = next_message(me, &mut channel) {
        let replies = match message {
            Message::ModelInfoRequest => vec![state
                .model()
                .map_or_else(|| no_model(me), |m| model_info(&m))],
            Message::PredictRequest {
                request_id,
                shape,
                input_share,
            } => client_request(state, request_id, &shape, &input_share),
            other => vec![Message::Error {
                text: format!(
                    "party {me}: a client may send ModelInfoRequest or PredictRequest, not {}",
                    other.kind()
                ),
            }],
        };
        for reply in &replies {
            if channel.send_message(reply).is_err() {
                return;
            }
        }
    }
}

/// Validates a request, queues it and waits for its outcome: the messages to send back.
fn client_request(state: &State, id: u64, shape: &Shape, bytes: &[u8]) -> Vec<Message> {
    let me = state.me;
    let refuse = |text: String| {
        state.queue.refuse(id);
        log(me, format_args!("refused a request: {text}"));
        vec![Message::Error {
            text: format!("party {me}: {text}"),
        }]
    };
    let Some(model) = state.model() else {
        state.queue.refuse(id);
        return vec![no_model(me)];
    };
    let want = model.input_shape();
    if shape.dims().len() != 3 || shape.dims().iter().zip(want).any(|(&d, w)| d as usize != w) {
        return refuse(format!(
            "wrong tensor shape {:?}: the shared model takes {want:?}",
            shape.dims()
        ));
    }
    let share = match InputShare::from_bytes(bytes) {
        Ok(s) => s,
        Err(e) => return refuse(format!("malformed input share: {e}")),
    };
    if share.party().get() != me.get() {
        return refuse(format!(
            "the input share is party {}'s, but this is party {me}",
            share.party()
        ));
    }
    if share.shape() != want || share.fixed() != model.fixed() {
        return refuse(format!(
            "the input share has shape {:?} and {} fractional bits; the model takes {want:?} \
             with {}",
            share.shape(),
            share.fixed().frac_bits(),
            model.fixed().frac_bits()
        ));
    }
    let outcome = match state.queue.submit(id, share) {
        Ok(rx) => rx,
        Err(e) => {
            return vec![Message::Error {
                text: format!("party {me}: {e}"),
            }]
        }
    };
    let wait = state.timings.request_ttl + state.timings.share_wait;
    match outcome.recv_timeout(wait) {
        Ok(Ok(served)) => vec![
            Message::PredictResponse {
                request_id: id,
                output_share: served.output_share,
            },
            Message::RequestStats {
                request_id: id,
                bytes_sent: served.stats.bytes_sent,
                rounds: served.stats.rounds,
                micros: served.stats.micros,
            },
        ],
        Ok(Err(text)) => vec![Message::Error { text }],
        Err(_) => {
            // Withdraw it, so it is not computed for nobody later.
            let _ = state.queue.take(id, Duration::ZERO);
            vec![Message::Error {
                text: format!(
                    "party {me}: the request was not served within {wait:?}; it was dropped"
                ),
            }]
        }
    }
}

pub(super) fn serve_owner(state: &State, mut channel: SecureChannel) {
    let me = state.me;
    while let Some(message) = next_message(me, &mut channel) {
        let reply = match message {
            Message::ShareModel { share } => match install(state, &share) {
                Ok(info) => info,
                Err(text) => {
                    log(me, format_args!("refused a model share: {text}"));
                    Message::Error {
                        text: format!("party {me}: {text}"),
                    }
                }
            },
            Message::ModelInfoRequest => state
                .model()
                .map_or_else(|| no_model(me), |m| model_info(&m)),
            other => Message::Error {
                text: format!(
                    "party {me}: the model owner may send ShareModel or ModelInfoRequest, not {}",
                    other.kind()
                ),
            },
        };
        if channel.send_message(&reply).is_err() {
            return;
        }
    }
}

/// Decodes, persists and installs a model share; the reply is its public description.
fn install(state: &State, bytes: &[u8]) -> Result<Message, String> {
    let me = state.me;
    let model = PartyModel::from_bytes(bytes).map_err(|e| format!("malformed model share: {e}"))?;
    if model.party().get() != me.get() {
        return Err(format!(
            "this is party {}'s model share, but this is party {me}",
            model.party()
        ));
    }
    // Persist first: a restarted party must come back with the share it last acknowledged.
    state.store.save(bytes).map_err(|e| match e {
        // The reason only: file names stay out of logs and replies.
        PartyError::Store { reason, .. } => format!("cannot store the model share: {reason}"),
        other => format!("cannot store the model share: {other}"),
    })?;
    let info = model_info(&model);
    log(
        me,
        format_args!(
            "installed a model share of {} bytes: input {:?}, {} operations, {} outputs",
            bytes.len(),
            model.input_shape(),
            model.ops().len(),
            model.output_len()
        ),
    );
    *state.model.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(model));
    Ok(info)
}
