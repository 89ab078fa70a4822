//! Which connections a party takes, by role, so that outsiders cannot crowd out the mesh.
//!
//! Three kinds of slot:
//! - [`HANDSHAKE_SLOTS`] for connections whose handshake is in progress. Each is closed at the
//!   handshake deadline at the latest; when all are taken, a new connection evicts the oldest
//!   handshake that is least far along (no hello yet, then a claimed role, then a client past
//!   its first message). A party or the model owner whose first handshake message has
//!   authenticated is never evicted by another connection, only by a newer authenticated
//!   handshake of the same identity (a replay, or the same peer trying again). A party sends
//!   its hello and first message as soon as it connects, so it reaches that protected state
//!   within one round trip, before a flood of idle or trickling connections can push it out.
//! - [`CLIENT_SLOTS`] for clients that finished their handshake;
//! - [`OWNER_SLOTS`] for the model owner's connections.
//!
//! Party channels need no slot here: they go to the serving loop's mesh, one per peer.
//!
//! How much a connection may send also depends on its role: parties and the owner get
//! `limits.max_message_bytes`, a client no more than its input share needs
//! ([`ClientCap`]).
//!
//! Imports `crate::mpc` and `crate::net` only; no sibling, never `pipeline` or terminal code.

use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::mpc::{ArithShare, InputShare, PartyModel};
use crate::net::handshake::Progress;
use crate::net::message::{Message, Shape};
use crate::net::PeerRole;

/// Handshakes in progress at once.
pub const HANDSHAKE_SLOTS: usize = 64;
/// Clients connected at once (each has at most one request in flight).
pub const CLIENT_SLOTS: usize = 128;
/// Model owner connections at once.
pub const OWNER_SLOTS: usize = 4;

/// How far a handshake has come; the order is the eviction order (lowest first).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Stage {
    /// Connected, no hello yet.
    Connected,
    /// The hello claims a role.
    Claimed,
    /// A client's first message decrypted (which proves nothing about it).
    ClientKeyed,
    /// A party's or the owner's first message authenticated: protected from eviction.
    Keyed,
}

struct Pending {
    ticket: u64,
    /// A handle on the socket, to close it on eviction (the handshake thread owns the other).
    socket: TcpStream,
    stage: Stage,
    role: Option<PeerRole>,
}

#[derive(Default)]
struct Inner {
    next_ticket: u64,
    /// In arrival order.
    pending: Vec<Pending>,
    clients: usize,
    owners: usize,
    evicted: u64,
}

/// The party's connection slots.
#[derive(Default)]
pub struct Admission {
    inner: Mutex<Inner>,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// Every handshake slot holds an authenticated party or owner handshake.
    Handshakes,
    Clients,
    Owners,
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::Handshakes => write!(f, "{HANDSHAKE_SLOTS} handshakes are in progress"),
            Full::Clients => write!(f, "{CLIENT_SLOTS} clients are connected"),
            Full::Owners => write!(f, "{OWNER_SLOTS} model owner connections are open"),
        }
    }
}

impl Admission {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is one short critical section; a panic cannot leave it half done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a handshake slot for a new connection, evicting the least advanced (then oldest)
    /// unprotected handshake when all are taken. `socket` is a second handle on the connection
    /// (closed on eviction).
    pub fn admit(self: &Arc<Self>, socket: TcpStream) -> Result<Handshaking, Full> {
        let mut inner = self.lock();
        if inner.pending.len() >= HANDSHAKE_SLOTS {
            let victim = inner
                .pending
                .iter()
                .enumerate()
                .filter(|(_, p)| p.stage != Stage::Keyed)
                .min_by_key(|(i, p)| (p.stage, *i))
                .map(|(i, _)| i);
            let Some(i) = victim else {
                return Err(Full::Handshakes);
            };
            evict(&mut inner, i);
        }
        inner.next_ticket += 1;
        let ticket = inner.next_ticket;
        inner.pending.push(Pending {
            ticket,
            socket,
            stage: Stage::Connected,
            role: None,
        });
        Ok(Handshaking {
            admission: Arc::clone(self),
            ticket,
        })
    }

    /// Handshakes in progress.
    pub fn handshaking(&self) -> usize {
        self.lock().pending.len()
    }

    /// Handshakes evicted so far.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    fn release(&self, role: PeerRole) {
        let mut inner = self.lock();
        match role {
            PeerRole::Client => inner.clients -= 1,
            PeerRole::Owner => inner.owners -= 1,
            PeerRole::Party(_) => {}
        }
    }
}

fn evict(inner: &mut Inner, i: usize) {
    let p = inner.pending.remove(i);
    // The handshake's thread sees the closed socket and ends.
    let _ = p.socket.shutdown(Shutdown::Both);
    inner.evicted += 1;
}

/// A handshake slot; released on drop.
pub struct Handshaking {
    admission: Arc<Admission>,
    ticket: u64,
}

