//! What a key does on the Privacy tab: choose a run, audit it, edit the sweep's list of noise
//! multipliers, start and stop the sweep. May not import the app or the views.

use super::PrivacyTab;
use crate::tui::action::Action;
use crossterm::event::{KeyCode, KeyEvent};

/// Longest list the editor takes (a dozen sigmas fit easily).
const MAX_TEXT: usize = 80;

/// A key on the Privacy tab; returns the work it asks for.
pub fn handle(p: &mut PrivacyTab, k: KeyEvent) -> Vec<Action> {
    match k.code {
        KeyCode::Char('j') | KeyCode::Down => p.move_selection(true),
        KeyCode::Char('k') | KeyCode::Up => p.move_selection(false),
        KeyCode::Char('a') if !p.runs.is_empty() => return vec![Action::Audit(p.selected)],
        KeyCode::Char('e') => p.sweep.open_editor(),
        KeyCode::Char('s') => return vec![Action::StartSweep],
        KeyCode::Char('x') => {
            if p.sweep.stop() {
                return vec![Action::StopTraining];
            }
            p.sweep.status = Some(("no sweep is running".into(), true));
        }
        _ => {}
    }
    vec![]
}

/// A key while the sweep's list is being typed (every key goes here, so typing cannot trigger
/// a shortcut); `range` is the Train tab's noise slider range.
pub fn edit_sigmas(p: &mut PrivacyTab, k: KeyEvent, range: [f64; 2]) {
    let Some(text) = p.sweep.editor.as_mut() else {
        return;
    };
    match k.code {
        KeyCode::Enter => p.sweep.accept(range),
        KeyCode::Esc => p.sweep.cancel_edit(),
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char(c) if text.chars().count() < MAX_TEXT => text.push(c),
        _ => {}
    }
}
