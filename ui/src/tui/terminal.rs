//! Terminal setup and restoration: raw mode, alternate screen and hidden cursor on entry;
//! all undone by `leave`, by `Drop`, and by a panic hook that restores before chaining to the
//! previous hook (so the panic message is readable).
//! Imports crossterm and ratatui only; nothing of the interface.

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{stdout, Stdout};
use std::sync::Once;

/// Puts the terminal back as it was. Every step is attempted even if one fails.
pub fn restore() -> std::io::Result<()> {
    let raw = disable_raw_mode();
    let screen = execute!(stdout(), LeaveAlternateScreen, Show);
    raw.and(screen)
}

static HOOK: Once = Once::new();

/// Installs (once per process) a panic hook that restores the terminal, then runs the previous
/// hook.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = restore();
            previous(info);
        }));
    });
}

/// The terminal in interface mode; restored when dropped.
pub struct Tui {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
    active: bool,
}

impl Tui {
    pub fn enter() -> std::io::Result<Self> {
        enable_raw_mode()?;
        // From here on, a failure must undo what was done.
        let setup = (|| {
            execute!(stdout(), EnterAlternateScreen, Hide)?;
            // No `Terminal::clear`: it queries the cursor position, which some terminals never
            // answer. The alternate screen starts blank and the first frame draws every cell.
            Terminal::new(CrosstermBackend::new(stdout()))
        })();
        match setup {
            Ok(terminal) => Ok(Tui {
                terminal,
                active: true,
            }),
            Err(e) => {
                let _ = restore();
                Err(e)
            }
        }
    }

    pub fn leave(&mut self) -> std::io::Result<()> {
        if std::mem::replace(&mut self.active, false) {
            restore()?;
        }
        Ok(())
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.leave();
    }
}