impl Handshaking {
    /// Records how far the handshake has come.
    pub fn progress(&self, progress: Progress) {
        let mut inner = self.admission.lock();
        let (stage, role) = match progress {
            Progress::Claimed(role) => (Stage::Claimed, role),
            Progress::Keyed(PeerRole::Client) => (Stage::ClientKeyed, PeerRole::Client),
            Progress::Keyed(role) => (Stage::Keyed, role),
        };
        if stage == Stage::Keyed {
            // One protected handshake per identity: an older one of the same identity is a
            // replay or an attempt the peer gave up.
            let older = inner.pending.iter().position(|p| {
                p.ticket != self.ticket && p.stage == Stage::Keyed && p.role == Some(role)
            });
            if let Some(i) = older {
                evict(&mut inner, i);
            }
        }
        if let Some(p) = inner.pending.iter_mut().find(|p| p.ticket == self.ticket) {
            p.stage = stage;
            p.role = Some(role);
        }
    }

    /// The handshake finished: trades the handshake slot for one of the proven role's.
    pub fn finish(self, role: PeerRole) -> Result<Connected, Full> {
        let admission = Arc::clone(&self.admission);
        let mut inner = admission.lock();
        match role {
            PeerRole::Client if inner.clients >= CLIENT_SLOTS => return Err(Full::Clients),
            PeerRole::Client => inner.clients += 1,
            PeerRole::Owner if inner.owners >= OWNER_SLOTS => return Err(Full::Owners),
            PeerRole::Owner => inner.owners += 1,
            PeerRole::Party(_) => {}
        }
        drop(inner);
        Ok(Connected { admission, role })
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        let mut inner = self.admission.lock();
        if let Some(i) = inner.pending.iter().position(|p| p.ticket == self.ticket) {
            inner.pending.remove(i);
        }
    }
}

/// A proven connection's slot; released on drop.
pub struct Connected {
    admission: Arc<Admission>,
    role: PeerRole,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.admission.release(self.role);
    }
}

/// Refusal lines logged per [`LOG_WINDOW`]; the rest are counted and summed up in one line.
pub const LOG_BUDGET: u32 = 20;
pub const LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps a flood of refused connections from flooding the log: the first [`LOG_BUDGET`]
/// refusals of each [`LOG_WINDOW`] are logged with their reason, the others only counted.
#[derive(Default)]
pub struct LogBudget {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    start: Option<std::time::Instant>,
    logged: u32,
    skipped: u64,
}

impl LogBudget {
    /// Whether to log one more refusal now: `Some(skipped)` with the number of refusals left
    /// unlogged since the last logged one (to be said first), or `None` to stay quiet.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.start.is_none_or(|s| now.duration_since(s) >= LOG_WINDOW) {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < LOG_BUDGET {
            w.logged += 1;
            Some(std::mem::take(&mut w.skipped))
        } else {
            w.skipped += 1;
            None
        }
    }
}

/// Room a client gets beyond its input share: the request's own fields, with margin.
pub const CLIENT_SLACK: u64 = 4096;

/// The largest message a party accepts from a client: a `PredictRequest` carrying an input
/// share of the shared model's input shape, plus [`CLIENT_SLACK`]; only the slack before a
/// model is shared (a client then has nothing to send but small requests).
pub fn client_message_cap(model: Option<&PartyModel>) -> u64 {
    let Some(model) = model else {
        return CLIENT_SLACK;
    };
    let shape = model.input_shape();
    let n: usize = shape.iter().product();
    // Measured on a real encoding, so the cap follows the share format wherever it changes.
    let share = InputShare::new(model.party(), model.fixed(), shape, ArithShare::zeros(n))
        .map(|s| s.to_bytes().len() as u64)
        .unwrap_or(u64::MAX - CLIENT_SLACK);
    let envelope = Shape::new(shape.iter().map(|&d| d as u32).collect())
        .map(|shape| {
            Message::PredictRequest {
                request_id: 0,
                shape,
                input_share: Vec::new(),
            }
            .encode()
            .len() as u64
        })
        .unwrap_or(0);
    share + envelope + CLIENT_SLACK
}

/// [`client_message_cap`] for the installed model, computed once per model.
#[derive(Default)]
pub struct ClientCap {
    cached: Mutex<Option<(Weak<PartyModel>, u64)>>,
}

