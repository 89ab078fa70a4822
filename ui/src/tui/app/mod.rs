//! Application state and input handling. Keys become [`Action`]s; actions go to the backends
//! (`perform`), whose notifications come back as events. Nothing here draws. Each tab's own
//! keys are handled in that tab's `keys` module; the demo is ticked here and presses its keys
//! through the event queue.
//! Imports the tabs' state and keys, the backend traits, the event queue and the demo; never
//! the views (`ui.rs` draws the app, not the other way round).

mod perform;

pub use super::action::Action;
pub use super::tabs::TabId;

use super::backend::{Backends, PartyState, TrainConfig, TrainUpdate};
use super::data::{self, DataSource, DataTab, JobState};
use super::demo::{Demo, WaitFor};
use super::event::{AppEvent, AppSender, Event};
use super::predict::{self, PredictTab};
use super::privacy::{self, AuditState, PrivacyTab, RunRecord};
use super::theme::Theme;
use super::train::{self, RunState, TrainTab};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::path::PathBuf;

pub struct App {
    pub tab: TabId,
    pub help: bool,
    pub quit: bool,
    pub theme: Theme,
    pub fps: f64,
    pub data: DataTab,
    pub train: TrainTab,
    pub privacy: PrivacyTab,
    pub predict: PredictTab,
    pub demo: Option<Demo>,
    pub backends: Backends,
    sender: AppSender,
    running_config: Option<TrainConfig>,
    shut_down: bool,
}

impl App {
    pub fn new(
        sources: Vec<DataSource>,
        cache_dir: Option<PathBuf>,
        backends: Backends,
        sender: AppSender,
        theme: Theme,
    ) -> Self {
        let device = backends
            .training
            .as_ref()
            .map(|t| t.device())
            .unwrap_or_else(|| "no training engine in this build".into());
        let mut app = App {
            tab: TabId::Data,
            help: false,
            quit: false,
            theme,
            fps: 30.0,
            data: DataTab::new(sources, cache_dir),
            train: TrainTab::new(device),
            privacy: PrivacyTab::default(),
            predict: PredictTab::default(),
            demo: None,
            backends,
            sender,
            running_config: None,
            shut_down: false,
        };
        app.recompute_epsilon();
        app
    }

    pub fn recompute_epsilon(&mut self) {
        self.train.recompute_epsilon();
    }

    pub fn handle_event(&mut self, event: Event) {
        match event {
            Event::Tick => self.tick(),
            Event::Key(k) => {
                if self.demo.is_some() && self.demo_key(k) {
                    return;
                }
                for action in self.handle_key(k) {
                    self.perform(action);
                }
            }
            Event::Resize(_, _) => {}
            Event::App(e) => self.apply(e),
        }
    }

    /// Ticks the demo, if one runs: it may press keys (into the queue) or end its step.
    fn tick(&mut self) {
        let Some(wait) = self.demo.as_ref().and_then(Demo::waiting_for) else {
            return;
        };
        let reached = self.reached(wait);
        if let Some(demo) = self.demo.as_mut() {
            demo.tick(self.fps, reached, &self.sender);
        }
    }

    /// Whether what a demo step waits for has happened.
    fn reached(&self, wait: WaitFor) -> bool {
        match wait {
            WaitFor::Seconds => true,
            WaitFor::Forever => false,
            WaitFor::DataReady => {
                self.data.ready().is_some() || matches!(self.data.job, JobState::Failed(_))
            }
            WaitFor::TrainingDone => matches!(
                self.train.state,
                RunState::Finished(_) | RunState::Failed(_) | RunState::Idle
            ),
            WaitFor::AuditDone => self
                .privacy
                .runs
                .last()
                .is_none_or(|r| !matches!(r.audit, AuditState::Running)),
            WaitFor::PartiesReady => {
                self.backends.parties.is_none()
                    || self
                        .predict
                        .parties
                        .iter()
                        .all(|p| p.state == PartyState::Ready)
            }
            WaitFor::ModelShared => self.backends.parties.is_none() || self.predict.model.is_some(),
            WaitFor::Prediction => self.predict.pending.is_empty(),
        }
    }

    /// A key the demo pressed: shown on its tab, handled like a typed key.
    fn demo_press(&mut self, tab: TabId, k: KeyEvent) {
        self.tab = tab;
        for action in self.handle_key(k) {
            self.perform(action);
        }
    }

    /// Keys the demo handles itself; returns whether the key was consumed.
    fn demo_key(&mut self, k: KeyEvent) -> bool {
        match k.code {
            KeyCode::Esc => {
                self.demo = None;
                true
            }
            KeyCode::Char(' ') | KeyCode::Right => {
                if let Some(d) = self.demo.as_mut() {
                    d.skip();
                }
                true
            }
            _ => false,
        }
    }

