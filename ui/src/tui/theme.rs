//! Styles from the 16 named colours only, or none at all when NO_COLOR is set; the colour depth
//! the terminal offers and the graphics protocol it speaks, both found once at start-up and used
//! only by the greyscale previews (the interface's own colours stay the 16 named ones
//! everywhere). Imports nothing of the tui.

use ratatui::style::{Color, Modifier, Style};

/// How many colours the terminal can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorDepth {
    /// NO_COLOR: plain text, attributes only.
    NoColor,
    /// The 16 named colours: every terminal has them.
    #[default]
    Ansi16,
    /// The xterm 256-colour palette (TERM names a `256color` terminal).
    Ansi256,
    /// 24-bit RGB (COLORTERM is `truecolor` or `24bit`).
    TrueColor,
}

impl ColorDepth {
    /// The depth from the NO_COLOR, COLORTERM and TERM variables' values (absent: `None`).
    /// NO_COLOR set to anything non-empty wins; then COLORTERM, then TERM.
    pub fn detect(no_color: Option<&str>, colorterm: Option<&str>, term: Option<&str>) -> Self {
        if no_color.is_some_and(|v| !v.is_empty()) {
            ColorDepth::NoColor
        } else if colorterm.is_some_and(|v| matches!(v.trim(), "truecolor" | "24bit")) {
            ColorDepth::TrueColor
        } else if term.is_some_and(|v| v.contains("256color")) {
            ColorDepth::Ansi256
        } else {
            ColorDepth::Ansi16
        }
    }

    /// The depth this process's environment gives. Called once at start-up; widgets are
    /// handed the result and never read the environment themselves.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
        Self::detect(
            var("NO_COLOR").as_deref(),
            var("COLORTERM").as_deref(),
            var("TERM").as_deref(),
        )
    }
}

/// How the previews reach the screen: half-block characters in the colour depth's greys, or
/// real pixels through one of the terminal graphics protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Half blocks (two pixels a cell); also the fallback for every terminal.
    #[default]
    Halfblocks,
    /// The kitty graphics protocol (kitty, Ghostty, recent Konsole): APC `ESC _ G`.
    Kitty,
    /// DEC sixel (xterm -ti vt340, foot, mlterm, WezTerm, contour): DCS `ESC P q`.
    Sixel,
    /// iTerm2's inline images (iTerm2, WezTerm, mintty): OSC 1337.
    Iterm2,
}

/// The graphics protocol with what encoding for it needs: the size of a cell in pixels, and
/// whether sequences must be wrapped for tmux's passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Graphics {
    pub protocol: Protocol,
    /// Width and height of one cell in pixels.
    pub cell_px: (u16, u16),
    pub tmux: bool,
}

impl Graphics {
    /// Half blocks: no protocol, no pixels.
    pub const HALFBLOCKS: Graphics = Graphics {
        protocol: Protocol::Halfblocks,
        cell_px: (10, 20),
        tmux: false,
    };
}

impl Theme {
    /// The preview boxes' title: it names the graphics protocol when pixels are drawn, so a
    /// user can tell what the terminal query (or PRIVXRAY_GRAPHICS) chose.
    pub fn preview_title(self) -> &'static str {
        match (self.color(), self.graphics.protocol) {
            (false, _) | (_, Protocol::Halfblocks) => " Preview ",
            (true, Protocol::Kitty) => " Preview · kitty graphics ",
            (true, Protocol::Sixel) => " Preview · sixel ",
            (true, Protocol::Iterm2) => " Preview · iTerm2 images ",
        }
    }
}

impl Default for Graphics {
    fn default() -> Self {
        Graphics::HALFBLOCKS
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Theme {
    pub depth: ColorDepth,
    pub graphics: Graphics,
}

impl Theme {
    /// The 16 named colours; images in four grey levels.
    pub const ANSI16: Theme = Theme {
        depth: ColorDepth::Ansi16,
        graphics: Graphics::HALFBLOCKS,
    };
    /// No colour at all (NO_COLOR).
    pub const PLAIN: Theme = Theme {
        depth: ColorDepth::NoColor,
        graphics: Graphics::HALFBLOCKS,
    };

    /// From the environment (see [`ColorDepth::from_env`]), with half blocks: the graphics
    /// protocol needs the terminal's answers, asked once the interface owns it.
    pub fn from_env() -> Self {
        Theme {
            depth: ColorDepth::from_env(),
            graphics: Graphics::HALFBLOCKS,
        }
    }

    pub fn color(self) -> bool {
        self.depth != ColorDepth::NoColor
    }

    pub fn fg(self, c: Color) -> Style {
        if self.color() {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    pub fn bold(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    /// The highlighted (focused, selected) item: reversed video works with or without colour.
    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
    pub fn ok(self) -> Style {
        self.fg(Color::Green)
    }
    pub fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }
    pub fn error(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    pub fn dim(self) -> Style {
        if self.color() {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }
    pub fn accent(self) -> Style {
        self.fg(Color::Cyan)
    }
    /// Two series colours (train, validation) that differ on 16-colour terminals.
    pub fn series(self, i: usize) -> Style {
        self.fg([Color::Yellow, Color::Cyan, Color::Magenta, Color::Green][i % 4])
    }
}

#[cfg(test)]
mod tests {
    use super::ColorDepth::{self, *};

    #[test]
    fn depth_from_the_environment_values() {
        let d = ColorDepth::detect;
        assert_eq!(d(None, None, None), Ansi16);
        assert_eq!(d(None, None, Some("xterm")), Ansi16);
        assert_eq!(d(None, None, Some("xterm-256color")), Ansi256);
        assert_eq!(d(None, Some("truecolor"), Some("xterm")), TrueColor);
        assert_eq!(d(None, Some("24bit"), None), TrueColor);
        assert_eq!(d(None, Some("yes"), Some("screen-256color")), Ansi256);
        assert_eq!(
            d(Some("1"), Some("truecolor"), Some("xterm-256color")),
            NoColor
        );
        // An empty NO_COLOR does not count (no-color.org).
        assert_eq!(d(Some(""), Some("truecolor"), None), TrueColor);
    }
}
