//! `privxray demo`: walks through the four tabs with captions, pressing the keys a user would.
//! Each step waits for what it started (data ready, training finished, ...) or a time limit;
//! Space or → skips a step, Esc leaves the demo and keeps the interface.
//!
//! The demo presses keys by sending them into the event queue ([`AppEvent::DemoKey`]), as a
//! user would type them; the app tells it whether the step's wait is over. May not import the
//! app.

use super::backend::{AppEvent, AppSender};
use super::tabs::TabId;
use super::train::Field;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    Seconds,
    DataReady,
    TrainingDone,
    AuditDone,
    PartiesReady,
    ModelShared,
    Prediction,
    Forever,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub tab: TabId,
    pub caption: &'static str,
    pub keys: Vec<KeyCode>,
    pub wait: WaitFor,
    /// Least and most time on this step, seconds.
    pub min_s: f64,
    pub max_s: f64,
}

pub struct Demo {
    pub steps: Vec<Step>,
    pub current: usize,
    ticks: u64,
    started: bool,
}

fn step(
    tab: TabId,
    caption: &'static str,
    keys: Vec<KeyCode>,
    wait: WaitFor,
    min_s: f64,
    max_s: f64,
) -> Step {
    Step {
        tab,
        caption,
        keys,
        wait,
        min_s,
        max_s,
    }
}

impl Demo {
    pub fn new() -> Self {
        use KeyCode::*;
        // Focus the noise slider from the first field: five moves down.
        let to_noise = vec![
            Down;
            Field::ALL
                .iter()
                .position(|&f| f == Field::Noise)
                .unwrap_or(0)
        ];
        let mut raise_noise = to_noise.clone();
        raise_noise.extend([Char('+'); 6]);
        let steps = vec![
            step(TabId::Data, "1/4 Data: preprocessing with technique 1 (greyscale, 125x150, bilinear). Progress, throughput and ETA update live.", vec![Enter], WaitFor::DataReady, 3.0, 120.0),
            step(TabId::Data, "Counts per split and class, skipped files with reasons, and previews in real pixels where the terminal speaks kitty, sixel or iTerm2 graphics, else half blocks.", vec![], WaitFor::Seconds, 5.0, 5.0),
            step(TabId::Train, "2/4 Train: DP-SGD settings. Moving the noise slider recomputes ε at once: more noise, smaller ε.", raise_noise, WaitFor::Seconds, 5.0, 5.0),
            step(TabId::Train, "Training runs on its own thread: loss and accuracy per epoch, step loss, throughput, ETA, ε spent and projected.", vec![Char('s')], WaitFor::TrainingDone, 3.0, 180.0),
            step(TabId::Privacy, "3/4 Privacy: each run is a point of accuracy against ε; a membership-inference audit tests the finished model.", vec![Char('a')], WaitFor::AuditDone, 3.0, 60.0),
            step(TabId::Predict, "4/4 Private prediction: three parties start and connect with authenticated channels.", vec![Char('L')], WaitFor::PartiesReady, 3.0, 60.0),
            step(TabId::Predict, "The trained model is secret-shared: no party sees the weights.", vec![Char('m')], WaitFor::ModelShared, 2.0, 60.0),
            step(TabId::Predict, "An image is predicted on shares; the plaintext prediction is shown beside it.", vec![Enter], WaitFor::Prediction, 3.0, 120.0),
            step(TabId::Predict, "Demo over: q quits, Esc leaves the demo and keeps the interface.", vec![], WaitFor::Forever, 0.0, f64::INFINITY),
        ];
        Demo {
            steps,
            current: 0,
            ticks: 0,
            started: false,
        }
    }

    pub fn caption(&self) -> Option<&'static str> {
        self.steps.get(self.current).map(|s| s.caption)
    }

    /// Ends the current step at the next tick.
    pub fn skip(&mut self) {
        if self.current + 1 < self.steps.len() {
            self.current += 1;
            self.ticks = 0;
            self.started = false;
        }
    }

    /// What the current step waits for, if a step is left.
    pub fn waiting_for(&self) -> Option<WaitFor> {
        self.steps.get(self.current).map(|s| s.wait)
    }

    /// Advances on a tick at `fps` ticks per second. A step starts by sending its keys (with
    /// the tab to show first) into `keys`; it ends after its most time, or after its least
    /// time once `reached` says what it waits for has happened.
    pub fn tick(&mut self, fps: f64, reached: bool, keys: &AppSender) {
        let Some(step) = self.steps.get(self.current).cloned() else {
            return;
        };
        if !self.started {
            self.started = true;
            self.ticks = 0;
            let press = |code| {
                keys.send(AppEvent::DemoKey {
                    tab: step.tab,
                    key: KeyEvent::new(code, KeyModifiers::NONE),
                })
            };
            step.keys.iter().for_each(|&k| press(k));
            if step.keys.is_empty() {
                // Still switch to the step's tab.
                press(KeyCode::Null);
            }
            return;
        }
        self.ticks += 1;
        let secs = self.ticks as f64 / fps.max(1.0);
        if secs >= step.max_s || (secs >= step.min_s && reached) {
            self.skip();
        }
    }
}

impl Default for Demo {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::event::{Event, EventQueue};

    fn pressed(queue: &mut EventQueue) -> Vec<(TabId, KeyCode)> {
        queue
            .drain()
            .into_iter()
            .map(|e| match e {
                Event::App(AppEvent::DemoKey { tab, key }) => (tab, key.code),
                other => panic!("not a demo key: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_step_presses_its_keys_through_the_queue_once() {
        let mut queue = EventQueue::new();
        let mut demo = Demo::new();
        demo.tick(30.0, false, &queue.sender());
        assert_eq!(pressed(&mut queue), [(TabId::Data, KeyCode::Enter)]);
        demo.tick(30.0, false, &queue.sender());
        assert!(pressed(&mut queue).is_empty());
        assert_eq!(demo.current, 0);
    }

    #[test]
    fn a_reached_wait_ends_the_step_only_after_its_least_time() {
        let queue = EventQueue::new();
        let mut demo = Demo::new();
        let least = demo.steps[0].min_s as usize;
        demo.tick(1.0, true, &queue.sender());
        for _ in 1..least {
            demo.tick(1.0, true, &queue.sender());
            assert_eq!(demo.current, 0);
        }
        demo.tick(1.0, true, &queue.sender());
        assert_eq!(demo.current, 1);
    }

    #[test]
    fn a_step_without_keys_still_shows_its_tab() {
        let mut queue = EventQueue::new();
        let mut demo = Demo::new();
        demo.skip();
        demo.skip();
        demo.skip();
        demo.skip();
        demo.tick(30.0, false, &queue.sender());
        assert_eq!(pressed(&mut queue), [(TabId::Privacy, KeyCode::Char('a'))]);
        let mut demo = Demo::new();
        demo.skip();
        demo.tick(30.0, false, &queue.sender());
        assert_eq!(pressed(&mut queue), [(TabId::Data, KeyCode::Null)]);
    }
}
