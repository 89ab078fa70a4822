//! What a key does on the Train tab: move between fields, change a setting (a live DP change
//! also goes to the running training), start, pause, resume, stop and export. May not import
//! the app or the views.

use super::state::{Adjusted, RunState, TrainTab};
use crate::tui::action::Action;
use crate::tui::data::source::DataReady;
use crossterm::event::{KeyCode, KeyEvent};
use std::sync::Arc;

/// A key on the Train tab, `ready` the Data tab's finished job; returns the work it asks for.
pub fn handle(t: &mut TrainTab, ready: Option<&Arc<DataReady>>, k: KeyEvent) -> Vec<Action> {
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
        // From any field, as the footer says: no Train field takes typed text (the Data tab's
        // folder editor takes every key before the tabs see it).
        KeyCode::Char(' ') => {
            t.toggle_dp();
            changed = true;
        }
        KeyCode::Char('s') if !t.state.active() => match ready {
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
        t.recompute_epsilon();
    }
    out
}
