//! Accepting connections: a non-blocking acceptor takes a handshake slot for every inbound
//! connection ([`crate::party::admission`]) and hands it to a thread of its own, which runs the
//! confirmed Noise handshake, then files a party channel in the mesh inbox or serves a client or
//! the model owner.
//!
//! Imports the shared state and the request handlers.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::handlers::{serve_client, serve_owner};
use super::state::State;
use crate::net::handshake::{accept_stream_observed, Inbound};
use crate::net::{LocalParty, Message};
use crate::party::admission::Handshaking;
use crate::party::log;

/// Poll interval of the non-blocking acceptor.
const POLL: Duration = Duration::from_millis(10);

pub(super) fn accept_loop(listener: &TcpListener, local: &Arc<LocalParty>, state: &Arc<State>) {
    let me = state.me;
    if let Err(e) = listener.set_nonblocking(true) {
        log(me, format_args!("cannot poll the listener: {e}"));
    }
    while !state.stopped() {
        let (stream, addr) = match listener.accept() {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                log(me, format_args!("accepting a connection failed: {e}"));
                std::thread::sleep(POLL);
                continue;
            }
        };
        // A second handle on the socket, so that a flood can be evicted (see `admission`).
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let slot = match state.admission.admit(handle) {
            Ok(slot) => slot,
            Err(full) => {
                state.log_refusal(format_args!("closed a connection from {addr}: {full}"));
                continue;
            }
        };
        let local = Arc::clone(local);
        let conn_state = Arc::clone(state);
        let spawned = std::thread::Builder::new()
            .name(format!("privxray-conn-{me}"))
            .spawn(move || handle_connection(stream, addr, &local, &conn_state, slot));
        if let Err(e) = spawned {
            log(me, format_args!("cannot start a connection thread: {e}"));
        }
    }
}

fn handle_connection(
    stream: TcpStream,
    addr: SocketAddr,
    local: &LocalParty,
    state: &Arc<State>,
    slot: Handshaking,
) {
    let me = state.me;
    // The listener polls without blocking; the connection itself blocks with timeouts.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let inbound = match accept_stream_observed(stream, addr, local, &mut |p| slot.progress(p)) {
        Ok(inbound) => inbound,
        Err(e) => return state.log_refusal(format_args!("{e}")),
    };
    let role = inbound.role();
    let _slot = match slot.finish(role) {
        Ok(slot) => slot,
        Err(full) => {
            state.log_refusal(format_args!("closed a connection from {role}: {full}"));
            if let Inbound::Client(mut channel) | Inbound::Owner(mut channel) = inbound {
                let text = format!("party {me}: {full}; try again later");
                let _ = channel.send_message(&Message::Error { text });
            }
            return;
        }
    };
    match inbound {
        Inbound::Party { id, channel } if id > me => state.inbox.put(id, channel),
        Inbound::Party { id, .. } => log(
            me,
            format_args!("closed a connection from party {id}: parties with lower ids are dialled by this party"),
        ),
        Inbound::Client(channel) => serve_client(state, channel),
        Inbound::Owner(channel) => serve_owner(state, channel),
    }
}
