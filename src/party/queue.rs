//! The requests a party holds shares of. Connection threads submit; the serving loop takes
//! them in the order party 0 decides and answers each through the channel its connection
//! thread waits on.
//!
//! Held requests are bounded by the client connections (each waits for its one request); the
//! ids of rejected requests are remembered, at most [`MAX_REFUSED`] of them, oldest forgotten
//! first, so a client sending malformed requests in a loop cannot grow the party's memory.
//!
//! Imports `crate::mpc` only; no sibling, never `net`, `pipeline` or terminal code.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::mpc::InputShare;

/// Most rejected request ids remembered at once.
pub const MAX_REFUSED: usize = 1024;

/// What one party's computation of a request cost it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Bytes this party sent to the other two during the request.
    pub bytes_sent: u64,
    pub rounds: u64,
    pub micros: u64,
}

/// A served request: this party's encoded output share and its cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub output_share: Vec<u8>,
    pub stats: ServeStats,
}

/// The answer a connection thread relays to its client: a result, or why there is none.
pub type Outcome = Result<Served, String>;

enum State {
    Held(Box<InputShare>, Sender<Outcome>),
    /// Rejected on arrival; remembered so the party can refuse it at once when scheduled.
    Refused,
}

struct Entry {
    arrived: Instant,
    state: State,
}

#[derive(Default)]
struct Inner {
    /// Held requests in arrival order (party 0 schedules from the front).
    order: VecDeque<u64>,
    /// Rejected requests in arrival order, at most [`MAX_REFUSED`] (ids already taken or
    /// expired may linger here; they count towards the bound, never beyond it).
    refused: VecDeque<u64>,
    entries: HashMap<u64, Entry>,
    /// Requests submitted so far, so party 0 can wait for a new one.
    arrivals: u64,
}

/// A taken request.
pub enum Taken {
    /// The share, and where the outcome goes.
    Held(Box<InputShare>, Sender<Outcome>),
    /// The request arrived but was rejected.
    Refused,
    /// The request did not arrive in time.
    Missing,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("request id {0} is already pending at this party; use a fresh random id")]
pub struct DuplicateRequest(pub u64);

/// Pending requests, shared between connection threads and the serving loop.
#[derive(Default)]
pub struct RequestQueue {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl RequestQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking holder cannot leave the map half-updated (every update is one call).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a share; the receiver yields the outcome once the request is served or dropped.
    pub fn submit(
        &self,
        id: u64,
        share: InputShare,
    ) -> Result<Receiver<Outcome>, DuplicateRequest> {
        let mut inner = self.lock();
        if inner.entries.contains_key(&id) {
            return Err(DuplicateRequest(id));
        }
        let (tx, rx) = mpsc::channel();
        inner.entries.insert(
            id,
            Entry {
                arrived: Instant::now(),
                state: State::Held(Box::new(share), tx),
            },
        );
        inner.order.push_back(id);
        inner.arrivals += 1;
        drop(inner);
        self.changed.notify_all();
        Ok(rx)
    }