impl ClientCap {
    pub fn get(&self, model: Option<&Arc<PartyModel>>) -> u64 {
        let Some(model) = model else {
            return client_message_cap(None);
        };
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((weak, cap)) if std::ptr::eq(weak.as_ptr(), Arc::as_ptr(model)) => *cap,
            _ => {
                let cap = client_message_cap(Some(model));
                *cached = Some((Arc::downgrade(model), cap));
                cap
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PartyId;
    use std::io::Read;
    use std::net::TcpListener;

    /// Connected socket pairs on loopback: (our end, the far end).
    fn pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        (0..n)
            .map(|_| {
                let far = TcpStream::connect(addr).unwrap();
                let (ours, _) = l.accept().unwrap();
                (ours, far)
            })
            .collect()
    }

    fn closed(far: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(far.read(&mut b), Ok(0) | Err(_))
    }

    /// Admits `n` connections and brings each to `stage` (if any); returns the handles and
    /// the far ends.
    fn fill(
        a: &Arc<Admission>,
        n: usize,
        stage: Option<Progress>,
    ) -> Vec<(Handshaking, TcpStream)> {
        pairs(n)
            .into_iter()
            .map(|(ours, far)| {
                let h = a.admit(ours).unwrap();
                if let Some(p) = stage {
                    h.progress(p);
                }
                (h, far)
            })
            .collect()
    }

    #[test]
    fn a_flood_evicts_the_least_advanced_and_never_an_authenticated_party() {
        let a = Arc::new(Admission::new());
        let party = PeerRole::Party(PartyId::ALL[1]);
        let mut protected = fill(&a, 1, Some(Progress::Keyed(party)));
        let mut keyed_client = fill(&a, 1, Some(Progress::Keyed(PeerRole::Client)));
        let mut claimed = fill(&a, 1, Some(Progress::Claimed(PeerRole::Client)));
        let mut idle = fill(&a, HANDSHAKE_SLOTS - 3, None);
        assert_eq!(a.handshaking(), HANDSHAKE_SLOTS);

        // Full: a new connection evicts the oldest idle one, although three are older.
        let newest = fill(&a, 1, None);
        assert_eq!((a.evicted(), a.handshaking()), (1, HANDSHAKE_SLOTS));
        assert!(closed(&mut idle[0].1));
        // Once no idle connection is left, the claimed one goes, then the keyed client.
        drop(idle);
        drop(newest);
        let _more = fill(
            &a,
            HANDSHAKE_SLOTS - 3,
            Some(Progress::Keyed(PeerRole::Client)),
        );
        let client = Some(Progress::Keyed(PeerRole::Client));
        let _next = fill(&a, 1, client);
        assert!(closed(&mut claimed[0].1));
        let _last = fill(&a, 1, client);
        assert!(closed(&mut keyed_client[0].1));
        // A whole pool's worth more: the party's handshake is never evicted.
        let _flood = fill(&a, 2 * HANDSHAKE_SLOTS, None);
        assert_eq!(a.handshaking(), HANDSHAKE_SLOTS);
        let mut b = [0u8; 1];
        protected[0].1.set_nonblocking(true).unwrap();
        assert!(matches!(
            protected[0].1.read(&mut b),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        ));
        let (h, _far) = protected.remove(0);
        assert!(h.finish(party).is_ok());
    }

    #[test]
    fn only_one_protected_handshake_per_identity() {
        let a = Arc::new(Admission::new());
        let owner = PeerRole::Owner;
        let mut s = pairs(2);
        let (second_ours, _second_far) = s.pop().unwrap();
        let (first_ours, mut first_far) = s.pop().unwrap();
        let first = a.admit(first_ours).unwrap();
        first.progress(Progress::Keyed(owner));
        let second = a.admit(second_ours).unwrap();
        second.progress(Progress::Keyed(owner));
        // The older of two authenticated handshakes of one identity is the replay or the
        // abandoned attempt.
        assert!(closed(&mut first_far));
        assert_eq!(a.handshaking(), 1);
        drop(first);
        assert_eq!(a.handshaking(), 1);
        drop(second);
        assert_eq!(a.handshaking(), 0);
    }

    #[test]
    fn refusals_are_logged_within_a_budget_and_the_rest_counted() {
        let b = LogBudget::default();
        let allowed = (0..LOG_BUDGET * 5).filter(|_| b.allow().is_some()).count();
        assert_eq!(allowed, LOG_BUDGET as usize);
        // A new window: the first line reports what the last one left out.
        b.window.lock().unwrap().start = Some(std::time::Instant::now() - LOG_WINDOW);
        assert_eq!(b.allow(), Some(u64::from(LOG_BUDGET) * 4));
        assert_eq!(b.allow(), Some(0));
    }

    #[test]
    fn client_and_owner_slots_are_bounded_and_released() {
        let a = Arc::new(Admission::new());
        let mut held = Vec::new();
        for (ours, _far) in pairs(CLIENT_SLOTS) {
            let h = a.admit(ours).unwrap();
            held.push(h.finish(PeerRole::Client).unwrap());
        }
        let (ours, _far) = pairs(1).remove(0);
        let extra = a.admit(ours).unwrap();
        assert_eq!(extra.finish(PeerRole::Client).err(), Some(Full::Clients));
        // Clients do not take the owner's slots, nor the parties'.
        let (ours, _far) = pairs(1).remove(0);
        let owner = a.admit(ours).unwrap().finish(PeerRole::Owner);
        assert!(owner.is_ok());
        let (ours, _far) = pairs(1).remove(0);
        let party = a
            .admit(ours)
            .unwrap()
            .finish(PeerRole::Party(PartyId::ALL[2]));
        assert!(party.is_ok());
        held.pop();
        let (ours, _far) = pairs(1).remove(0);
        assert!(a.admit(ours).unwrap().finish(PeerRole::Client).is_ok());
        assert_eq!(a.handshaking(), 0);
    }
}
