//! Cross-thread control of a running training: pause, resume, stop, and DP settings changed
//! between steps.
//!
//! Imports `super::dpsgd` (the settings it carries) only; nothing outside `train`.

use super::dpsgd::{ClipNorm, NoiseMultiplier};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    paused: bool,
    stop: bool,
    noise_multiplier: Option<NoiseMultiplier>,
    clip_norm: Option<ClipNorm>,
}

/// A handle shared by the training thread and its controllers; clone it freely.
#[derive(Debug, Clone, Default)]
pub struct TrainControl {
    inner: Arc<(Mutex<State>, Condvar)>,
}

/// What the training loop should do at a step boundary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Directive {
    Continue,
    Stop,
}

impl TrainControl {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding this lock leaves plain flags: still usable.
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pauses after the current step.
    pub fn pause(&self) {
        self.lock().paused = true;
    }
    pub fn resume(&self) {
        self.lock().paused = false;
        self.inner.1.notify_all();
    }
    /// Stops cleanly after the current step (also ends a pause).
    pub fn stop(&self) {
        self.lock().stop = true;
        self.inner.1.notify_all();
    }
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }
    pub fn is_stopped(&self) -> bool {
        self.lock().stop
    }
    /// Takes effect from the next DP-SGD step.
    pub fn set_noise_multiplier(&self, v: NoiseMultiplier) {
        self.lock().noise_multiplier = Some(v);
    }
    /// Takes effect from the next DP-SGD step.
    pub fn set_clip_norm(&self, v: ClipNorm) {
        self.lock().clip_norm = Some(v);
    }

    /// Pending DP changes, cleared once taken.
    pub(crate) fn take_dp_changes(&self) -> (Option<NoiseMultiplier>, Option<ClipNorm>) {
        let mut s = self.lock();
        (s.noise_multiplier.take(), s.clip_norm.take())
    }

    /// Called between steps: blocks while paused (calling `on_pause` / `on_resume` around the
    /// wait) and reports whether to stop.
    pub(crate) fn at_step_boundary(
        &self,
        mut on_pause: impl FnMut(),
        mut on_resume: impl FnMut(),
    ) -> Directive {
        let mut s = self.lock();
        if s.stop {
            return Directive::Stop;
        }
        if s.paused {
            drop(s);
            on_pause();
            s = self.lock();
            while s.paused && !s.stop {
                s = self.inner.1.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.stop {
                return Directive::Stop;
            }
            drop(s);
            on_resume();
        }
        Directive::Continue
    }
}
