//! The requests a party holds shares of. Connection threads submit; the serving loop takes
//! them in the order party 0 decides and answers each through the channel its connection
//! thread waits on.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::mpc::InputShare;

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
    entries: HashMap<u64, Entry>,
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
        drop(inner);
        self.changed.notify_all();
        Ok(rx)
    }

    /// Remembers that request `id` was rejected here (unless it is already pending).
    pub fn refuse(&self, id: u64) {
        let mut inner = self.lock();
        inner.entries.entry(id).or_insert(Entry {
            arrived: Instant::now(),
            state: State::Refused,
        });
        drop(inner);
        self.changed.notify_all();
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
        old.len()
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
    fn expiry_answers_the_waiting_client() {
        let q = RequestQueue::new();
        let rx = q.submit(1, share()).unwrap();
        q.refuse(2);
        assert_eq!(q.expire(Duration::ZERO, "expired"), 2);
        assert_eq!(rx.recv().unwrap(), Err("expired".into()));
        assert!(q.is_empty());
    }
}
