//! What the party server's threads share: the installed model, the stored share, the request
//! queue, the inbox of peer channels, the admission slots and the serving loop's timings.
//!
//! A leaf of the server: the acceptor, the handlers and the scheduler import it; it imports
//! none of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::mpc::PartyModel;
use crate::net::config::Timeouts;
use crate::net::{PartyId, PeerInbox};
use crate::party::admission::{Admission, ClientCap, LogBudget};
use crate::party::log;
use crate::party::queue::RequestQueue;
use crate::party::store::ShareFile;

/// The serving loop's waits, derived from the configuration's timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerTimings {
    /// Idle time after which party 0 checks the mesh with a heartbeat round.
    pub heartbeat: Duration,
    /// Extra time a client's connection waits for its request's outcome beyond
    /// `request_ttl` (the request is scheduled only once every party holds it, so no party
    /// waits for a share at scheduling time).
    pub share_wait: Duration,
    /// How long a request may wait in the queue before it is dropped with an error.
    pub request_ttl: Duration,
    /// How long one attempt to form the mesh may take before it starts over.
    pub mesh_attempt: Duration,
}

impl ServerTimings {
    /// Heartbeats well inside the I/O timeout (so an idle follower never times out), a share
    /// wait of half of it, and requests kept for one I/O timeout.
    pub fn from_timeouts(t: &Timeouts) -> Self {
        Self {
            heartbeat: (t.io / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)),
            share_wait: (t.io / 2).min(Duration::from_secs(10)),
            request_ttl: t.io,
            mesh_attempt: t.startup,
        }
    }
}

/// State shared by the serving loop and the connection threads.
pub(super) struct State {
    pub(super) me: PartyId,
    pub(super) model: RwLock<Option<Arc<PartyModel>>>,
    pub(super) store: ShareFile,
    pub(super) queue: RequestQueue,
    pub(super) inbox: PeerInbox,
    pub(super) stop: AtomicBool,
    pub(super) admission: Arc<Admission>,
    pub(super) client_cap: ClientCap,
    pub(super) refusals: LogBudget,
    pub(super) timings: ServerTimings,
}

impl State {
    pub(super) fn model(&self) -> Option<Arc<PartyModel>> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Logs a refused connection within the log budget (a flood must not flood the log).
    pub(super) fn log_refusal(&self, args: std::fmt::Arguments<'_>) {
        if let Some(skipped) = self.refusals.allow() {
            if skipped > 0 {
                log(
                    self.me,
                    format_args!("{skipped} more refused connections were not logged"),
                );
            }
            log(self.me, args);
        }
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// After a mesh failure a peer may have restarted without the requests it held, so no
    /// queued request can be relied on to complete: each client is told at once rather than
    /// at its timeout.
    pub(super) fn drop_queued(&self, why: &str) {
        let n = self.queue.drop_held(&format!(
            "party {}: {why}; the request was dropped (send it again)",
            self.me
        ));
        if n > 0 {
            log(self.me, format_args!("dropped {n} queued requests: {why}"));
        }
    }

    pub(super) fn expire(&self) {
        let t = &self.timings;
        let n = self.queue.expire(
            t.request_ttl,
            &format!(
                "party {} could not serve the request within {:?} (its mesh with the other \
                 parties is down or busy); the request was dropped",
                self.me, t.request_ttl
            ),
        );
        if n > 0 {
            log(self.me, format_args!("dropped {n} expired requests"));
        }
    }
}
