//! Terminal setup and restoration: raw mode, alternate screen and hidden cursor on entry;
//! all undone by `leave`, by `Drop`, and by a panic hook that restores before chaining to the
//! previous hook (so the panic message is readable); and the graphics query, asked of the real
//! terminal once it is in raw mode.
//! Imports crossterm, ratatui, the theme's `Graphics` and `graphics` (the query) only.

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{stdout, Stdout};
use std::os::fd::AsRawFd;
use std::sync::Once;
use std::time::Instant;

use super::graphics::{self, Env, SettingError, TimedFd};
use super::theme::Graphics;

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

    /// Asks the terminal which graphics protocol it speaks (when `env` says `auto`), waiting
    /// at most [`graphics::QUERY_TIMEOUT`] for an answer. Call before input is read.
    pub fn graphics(&mut self, env: &Env) -> Result<Graphics, SettingError> {
        let stdin = std::io::stdin();
        let mut input = TimedFd {
            fd: stdin.as_raw_fd(),
            deadline: Instant::now() + graphics::QUERY_TIMEOUT,
        };
        // The ioctl's pixel size, where the terminal fills it in.
        let winsize_px = crossterm::terminal::window_size().ok().and_then(|w| {
            let (cw, ch) = (w.width / w.columns.max(1), w.height / w.rows.max(1));
            (cw > 0 && ch > 0).then_some((cw, ch))
        });
        graphics::detect(env, &mut stdout(), &mut input, winsize_px)
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
