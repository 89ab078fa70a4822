//! What a key does on the Private prediction tab: choose an image or a party, launch, share
//! the model, predict, stop or kill a party. May not import the app or the views.

use super::PredictTab;
use crate::tui::action::Action;
use crossterm::event::{KeyCode, KeyEvent};

/// A key on the Private prediction tab; returns the work it asks for.
pub fn handle(p: &mut PredictTab, k: KeyEvent) -> Vec<Action> {
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
