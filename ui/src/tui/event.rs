//! One queue for everything the interface reacts to: a tick timer, terminal input, and the
//! notifications background jobs send. A single task merges the timer and crossterm's event
//! stream; jobs on std threads push into the same channel through an [`AppSender`]. The
//! notification types live in [`super::backend`], which this module imports (never the
//! reverse); they are re-exported here.

pub use super::backend::{AppEvent, AppSender};

use super::backend::Outbox;
use crossterm::event::{Event as TermEvent, EventStream, KeyEvent, KeyEventKind};
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub enum Event {
    Tick,
    Key(KeyEvent),
    Resize(u16, u16),
    App(AppEvent),
}

/// Background work's notifications join the queue as [`Event::App`].
impl Outbox for mpsc::UnboundedSender<Event> {
    fn post(&self, event: AppEvent) {
        let _ = self.send(Event::App(event));
    }
    fn is_open(&self) -> bool {
        !self.is_closed()
    }
}

/// The receiving end of the queue plus the sender jobs clone.
pub struct EventQueue {
    rx: mpsc::UnboundedReceiver<Event>,
    tx: mpsc::UnboundedSender<Event>,
}

impl EventQueue {
    /// A queue with no input task, for tests and for feeding events by hand.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        EventQueue { rx, tx }
    }

    /// Spawns the task that merges ticks at `fps` frames per second with terminal input.
    pub fn with_terminal_input(fps: f64) -> Self {
        let queue = Self::new();
        let tx = queue.tx.clone();
        // The tick period is 1/fps seconds; clamp fps so a bad option cannot spin or stall.
        let period = Duration::from_secs_f64(1.0 / fps.clamp(1.0, 120.0));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut input = EventStream::new();
            loop {
                let event = tokio::select! {
                    _ = tx.closed() => break,
                    _ = ticks.tick() => Event::Tick,
                    next = input.next() => match next {
                        Some(Ok(TermEvent::Key(k))) if k.kind != KeyEventKind::Release => Event::Key(k),
                        Some(Ok(TermEvent::Resize(w, h))) => Event::Resize(w, h),
                        Some(Ok(_)) => continue,
                        // Input is gone (stdin closed or unreadable): nothing more will come.
                        Some(Err(_)) | None => break,
                    },
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        queue
    }

    pub fn sender(&self) -> AppSender {
        AppSender::new(self.tx.clone())
    }

    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Every event already queued, without waiting.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            out.push(e);
        }
        out
    }
}

impl Default for EventQueue {
    fn default() -> Self {
        Self::new()
    }
}