    /// Updates state for a key and returns the work it asks for.
    pub fn handle_key(&mut self, k: KeyEvent) -> Vec<Action> {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.quit = true;
            return vec![Action::Quit];
        }
        if self.data.editing {
            data::keys::edit_folder(&mut self.data, k);
            return vec![];
        }
        if self.privacy.sweep.editing() {
            privacy::keys::edit_sigmas(&mut self.privacy, k, train::NOISE_RANGE);
            return vec![];
        }
        if self.help {
            if matches!(
                k.code,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')
            ) {
                self.help = false;
            }
            return vec![];
        }
        match k.code {
            KeyCode::Char('q') => {
                self.quit = true;
                return vec![Action::Quit];
            }
            KeyCode::Char('?') => {
                self.help = true;
                return vec![];
            }
            KeyCode::Tab => {
                self.tab = self.tab.cycle(true);
                return vec![];
            }
            KeyCode::BackTab => {
                self.tab = self.tab.cycle(false);
                return vec![];
            }
            KeyCode::Char(c @ '1'..='4') => {
                self.tab = TabId::ALL[(c as u8 - b'1') as usize];
                return vec![];
            }
            _ => {}
        }
        match self.tab {
            TabId::Data => data::keys::handle(&mut self.data, k),
            TabId::Train => train::keys::handle(&mut self.train, self.data.ready(), k),
            TabId::Privacy => privacy::keys::handle(&mut self.privacy, k),
            TabId::Predict => predict::keys::handle(&mut self.predict, k),
        }
    }

    /// Applies a background notification.
    pub fn apply(&mut self, event: AppEvent) {
        match event {
            AppEvent::Preprocess(u) => {
                self.data.apply(u);
                if let Some(ready) = self.data.ready().cloned() {
                    if self.train.train_images.is_none() || !self.train.state.active() {
                        self.train.train_images = Some(ready.train_images());
                        self.train.steps_per_epoch = None;
                    }
                    self.predict.set_data(ready);
                    self.recompute_epsilon();
                }
            }
            AppEvent::Train(u) => {
                let failed = match &u {
                    TrainUpdate::Failed(reason) => Some(reason.clone()),
                    _ => None,
                };
                let finished = self.train.apply(u);
                if let Some(outcome) = finished {
                    let config = self.running_config.take();
                    let model = config.as_ref().map(|c| c.model).unwrap_or(self.train.model);
                    let delta = config.and_then(|c| c.dp.map(|d| d.delta));
                    let run = RunRecord::from_outcome(model, delta, &outcome);
                    // A sweep starts its next run as soon as one ends.
                    if let Some(next) = self.privacy.run_finished(run, outcome.stopped) {
                        self.start_sweep_run(next);
                    }
                }
                if let Some(reason) = failed {
                    self.privacy.sweep.failed(&reason);
                }
                let epoch = self.train.position.map(|(e, _)| (e + 1, self.train.epochs));
                self.privacy.sweep.set_epoch(epoch);
                self.recompute_epsilon();
            }
            AppEvent::Audit(u) => self.privacy.apply(u),
            AppEvent::Party(u) => self.predict.apply(u),
            // Keys still queued when Esc left the demo are dropped with it.
            AppEvent::DemoKey { tab, key } if self.demo.is_some() => self.demo_press(tab, key),
            AppEvent::DemoKey { .. } => {}
        }
    }

    /// Stops training and every party; safe to call more than once.
    pub fn shutdown(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        if let Some(t) = self.backends.training.as_mut() {
            if self.train.state.active() {
                t.stop();
            }
        }
        if let Some(p) = self.backends.parties.as_mut() {
            p.shutdown();
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::event::EventQueue;

    fn app(queue: &EventQueue) -> App {
        let sources = vec![DataSource::folder("no/such/folder", "missing")];
        App::new(
            sources,
            None,
            Backends::none(),
            queue.sender(),
            Theme::PLAIN,
        )
    }

    #[test]
    fn demo_keys_arrive_through_the_queue_and_act_on_their_tab() {
        let mut queue = EventQueue::new();
        let mut app = app(&queue);
        app.tab = TabId::Predict;
        app.demo = Some(Demo::new());
        app.handle_event(Event::Tick);
        // Nothing happens until the queue delivers the key.
        assert_eq!(app.tab, TabId::Predict);
        assert!(matches!(app.data.job, JobState::Idle));
        for e in queue.drain() {
            app.handle_event(e);
        }
        assert_eq!(app.tab, TabId::Data);
        // Enter asked for preprocessing, which this build's backends cannot do.
        assert!(
            matches!(&app.data.job, JobState::Failed(m) if m.contains("not available")),
            "{:?}",
            app.data.job
        );
    }

    #[test]
    fn esc_drops_the_demo_keys_still_queued() {
        let mut queue = EventQueue::new();
        let mut app = app(&queue);
        app.demo = Some(Demo::new());
        app.handle_event(Event::Tick);
        app.handle_event(Event::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(app.demo.is_none());
        for e in queue.drain() {
            app.handle_event(e);
        }
        assert!(matches!(app.data.job, JobState::Idle));
    }
}
