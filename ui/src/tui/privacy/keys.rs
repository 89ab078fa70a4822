//! What a key does on the Privacy tab: choose a run, audit it. May not import the app or the
//! views.

use super::PrivacyTab;
use crate::tui::action::Action;
use crossterm::event::{KeyCode, KeyEvent};

/// A key on the Privacy tab; returns the work it asks for.
pub fn handle(p: &mut PrivacyTab, k: KeyEvent) -> Vec<Action> {
    match k.code {
        KeyCode::Char('j') | KeyCode::Down => p.move_selection(true),
        KeyCode::Char('k') | KeyCode::Up => p.move_selection(false),
        KeyCode::Char('a') if !p.runs.is_empty() => return vec![Action::Audit(p.selected)],
        _ => {}
    }
    vec![]
}