    /// Remembers that request `id` was rejected here (unless it is already pending),
    /// forgetting the oldest rejection beyond [`MAX_REFUSED`].
    pub fn refuse(&self, id: u64) {
        let mut inner = self.lock();
        if inner.entries.contains_key(&id) {
            return;
        }
        inner.entries.insert(
            id,
            Entry {
                arrived: Instant::now(),
                state: State::Refused,
            },
        );
        inner.refused.push_back(id);
        while inner.refused.len() > MAX_REFUSED {
            if let Some(old) = inner.refused.pop_front() {
                if matches!(
                    inner.entries.get(&old),
                    Some(Entry {
                        state: State::Refused,
                        ..
                    })
                ) {
                    inner.entries.remove(&old);
                }
            }
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// Up to `max` held requests, oldest first, with their arrival times.
    pub fn held(&self, max: usize) -> Vec<(u64, Instant)> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .take(max)
            .filter_map(|id| inner.entries.get(id).map(|e| (*id, e.arrived)))
            .collect()
    }

    /// Which of `ids` this party holds, and which it rejected.
    pub fn status(&self, ids: &[u64]) -> (Vec<u64>, Vec<u64>) {
        let inner = self.lock();
        let mut held = Vec::new();
        let mut refused = Vec::new();
        for id in ids {
            match inner.entries.get(id).map(|e| &e.state) {
                Some(State::Held(..)) => held.push(*id),
                Some(State::Refused) => refused.push(*id),
                None => {}
            }
        }
        (held, refused)
    }

    /// How many requests have been submitted so far.
    pub fn arrivals(&self) -> u64 {
        self.lock().arrivals
    }

    /// Waits up to `wait` for a request to be submitted after `seen` arrivals. Returns whether
    /// one was.
    pub fn wait_arrival(&self, seen: u64, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        loop {
            if inner.arrivals != seen {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Number of rejected requests remembered.
    pub fn refused_len(&self) -> usize {
        let inner = self.lock();
        inner
            .entries
            .values()
            .filter(|e| matches!(e.state, State::Refused))
            .count()
    }

    /// The oldest held request, waiting up to `wait` for one (party 0's scheduling choice).
    /// The request stays queued until [`RequestQueue::take`].
    pub fn next(&self, wait: Duration) -> Option<u64> {
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        loop {
            if let Some(&id) = inner.order.front() {
                return Some(id);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Removes request `id`, waiting up to `wait` for it to arrive.
    pub fn take(&self, id: u64, wait: Duration) -> Taken {
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        loop {
            if let Some(entry) = inner.entries.remove(&id) {
                inner.order.retain(|&q| q != id);
                return match entry.state {
                    State::Held(share, tx) => Taken::Held(share, tx),
                    State::Refused => Taken::Refused,
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Taken::Missing;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Drops requests older than `ttl`, telling their clients why. Returns how many.
    pub fn expire(&self, ttl: Duration, reason: &str) -> usize {
        let mut inner = self.lock();
        let old: Vec<u64> = inner
            .entries
            .iter()
            .filter(|(_, e)| e.arrived.elapsed() >= ttl)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            if let Some(Entry {
                state: State::Held(_, tx),
                ..
            }) = inner.entries.remove(id)
            {
                let _ = tx.send(Err(reason.to_owned()));
            }
        }
        inner.order.retain(|q| !old.contains(q));
        inner.refused.retain(|q| !old.contains(q));
        old.len()
    }

    /// Drops every held request, telling its client `reason`. Returns how many.
    pub fn drop_held(&self, reason: &str) -> usize {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner.order.drain(..).collect();
        for id in &ids {
            if let Some(Entry {
                state: State::Held(_, tx),
                ..
            }) = inner.entries.remove(id)
            {
                let _ = tx.send(Err(reason.to_owned()));
            }
        }
        ids.len()
    }

    /// Number of held requests.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpc::{share_input_os, FixedPoint};

    fn share() -> InputShare {
        let [s, _, _] = share_input_os(&[0.5; 4], [1, 2, 2], FixedPoint::default()).unwrap();
        s
    }

    #[test]
    fn serves_in_arrival_order_and_answers_the_submitter() {
        let q = RequestQueue::new();
        let rx7 = q.submit(7, share()).unwrap();
        let _rx3 = q.submit(3, share()).unwrap();
        assert!(matches!(q.submit(7, share()), Err(DuplicateRequest(7))));
        assert_eq!(q.next(Duration::ZERO), Some(7));
        let Taken::Held(_, tx) = q.take(7, Duration::ZERO) else {
            panic!("7 not held")
        };
        tx.send(Err("done".into())).unwrap();
        assert_eq!(rx7.recv().unwrap(), Err("done".into()));
        assert_eq!(q.next(Duration::ZERO), Some(3));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn take_waits_for_a_late_share_and_reports_refused_and_missing() {
        let q = std::sync::Arc::new(RequestQueue::new());
        let late = {
            let q = q.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                q.submit(9, share()).unwrap()
            })
        };
        assert!(matches!(
            q.take(9, Duration::from_secs(30)),
            Taken::Held(..)
        ));
        drop(late.join().unwrap());
        q.refuse(4);
        assert!(matches!(q.take(4, Duration::ZERO), Taken::Refused));
        assert!(matches!(q.take(5, Duration::ZERO), Taken::Missing));
        assert_eq!(q.next(Duration::ZERO), None);
    }

    #[test]
    fn the_refused_set_is_bounded_and_forgets_the_oldest_first() {
        let q = RequestQueue::new();
        let rx = q.submit(u64::MAX, share()).unwrap();
        let total = 10 * MAX_REFUSED as u64;
        for id in 0..total {
            q.refuse(id);
        }
        assert_eq!(q.refused_len(), MAX_REFUSED);
        // The newest rejections are remembered, the oldest forgotten; held requests are not
        // touched by the bound.
        assert!(matches!(q.take(total - 1, Duration::ZERO), Taken::Refused));
        assert!(matches!(
            q.take(total - MAX_REFUSED as u64, Duration::ZERO),
            Taken::Refused
        ));
        assert!(matches!(q.take(0, Duration::ZERO), Taken::Missing));
        assert!(matches!(
            q.take(total - MAX_REFUSED as u64 - 1, Duration::ZERO),
            Taken::Missing
        ));
        assert!(matches!(q.take(u64::MAX, Duration::ZERO), Taken::Held(..)));
        drop(rx);
        // Refusing an id already held does not replace it.
        let _rx = q.submit(5, share()).unwrap();
        q.refuse(5);
        assert_eq!(q.status(&[5, 6]), (vec![5], vec![]));
    }

    #[test]
    fn status_and_arrivals_report_what_party_0_polls_for() {
        let q = RequestQueue::new();
        let seen = q.arrivals();
        assert!(!q.wait_arrival(seen, Duration::ZERO));
        let _a = q.submit(1, share()).unwrap();
        q.refuse(2);
        let _b = q.submit(3, share()).unwrap();
        assert!(q.wait_arrival(seen, Duration::ZERO));
        assert_eq!(q.arrivals(), seen + 2);
        assert_eq!(q.status(&[3, 2, 1, 4]), (vec![3, 1], vec![2]));
        let held: Vec<u64> = q.held(10).into_iter().map(|(id, _)| id).collect();
        assert_eq!(held, vec![1, 3]);
        assert_eq!(q.held(1).len(), 1);
    }

    #[test]
    fn dropping_the_held_requests_answers_their_clients_and_keeps_refusals() {
        let q = RequestQueue::new();
        let rx = q.submit(1, share()).unwrap();
        q.refuse(2);
        assert_eq!(q.drop_held("mesh failed"), 1);
        assert_eq!(rx.recv().unwrap(), Err("mesh failed".into()));
        assert!(q.is_empty());
        assert!(matches!(q.take(2, Duration::ZERO), Taken::Refused));
    }

    #[test]
    fn expiry_answers_the_waiting_client() {
        let q = RequestQueue::new();
        let rx = q.submit(1, share()).unwrap();
        q.refuse(2);
        assert_eq!(q.expire(Duration::ZERO, "expired"), 2);
        assert_eq!(rx.recv().unwrap(), Err("expired".into()));
        assert!(q.is_empty());
    }
}
