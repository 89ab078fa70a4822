//! What a key does on the Data tab: move between sources, switch technique and labels, type a
//! folder, scroll the skipped files, and ask for preprocessing. May not import the app or the
//! views.

use super::state::{DataTab, JobState};
use crate::tui::action::Action;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use privxray::model::Technique;

/// A key while the custom folder is being typed.
pub fn edit_folder(d: &mut DataTab, k: KeyEvent) {
    match k.code {
        KeyCode::Enter => d.editing = false,
        KeyCode::Esc => {
            d.editing = false;
            d.custom.clear();
        }
        KeyCode::Backspace => {
            d.custom.pop();
        }
        KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => d.custom.push(c),
        _ => {}
    }
}

/// A key on the Data tab; returns the work it asks for.
pub fn handle(d: &mut DataTab, k: KeyEvent) -> Vec<Action> {
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
        KeyCode::Char('c') if !d.is_running() => d.toggle_labels(),
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
                    labelling: d.labelling.clone(),
                }]
            }
            Err(e) => d.job = JobState::Failed(e),
        },
        _ => {}
    }
    vec![]
}
