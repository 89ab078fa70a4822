//! Application state and input handling. Keys become [`Action`]s; actions go to the backends,
//! whose notifications come back as events. Nothing here draws.

use super::backend::{Backends, ClipNorm, NoiseMultiplier, PartyId, TrainConfig};
use super::data::{spawn_preprocess, DataSource, DataTab};
use super::demo::Demo;
use super::event::{AppEvent, AppSender, Event};
use super::predict::PredictTab;
use super::privacy::{AuditState, PrivacyTab, RunRecord};
use super::theme::Theme;
use super::train::{Adjusted, Field, RunState, TrainTab};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use privxray::model::Technique;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TabId {
    Data,
    Train,
    Privacy,
    Predict,
}

impl TabId {
    pub const ALL: [TabId; 4] = [TabId::Data, TabId::Train, TabId::Privacy, TabId::Predict];
    pub fn title(self) -> &'static str {
        match self {
            TabId::Data => "Data",
            TabId::Train => "Train",
            TabId::Privacy => "Privacy",
            TabId::Predict => "Private prediction",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
    fn cycle(self, forward: bool) -> TabId {
        let i = self.index();
        TabId::ALL[if forward { (i + 1) % 4 } else { (i + 3) % 4 }]
    }
}

/// Work the interface asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Quit,
    Preprocess {
        source: DataSource,
        technique: Technique,
    },
    StartTraining(TrainConfig),
    PauseTraining,
    ResumeTraining,
    StopTraining,
    SetDp(NoiseMultiplier, ClipNorm),
    ExportCurves,
    Audit(usize),
    LaunchParties,
    ShareModel,
    Predict,
    StopParty(PartyId),
    KillParty(PartyId),
}

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

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
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

    fn tick(&mut self) {
        let Some(mut demo) = self.demo.take() else {
            return;
        };
        let keys = demo.tick(self);
        self.demo = Some(demo);
        for (tab, k) in keys {
            self.tab = tab;
            for action in self.handle_key(k) {
                self.perform(action);
            }
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
            self.edit_folder(k);
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
            TabId::Data => self.data_key(k),
            TabId::Train => self.train_key(k),
            TabId::Privacy => self.privacy_key(k),
            TabId::Predict => self.predict_key(k),
        }
    }

    fn edit_folder(&mut self, k: KeyEvent) {
        match k.code {
            KeyCode::Enter => self.data.editing = false,
            KeyCode::Esc => {
                self.data.editing = false;
                self.data.custom.clear();
            }
            KeyCode::Backspace => {
                self.data.custom.pop();
            }
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                self.data.custom.push(c)
            }
            _ => {}
        }
    }

    fn data_key(&mut self, k: KeyEvent) -> Vec<Action> {
        let d = &mut self.data;
        match k.code {
            KeyCode::Char('j') | KeyCode::Down if !d.is_running() => {
                d.selected = (d.selected + 1).min(d.choices() - 1)
            }
            KeyCode::Char('k') | KeyCode::Up if !d.is_running() => {
                d.selected = d.selected.saturating_sub(1)
            }
            KeyCode::Char('t')
            | KeyCode::Left
            | KeyCode::Right
            | KeyCode::Char('h')
            | KeyCode::Char('l')
                if !d.is_running() =>
            {
                d.technique = match d.technique {
                    Technique::T1 => Technique::T2,
                    Technique::T2 => Technique::T1,
                }
            }
            KeyCode::Char('e') if !d.is_running() => {
                d.selected = d.choices() - 1;
                d.editing = true;
            }
            KeyCode::PageDown => {
                d.skipped_scroll = (d.skipped_scroll + 5).min(d.skipped_len().saturating_sub(1))
            }
            KeyCode::PageUp => d.skipped_scroll = d.skipped_scroll.saturating_sub(5),
            KeyCode::Enter | KeyCode::Char('s') if !d.is_running() => match d.chosen() {
                Ok(source) => {
                    return vec![Action::Preprocess {
                        source,
                        technique: d.technique,
                    }]
                }
                Err(e) => d.job = super::data::JobState::Failed(e),
            },
            _ => {}
        }
        vec![]
    }

    fn train_key(&mut self, k: KeyEvent) -> Vec<Action> {
        let t = &mut self.train;
        let mut out = vec![];
        let mut changed = false;
        match k.code {
            KeyCode::Char('j') | KeyCode::Down => t.move_focus(true),
            KeyCode::Char('k') | KeyCode::Up => t.move_focus(false),
            KeyCode::Char('l') | KeyCode::Right | KeyCode::Char('+') | KeyCode::Char('=') => {
                if let Adjusted::Dp(n, c) = t.adjust(true) {
                    out.push(Action::SetDp(n, c));
                }
                changed = true;
            }
            KeyCode::Char('h') | KeyCode::Left | KeyCode::Char('-') => {
                if let Adjusted::Dp(n, c) = t.adjust(false) {
                    out.push(Action::SetDp(n, c));
                }
                changed = true;
            }
            KeyCode::Char(' ') if t.field() == Field::Dp => {
                t.adjust(true);
                changed = true;
            }
            KeyCode::Char('s') if !t.state.active() => match self.data.ready() {
                None => {
                    t.message = Some(("preprocess data on the Data tab first".into(), true));
                }
                Some(r) if r.data.technique != t.model.technique() => {
                    t.message = Some((
                        format!(
                            "{} needs technique {}; the data was preprocessed with technique {}",
                            t.model.name(),
                            t.model.technique().number(),
                            r.data.technique.number()
                        ),
                        true,
                    ));
                }
                Some(r) => out.push(Action::StartTraining(t.config(r))),
            },
            KeyCode::Char('p') => match t.state {
                RunState::Running => out.push(Action::PauseTraining),
                RunState::Paused => out.push(Action::ResumeTraining),
                _ => {}
            },
            KeyCode::Char('x') if t.state.active() => out.push(Action::StopTraining),
            KeyCode::Char('e') => out.push(Action::ExportCurves),
            _ => {}
        }
        if changed {
            // Within the same frame: the next draw shows the new epsilon.
            self.recompute_epsilon();
        }
        out
    }

    fn privacy_key(&mut self, k: KeyEvent) -> Vec<Action> {
        match k.code {
            KeyCode::Char('j') | KeyCode::Down => self.privacy.move_selection(true),
            KeyCode::Char('k') | KeyCode::Up => self.privacy.move_selection(false),
            KeyCode::Char('a') if !self.privacy.runs.is_empty() => {
                return vec![Action::Audit(self.privacy.selected)]
            }
            _ => {}
        }
        vec![]
    }

    fn predict_key(&mut self, k: KeyEvent) -> Vec<Action> {
        let p = &mut self.predict;
        match k.code {
            KeyCode::Char('j') | KeyCode::Down => p.move_image(true),
            KeyCode::Char('k') | KeyCode::Up => p.move_image(false),
            KeyCode::Char('l') | KeyCode::Right => p.move_party(true),
            KeyCode::Char('h') | KeyCode::Left => p.move_party(false),
            KeyCode::Char('L') => return vec![Action::LaunchParties],
            KeyCode::Char('m') => return vec![Action::ShareModel],
            KeyCode::Enter => return vec![Action::Predict],
            KeyCode::Char('S') => return vec![Action::StopParty(p.selected_party_id())],
            KeyCode::Char('K') => return vec![Action::KillParty(p.selected_party_id())],
            _ => {}
        }
        vec![]
    }

    /// Hands an action to the backend that does it; failures become messages on the tab.
    pub fn perform(&mut self, action: Action) {
        let unavailable = |what: &str| format!("{what} is not available in this build");
        match action {
            Action::Quit => self.quit = true,
            Action::Preprocess { source, technique } => {
                self.data.job = super::data::JobState::Running {
                    part: 0,
                    parts: source.roots.len(),
                    progress: privxray::preprocess::Progress {
                        done: 0,
                        total: 0,
                        cached: 0,
                    },
                    elapsed: 0.0,
                };
                spawn_preprocess(
                    source,
                    technique,
                    self.data.cache_dir.clone(),
                    self.sender.clone(),
                );
            }
            Action::StartTraining(config) => match self.backends.training.as_mut() {
                None => self.train.message = Some((unavailable("training"), true)),
                Some(b) => {
                    self.train.begin_run();
                    match b.start(config.clone(), self.sender.clone()) {
                        Ok(()) => self.running_config = Some(config),
                        Err(e) => self.train.state = RunState::Failed(e.to_string()),
                    }
                    self.recompute_epsilon();
                }
            },
            Action::PauseTraining => {
                if let Some(b) = self.backends.training.as_mut() {
                    b.pause()
                }
            }
            Action::ResumeTraining => {
                if let Some(b) = self.backends.training.as_mut() {
                    b.resume()
                }
            }
            Action::StopTraining => {
                if let Some(b) = self.backends.training.as_mut() {
                    b.stop()
                }
            }
            Action::SetDp(n, c) => {
                if let Some(b) = self.backends.training.as_mut() {
                    b.set_dp(n, c)
                }
            }
            Action::ExportCurves => {
                let model = self.train.model;
                let result = match &self.backends.exporter {
                    None => Err(unavailable("PNG export")),
                    Some(_) if self.train.history.is_empty() && self.train.step_loss.is_empty() => {
                        Err("nothing to export yet: train first".into())
                    }
                    Some(x) => x
                        .export(model, &self.train.history, &self.train.step_loss)
                        .map_err(|e| e.to_string()),
                };
                self.train.message = Some(match result {
                    Ok(paths) => (
                        format!(
                            "wrote {}",
                            paths
                                .iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        false,
                    ),
                    Err(e) => (e, true),
                });
            }
            Action::Audit(run) => {
                let Some(r) = self.privacy.runs.get_mut(run) else {
                    return;
                };
                let Some(ckpt) = r.checkpoint.clone() else {
                    r.audit = AuditState::Failed("the run saved no checkpoint".into());
                    return;
                };
                match self.backends.audit.as_mut() {
                    None => r.audit = AuditState::Failed(unavailable("the audit")),
                    Some(b) => {
                        r.audit = AuditState::Running;
                        if let Err(e) = b.audit(run, r.model, &ckpt, self.sender.clone()) {
                            r.audit = AuditState::Failed(e.to_string());
                        }
                    }
                }
            }
            Action::LaunchParties => match self.backends.parties.as_mut() {
                None => self.predict.message = Some((unavailable("private prediction"), true)),
                Some(b) => {
                    if let Err(e) = b.launch(self.sender.clone()) {
                        self.predict.message = Some((e.to_string(), true));
                    }
                }
            },
            Action::ShareModel => {
                let run = self
                    .privacy
                    .runs
                    .get(self.privacy.selected)
                    .filter(|r| r.checkpoint.is_some())
                    .or_else(|| {
                        self.privacy
                            .runs
                            .iter()
                            .rev()
                            .find(|r| r.checkpoint.is_some())
                    })
                    .and_then(|r| r.checkpoint.clone().map(|c| (r.model, c)));
                let result = match (self.backends.parties.as_mut(), run) {
                    (None, _) => Err(unavailable("private prediction")),
                    (_, None) => Err("train a model first (Train tab)".to_string()),
                    (Some(b), Some((model, ckpt))) => {
                        b.share_model(model, &ckpt).map_err(|e| e.to_string())
                    }
                };
                if let Err(e) = result {
                    self.predict.message = Some((e, true));
                }
            }
            Action::Predict => match self.predict.request() {
                Err(e) => self.predict.message = Some((e, true)),
                Ok(req) => {
                    let r = match self.backends.parties.as_mut() {
                        None => Err(unavailable("private prediction")),
                        Some(b) => b.predict(req).map_err(|e| e.to_string()),
                    };
                    if let Err(e) = r {
                        self.predict.pending.pop();
                        self.predict.message = Some((e, true));
                    }
                }
            },
            Action::StopParty(p) => {
                if let Some(b) = self.backends.parties.as_mut() {
                    b.stop(p)
                }
            }
            Action::KillParty(p) => {
                if let Some(b) = self.backends.parties.as_mut() {
                    b.kill(p)
                }
            }
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
                let finished = self.train.apply(u);
                if let Some(outcome) = finished {
                    let config = self.running_config.take();
                    let model = config.as_ref().map(|c| c.model).unwrap_or(self.train.model);
                    let delta = config.and_then(|c| c.dp.map(|d| d.delta));
                    self.privacy
                        .add(RunRecord::from_outcome(model, delta, &outcome));
                }
                self.recompute_epsilon();
            }
            AppEvent::Audit(u) => self.privacy.apply(u),
            AppEvent::Party(u) => self.predict.apply(u),
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

    /// A key press as the demo sends it.
    pub fn demo_press(code: KeyCode) -> KeyEvent {
        key(code)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown();
    }
}
